// Internal to cw_compliance: the canonical msgpack encoding every signed compliance record uses, and a
// bounded, strict reader for it.
//
// Canonical form: every record is a msgpack array with a fixed number of positional fields, written by the
// msgpack-cxx packer, which always picks the shortest encoding of an integer, string, binary or array header.
// A decoder accepts a record only if re-encoding what it read gives back exactly the input bytes, so each
// value has exactly one byte string, and a signature over the bytes is a signature over the value (no
// malleability: nobody can re-encode a signed receipt into different bytes that still verify).
#pragma once

#include <cstdint>
#include <msgpack.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/bytes.h"
#include "core/base/secret.h"
#include "core/base/status.h"

namespace cw::compliance::internal {

// msgpack output into memory that is wiped when freed, growth included: what is packed (a transcript in an
// export, a receipt's purposes) leaves no stale copy on the heap.
class WipedBuffer {
 public:
  void write(const char* p, size_t n) { data_.insert(data_.end(), p, p + n); }
  const char* data() const { return data_.data(); }
  size_t size() const { return data_.size(); }

 private:
  std::vector<char, WipingAllocator<char>> data_;
};

class Packer {
 public:
  Packer() : pk_(buf_) {}
  Packer& Array(uint32_t n) {
    pk_.pack_array(n);
    return *this;
  }
  Packer& Uint(uint64_t v) {
    pk_.pack_uint64(v);
    return *this;
  }
  Packer& Int(int64_t v) {
    pk_.pack_int64(v);
    return *this;
  }
  Packer& Bool(bool v) {
    if (v) {
      pk_.pack_true();
    } else {
      pk_.pack_false();
    }
    return *this;
  }
  Packer& Str(std::string_view s) {
    pk_.pack_str(static_cast<uint32_t>(s.size()));
    pk_.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
    return *this;
  }
  Packer& Bin(ByteView b) {
    pk_.pack_bin(static_cast<uint32_t>(b.size()));
    pk_.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
    return *this;
  }
  Bytes Take() const { return Bytes(buf_.data(), buf_.data() + buf_.size()); }
  SecretBytes TakeSecret() const {
    return SecretBytes(reinterpret_cast<const uint8_t*>(buf_.data()), buf_.size());
  }

 private:
  WipedBuffer buf_;
  msgpack::packer<WipedBuffer> pk_;
};

struct Limits {
  size_t array = 32;
  size_t str = 2048;
  size_t bin = 256;
  size_t depth = 4;
};

// Exactly one object filling `bytes`, strings and binaries referenced from `bytes` (which must outlive the
// handle); nullopt on anything malformed, over a limit, or with trailing bytes. Maps and ext types are
// refused by their limits (0).
std::optional<msgpack::object_handle> UnpackOne(ByteView bytes, const Limits& limits);

// Positional reader over one msgpack array. Every accessor checks type and bound; the first failure sticks,
// so a decoder reads all fields and checks ok() once.
class Fields {
 public:
  // Fails unless `o` is an array of exactly `count` elements.
  Fields(const msgpack::object& o, uint32_t count);
  bool ok() const { return ok_; }

  Fields& Uint(uint64_t* out);
  Fields& Int(int64_t* out);
  Fields& Bool(bool* out);
  Fields& Str(std::string* out, size_t max_size);
  Fields& Bin(Bytes* out, size_t max_size);
  // An array of at most max_count elements; `out` points into the handle.
  Fields& Array(const msgpack::object_array** out, size_t max_count);
  Fields& Any(const msgpack::object** out);

 private:
  const msgpack::object* Next();
  const msgpack::object_array* array_ = nullptr;
  uint32_t next_ = 0;
  bool ok_ = false;
};

// Reads the leading version field of a record: kMalformed unless `bytes` starts with a fixarray header and
// a positive fixint; kUnsupportedVersion unless the version is `expected`. Runs before any allocation.
Status CheckHeader(ByteView bytes, uint8_t expected_version, const char* what);

}  // namespace cw::compliance::internal
