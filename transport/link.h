// NoiseLink: one side of a Cipherward link (wire format in transport/frame.h) as a state machine over bytes,
// with no I/O. TcpTransport drives one per connection; the fuzz targets and tests drive it directly.
//
//   link->Start(&out)                           initiator: the first handshake record
//   link->Feed(bytes_read)                      buffer what arrived
//   for (;;) { auto ev = link->Next(&out); ... } handshake records to write go to `out`; yields
//                                               kHandshakeComplete once, then each frame; kNeedMore
//   link->SealFrames(frame_stream, &out)        encrypt frames queued with AppendFrame
//
// Errors from Feed/Next/SealFrames mean the link must be closed; they are sticky. Thread rules: one thread.
#pragma once

#include <memory>
#include <optional>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/base/status.h"
#include "transport/frame.h"
#include "transport/noise.h"
#include "transport/transport.h"

namespace cw::transport {

class NoiseLink {
 public:
  struct Config {
    noise::Role role = noise::Role::kInitiator;
    const StaticKeyPair* local_static = nullptr;
    std::optional<PublicKey> remote_static;  // the pinned server key; initiator only
    ByteView prologue;
    size_t max_frame_size = kDefaultMaxFrameSize;
    Random* random = nullptr;  // ephemeral keys; must outlive the link
  };

  enum class EventKind { kNeedMore, kHandshakeComplete, kFrame };
  struct Event {
    EventKind kind = EventKind::kNeedMore;
    ByteView frame;  // kFrame: valid until the next call to Next or Feed
  };

  // Uses the XK pattern. kInvalidArgument if the initiator has no remote_static.
  static Result<std::unique_ptr<NoiseLink>> New(const Config& config);

  // Initiator: appends the first handshake record to *out. REQUIRES: initiator, called once, first.
  Status Start(Bytes* out);
  Status Feed(ByteView bytes);
  // Handshake records this side must send are appended to *out.
  Result<Event> Next(Bytes* out);
  // Encrypts a frame stream (AppendFrame output) into records appended to *out.
  // REQUIRES: handshake_complete().
  Status SealFrames(ByteView frame_stream, Bytes* out);

  bool handshake_complete() const { return ciphers_.has_value(); }
  // Messages of the handshake this side has sent so far (0..2).
  int handshake_messages_sent() const { return sent_; }
  // After the handshake, the authenticated peer key; before it, the pinned key (initiator) or nothing.
  const std::optional<PublicKey>& remote_static() const;
  // The Noise handshake hash h (channel binding; not secret). REQUIRES: handshake_complete().
  const std::array<uint8_t, noise::kHashLen>& handshake_hash() const { return ciphers_->handshake_hash; }
  // Bytes received and not yet consumed; nonzero at end of stream means the peer stopped mid-record.
  size_t buffered_bytes() const { return records_.buffered_bytes() + frames_.buffered_bytes(); }

 private:
  NoiseLink(std::unique_ptr<noise::HandshakeState> hs, size_t max_frame_size);
  Status Failed(Status s);

  std::unique_ptr<noise::HandshakeState> hs_;
  std::optional<noise::TransportCiphers> ciphers_;
  std::optional<PublicKey> remote_;
  FrameDecoder records_;
  FrameDecoder frames_;
  bool complete_reported_ = false;
  int sent_ = 0;
  Status error_;
};

}  // namespace cw::transport
