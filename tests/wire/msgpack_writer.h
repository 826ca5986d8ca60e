// A minimal msgpack writer for tests: builds hostile and hand-shaped inputs byte by byte, independently of
// the msgpack-cxx packer the code under test uses (so an encoder bug cannot hide a decoder bug).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "core/base/bytes.h"

namespace cw::wire::testing {

class MsgpackWriter {
 public:
  MsgpackWriter& Array(uint32_t n) {
    if (n < 16) {
      out_.push_back(static_cast<uint8_t>(0x90 | n));
    } else if (n <= 0xffff) {
      out_.push_back(0xdc);
      Be(n, 2);
    } else {
      out_.push_back(0xdd);
      Be(n, 4);
    }
    return *this;
  }
  MsgpackWriter& Uint(uint64_t v) {
    if (v < 128) {
      out_.push_back(static_cast<uint8_t>(v));
    } else if (v <= 0xff) {
      out_.push_back(0xcc);
      Be(v, 1);
    } else if (v <= 0xffff) {
      out_.push_back(0xcd);
      Be(v, 2);
    } else if (v <= 0xffffffffULL) {
      out_.push_back(0xce);
      Be(v, 4);
    } else {
      out_.push_back(0xcf);
      Be(v, 8);
    }
    return *this;
  }
  MsgpackWriter& NegativeFixint(int8_t v) {  // -32..-1
    out_.push_back(static_cast<uint8_t>(v));
    return *this;
  }
  MsgpackWriter& Nil() {
    out_.push_back(0xc0);
    return *this;
  }
  MsgpackWriter& Bin(std::span<const uint8_t> b) {
    if (b.size() <= 0xff) {
      out_.push_back(0xc4);
      Be(b.size(), 1);
    } else if (b.size() <= 0xffff) {
      out_.push_back(0xc5);
      Be(b.size(), 2);
    } else {
      out_.push_back(0xc6);
      Be(b.size(), 4);
    }
    out_.insert(out_.end(), b.begin(), b.end());
    return *this;
  }
  MsgpackWriter& Bin(size_t size, uint8_t fill) {
    Bytes b(size, fill);
    return Bin(b);
  }
  MsgpackWriter& Str(std::string_view s) {
    if (s.size() < 32) {
      out_.push_back(static_cast<uint8_t>(0xa0 | s.size()));
    } else if (s.size() <= 0xff) {
      out_.push_back(0xd9);
      Be(s.size(), 1);
    } else {
      out_.push_back(0xda);
      Be(s.size(), 2);
    }
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  MsgpackWriter& Raw(std::span<const uint8_t> b) {
    out_.insert(out_.end(), b.begin(), b.end());
    return *this;
  }
  const Bytes& bytes() const { return out_; }

 private:
  void Be(uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  Bytes out_;
};

}  // namespace cw::wire::testing
