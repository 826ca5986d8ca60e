// Internal to cw_session: RAII owners for libsignal-protocol-c objects, the crypto provider and context,
// and the one place where libsignal error codes become Status values.
#pragma once

#include <signal/signal_protocol.h>

#include <memory>
#include <mutex>
#include <string>

#include "core/base/random.h"
#include "core/base/status.h"

namespace cw::session::internal {

// Refcounted libsignal types (keys, records, messages, bundles, fingerprints): released with SIGNAL_UNREF.
template <typename T>
struct Unref {
  void operator()(T* p) const { SIGNAL_UNREF(p); }
};
template <typename T>
using SignalRef = std::unique_ptr<T, Unref<T>>;

// Buffers that may hold secrets are always wiped on free.
struct BufferFree {
  void operator()(signal_buffer* b) const { signal_buffer_bzero_free(b); }
};
using Buffer = std::unique_ptr<signal_buffer, BufferFree>;

// Types with their own destructor function.
template <typename T, void (*F)(T*)>
struct FreeWith {
  void operator()(T* p) const { F(p); }
};

// Application error codes returned from our store callbacks, below libsignal's own (-9999).
inline constexpr int kStoreError = -10000;

// Owns a signal_context with our crypto provider, a recursive lock and a log hook, and the libsignal store
// context. Not movable: libsignal keeps pointers to it.
class SignalContext {
 public:
  explicit SignalContext(Random* random);
  ~SignalContext();
  SignalContext(const SignalContext&) = delete;
  SignalContext& operator=(const SignalContext&) = delete;

  Status Init();
  signal_context* ctx() const { return ctx_; }
  Random* random() const { return random_; }

  // libsignal reports a bad MAC, an unknown version and "more than 2000 skipped message keys" with the same
  // error code (SG_ERR_INVALID_MESSAGE) and says which in its log; we watch the log to tell them apart.
  enum class Problem { kNone, kBadMac, kUnknownVersion, kTooFarAhead };  // in rising precedence
  void ClearProblem() { problem_ = Problem::kNone; }
  Problem last_problem() const { return problem_; }

 private:
  static void Lock(void* user_data) noexcept;
  static void Unlock(void* user_data) noexcept;
  static void Log(int level, const char* message, size_t len, void* user_data) noexcept;

  Random* random_;
  signal_context* ctx_ = nullptr;
  std::recursive_mutex mutex_;
  Problem problem_ = Problem::kNone;
};

// Converts a libsignal error code into a Status. `what` names the operation, never data.
Status FromSignal(int code, const char* what);

}  // namespace cw::session::internal
