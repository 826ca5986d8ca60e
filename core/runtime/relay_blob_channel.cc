#include "core/runtime/relay_blob_channel.h"

namespace cw::runtime {

namespace {

static_assert(wire::kBlobIdSize == relay::kAttachmentIdSize);
static_assert(wire::kRelayChunkSize == relay::kMaxAttachmentChunk);

// The relay's answer as a Status. Busy and rate-limited count as unavailable: the transfer waits and retries.
Status FromRelay(const relay::Response& r) {
  using RC = relay::ResponseCode;
  const std::string msg = "relay: " + std::string(relay::ResponseCodeName(r.code));
  switch (r.code) {
    case RC::kOk: return Status::Ok();
    case RC::kNotFound: return Status(StatusCode::kNotFound, msg);
    case RC::kInvalidRequest: return Status(StatusCode::kInvalidArgument, msg);
    case RC::kTooLarge: return Status(StatusCode::kResourceExhausted, msg);
    case RC::kRateLimited:
    case RC::kUnavailable: return Status(StatusCode::kUnavailable, msg);
    default: return Status(StatusCode::kInternal, msg);
  }
}

template <typename T>
Result<T> Answer(Result<relay::Response> r) {
  if (!r) return Error(r.error());
  CW_RETURN_IF_ERROR(FromRelay(*r));
  if (T* body = std::get_if<T>(&r->body)) return std::move(*body);
  return Error(StatusCode::kMalformed, "relay answered with an unexpected body");
}

}  // namespace

Result<wire::BlobId> RelayBlobChannel::Create(uint64_t size) {
  CW_ASSIGN_OR_RETURN(auto created, Answer<relay::AttachmentCreated>(call_(relay::CreateAttachment{size})));
  return created.id;
}

Result<uint64_t> RelayBlobChannel::Put(const wire::BlobId& id, uint64_t offset, ByteView piece) {
  relay::PutAttachmentChunk put;
  put.id = id;
  put.offset = offset;
  put.chunk.assign(piece.begin(), piece.end());
  CW_ASSIGN_OR_RETURN(auto stored, Answer<relay::ChunkStored>(call_(std::move(put))));
  return stored.written;
}

Result<BlobChannel::Read> RelayBlobChannel::Get(const wire::BlobId& id, uint64_t offset, uint32_t max_len) {
  relay::GetAttachmentChunk get;
  get.id = id;
  get.offset = offset;
  get.max_len = max_len;
  CW_ASSIGN_OR_RETURN(auto data, Answer<relay::ChunkData>(call_(get)));
  return Read{data.total_size, std::move(data.data)};
}

}  // namespace cw::runtime
