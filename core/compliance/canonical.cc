#include "core/compliance/canonical.h"

namespace cw::compliance::internal {

namespace {
bool ReferenceAll(msgpack::type::object_type, size_t, void*) { return true; }
}  // namespace

std::optional<msgpack::object_handle> UnpackOne(ByteView bytes, const Limits& limits) {
  if (bytes.empty()) return std::nullopt;
  try {
    size_t offset = 0;
    msgpack::unpack_limit limit(limits.array, /*map=*/0, limits.str, limits.bin, /*ext=*/0, limits.depth);
    msgpack::object_handle handle = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size(),
                                                    offset, ReferenceAll, nullptr, limit);
    if (offset != bytes.size()) return std::nullopt;
    return handle;
  } catch (...) {
    // msgpack reports malformed, truncated and over-limit input by throwing: all of it is "malformed".
    return std::nullopt;
  }
}

Fields::Fields(const msgpack::object& o, uint32_t count) {
  if (o.type == msgpack::type::ARRAY && o.via.array.size == count) {
    array_ = &o.via.array;
    ok_ = true;
  }
}

const msgpack::object* Fields::Next() {
  if (!ok_ || next_ >= array_->size) {
    ok_ = false;
    return nullptr;
  }
  return &array_->ptr[next_++];
}

Fields& Fields::Uint(uint64_t* out) {
  const msgpack::object* o = Next();
  if (o == nullptr || o->type != msgpack::type::POSITIVE_INTEGER) {
    ok_ = false;
  } else {
    *out = o->via.u64;
  }
  return *this;
}

Fields& Fields::Int(int64_t* out) {
  const msgpack::object* o = Next();
  if (o == nullptr) return *this;
  if (o->type == msgpack::type::NEGATIVE_INTEGER) {
    *out = o->via.i64;
  } else if (o->type == msgpack::type::POSITIVE_INTEGER && o->via.u64 <= static_cast<uint64_t>(INT64_MAX)) {
    *out = static_cast<int64_t>(o->via.u64);
  } else {
    ok_ = false;
  }
  return *this;
}

Fields& Fields::Bool(bool* out) {
  const msgpack::object* o = Next();
  if (o == nullptr || o->type != msgpack::type::BOOLEAN) {
    ok_ = false;
  } else {
    *out = o->via.boolean;
  }
  return *this;
}

Fields& Fields::Str(std::string* out, size_t max_size) {
  const msgpack::object* o = Next();
  if (o == nullptr || o->type != msgpack::type::STR || o->via.str.size > max_size) {
    ok_ = false;
  } else {
    out->assign(o->via.str.ptr, o->via.str.size);
  }
  return *this;
}

Fields& Fields::Bin(Bytes* out, size_t max_size) {
  const msgpack::object* o = Next();
  if (o == nullptr || o->type != msgpack::type::BIN || o->via.bin.size > max_size) {
    ok_ = false;
  } else {
    const auto* p = reinterpret_cast<const uint8_t*>(o->via.bin.ptr);
    out->assign(p, p + o->via.bin.size);
  }
  return *this;
}

Fields& Fields::Array(const msgpack::object_array** out, size_t max_count) {
  const msgpack::object* o = Next();
  if (o == nullptr || o->type != msgpack::type::ARRAY || o->via.array.size > max_count) {
    ok_ = false;
  } else {
    *out = &o->via.array;
  }
  return *this;
}

Fields& Fields::Any(const msgpack::object** out) {
  const msgpack::object* o = Next();
  if (o != nullptr) *out = o;
  return *this;
}

Status CheckHeader(ByteView bytes, uint8_t expected_version, const char* what) {
  // Every record is a fixarray (at most 15 fields) whose first element is its version as a positive fixint.
  if (bytes.size() < 2 || (bytes[0] & 0xf0) != 0x90 || bytes[1] > 0x7f) {
    return Status(StatusCode::kMalformed, std::string(what) + " is not a versioned record");
  }
  if (bytes[1] != expected_version) {
    return Status(StatusCode::kUnsupportedVersion, std::string(what) + " has an unknown version");
  }
  return Status::Ok();
}

}  // namespace cw::compliance::internal
