// Fuzz target: the content parser. Content is what a peer with a valid session puts inside a message, so a
// hostile contact controls every byte. Asserts that accepted content re-encodes, that the encoding decodes
// to equal content, and that the encoding is a fixed point.
#include <cstddef>
#include <cstdint>

#include "core/wire/content.h"
#include "fuzz/fuzz_check.h"

namespace {

bool SameContent(const cw::wire::Content& a, const cw::wire::Content& b) {
  return a.kind == b.kind && a.group_id == b.group_id && a.body.Equals(b.body) && a.members == b.members &&
         a.member_keys == b.member_keys;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = cw::wire::DecodeContent(std::span<const uint8_t>(data, size));
  if (!decoded) {
    const auto code = decoded.error().code();
    CW_FUZZ_CONTRACT_CHECK(code == cw::StatusCode::kMalformed || code == cw::StatusCode::kUnsupportedVersion,
                           decoded.error());
    return 0;
  }
  for (const auto& m : decoded->members) CW_FUZZ_CHECK(cw::wire::IsValidName(m));
  CW_FUZZ_CHECK(decoded->group_id.size() <= cw::wire::kMaxGroupIdSize);
  // A membership's keys are one per member or none; nothing else carries any.
  CW_FUZZ_CHECK(decoded->member_keys.empty() || (decoded->kind == cw::wire::ContentKind::kGroupMembers &&
                                                 decoded->member_keys.size() == decoded->members.size()));

  auto encoded = cw::wire::EncodeContent(*decoded);
  CW_FUZZ_CHECK(encoded.has_value());
  auto again = cw::wire::DecodeContent(encoded->reveal());
  CW_FUZZ_CHECK(again.has_value());
  CW_FUZZ_CHECK(SameContent(*again, *decoded));
  auto encoded_again = cw::wire::EncodeContent(*again);
  CW_FUZZ_CHECK(encoded_again.has_value());
  CW_FUZZ_CHECK(encoded_again->Equals(*encoded));
  return 0;
}
