// Direct P2P wire formats (issues #4 and #5): what two clients exchange to talk over a direct Noise link
// instead of through the relay. Both parse bytes a peer controls, so both decoders take untrusted input.
//
// DirectEndpoint: the payload of a kDirectEndpoint AppMessage (core/wire/app_message.h). A client tells a
// contact, inside their end-to-end Signal session, its transport link public key (the Noise static key it
// proves on every link) and, when it listens, where. Because it travels inside the authenticated session, the
// link key is bound to the contact's identity key: that is what lets the receiver pin it.
//   [1, link key (bin, 32), host (str, 0..kMaxDirectHostSize), port (uint 0..65535)]
// host is empty exactly when port is 0 (the sender does not listen); a host holds only letters, digits,
// '.', '-' and ':' (a DNS name, an IPv4 or a bare IPv6 address).
//
// DirectFrame: one frame on a direct link (each transport frame holds exactly one).
//   deliver  [1, 1, message id (bin, 16), envelope (bin, 1..kMaxDirectEnvelopeSize)]
//   ack      [1, 2, message id (bin, 16)]
// The envelope is byte for byte what would be deposited at the relay, and the message id is that deposit's
// id, so a message that arrives both ways is deduplicated by the receiver like a relay redelivery.
//
// Thread rules: free functions over values; safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "core/base/bytes.h"
#include "core/base/status.h"

namespace cw::wire {

inline constexpr uint8_t kDirectVersion = 1;
inline constexpr size_t kDirectKeySize = 32;        // X25519 (transport::kKeySize)
inline constexpr size_t kMaxDirectHostSize = 253;   // the longest DNS name
inline constexpr size_t kDirectMessageIdSize = 16;  // relay::kMessageIdSize
inline constexpr size_t kMaxDirectEnvelopeSize = 96 * 1024;  // relay::kMaxEnvelopeSize
// A whole encoded frame is at most this long (fits the transport's default 128 KiB frame).
inline constexpr size_t kMaxDirectFrameSize = kMaxDirectEnvelopeSize + 32;

using DirectLinkKey = std::array<uint8_t, kDirectKeySize>;
using DirectMessageId = std::array<uint8_t, kDirectMessageIdSize>;

struct DirectEndpoint {
  DirectLinkKey link_key{};
  std::string host;  // empty: the sender does not listen
  uint16_t port = 0;
  bool listens() const { return port != 0; }
  friend bool operator==(const DirectEndpoint&, const DirectEndpoint&) = default;
};

enum class DirectFrameType : uint8_t { kDeliver = 1, kAck = 2 };

struct DirectFrame {
  DirectFrameType type = DirectFrameType::kDeliver;
  DirectMessageId id{};
  Bytes envelope;  // kDeliver only; empty for kAck
  friend bool operator==(const DirectFrame&, const DirectFrame&) = default;
};

// kInvalidArgument for a host that breaks the rules above or a host without a port (or the reverse).
Result<Bytes> EncodeDirectEndpoint(const DirectEndpoint& endpoint);
// kMalformed for anything that is not exactly the encoding above; kUnsupportedVersion for another version.
Result<DirectEndpoint> DecodeDirectEndpoint(std::span<const uint8_t> bytes);

// kInvalidArgument for an unknown type, a deliver frame with no envelope or one over kMaxDirectEnvelopeSize,
// or an ack carrying an envelope.
Result<Bytes> EncodeDirectFrame(const DirectFrame& frame);
// kMalformed / kUnsupportedVersion as DecodeDirectEndpoint.
Result<DirectFrame> DecodeDirectFrame(std::span<const uint8_t> bytes);

}  // namespace cw::wire
