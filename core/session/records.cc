#include "core/session/records.h"

#include <algorithm>
#include <cstring>

#include "core/wire/content.h"
#include "core/wire/msgpack_util.h"

namespace cw::session::internal {

std::string BigEndian32(uint32_t v) {
  std::string s(4, '\0');
  s[0] = static_cast<char>(v >> 24);
  s[1] = static_cast<char>(v >> 16);
  s[2] = static_cast<char>(v >> 8);
  s[3] = static_cast<char>(v);
  return s;
}

uint32_t ReadBigEndian32(std::span<const uint8_t> b) {
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | uint32_t{b[3]};
}

std::string BigEndian64(uint64_t v) {
  return BigEndian32(static_cast<uint32_t>(v >> 32)) + BigEndian32(static_cast<uint32_t>(v));
}

uint64_t ReadBigEndian64(std::span<const uint8_t> b) {
  return uint64_t{ReadBigEndian32(b.first(4))} << 32 | ReadBigEndian32(b.subspan(4, 4));
}

// NUL separates the parts: names and group ids never contain one (IsValidName, IsValidGroupId).
std::string SessionKey(std::string_view name, uint32_t device_id) {
  std::string k(name);
  k.push_back('\0');
  k += BigEndian32(device_id);
  return k;
}

std::string SenderKeyKey(std::string_view group_id, std::string_view name, uint32_t device_id) {
  std::string k(group_id);
  k.push_back('\0');
  k += SessionKey(name, device_id);
  return k;
}

bool IsValidGroupId(std::string_view group_id) {
  return !group_id.empty() && group_id.size() <= wire::kMaxGroupIdSize &&
         group_id.find('\0') == std::string_view::npos;
}

namespace {
constexpr uint8_t kRecordVersion = 1;

void PackBin(msgpack::packer<wire::internal::SecretSink>& pk, std::span<const uint8_t> v) {
  pk.pack_bin(static_cast<uint32_t>(v.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(v.data()), static_cast<uint32_t>(v.size()));
}

bool ReadKey(const msgpack::object& o, wire::PublicKey* out) {
  if (o.type != msgpack::type::BIN || o.via.bin.size != out->size()) return false;
  std::memcpy(out->data(), o.via.bin.ptr, out->size());
  return true;
}
}  // namespace

SecretBytes EncodeContact(const ContactRecord& c) {
  wire::internal::SecretSink sink;
  msgpack::packer<wire::internal::SecretSink> pk(sink);
  // [version, state, identity key, pending key or nil, [rejected keys], verified before the change]. The
  // last two came later: a record of four fields has neither.
  pk.pack_array(6);
  pk.pack(kRecordVersion);
  pk.pack(static_cast<uint8_t>(c.state));
  PackBin(pk, c.identity_key);
  if (c.pending_identity_key) {
    PackBin(pk, *c.pending_identity_key);
  } else {
    pk.pack_nil();
  }
  pk.pack_array(static_cast<uint32_t>(c.rejected_identity_keys.size()));
  for (const auto& key : c.rejected_identity_keys) PackBin(pk, key);
  pk.pack(c.verified_before_change);
  return sink.Take();
}

Result<ContactRecord> DecodeContact(std::span<const uint8_t> bytes) {
  wire::internal::Limits limits;
  limits.array = std::max<size_t>(6, kMaxRejectedKeys);
  limits.bin = wire::kPublicKeySize;
  limits.depth = 2;
  auto h = wire::internal::UnpackOne(bytes, limits);
  if (!h) return Error(StatusCode::kMalformed, "contact record is not valid msgpack");
  const msgpack::object& root = h->get();
  if (root.type != msgpack::type::ARRAY || (root.via.array.size != 4 && root.via.array.size != 6)) {
    return Error(StatusCode::kMalformed, "contact record has wrong shape");
  }
  const msgpack::object* f = root.via.array.ptr;
  if (f[0].type != msgpack::type::POSITIVE_INTEGER || f[0].via.u64 != kRecordVersion) {
    return Error(StatusCode::kUnsupportedVersion, "contact record version");
  }
  ContactRecord c;
  if (f[1].type != msgpack::type::POSITIVE_INTEGER || f[1].via.u64 > static_cast<uint64_t>(TrustState::kChanged) ||
      !ReadKey(f[2], &c.identity_key)) {
    return Error(StatusCode::kMalformed, "contact record field is malformed");
  }
  c.state = static_cast<TrustState>(f[1].via.u64);
  if (f[3].type != msgpack::type::NIL) {
    wire::PublicKey pending;
    if (!ReadKey(f[3], &pending)) return Error(StatusCode::kMalformed, "contact record pending key is malformed");
    c.pending_identity_key = pending;
  }
  if (root.via.array.size == 6) {
    if (f[4].type != msgpack::type::ARRAY || f[4].via.array.size > kMaxRejectedKeys) {
      return Error(StatusCode::kMalformed, "contact record rejected keys are malformed");
    }
    for (uint32_t i = 0; i < f[4].via.array.size; ++i) {
      wire::PublicKey rejected;
      if (!ReadKey(f[4].via.array.ptr[i], &rejected)) {
        return Error(StatusCode::kMalformed, "contact record rejected key is malformed");
      }
      c.rejected_identity_keys.push_back(rejected);
    }
    if (f[5].type != msgpack::type::BOOLEAN)
      return Error(StatusCode::kMalformed, "contact record field is malformed");
    c.verified_before_change = f[5].via.boolean;
  }
  if ((c.state == TrustState::kChanged) != c.pending_identity_key.has_value() ||
      (c.verified_before_change && c.state != TrustState::kChanged)) {
    return Error(StatusCode::kMalformed, "contact record state is inconsistent");
  }
  return c;
}

std::optional<wire::PublicKey> GroupRecord::KeyOf(std::string_view member) const {
  for (size_t i = 0; i < members.size() && i < keys.size(); ++i) {
    if (members[i] == member) return keys[i];
  }
  return std::nullopt;
}

SecretBytes EncodeGroup(const GroupRecord& g) {
  wire::internal::SecretSink sink;
  msgpack::packer<wire::internal::SecretSink> pk(sink);
  // [version, admin, epoch, [members], [member keys: bin or nil]]. The keys came later: a record of four
  // fields has none.
  pk.pack_array(5);
  pk.pack(kRecordVersion);
  pk.pack(g.admin);
  pk.pack(g.epoch);
  pk.pack_array(static_cast<uint32_t>(g.members.size()));
  for (const auto& m : g.members) pk.pack(m);
  pk.pack_array(static_cast<uint32_t>(g.members.size()));
  for (size_t i = 0; i < g.members.size(); ++i) {
    if (i < g.keys.size() && g.keys[i]) {
      PackBin(pk, *g.keys[i]);
    } else {
      pk.pack_nil();
    }
  }
  return sink.Take();
}

Result<GroupRecord> DecodeGroup(std::span<const uint8_t> bytes) {
  wire::internal::Limits limits;
  limits.array = wire::kMaxGroupMembers;
  limits.str = wire::kMaxNameSize;
  limits.bin = wire::kPublicKeySize;
  limits.depth = 2;
  auto h = wire::internal::UnpackOne(bytes, limits);
  if (!h) return Error(StatusCode::kMalformed, "group record is not valid msgpack");
  const msgpack::object& root = h->get();
  if (root.type != msgpack::type::ARRAY || (root.via.array.size != 4 && root.via.array.size != 5)) {
    return Error(StatusCode::kMalformed, "group record has wrong shape");
  }
  const msgpack::object* f = root.via.array.ptr;
  if (f[0].type != msgpack::type::POSITIVE_INTEGER || f[0].via.u64 != kRecordVersion ||
      f[1].type != msgpack::type::STR || f[2].type != msgpack::type::POSITIVE_INTEGER ||
      f[3].type != msgpack::type::ARRAY) {
    return Error(StatusCode::kMalformed, "group record has wrong shape");
  }
  GroupRecord g;
  g.admin.assign(f[1].via.str.ptr, f[1].via.str.size);
  g.epoch = f[2].via.u64;
  const auto& arr = f[3].via.array;
  for (uint32_t i = 0; i < arr.size; ++i) {
    if (arr.ptr[i].type != msgpack::type::STR) return Error(StatusCode::kMalformed, "group member is not a string");
    g.members.emplace_back(arr.ptr[i].via.str.ptr, arr.ptr[i].via.str.size);
    if (!wire::IsValidName(g.members.back())) return Error(StatusCode::kMalformed, "group member name is invalid");
  }
  g.keys.resize(g.members.size());
  if (root.via.array.size == 5) {
    if (f[4].type != msgpack::type::ARRAY || f[4].via.array.size != arr.size) {
      return Error(StatusCode::kMalformed, "group record keys do not match its members");
    }
    for (uint32_t i = 0; i < arr.size; ++i) {
      const msgpack::object& k = f[4].via.array.ptr[i];
      if (k.type == msgpack::type::NIL) continue;
      wire::PublicKey key;
      if (!ReadKey(k, &key)) return Error(StatusCode::kMalformed, "group record key is malformed");
      g.keys[i] = key;
    }
  }
  if (!wire::IsValidName(g.admin)) return Error(StatusCode::kMalformed, "group admin name is invalid");
  return g;
}

}  // namespace cw::session::internal
