#include "relay/rate_limiter.h"

#include <algorithm>

namespace cw::relay {

TokenBucketLimiter::TokenBucketLimiter(const Clock& clock, Options options) : clock_(clock), options_(options) {
  if (options_.refill_millis <= 0) options_.refill_millis = 1;
  if (options_.capacity == 0) options_.capacity = 1;
}

void TokenBucketLimiter::Refill(Bucket& b, int64_t now) const {
  if (now <= b.last_refill) return;  // a clock that went back gives nothing
  const int64_t periods = (now - b.last_refill) / options_.refill_millis;
  if (periods <= 0) return;
  const uint64_t added = static_cast<uint64_t>(periods);
  if (b.tokens + added >= options_.capacity) {
    b.tokens = options_.capacity;
    b.last_refill = now;
  } else {
    b.tokens += static_cast<uint32_t>(added);
    b.last_refill += periods * options_.refill_millis;  // keep the partial period already earned
  }
}

void TokenBucketLimiter::ForgetFullBuckets(int64_t now) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    Refill(it->second, now);
    it = it->second.tokens >= options_.capacity ? buckets_.erase(it) : std::next(it);
  }
}

bool TokenBucketLimiter::TryTake(const LinkKey& requester) {
  const int64_t now = clock_.NowMillis();
  std::lock_guard<std::mutex> lock(mu_);
  // Sweep now and then, so requesters who stopped asking do not pile up.
  if (++takes_since_sweep_ >= 4096 && buckets_.size() >= 4096) {
    takes_since_sweep_ = 0;
    ForgetFullBuckets(now);
  }
  auto [it, inserted] = buckets_.try_emplace(requester, Bucket{options_.capacity, now});
  Bucket& b = it->second;
  if (!inserted) Refill(b, now);
  if (b.tokens == 0) return false;
  --b.tokens;
  return true;
}

uint32_t TokenBucketLimiter::Available(const LinkKey& requester) {
  const int64_t now = clock_.NowMillis();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = buckets_.find(requester);
  if (it == buckets_.end()) return options_.capacity;
  Refill(it->second, now);
  return it->second.tokens;
}

}  // namespace cw::relay
