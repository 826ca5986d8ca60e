// Helpers for transport tests: a thread-safe manual clock, and waiting for another thread's callbacks
// without asserting anything about wall-clock time (the guard only turns a hang into a failure).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "core/base/clock.h"

namespace cw::transport::testing {

// A Clock the test moves by hand, readable from the loop thread while the test thread advances it.
class ManualClock final : public Clock {
 public:
  int64_t NowMillis() const override { return now_.load(); }
  void Advance(int64_t millis) { now_ += millis; }

 private:
  std::atomic<int64_t> now_{1'700'000'000'000};
};

// Polls until pred() holds. The hang guard (60 s) is far above anything a passing run needs.
inline bool Eventually(const std::function<bool()>& pred, const std::function<void()>& each_round = {}) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    if (each_round) each_round();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace cw::transport::testing
