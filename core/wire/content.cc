#include "core/wire/content.h"

#include <cstring>

#include "core/wire/msgpack_util.h"
#include "core/wire/padding.h"

namespace cw::wire {

namespace {
constexpr uint8_t kContentFields = 6;          // version 1
constexpr uint8_t kContentFieldsWithKeys = 7;  // version 2
}  // namespace

bool IsValidName(std::string_view name) {
  return !name.empty() && name.size() <= kMaxNameSize && name.find('\0') == std::string_view::npos;
}

Result<SecretBytes> EncodeContent(const Content& c) {
  if (c.group_id.size() > kMaxGroupIdSize || c.members.size() > kMaxGroupMembers) {
    return Error(StatusCode::kInvalidArgument, "group id or member list too large");
  }
  if (!c.member_keys.empty() && c.member_keys.size() != c.members.size()) {
    return Error(StatusCode::kInvalidArgument, "member keys do not match the member list");
  }
  internal::SecretSink sink;
  msgpack::packer<internal::SecretSink> pk(sink);
  const bool with_keys = !c.member_keys.empty();
  pk.pack_array(with_keys ? kContentFieldsWithKeys : kContentFields);
  pk.pack(with_keys ? kContentVersionWithKeys : kContentVersion);
  pk.pack(static_cast<uint8_t>(c.kind));
  pk.pack(c.group_id);
  auto body = c.body.reveal();
  pk.pack_bin(static_cast<uint32_t>(body.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(body.data()), static_cast<uint32_t>(body.size()));
  pk.pack_array(static_cast<uint32_t>(c.members.size()));
  for (const auto& m : c.members) pk.pack(m);
  pk.pack(c.epoch);
  if (!with_keys) return sink.Take();
  pk.pack_array(static_cast<uint32_t>(c.member_keys.size()));
  for (const auto& key : c.member_keys) {
    if (!key) {
      pk.pack_nil();
      continue;
    }
    pk.pack_bin(static_cast<uint32_t>(key->size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(key->data()), static_cast<uint32_t>(key->size()));
  }
  return sink.Take();
}

Result<Content> DecodeContent(std::span<const uint8_t> bytes) {
  // The root must be a fixarray of six or seven fields before msgpack allocates anything: the member list
  // needs an array limit of 256, which the root must not get.
  if (bytes.empty() || (bytes[0] != (0x90 | kContentFields) && bytes[0] != (0x90 | kContentFieldsWithKeys))) {
    if (!bytes.empty() && (bytes[0] & 0xf0) == 0x90 && bytes.size() > 2 && bytes[1] != kContentVersion &&
        bytes[1] != kContentVersionWithKeys) {
      return Error(StatusCode::kUnsupportedVersion, "unknown content version");
    }
    return Error(StatusCode::kMalformed, "content is not a 6- or 7-element array");
  }
  internal::Limits limits;
  limits.array = kMaxGroupMembers;
  limits.str = kMaxNameSize;
  limits.bin = kMaxPlaintextSize;
  limits.depth = 2;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return Error(StatusCode::kMalformed, "content is not valid msgpack");
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 1) {
    return Error(StatusCode::kMalformed, "content is not an array");
  }
  const msgpack::object* f = root.via.array.ptr;
  if (f[0].type != msgpack::type::POSITIVE_INTEGER) return Error(StatusCode::kMalformed, "content version missing");
  if (f[0].via.u64 != kContentVersion && f[0].via.u64 != kContentVersionWithKeys) {
    return Error(StatusCode::kUnsupportedVersion, "unknown content version");
  }
  const bool has_keys = f[0].via.u64 == kContentVersionWithKeys;
  if (root.via.array.size != (has_keys ? kContentFieldsWithKeys : kContentFields)) {
    return Error(StatusCode::kMalformed, "content has wrong field count");
  }
  if (f[1].type != msgpack::type::POSITIVE_INTEGER || f[1].via.u64 < 1 || f[1].via.u64 > 3) {
    return Error(StatusCode::kMalformed, "unknown content kind");
  }
  if (f[2].type != msgpack::type::STR || f[2].via.str.size > kMaxGroupIdSize || f[3].type != msgpack::type::BIN ||
      f[4].type != msgpack::type::ARRAY || f[5].type != msgpack::type::POSITIVE_INTEGER) {
    return Error(StatusCode::kMalformed, "content field has wrong type or size");
  }
  Content c;
  c.kind = static_cast<ContentKind>(f[1].via.u64);
  c.group_id.assign(f[2].via.str.ptr, f[2].via.str.size);
  c.body = SecretBytes(reinterpret_cast<const uint8_t*>(f[3].via.bin.ptr), f[3].via.bin.size);
  c.epoch = f[5].via.u64;
  const msgpack::object_array& members = f[4].via.array;
  c.members.reserve(members.size);
  for (uint32_t i = 0; i < members.size; ++i) {
    const msgpack::object& m = members.ptr[i];
    if (m.type != msgpack::type::STR) return Error(StatusCode::kMalformed, "group member is not a string");
    std::string name(m.via.str.ptr, m.via.str.size);
    if (!IsValidName(name)) return Error(StatusCode::kMalformed, "group member name is invalid");
    c.members.push_back(std::move(name));
  }
  if (has_keys) {
    if (f[6].type != msgpack::type::ARRAY) return Error(StatusCode::kMalformed, "member keys are not a list");
    const msgpack::object_array& keys = f[6].via.array;
    if (keys.size != members.size || keys.size == 0) {
      return Error(StatusCode::kMalformed, "member keys do not match the member list");
    }
    c.member_keys.reserve(keys.size);
    for (uint32_t i = 0; i < keys.size; ++i) {
      const msgpack::object& k = keys.ptr[i];
      if (k.type == msgpack::type::NIL) {
        c.member_keys.emplace_back();
        continue;
      }
      if (k.type != msgpack::type::BIN || k.via.bin.size != kPublicKeySize) {
        return Error(StatusCode::kMalformed, "member key is malformed");
      }
      PublicKey key;
      std::memcpy(key.data(), k.via.bin.ptr, key.size());
      c.member_keys.push_back(key);
    }
    if (c.kind != ContentKind::kGroupMembers && !c.member_keys.empty()) {
      return Error(StatusCode::kMalformed, "member keys outside a membership");
    }
  }
  if (c.kind != ContentKind::kMessage && c.group_id.empty()) {
    return Error(StatusCode::kMalformed, "group content without a group id");
  }
  return c;
}

}  // namespace cw::wire
