// Fuzz target: invite codes. A code arrives as text from anyone (a QR code, a message, a web page).
// Whatever DecodeInvite accepts must re-encode to a code that decodes to the same invite, and its signature
// check (XEdDSA on the named identity key, attacker-chosen key and signature) must answer, not crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/runtime/codec.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view code(reinterpret_cast<const char*>(data), size);
  auto invite = cw::runtime::DecodeInvite(code);
  if (!invite) {
    const auto c = invite.error().code();
    CW_FUZZ_CONTRACT_CHECK(c == cw::StatusCode::kMalformed || c == cw::StatusCode::kUnsupportedVersion,
                           invite.error());
    return 0;
  }
  const cw::Status verified = cw::runtime::VerifyInvite(*invite);
  CW_FUZZ_CONTRACT_CHECK(verified.ok() || verified.code() == cw::StatusCode::kBadSignature, verified);
  const std::string again = cw::runtime::EncodeInvite(*invite);
  CW_FUZZ_CHECK(again.size() <= cw::runtime::kMaxInviteCodeSize);
  auto decoded = cw::runtime::DecodeInvite(again);
  CW_FUZZ_CHECK(decoded.has_value());
  CW_FUZZ_CHECK(*decoded == *invite);
  return 0;
}
