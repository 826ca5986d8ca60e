// TokenBucketLimiter: a token bucket per requester (link key), on an injected Clock.
//
// Each requester starts with `capacity` tokens; one token comes back every `refill_millis`, up to capacity.
// A requester whose bucket is full again is forgotten, so the table holds only recent requesters.
// Thread rules: safe from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>

#include "core/base/clock.h"
#include "relay/types.h"

namespace cw::relay {

class TokenBucketLimiter {
 public:
  struct Options {
    uint32_t capacity = 6;
    int64_t refill_millis = 10 * 60 * 1000;
  };
  TokenBucketLimiter(const Clock& clock, Options options);

  // Takes one token; false (and nothing taken) when the bucket is empty.
  bool TryTake(const LinkKey& requester);
  // Tokens left now, for tests and stats.
  uint32_t Available(const LinkKey& requester);

 private:
  struct Bucket {
    uint32_t tokens = 0;
    int64_t last_refill = 0;
  };
  void Refill(Bucket& b, int64_t now) const;
  void ForgetFullBuckets(int64_t now);

  const Clock& clock_;
  Options options_;
  std::mutex mu_;
  std::map<LinkKey, Bucket> buckets_;
  uint64_t takes_since_sweep_ = 0;
};

}  // namespace cw::relay
