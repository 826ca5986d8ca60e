// Fuzz target: the attachment descriptor parser. The descriptor arrives inside a kFile app message from a
// contact, who controls every byte. Asserts that an accepted descriptor holds only a bare file name and
// in-range sizes, re-encodes, decodes to an equal descriptor, and that the encoding is a fixed point.
#include <cstddef>
#include <cstdint>

#include "core/wire/attachment.h"
#include "fuzz/fuzz_check.h"

namespace {

bool Same(const cw::wire::AttachmentDescriptor& a, const cw::wire::AttachmentDescriptor& b) {
  return a.blob_id == b.blob_id && a.key.Equals(b.key) && a.digest == b.digest && a.size == b.size &&
         a.chunk_size == b.chunk_size && a.file_name == b.file_name && a.media_type == b.media_type;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = cw::wire::DecodeAttachment(std::span<const uint8_t>(data, size));
  if (!decoded) {
    const auto code = decoded.error().code();
    CW_FUZZ_CONTRACT_CHECK(code == cw::StatusCode::kMalformed || code == cw::StatusCode::kUnsupportedVersion,
                           decoded.error());
    return 0;
  }
  CW_FUZZ_CHECK(cw::wire::IsSafeFileName(decoded->file_name));
  CW_FUZZ_CHECK(cw::wire::SanitizeFileName(decoded->file_name) == decoded->file_name);
  CW_FUZZ_CHECK(decoded->key.size() == cw::wire::kAttachmentKeySize);
  CW_FUZZ_CHECK(decoded->chunk_size >= 1 && decoded->chunk_size <= cw::wire::kMaxAttachmentChunkPlain);
  CW_FUZZ_CHECK(decoded->size <= cw::wire::kMaxAttachmentSize);

  auto encoded = cw::wire::EncodeAttachment(*decoded);
  CW_FUZZ_CHECK(encoded.has_value());
  auto again = cw::wire::DecodeAttachment(encoded->reveal());
  CW_FUZZ_CHECK(again.has_value());
  CW_FUZZ_CHECK(Same(*again, *decoded));
  auto encoded_again = cw::wire::EncodeAttachment(*again);
  CW_FUZZ_CHECK(encoded_again.has_value());
  CW_FUZZ_CHECK(encoded_again->Equals(*encoded));
  return 0;
}
