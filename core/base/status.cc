#include "core/base/status.h"

namespace cw {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kMalformed: return "MALFORMED";
    case StatusCode::kUnsupportedVersion: return "UNSUPPORTED_VERSION";
    case StatusCode::kBadSignature: return "BAD_SIGNATURE";
    case StatusCode::kTampered: return "TAMPERED";
    case StatusCode::kDuplicate: return "DUPLICATE";
    case StatusCode::kTooFarAhead: return "TOO_FAR_AHEAD";
    case StatusCode::kNoSession: return "NO_SESSION";
    case StatusCode::kUntrustedIdentity: return "UNTRUSTED_IDENTITY";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kRejected:
      return "REJECTED";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  std::string out(StatusCodeName(code_));
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

}  // namespace cw
