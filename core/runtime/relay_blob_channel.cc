#include "core/runtime/relay_blob_channel.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace cw::runtime {

namespace {

static_assert(wire::kBlobIdSize == relay::kAttachmentIdSize);
static_assert(wire::kRelayChunkSize == relay::kMaxAttachmentChunk);

// The relay's answer as a Status. Busy and rate-limited count as unavailable: the transfer waits and retries.
Status FromRelay(const relay::Response& r) {
  using RC = relay::ResponseCode;
  const std::string msg = "relay: " + std::string(relay::ResponseCodeName(r.code));
  switch (r.code) {
    case RC::kOk:
      return Status::Ok();
    case RC::kNotFound:
      return Status(StatusCode::kNotFound, msg);
    case RC::kInvalidRequest:
      return Status(StatusCode::kInvalidArgument, msg);
    case RC::kTooLarge:
      return Status(StatusCode::kResourceExhausted, msg);
    case RC::kRateLimited:
    case RC::kUnavailable:
      return Status(StatusCode::kUnavailable, msg);
    default:
      return Status(StatusCode::kInternal, msg);
  }
}

template <typename T>
Result<T> Answer(Result<relay::Response> r) {
  if (!r) return Error(r.error());
  CW_RETURN_IF_ERROR(FromRelay(*r));
  if (T* body = std::get_if<T>(&r->body)) return std::move(*body);
  return Error(StatusCode::kMalformed, "relay answered with an unexpected body");
}

// Commands 0..n-1 with at most `window` in flight, on the link's thread; the caller waits for the end.
// Shared with the callbacks, which may run after the caller gave up waiting (they then touch only this).
class Pipeline : public std::enable_shared_from_this<Pipeline> {
 public:
  // What to do with command i's answer: done, send again once 0..i-1 are done, or fail the whole run.
  enum class Verdict { kDone, kAfterPredecessors, kFail };
  using Make = std::function<relay::CommandBody(size_t i)>;
  using Judge = std::function<Verdict(size_t i, Result<relay::Response> r, Status* error)>;

  Pipeline(RelayBlobChannel::Call call, size_t n, size_t window, Make make, Judge judge)
      : call_(std::move(call)),
        n_(n),
        window_(std::max<size_t>(1, window)),
        make_(std::move(make)),
        judge_(std::move(judge)),
        done_(n, false),
        waiting_(n, false),
        clean_(n, false) {}

  Status Run(int64_t timeout_ms) {
    Start();
    return Wait(timeout_ms);
  }
  // Sends the first window of commands.
  void Start() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (n_ == 0) return;
    }
    Pump();
  }
  Status Wait(int64_t timeout_ms) {
    std::unique_lock<std::mutex> lock(mu_);
    if (n_ == 0) return Status::Ok();
    // Time out only when nothing at all came back for timeout_ms, not on a long transfer.
    for (uint64_t seen = answers_;;) {
      if (cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                       [&] { return finished_ || answers_ != seen; })) {
        if (finished_) return error_;
        seen = answers_;
        continue;
      }
      finished_ = true;  // late answers are ignored from here on
      return Status(StatusCode::kUnavailable, "timed out waiting for the relay");
    }
  }

  // The caller will not wait: nothing more is sent, and late answers are ignored.
  void Abandon() {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    error_ = Status(StatusCode::kAborted, "abandoned");
  }

 private:
  // Sends what may go now (outside the lock: `call` may run `done` at once, for a link that is down).
  void Pump() {
    std::vector<size_t> send;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      if (lowest_ < n_ && waiting_[lowest_]) {
        waiting_[lowest_] = false;
        clean_[lowest_] = true;
        send.push_back(lowest_);
        ++in_flight_;
      }
      while (next_ < n_ && in_flight_ < window_) {
        clean_[next_] = next_ == lowest_;
        send.push_back(next_++);
        ++in_flight_;
      }
    }
    for (size_t i : send) {
      call_(make_(i),
            [self = shared_from_this(), i](Result<relay::Response> r) { self->OnAnswer(i, std::move(r)); });
    }
  }

  void OnAnswer(size_t i, Result<relay::Response> r) {
    Status error;
    const Verdict v = judge_(i, std::move(r), &error);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --in_flight_;
      ++answers_;
      if (finished_) return;
      if (v == Verdict::kFail || (v == Verdict::kAfterPredecessors && clean_[i])) {
        // Refused although everything before it was stored when it went out: a real refusal, not a race
        // between the relay's workers. (Whether the predecessors are done now says nothing: their answers
        // may overtake this one on the way back.)
        finished_ = true;
        error_ = error.ok() ? Status(StatusCode::kInternal, "relay refused a piece") : error;
      } else if (v == Verdict::kAfterPredecessors) {
        waiting_[i] = true;
      } else {
        done_[i] = true;
        while (lowest_ < n_ && done_[lowest_]) ++lowest_;
        if (lowest_ == n_) finished_ = true;
      }
      if (finished_) {
        cv_.notify_all();
        return;
      }
    }
    cv_.notify_all();
    Pump();
  }

  RelayBlobChannel::Call call_;
  const size_t n_;
  const size_t window_;
  Make make_;
  Judge judge_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<bool> done_;
  std::vector<bool> waiting_;
  std::vector<bool> clean_;  // sent when every command before it was done
  size_t next_ = 0;
  size_t lowest_ = 0;  // every command below this one is done
  size_t in_flight_ = 0;
  uint64_t answers_ = 0;
  bool finished_ = false;
  Status error_;
};

// One command, waited for.
Result<relay::Response> CallOne(const RelayBlobChannel::Call& call, relay::CommandBody body,
                                int64_t timeout_ms) {
  auto out = std::make_shared<Result<relay::Response>>(Error(StatusCode::kUnavailable, "no answer"));
  auto p = std::make_shared<Pipeline>(
      call, 1, 1, [body = std::move(body)](size_t) { return body; },
      [out](size_t, Result<relay::Response> r, Status*) {
        *out = std::move(r);
        return Pipeline::Verdict::kDone;
      });
  CW_RETURN_IF_ERROR(p->Run(timeout_ms));
  return std::move(*out);
}

// The commands of a batch, built once and shared with the pipeline (which may outlive the caller's wait).
using Commands = std::shared_ptr<const std::vector<relay::CommandBody>>;
Pipeline::Make FromList(Commands commands) {
  return [commands = std::move(commands)](size_t i) { return (*commands)[i]; };
}

}  // namespace

Result<wire::BlobId> RelayBlobChannel::Create(uint64_t size) {
  CW_ASSIGN_OR_RETURN(auto created, Answer<relay::AttachmentCreated>(
                                        CallOne(call_, relay::CreateAttachment{size}, timeout_ms_)));
  return created.id;
}

Result<uint64_t> RelayBlobChannel::Put(const wire::BlobId& id, uint64_t offset, ByteView piece) {
  const Bytes copy(piece.begin(), piece.end());
  return PutMany(id, offset, std::span<const Bytes>(&copy, 1));
}

Result<BlobChannel::Read> RelayBlobChannel::Get(const wire::BlobId& id, uint64_t offset, uint32_t max_len) {
  CW_ASSIGN_OR_RETURN(auto reads, GetMany(id, offset, std::span<const uint32_t>(&max_len, 1)));
  return std::move(reads.at(0));
}

namespace {
// A PutMany whose pipeline was started: Wait finishes it.
class StartedPut final : public BlobChannel::PendingPut {
 public:
  StartedPut(std::shared_ptr<Pipeline> pipeline, std::shared_ptr<std::vector<uint64_t>> stored, uint64_t end,
             int64_t timeout_ms)
      : pipeline_(std::move(pipeline)), stored_(std::move(stored)), end_(end), timeout_ms_(timeout_ms) {}
  // An upload that failed on the batch ahead drops this one unwaited: its pipeline stops sending.
  ~StartedPut() override { pipeline_->Abandon(); }
  Result<uint64_t> Wait() override {
    CW_RETURN_IF_ERROR(pipeline_->Wait(timeout_ms_));
    return stored_->empty() ? end_ : *std::max_element(stored_->begin(), stored_->end());
  }

 private:
  std::shared_ptr<Pipeline> pipeline_;
  std::shared_ptr<std::vector<uint64_t>> stored_;
  const uint64_t end_;
  const int64_t timeout_ms_;
};
}  // namespace

Result<uint64_t> RelayBlobChannel::PutMany(const wire::BlobId& id, uint64_t offset,
                                           std::span<const Bytes> pieces) {
  return SendPieces(id, offset, pieces)->Wait();
}

std::unique_ptr<BlobChannel::PendingPut> RelayBlobChannel::StartPutMany(const wire::BlobId& id,
                                                                        uint64_t offset,
                                                                        std::span<const Bytes> pieces) {
  // A batch larger than the window would still be sending its tail from the answers while the next one
  // went out, and every piece of that one would be refused as not continuing the blob: such batches go one
  // at a time (the default, deferred to Wait).
  if (pieces.size() > put_window_) return BlobChannel::StartPutMany(id, offset, pieces);
  return SendPieces(id, offset, pieces);
}

// The pipeline sends its first window now (the whole batch when it fits), and the rest as answers come; each
// piece is copied into its command.
std::unique_ptr<BlobChannel::PendingPut> RelayBlobChannel::SendPieces(const wire::BlobId& id, uint64_t offset,
                                                                      std::span<const Bytes> pieces) {
  auto commands = std::make_shared<std::vector<relay::CommandBody>>();
  for (const Bytes& piece : pieces) {
    commands->push_back(relay::PutAttachmentChunk{id, offset, piece});
    offset += piece.size();
  }
  // Written by the callbacks under the pipeline's ordering: only read after Run returned success.
  auto stored = std::make_shared<std::vector<uint64_t>>(pieces.size(), 0);
  auto p = std::make_shared<Pipeline>(call_, pieces.size(), put_window_, FromList(std::move(commands)),
                                      [stored](size_t i, Result<relay::Response> r, Status* error) {
                                        auto answer = Answer<relay::ChunkStored>(std::move(r));
                                        if (answer) {
                                          (*stored)[i] = answer->written;
                                          return Pipeline::Verdict::kDone;
                                        }
                                        *error = answer.error();
                                        return answer.error().code() == StatusCode::kInvalidArgument
                                                   ? Pipeline::Verdict::kAfterPredecessors
                                                   : Pipeline::Verdict::kFail;
                                      });
  p->Start();
  return std::make_unique<StartedPut>(std::move(p), std::move(stored), offset, timeout_ms_);
}

Result<std::vector<BlobChannel::Read>> RelayBlobChannel::GetMany(const wire::BlobId& id, uint64_t offset,
                                                                 std::span<const uint32_t> lengths) {
  auto commands = std::make_shared<std::vector<relay::CommandBody>>();
  for (uint32_t len : lengths) {
    commands->push_back(relay::GetAttachmentChunk{id, offset, len});
    offset += len;
  }
  auto reads = std::make_shared<std::vector<Read>>(lengths.size());
  auto p = std::make_shared<Pipeline>(call_, lengths.size(), get_window_, FromList(std::move(commands)),
                                      [reads](size_t i, Result<relay::Response> r, Status* error) {
                                        auto data = Answer<relay::ChunkData>(std::move(r));
                                        if (!data) {
                                          *error = data.error();
                                          return Pipeline::Verdict::kFail;
                                        }
                                        (*reads)[i] = Read{data->total_size, std::move(data->data)};
                                        return Pipeline::Verdict::kDone;
                                      });
  CW_RETURN_IF_ERROR(p->Run(timeout_ms_));
  return std::move(*reads);
}

}  // namespace cw::runtime
