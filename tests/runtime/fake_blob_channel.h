// FakeBlobChannel: an in-memory BlobChannel with the relay's rules (appends in order, a piece already held
// is a retransmission, reads only from a complete blob), plus what tests need: dropping the link on chosen
// calls (before or after the store took the piece) and direct access to the stored bytes for tampering.
// Thread rules: one thread at a time.
#pragma once

#include <map>
#include <set>

#include "core/runtime/attachment.h"

namespace cw::runtime::testing {

class FakeBlobChannel final : public BlobChannel {
 public:
  struct Blob {
    uint64_t declared = 0;
    Bytes data;
  };

  Result<wire::BlobId> Create(uint64_t size) override {
    ++calls_;
    if (Down()) return Unavailable();
    wire::BlobId id{};
    id[0] = static_cast<uint8_t>(blobs_.size() + 1);
    blobs_[id] = Blob{size, {}};
    return id;
  }

  Result<uint64_t> Put(const wire::BlobId& id, uint64_t offset, ByteView piece) override {
    ++calls_;
    ++puts_;
    if (Down()) return Unavailable();
    auto it = blobs_.find(id);
    if (it == blobs_.end()) return Error(StatusCode::kNotFound, "no such blob");
    Blob& b = it->second;
    const uint64_t written = b.data.size();
    if (!(offset <= written && piece.size() <= written - offset)) {
      if (offset != written) return Error(StatusCode::kInvalidArgument, "gap or overlap");
      if (piece.size() > b.declared - written)
        return Error(StatusCode::kInvalidArgument, "past the declared size");
      b.data.insert(b.data.end(), piece.begin(), piece.end());
    }
    if (drop_puts_after_store_.count(puts_)) return Unavailable();  // stored, but the answer is lost
    return b.data.size();
  }

  Result<Read> Get(const wire::BlobId& id, uint64_t offset, uint32_t max_len) override {
    ++calls_;
    ++gets_;
    if (Down() || drop_gets_.count(gets_)) return Unavailable();
    auto it = blobs_.find(id);
    if (it == blobs_.end() || it->second.data.size() != it->second.declared) {
      return Error(StatusCode::kNotFound, "no such blob");
    }
    const Bytes& data = it->second.data;
    if (offset > data.size()) return Error(StatusCode::kInvalidArgument, "offset past the end");
    const size_t n = std::min<uint64_t>(max_len, data.size() - offset);
    Read r;
    r.total_size = data.size();
    r.data.assign(data.begin() + static_cast<ptrdiff_t>(offset),
                  data.begin() + static_cast<ptrdiff_t>(offset + n));
    return r;
  }

  // The link is down for calls number [from, to) (counting every call from 1).
  void DropCalls(int from, int to) {
    down_from_ = from;
    down_to_ = to;
  }
  // The put number `n` (from 1) is stored but its answer is lost.
  void DropPutAnswer(int n) { drop_puts_after_store_.insert(n); }
  // The get number `n` (from 1) fails as if the link dropped.
  void DropGet(int n) { drop_gets_.insert(n); }

  // The stored blob, to inspect or tamper with.
  Blob& blob(const wire::BlobId& id) { return blobs_.at(id); }
  int calls() const { return calls_; }

 private:
  bool Down() const { return calls_ >= down_from_ && calls_ < down_to_; }
  static tl::unexpected<Status> Unavailable() { return Error(StatusCode::kUnavailable, "link dropped"); }

  std::map<wire::BlobId, Blob> blobs_;
  int calls_ = 0;
  int puts_ = 0;
  int gets_ = 0;
  int down_from_ = 0;
  int down_to_ = 0;
  std::set<int> drop_puts_after_store_;
  std::set<int> drop_gets_;
};

}  // namespace cw::runtime::testing
