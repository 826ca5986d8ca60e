// Clock: the one seam for time. Production code asks an injected Clock; tests use FakeClock and advance it.
// Thread rules: SystemClock is safe from any thread; FakeClock is for single-threaded tests.
#pragma once

#include <cstdint>

namespace cw {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch.
  virtual int64_t NowMillis() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowMillis() const override;
  static SystemClock& Default();
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_millis = 1'700'000'000'000) : now_(start_millis) {}
  int64_t NowMillis() const override { return now_; }
  void Advance(int64_t millis) { now_ += millis; }
  void Set(int64_t millis) { now_ = millis; }

 private:
  int64_t now_;
};

}  // namespace cw
