// RunAhead, the helper the attachment transfers run their producers on: results in order, an error as the
// last result, exceptions turned into errors, the depth bound, and stopping — on a helper thread and
// without one (what a process that cannot start a thread gets).
#include "core/runtime/run_ahead.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace cw::runtime::internal {
namespace {

using Ahead = RunAhead<int>;

class RunAheadTest : public ::testing::TestWithParam<Ahead::Helper> {};

// Everything Next() returns until the end or an error; the error, if one came.
struct Drained {
  std::vector<int> values;
  std::optional<Status> error;
};
Drained Drain(Ahead& a) {
  Drained d;
  for (;;) {
    auto r = a.Next();
    if (!r) {
      d.error = r.error();
      return d;
    }
    if (!*r) return d;
    d.values.push_back(**r);
  }
}

TEST_P(RunAheadTest, ResultsComeInOrderAndEndWhenExhausted) {
  int next = 0;  // producer's side only
  Ahead a([&]() -> Result<int> { return next++; }, [&] { return next == 5; }, 2, GetParam());
  Drained d = Drain(a);
  EXPECT_FALSE(d.error);
  EXPECT_EQ(d.values, (std::vector<int>{0, 1, 2, 3, 4}));
  auto again = a.Next();
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(again->has_value()) << "the end stays the end";
}

TEST_P(RunAheadTest, AnErrorIsTheLastResultAndNothingIsProducedAfterIt) {
  std::atomic<int> calls{0};
  Ahead a(
      [&]() -> Result<int> {
        const int n = calls++;
        if (n == 2) return Error(StatusCode::kUnavailable, "relay gone");
        return n;
      },
      [] { return false; }, 1, GetParam());
  Drained d = Drain(a);
  EXPECT_EQ(d.values, (std::vector<int>{0, 1}));
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->code(), StatusCode::kUnavailable);
  auto after = a.Next();
  ASSERT_TRUE(after.has_value());
  EXPECT_FALSE(after->has_value());
  EXPECT_EQ(calls.load(), 3);
}

TEST_P(RunAheadTest, AnExceptionFromTheProducerIsAnErrorNotACrash) {
  int n = 0;
  Ahead a(
      [&]() -> Result<int> {
        if (n++ == 1) throw std::runtime_error("boom");
        return n;
      },
      [] { return false; }, 1, GetParam());
  Drained d = Drain(a);
  EXPECT_EQ(d.values.size(), 1u);
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->code(), StatusCode::kInternal);

  Ahead oom([]() -> Result<int> { throw std::bad_alloc(); }, [] { return false; }, 1, GetParam());
  auto r = oom.Next();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kResourceExhausted);
}

TEST(RunAheadThread, TheHelperStaysWithinItsDepthAndWorksOnAnotherThread) {
  std::atomic<int> produced{0};
  std::atomic<bool> elsewhere{false};
  const auto caller = std::this_thread::get_id();
  Ahead a(
      [&]() -> Result<int> {
        if (std::this_thread::get_id() != caller) elsewhere = true;
        return produced++;
      },
      [] { return false; }, 2);
  // Nobody consumes: the helper fills its depth and waits.
  while (produced.load() < 2) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(produced.load(), 2);
  EXPECT_TRUE(elsewhere.load());
  auto first = a.Next();
  ASSERT_TRUE(first.has_value() && first->has_value());
  EXPECT_EQ(**first, 0);
  while (produced.load() < 3) std::this_thread::yield();  // a free slot is filled again
}

TEST_P(RunAheadTest, StoppedOrDestroyedMidwayItProducesNoMore) {
  std::atomic<int> produced{0};
  {
    Ahead a([&]() -> Result<int> { return produced++; }, [] { return false; }, 1, GetParam());
    auto first = a.Next();
    ASSERT_TRUE(first.has_value() && first->has_value());
    a.RequestStop();
    // Whatever was ready may still come out; then the end, not an endless stream.
    for (int i = 0; i < 3; ++i) {
      auto r = a.Next();
      ASSERT_TRUE(r.has_value());
      if (!r->has_value()) break;
      ASSERT_LT(i, 2);
    }
  }  // the destructor joins: returning at all is the check that it does not hang
  EXPECT_LE(produced.load(), 3);
}

INSTANTIATE_TEST_SUITE_P(Helpers, RunAheadTest,
                         ::testing::Values(Ahead::Helper::kThread, Ahead::Helper::kNone),
                         [](const auto& info) {
                           return info.param == Ahead::Helper::kThread ? std::string("OnAHelperThread")
                                                                       : std::string("WithoutAThread");
                         });

}  // namespace
}  // namespace cw::runtime::internal
