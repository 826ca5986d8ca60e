// RelayBlobChannel: the BlobChannel that stores attachments at a Cipherward relay, through the relay
// commands CreateAttachment, PutAttachmentChunk and GetAttachmentChunk (relay/protocol.h).
//
// It owns no link: `call` sends one command over whatever link the owner keeps (the Client's) and returns
// the relay's response, or kUnavailable when the link is down or dropped while waiting.
// Thread rules: as safe as `call`; the Client's call blocks, so use it from a thread that may block.
#pragma once

#include <functional>

#include "core/runtime/attachment.h"
#include "relay/protocol.h"

namespace cw::runtime {

class RelayBlobChannel final : public BlobChannel {
 public:
  using Call = std::function<Result<relay::Response>(relay::CommandBody)>;
  explicit RelayBlobChannel(Call call) : call_(std::move(call)) {}

  Result<wire::BlobId> Create(uint64_t size) override;
  Result<uint64_t> Put(const wire::BlobId& id, uint64_t offset, ByteView piece) override;
  Result<Read> Get(const wire::BlobId& id, uint64_t offset, uint32_t max_len) override;

 private:
  Call call_;
};

}  // namespace cw::runtime
