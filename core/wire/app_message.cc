#include "core/wire/app_message.h"

#include "core/wire/msgpack_util.h"

namespace cw::wire {

namespace {
constexpr uint8_t kAppFields = 4;

bool IsKnownKind(uint64_t kind) { return kind >= 1 && kind <= kMaxAppKind; }
}  // namespace

Result<SecretBytes> EncodeAppMessage(const AppMessage& m) {
  if (!IsKnownKind(static_cast<uint8_t>(m.kind))) return Error(StatusCode::kInvalidArgument, "unknown app message kind");
  if (m.purpose.size() > kMaxPurposeSize) return Error(StatusCode::kInvalidArgument, "purpose label too long");
  if (m.payload.size() > kMaxAppPayloadSize) return Error(StatusCode::kInvalidArgument, "app message payload too large");
  internal::SecretSink sink;
  msgpack::packer<internal::SecretSink> pk(sink);
  pk.pack_array(kAppFields);
  pk.pack(kAppMessageVersion);
  pk.pack(static_cast<uint8_t>(m.kind));
  pk.pack(m.purpose);
  auto payload = m.payload.reveal();
  pk.pack_bin(static_cast<uint32_t>(payload.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(payload.data()), static_cast<uint32_t>(payload.size()));
  return sink.Take();
}

Result<AppMessage> DecodeAppMessage(std::span<const uint8_t> bytes) {
  // Checked before msgpack allocates anything: the root must be a fixarray whose first element is the
  // version, so a different version is told apart from garbage.
  if (bytes.size() < 2 || (bytes[0] & 0xf0) != 0x90) return Error(StatusCode::kMalformed, "app message is not an array");
  if (bytes[1] != kAppMessageVersion) {
    if (bytes[1] < 0x80) return Error(StatusCode::kUnsupportedVersion, "unknown app message version");
    return Error(StatusCode::kMalformed, "app message version missing");
  }
  if (bytes[0] != (0x90 | kAppFields)) return Error(StatusCode::kMalformed, "app message has wrong field count");
  internal::Limits limits;
  limits.array = kAppFields;
  limits.str = kMaxPurposeSize;
  limits.bin = kMaxAppPayloadSize;
  limits.depth = 1;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return Error(StatusCode::kMalformed, "app message is not valid msgpack");
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size != kAppFields) {
    return Error(StatusCode::kMalformed, "app message has wrong field count");
  }
  const msgpack::object* f = root.via.array.ptr;
  if (f[0].type != msgpack::type::POSITIVE_INTEGER || f[0].via.u64 != kAppMessageVersion) {
    return Error(StatusCode::kMalformed, "app message version missing");
  }
  if (f[1].type != msgpack::type::POSITIVE_INTEGER || !IsKnownKind(f[1].via.u64)) {
    return Error(StatusCode::kMalformed, "unknown app message kind");
  }
  if (f[2].type != msgpack::type::STR || f[2].via.str.size > kMaxPurposeSize || f[3].type != msgpack::type::BIN ||
      f[3].via.bin.size > kMaxAppPayloadSize) {
    return Error(StatusCode::kMalformed, "app message field has wrong type or size");
  }
  AppMessage m;
  m.kind = static_cast<AppKind>(f[1].via.u64);
  m.purpose.assign(f[2].via.str.ptr, f[2].via.str.size);
  m.payload = SecretBytes(reinterpret_cast<const uint8_t*>(f[3].via.bin.ptr), f[3].via.bin.size);
  return m;
}

}  // namespace cw::wire
