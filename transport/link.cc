#include "transport/link.h"

#include <algorithm>

namespace cw::transport {

NoiseLink::NoiseLink(std::unique_ptr<noise::HandshakeState> hs, size_t max_frame_size)
    : hs_(std::move(hs)), records_(kNoiseMaxMessageSize, 2), frames_(max_frame_size, kFrameHeaderSize) {}

Result<std::unique_ptr<NoiseLink>> NoiseLink::New(const Config& config) {
  if (config.max_frame_size == 0 || config.max_frame_size > 0xffffffffu) {
    return Error(StatusCode::kInvalidArgument, "bad max_frame_size");
  }
  noise::HandshakeConfig hc;
  hc.pattern = noise::Pattern::kXK;
  hc.role = config.role;
  hc.prologue = config.prologue;
  hc.local_static = config.local_static;
  hc.remote_static = config.remote_static;
  hc.random = config.random;
  CW_ASSIGN_OR_RETURN(auto hs, noise::HandshakeState::New(hc));
  auto link = std::unique_ptr<NoiseLink>(new NoiseLink(std::move(hs), config.max_frame_size));
  link->remote_ = link->hs_->remote_static();
  return link;
}

Status NoiseLink::Failed(Status s) {
  if (error_.ok()) error_ = s;
  hs_.reset();
  ciphers_.reset();
  return error_;
}

const std::optional<PublicKey>& NoiseLink::remote_static() const { return remote_; }

namespace {
void AppendRecord(ByteView message, Bytes* out) {
  out->push_back(static_cast<uint8_t>(message.size() >> 8));
  out->push_back(static_cast<uint8_t>(message.size()));
  out->insert(out->end(), message.begin(), message.end());
}
}  // namespace

Status NoiseLink::Start(Bytes* out) {
  if (!error_.ok()) return error_;
  if (!hs_ || sent_ != 0 || !hs_->IsMyTurn())
    return Status(StatusCode::kInvalidArgument, "Start: not the initiator");
  auto m = hs_->WriteMessage({});
  if (!m) return Failed(m.error());
  AppendRecord(*m, out);
  ++sent_;
  return Status::Ok();
}

Status NoiseLink::Feed(ByteView bytes) {
  if (!error_.ok()) return error_;
  Status s = records_.Append(bytes);
  if (!s.ok()) return Failed(Status(StatusCode::kMalformed, "bad record: " + s.message()));
  return Status::Ok();
}

Result<NoiseLink::Event> NoiseLink::Next(Bytes* out) {
  if (!error_.ok()) return Error(error_);
  for (;;) {
    if (ciphers_ && !complete_reported_) {
      complete_reported_ = true;
      return Event{EventKind::kHandshakeComplete, {}};
    }
    if (ciphers_) {
      auto frame = frames_.Next();
      if (!frame) return Error(Failed(frame.error()));
      if (*frame) return Event{EventKind::kFrame, **frame};
    }
    auto record = records_.NextMutable();
    if (!record)
      return Error(Failed(Status(StatusCode::kMalformed, "bad record: " + record.error().message())));
    if (!*record) return Event{};
    const std::span<uint8_t> message = **record;
    if (!ciphers_) {
      // Handshake: only empty payloads are sent; any payload the peer put in is authenticated and ignored.
      auto payload = hs_->ReadMessage(message);
      if (!payload) return Error(Failed(payload.error()));
      if (!hs_->IsComplete()) {
        auto reply = hs_->WriteMessage({});
        if (!reply) return Error(Failed(reply.error()));
        AppendRecord(*reply, out);
        ++sent_;
      }
      if (hs_->IsComplete()) {
        remote_ = hs_->remote_static();
        auto ciphers = hs_->Split();
        if (!ciphers) return Error(Failed(ciphers.error()));
        ciphers_ = std::move(*ciphers);
        hs_.reset();
      }
      continue;
    }
    // In place, in the record decoder's buffer, which never reads a returned record again.
    auto plaintext = ciphers_->receive.DecryptInPlace({}, message);
    if (!plaintext) return Error(Failed(plaintext.error()));
    // Append may move the decoder's buffer: the frame view returned by the previous Next is dead by now,
    // as the header says.
    Status s = frames_.Append(*plaintext);
    if (!s.ok()) return Error(Failed(s));
  }
}

Status NoiseLink::SealFrames(ByteView frame_stream, Bytes* out) {
  if (!error_.ok()) return error_;
  if (!ciphers_) return Status(StatusCode::kInvalidArgument, "SealFrames before the handshake completed");
  out->reserve(out->size() + frame_stream.size() +
               (frame_stream.size() / noise::kMaxTransportPlaintext + 1) * (2 + noise::kTagLen));
  while (!frame_stream.empty()) {
    const size_t n = std::min(frame_stream.size(), noise::kMaxTransportPlaintext);
    const size_t record = n + noise::kTagLen;
    out->push_back(static_cast<uint8_t>(record >> 8));
    out->push_back(static_cast<uint8_t>(record));
    if (Status s = ciphers_->send.EncryptWithAd({}, frame_stream.first(n), out); !s.ok()) {
      out->resize(out->size() - 2);  // the record's header
      return Failed(s);
    }
    frame_stream = frame_stream.subspan(n);
  }
  return Status::Ok();
}

}  // namespace cw::transport
