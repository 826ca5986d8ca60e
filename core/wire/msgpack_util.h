// Shared helpers for the msgpack parsers in wire/: bounded unpacking and a packer sink that wipes.
// Internal to cw_wire.
#pragma once

#include <msgpack.hpp>

#include <optional>
#include <span>

#include "core/base/secret.h"

namespace cw::wire::internal {

// The bounds every parser passes to msgpack (the library defaults are 4 G of everything).
struct Limits {
  size_t array = 16;
  size_t map = 0;
  size_t str = 256;
  size_t bin = 64 * 1024;
  size_t depth = 3;
};

// Unpacks exactly one object that must fill `bytes` completely, referencing (not copying) strings and
// binaries from `bytes`, which must outlive the handle. Returns nullopt on any malformation.
std::optional<msgpack::object_handle> UnpackOne(std::span<const uint8_t> bytes, const Limits& limits);

// A msgpack write sink whose growth never leaves unwiped copies (for plaintext).
class SecretSink {
 public:
  void write(const char* data, size_t size) {
    bytes_.Append(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data), size));
  }
  SecretBytes Take() { return std::move(bytes_); }

 private:
  SecretBytes bytes_;
};

}  // namespace cw::wire::internal
