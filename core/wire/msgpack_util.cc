#include "core/wire/msgpack_util.h"

namespace cw::wire::internal {

namespace {
// Reference string/bin payloads in the input rather than copying them into the zone: fewer copies of
// plaintext, and nothing left in zone memory that is not wiped.
bool ReferenceAll(msgpack::type::object_type, size_t, void*) { return true; }
}  // namespace

std::optional<msgpack::object_handle> UnpackOne(std::span<const uint8_t> bytes, const Limits& limits) {
  if (bytes.empty()) return std::nullopt;
  try {
    size_t offset = 0;
    msgpack::unpack_limit limit(limits.array, limits.map, limits.str, limits.bin, /*ext=*/0, limits.depth);
    msgpack::object_handle handle = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size(),
                                                    offset, ReferenceAll, nullptr, limit);
    if (offset != bytes.size()) return std::nullopt;  // trailing bytes: not exactly one object
    return handle;
  } catch (...) {
    // msgpack reports malformed, truncated and over-limit input by throwing; all of it is just "malformed".
    return std::nullopt;
  }
}

}  // namespace cw::wire::internal
