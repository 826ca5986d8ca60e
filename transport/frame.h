// Framing: every unit on a Cipherward link is a big-endian length followed by that many bytes.
//
// Wire format of a TCP link (both directions):
//   record  := len:uint16be  noise_message[len]          1 <= len <= 65535 (kNoiseMaxMessageSize)
//   The first records carry the Noise XK handshake messages (initiator, responder, initiator). Every later
//   record is a Noise transport message whose plaintext is the next piece of the frame stream:
//   stream  := frame*
//   frame   := len:uint32be  payload[len]                1 <= len <= max_frame_size
//
// Frame size. A frame may be larger than one Noise message (the default max is 128 KiB, a Noise message is at
// most 65535 bytes): the frame stream is cut into Noise messages of at most 65519 plaintext bytes without
// regard to frame boundaries, and several small frames share one Noise message (one encryption and one
// write per batch, which is what makes small frames cheap). The receiver decrypts records in order and
// feeds the plaintext to a FrameDecoder, which rejects an oversized or zero-length frame as soon as its
// header arrives: no more than max_frame_size bytes are ever buffered for one frame.
//
// Thread rules: FrameDecoder is a value type used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "core/base/bytes.h"
#include "core/base/status.h"
#include "transport/transport.h"

namespace cw::transport {

// Appends header + payload to *out. kInvalidArgument if payload is empty or longer than max_size (max_size
// must fit the header: at most 0xffff for a 2-byte header).
Status AppendFrame(ByteView payload, size_t max_size, Bytes* out, size_t header_size = kFrameHeaderSize);

// A streaming decoder: Append arbitrary chunks, then call Next until it yields nothing.
//   auto s = dec.Append(chunk); if (!s.ok()) close(s);
//   for (;;) { auto f = dec.Next(); if (!f) close(f.error()); if (!*f) break; deliver(**f); }
// Errors (kMalformed, sticky: every later call returns the same error):
//   "zero-length frame", "frame of N bytes exceeds the maximum of M".
class FrameDecoder {
 public:
  // REQUIRES: header_size is 2 or 4; 1 <= max_size, and max_size <= 0xffff when header_size is 2.
  explicit FrameDecoder(size_t max_size = kDefaultMaxFrameSize, size_t header_size = kFrameHeaderSize);

  // Buffers the chunk. Invalidates views returned by Next. Checks the header of the pending frame, so an
  // oversized length is reported here, before its payload arrives.
  Status Append(ByteView chunk);
  // The next whole frame (valid until the next Append), nullopt when more bytes are needed, or the error.
  Result<std::optional<ByteView>> Next();
  // The same frame, writable: the decoder never reads a returned frame again, so its owner may overwrite it
  // (a Noise link decrypts its records in place).
  Result<std::optional<std::span<uint8_t>>> NextMutable();

  // Bytes buffered and not yet returned as frames; nonzero at end of stream means a truncated frame.
  size_t buffered_bytes() const { return buffer_.size() - pos_; }
  size_t max_size() const { return max_size_; }

 private:
  Status CheckHeader();

  size_t max_size_;
  size_t header_size_;
  Bytes buffer_;
  size_t pos_ = 0;
  Status error_;
};

}  // namespace cw::transport
