// RunAhead: a producer kept going on a helper thread, a bounded number of results ahead of its consumer.
//
// The attachment transfers use it so that reading and encrypting, fetching, and digesting keep going while
// the calling thread works on what it already has, instead of starting only when it asks.
//
// Thread rules: `produce` and `exhausted` run on the helper thread only (or on the caller's, in turn, with
// Helper::kNone or when no thread could be started); one thread calls Next() at a time. Stopping cannot
// interrupt a `produce` in progress (for a transfer, a channel call and its retries): the destructor waits
// for it. An exception from `produce` becomes an error result: it must not end the process from a helper.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <new>
#include <optional>
#include <thread>
#include <utility>

#include "core/base/status.h"

namespace cw::runtime::internal {

template <typename T>
class RunAhead {
 public:
  enum class Helper {
    kThread,  // produce on a helper thread
    kNone,    // produce in Next(), on the caller's thread (also what kThread falls back to)
  };

  // At most `depth` (at least 1) results are on the producer's side at once, ready or in production. Stops
  // producing after `exhausted` returns true or `produce` fails.
  RunAhead(std::function<Result<T>()> produce, std::function<bool()> exhausted, size_t depth,
           Helper helper = Helper::kThread)
      : produce_(std::move(produce)), exhausted_(std::move(exhausted)), depth_(std::max<size_t>(1, depth)) {
    if (helper == Helper::kNone) return;
    try {
      thread_ = std::thread([this] { Loop(); });
    } catch (...) {
      // No thread to be had: Next() produces in turn instead.
    }
  }
  ~RunAhead() {
    RequestStop();
    if (thread_.joinable()) thread_.join();
  }
  RunAhead(const RunAhead&) = delete;
  RunAhead& operator=(const RunAhead&) = delete;

  // Produces nothing more after the `produce` in progress, without waiting for it.
  void RequestStop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
  }

  // The next result, in order; nullopt once exhausted or stopped. Nothing follows an error.
  Result<std::optional<T>> Next() {
    if (!thread_.joinable()) {
      if (done_ || stop_ || exhausted_()) return std::optional<T>();
      Result<T> r = ProduceGuarded();
      done_ = !r;
      return AsNext(std::move(r));
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !ready_.empty() || done_; });
    if (ready_.empty()) {
      // A helper that broke down (below) must not look exhausted: the consumer would take a partial result
      // for the whole.
      if (broken_) return Error(StatusCode::kInternal, "the helper thread failed");
      return std::optional<T>();
    }
    Result<T> r = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    cv_.notify_all();
    return AsNext(std::move(r));
  }

 private:
  static Result<std::optional<T>> AsNext(Result<T> r) {
    if (!r) return Error(r.error());
    return std::optional<T>(std::move(*r));
  }

  Result<T> ProduceGuarded() {
    try {
      return produce_();
    } catch (const std::bad_alloc&) {
      return Error(StatusCode::kResourceExhausted, "out of memory");
    } catch (...) {
      return Error(StatusCode::kInternal, "the producer failed");
    }
  }

  void Loop() {
    bool broken = false;
    try {
      Produce();
    } catch (...) {
      broken = true;  // the locking or the queue's allocation: no result can be queued to say so
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = broken;
      done_ = true;
    }
    cv_.notify_all();
  }

  void Produce() {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || ready_.size() < depth_; });
        if (stop_) return;
      }
      if (exhausted_()) return;
      Result<T> r = ProduceGuarded();
      const bool failed = !r;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ready_.push_back(std::move(r));
      }
      cv_.notify_all();
      if (failed) return;
    }
  }

  std::function<Result<T>()> produce_;
  std::function<bool()> exhausted_;
  const size_t depth_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Result<T>> ready_;
  bool stop_ = false;
  bool done_ = false;
  bool broken_ = false;
  std::thread thread_;
};

}  // namespace cw::runtime::internal
