// RelayBlobChannel: the BlobChannel that stores attachments at a Cipherward relay, through the relay
// commands CreateAttachment, PutAttachmentChunk and GetAttachmentChunk (relay/protocol.h).
//
// It owns no link: `call` hands one command to whatever link the owner keeps (the Client's) and later runs
// `done` once with the relay's response, or kUnavailable when the link is down or drops. PutMany and
// GetMany keep up to `window` commands in flight, which is what lets the relay's group commit sync many
// pieces at once. The relay runs commands on a worker pool, so a piece can overtake the one before it and be
// refused as "does not continue the upload"; such a piece is sent again once every piece before it is stored.
//
// Thread rules: the methods block the calling thread until the relay answered (or nothing came back for
// `timeout_ms`: kUnavailable); call them from a thread other than the one that runs `done`. `call` must be
// safe from the calling thread and `done` may run on any thread.
#pragma once

#include <functional>

#include "core/runtime/attachment.h"
#include "relay/protocol.h"

namespace cw::runtime {

// At most 8 pieces of up to 64 KiB in flight: half the transport's 1 MiB send high-water mark, on our side
// for the commands and on the relay's for its answers (a relay cuts off a client whose answers pile up past
// it).
inline constexpr size_t kRelayPiecesInFlight = 8;

class RelayBlobChannel final : public BlobChannel {
 public:
  using Done = std::function<void(Result<relay::Response>)>;
  using Call = std::function<void(relay::CommandBody, Done)>;
  RelayBlobChannel(Call call, int64_t timeout_ms, size_t window = kRelayPiecesInFlight)
      : call_(std::move(call)), timeout_ms_(timeout_ms), window_(window) {}

  Result<wire::BlobId> Create(uint64_t size) override;
  Result<uint64_t> Put(const wire::BlobId& id, uint64_t offset, ByteView piece) override;
  Result<Read> Get(const wire::BlobId& id, uint64_t offset, uint32_t max_len) override;
  Result<uint64_t> PutMany(const wire::BlobId& id, uint64_t offset, std::span<const Bytes> pieces) override;
  Result<std::vector<Read>> GetMany(const wire::BlobId& id, uint64_t offset,
                                    std::span<const uint32_t> lengths) override;

 private:
  Call call_;
  int64_t timeout_ms_;
  size_t window_;
};

}  // namespace cw::runtime
