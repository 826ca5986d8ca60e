#include "core/wire/receipt.h"

#include <cstring>

#include "core/wire/msgpack_util.h"

namespace cw::wire {

namespace {
constexpr uint8_t kReceiptFields = 3;

bool IsKnownType(uint64_t t) {
  return t == static_cast<uint8_t>(ReceiptType::kDelivered) || t == static_cast<uint8_t>(ReceiptType::kRead);
}
}  // namespace

Result<Bytes> EncodeReceipt(const Receipt& r) {
  if (!IsKnownType(static_cast<uint8_t>(r.type))) return Error(StatusCode::kInvalidArgument, "unknown receipt type");
  if (r.refs.empty() || r.refs.size() > kMaxReceiptRefs) {
    return Error(StatusCode::kInvalidArgument, "a receipt names 1 to kMaxReceiptRefs messages");
  }
  internal::SecretSink sink;  // its growth is the one already known to build cleanly here
  msgpack::packer<internal::SecretSink> pk(sink);
  pk.pack_array(kReceiptFields);
  pk.pack(kReceiptVersion);
  pk.pack(static_cast<uint8_t>(r.type));
  pk.pack_array(static_cast<uint32_t>(r.refs.size()));
  for (const auto& ref : r.refs) {
    pk.pack_bin(kReceiptRefSize);
    pk.pack_bin_body(reinterpret_cast<const char*>(ref.data()), kReceiptRefSize);
  }
  const SecretBytes out = sink.Take();
  return Bytes(out.reveal().begin(), out.reveal().end());
}

Result<Receipt> DecodeReceipt(std::span<const uint8_t> bytes) {
  const auto bad = [](const char* why) { return Error(StatusCode::kMalformed, why); };
  // The version is told apart from garbage before msgpack allocates anything (as DecodeAppMessage does).
  if (bytes.size() < 2 || (bytes[0] & 0xf0) != 0x90) return bad("receipt is not an array");
  if (bytes[1] != kReceiptVersion) {
    if (bytes[1] < 0x80) return Error(StatusCode::kUnsupportedVersion, "unknown receipt version");
    return bad("receipt version missing");
  }
  if (bytes[0] != (0x90 | kReceiptFields)) return bad("receipt has wrong field count");
  internal::Limits limits;
  limits.array = kMaxReceiptRefs;
  limits.str = 0;
  limits.bin = kReceiptRefSize;
  limits.depth = 2;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return bad("receipt is not valid msgpack");
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size != kReceiptFields) {
    return bad("receipt has wrong field count");
  }
  const msgpack::object* f = root.via.array.ptr;
  if (f[0].type != msgpack::type::POSITIVE_INTEGER || f[0].via.u64 != kReceiptVersion) {
    return bad("receipt version missing");
  }
  if (f[1].type != msgpack::type::POSITIVE_INTEGER || !IsKnownType(f[1].via.u64)) return bad("unknown receipt type");
  if (f[2].type != msgpack::type::ARRAY || f[2].via.array.size == 0 || f[2].via.array.size > kMaxReceiptRefs) {
    return bad("a receipt names 1 to kMaxReceiptRefs messages");
  }
  Receipt r;
  r.type = static_cast<ReceiptType>(f[1].via.u64);
  r.refs.reserve(f[2].via.array.size);
  for (uint32_t i = 0; i < f[2].via.array.size; ++i) {
    const msgpack::object& o = f[2].via.array.ptr[i];
    if (o.type != msgpack::type::BIN || o.via.bin.size != kReceiptRefSize) return bad("receipt reference has wrong size");
    ReceiptRef ref;
    std::memcpy(ref.data(), o.via.bin.ptr, kReceiptRefSize);
    r.refs.push_back(ref);
  }
  return r;
}

}  // namespace cw::wire
