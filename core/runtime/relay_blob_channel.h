// RelayBlobChannel: the BlobChannel that stores attachments at a Cipherward relay, through the relay
// commands CreateAttachment, PutAttachmentChunk and GetAttachmentChunk (relay/protocol.h).
//
// It owns no link: `call` hands one command to whatever link the owner keeps (the Client's) and later runs
// `done` once with the relay's response, or kUnavailable when the link is down or drops. PutMany and
// GetMany keep several commands in flight, which is what lets the relay's group commit sync many pieces at
// once. An older relay, which ran chunks on its worker pool, can let a piece overtake the one before it and
// refuse it as "does not continue the upload"; such a piece is sent again once every piece before it is
// stored.
//
// Thread rules: the methods block the calling thread until the relay answered (or nothing came back for
// `timeout_ms`: kUnavailable); call them from a thread other than the one that runs `done`. `call` must be
// safe from the calling thread and `done` may run on any thread.
#pragma once

#include <functional>

#include "core/runtime/attachment.h"
#include "relay/protocol.h"

namespace cw::runtime {

// Downloads keep at most 8 pieces of up to 64 KiB in flight: half the relay's 1 MiB send high-water mark,
// past which a relay cuts off a client whose answers pile up. Uploads keep a whole batch (32, 2 MiB) in
// flight: their answers are small, and every piece is answered only once synced, so more in flight is what
// hides the relay's sync (16 to 32 took uploads from about 250 to 300 MB/s through a loopback relay; 64 in
// batches of 64 gained nothing more: cw_attachment_bench). StartPutMany sends the whole batch at once, so an
// upload's next batch goes out behind it while it waits for its answers (about 355 to 445 MB/s). When the
// link is slow and our own send queue fills, the Client holds the commands until it drains.
inline constexpr size_t kRelayPiecesInFlight = 8;
inline constexpr size_t kRelayPutsInFlight = 32;

class RelayBlobChannel final : public BlobChannel {
 public:
  using Done = std::function<void(Result<relay::Response>)>;
  using Call = std::function<void(relay::CommandBody, Done)>;
  RelayBlobChannel(Call call, int64_t timeout_ms, size_t get_window = kRelayPiecesInFlight,
                   size_t put_window = kRelayPutsInFlight)
      : call_(std::move(call)), timeout_ms_(timeout_ms), get_window_(get_window), put_window_(put_window) {}

  Result<wire::BlobId> Create(uint64_t size) override;
  Result<uint64_t> Put(const wire::BlobId& id, uint64_t offset, ByteView piece) override;
  Result<Read> Get(const wire::BlobId& id, uint64_t offset, uint32_t max_len) override;
  Result<uint64_t> PutMany(const wire::BlobId& id, uint64_t offset, std::span<const Bytes> pieces) override;
  std::unique_ptr<PendingPut> StartPutMany(const wire::BlobId& id, uint64_t offset,
                                           std::span<const Bytes> pieces) override;
  Result<std::vector<Read>> GetMany(const wire::BlobId& id, uint64_t offset,
                                    std::span<const uint32_t> lengths) override;

 private:
  std::unique_ptr<PendingPut> SendPieces(const wire::BlobId& id, uint64_t offset,
                                         std::span<const Bytes> pieces);
  Call call_;
  int64_t timeout_ms_;
  size_t get_window_;
  size_t put_window_;
};

}  // namespace cw::runtime
