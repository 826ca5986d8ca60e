#include "core/wire/bundle.h"

#include <cstring>

#include "core/wire/msgpack_util.h"

namespace cw::wire {

// Layout (docs/prekey-bundle-format.md):
// [version, registration_id, device_id, identity_key, spk_id, spk_public, spk_signature, otpk_id|nil, otpk|nil]
namespace {

constexpr size_t kFields = 9;

template <size_t N>
bool ReadFixedBin(const msgpack::object& o, std::array<uint8_t, N>* out) {
  if (o.type != msgpack::type::BIN || o.via.bin.size != N) return false;
  std::memcpy(out->data(), o.via.bin.ptr, N);
  return true;
}

bool ReadU32(const msgpack::object& o, uint32_t* out) {
  if (o.type != msgpack::type::POSITIVE_INTEGER || o.via.u64 > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(o.via.u64);
  return true;
}

}  // namespace

Bytes EncodeBundle(const PreKeyBundle& b) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  auto pack_bin = [&](std::span<const uint8_t> v) {
    pk.pack_bin(static_cast<uint32_t>(v.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(v.data()), static_cast<uint32_t>(v.size()));
  };
  pk.pack_array(kFields);
  pk.pack(kBundleVersion);
  pk.pack(b.registration_id);
  pk.pack(b.device_id);
  pack_bin(b.identity_key);
  pk.pack(b.signed_pre_key.id);
  pack_bin(b.signed_pre_key.public_key);
  pack_bin(b.signed_pre_key.signature);
  if (b.one_time_pre_key) {
    pk.pack(b.one_time_pre_key->id);
    pack_bin(b.one_time_pre_key->public_key);
  } else {
    pk.pack_nil();
    pk.pack_nil();
  }
  return Bytes(buf.data(), buf.data() + buf.size());
}

Result<PreKeyBundle> DecodeBundle(ByteView bytes) {
  if (bytes.size() > kMaxBundleSize) return Error(StatusCode::kMalformed, "pre-key bundle too large");
  internal::Limits limits;
  limits.array = 32;  // room for a later version's extra fields, so it reads as "unsupported", not "malformed"
  limits.str = 0;
  limits.bin = kSignatureSize;
  limits.depth = 1;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return Error(StatusCode::kMalformed, "pre-key bundle is not valid msgpack");
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 1) {
    return Error(StatusCode::kMalformed, "pre-key bundle is not an array");
  }
  const msgpack::object* f = root.via.array.ptr;
  uint32_t version = 0;
  if (!ReadU32(f[0], &version)) return Error(StatusCode::kMalformed, "pre-key bundle version missing");
  if (version != kBundleVersion) return Error(StatusCode::kUnsupportedVersion, "unknown pre-key bundle version");
  if (root.via.array.size != kFields) return Error(StatusCode::kMalformed, "pre-key bundle has wrong field count");

  PreKeyBundle b;
  if (!ReadU32(f[1], &b.registration_id) || !ReadU32(f[2], &b.device_id) ||
      !ReadFixedBin(f[3], &b.identity_key) || !ReadU32(f[4], &b.signed_pre_key.id) ||
      !ReadFixedBin(f[5], &b.signed_pre_key.public_key) || !ReadFixedBin(f[6], &b.signed_pre_key.signature)) {
    return Error(StatusCode::kMalformed, "pre-key bundle field has wrong type or size");
  }
  if (f[7].type == msgpack::type::NIL && f[8].type == msgpack::type::NIL) return b;
  OneTimePreKeyPublic otpk;
  if (!ReadU32(f[7], &otpk.id) || !ReadFixedBin(f[8], &otpk.public_key)) {
    return Error(StatusCode::kMalformed, "pre-key bundle one-time pre-key is malformed");
  }
  b.one_time_pre_key = otpk;
  return b;
}

}  // namespace cw::wire
