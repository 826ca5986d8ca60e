// Plaintext padding to size buckets, so ciphertext length tells an observer little about message length.
//
// Buckets follow Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and Communication
// with PURBs", PETS 2019): at most 12% overhead, and a bucket size leaks O(log log n) bits of the length. No
// bucket is smaller than kMinPaddedSize, so every short message looks alike. The pad is ISO/IEC 7816-4
// (0x80 then zeros), and removal checks that the total is exactly the bucket for the content it holds.
#pragma once

#include <cstddef>

#include "core/base/bytes.h"
#include "core/base/secret.h"
#include "core/base/status.h"

namespace cw::wire {

inline constexpr size_t kMinPaddedSize = 256;
inline constexpr size_t kMaxPlaintextSize = 1 << 20;  // 1 MiB: files travel as attachments, not messages

// The padded size for `content_size` bytes of content (content plus the 0x80 marker, rounded up).
size_t PaddedSize(size_t content_size);

// kInvalidArgument when the plaintext exceeds kMaxPlaintextSize.
Result<SecretBytes> Pad(std::span<const uint8_t> plaintext);
// kMalformed when the pad is missing, holds a non-zero byte, or the length is not the bucket it should be.
Result<SecretBytes> Unpad(std::span<const uint8_t> padded);

}  // namespace cw::wire
