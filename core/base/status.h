// Status and Result: errors as values. No exception leaves a Cipherward target.
//
// A Status is a code and a short message. The message is for people reading logs: it never holds a key,
// plaintext, passphrase or patient identifier. Thread-safe as a value type.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace cw {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller passed something unusable
  kMalformed,           // bytes from outside do not parse
  kUnsupportedVersion,  // a known format at a version we do not speak
  kBadSignature,        // a signature or MAC did not verify
  kTampered,            // authenticated data failed to open
  kDuplicate,           // a message was already received
  kTooFarAhead,         // a message skips more keys than the ratchet keeps
  kNoSession,           // no session with that peer
  kUntrustedIdentity,   // the peer's identity key changed and is not yet accepted
  kNotFound,
  kAlreadyExists,
  kPermissionDenied,
  kResourceExhausted,
  kUnavailable,
  kInternal,
  kAborted,   // an operation stopped on purpose before it committed anything
  kRejected,  // from a peer identity key the user rejected
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  // Lets CW_RETURN_IF_ERROR and CW_ASSIGN_OR_RETURN serve functions returning Status as well as Result<T>.
  Status(tl::unexpected<Status> error) : Status(std::move(error.value())) {}  // NOLINT(google-explicit-constructor)

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "CODE: message", for logs and test failures.
  std::string ToString() const;

  friend bool operator==(const Status& a, const Status& b) { return a.code_ == b.code_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename T>
using Result = tl::expected<T, Status>;

inline tl::unexpected<Status> Error(StatusCode code, std::string message) {
  return tl::unexpected<Status>(Status(code, std::move(message)));
}
inline tl::unexpected<Status> Error(Status status) { return tl::unexpected<Status>(std::move(status)); }

}  // namespace cw

// Returns early from a function returning Status or Result<T> when `expr` (a Status) is not ok.
#define CW_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    ::cw::Status cw_status_ = (expr);             \
    if (!cw_status_.ok()) return ::cw::Error(std::move(cw_status_)); \
  } while (0)

#define CW_CONCAT_INNER_(a, b) a##b
#define CW_CONCAT_(a, b) CW_CONCAT_INNER_(a, b)
// Declares `lhs` from a Result<T> expression, or returns its error.
#define CW_ASSIGN_OR_RETURN(lhs, expr) CW_ASSIGN_OR_RETURN_IMPL_(CW_CONCAT_(cw_result_, __LINE__), lhs, expr)
#define CW_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp) return ::cw::Error(std::move(tmp).error()); \
  lhs = std::move(*tmp)
