#include "relay/rate_limiter.h"

#include <gtest/gtest.h>

#include "tests/relay/relay_test_util.h"

namespace cw::relay {
namespace {

using testing::Key;

TEST(RelayRateLimiter, SixThenOnePerTenMinutesPerRequester) {
  FakeClock clock;
  TokenBucketLimiter limiter(clock, {});
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(limiter.TryTake(Key(1))) << i;
  EXPECT_FALSE(limiter.TryTake(Key(1)));
  EXPECT_TRUE(limiter.TryTake(Key(2)));  // another requester has its own bucket
  clock.Advance(10 * 60 * 1000 - 1);
  EXPECT_FALSE(limiter.TryTake(Key(1)));
  clock.Advance(1);
  EXPECT_TRUE(limiter.TryTake(Key(1)));
  EXPECT_FALSE(limiter.TryTake(Key(1)));
  // A long pause refills to the cap, not beyond.
  clock.Advance(24ll * 3600 * 1000);
  EXPECT_EQ(limiter.Available(Key(1)), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(limiter.TryTake(Key(1)));
  EXPECT_FALSE(limiter.TryTake(Key(1)));
}

TEST(RelayRateLimiter, PartialPeriodsAccumulateAndClockGoingBackGivesNothing) {
  FakeClock clock;
  TokenBucketLimiter limiter(clock, {2, 1000});
  EXPECT_TRUE(limiter.TryTake(Key(1)));
  EXPECT_TRUE(limiter.TryTake(Key(1)));
  clock.Advance(600);
  EXPECT_FALSE(limiter.TryTake(Key(1)));
  clock.Advance(600);  // 1200 ms: one token, 200 ms carried
  EXPECT_TRUE(limiter.TryTake(Key(1)));
  clock.Advance(800);  // 2000 ms from the start: the second token
  EXPECT_TRUE(limiter.TryTake(Key(1)));
  clock.Advance(-5000);
  EXPECT_FALSE(limiter.TryTake(Key(1)));
}

}  // namespace
}  // namespace cw::relay
