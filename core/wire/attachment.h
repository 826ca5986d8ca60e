// AttachmentDescriptor: what a kFile app message (core/wire/app_message.h) carries so the recipient can
// fetch, check and decrypt a file that the sender uploaded to the relay as an opaque blob. A contact with a
// valid session controls every byte of it, so DecodeAttachment is a parser of untrusted input with tight
// limits.
//
// Encoding (msgpack array, version 1):
//   [1, blob_id (bin 16), key (bin 32), digest (bin 32), size (uint), chunk_size (uint), file_name (str),
//    media_type (str)]
// blob_id:    the relay's attachment id.
// key:        the fresh crypto_secretstream_xchacha20poly1305 key the file was encrypted under.
// digest:     BLAKE2b-256 of the whole blob (the secretstream header and every encrypted chunk), checked
//             before the downloaded file is handed over.
// size:       plaintext bytes; with chunk_size it fixes the blob's exact size (BlobSize).
// chunk_size: plaintext bytes per secretstream message (the last may be shorter), 1..kMaxAttachmentChunkPlain
//             so each encrypted chunk, with the header in front of the first, fits one relay chunk.
// file_name:  a bare name, 1..kMaxFileNameSize bytes, as SanitizeFileName makes it (well-formed UTF-8, no
//             path separator, no control character, no bidirectional mark or override, not "." or ".."):
//             the recipient may join it to a folder as it is.
// media_type: "type/subtype" in printable ASCII without spaces, at most kMaxMediaTypeSize bytes, or "".
//
// Thread rules: free functions and a value type, safe from any thread. The key is a SecretBytes (wiped).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/base/secret.h"
#include "core/base/status.h"

namespace cw::wire {

inline constexpr uint8_t kAttachmentVersion = 1;
inline constexpr size_t kBlobIdSize = 16;         // relay::kAttachmentIdSize
inline constexpr size_t kAttachmentKeySize = 32;  // crypto_secretstream_xchacha20poly1305_KEYBYTES
inline constexpr size_t kAttachmentDigestSize = 32;
inline constexpr size_t kMaxFileNameSize = 255;
inline constexpr size_t kMaxMediaTypeSize = 127;
inline constexpr uint64_t kMaxAttachmentSize = 1ull << 32;  // 4 GiB of plaintext
// The blob's framing: a 24-byte secretstream header, then each chunk with 17 bytes of tag and MAC.
inline constexpr size_t kAttachmentHeaderSize = 24;     // crypto_secretstream_xchacha20poly1305_HEADERBYTES
inline constexpr size_t kAttachmentChunkOverhead = 17;  // crypto_secretstream_xchacha20poly1305_ABYTES
inline constexpr size_t kRelayChunkSize = 64 * 1024;    // relay::kMaxAttachmentChunk
// The largest plaintext chunk whose encryption, behind the header, fits one relay chunk.
inline constexpr uint32_t kMaxAttachmentChunkPlain =
    kRelayChunkSize - kAttachmentHeaderSize - kAttachmentChunkOverhead;

using BlobId = std::array<uint8_t, kBlobIdSize>;
using AttachmentDigest = std::array<uint8_t, kAttachmentDigestSize>;

struct AttachmentDescriptor {
  BlobId blob_id{};
  SecretBytes key;  // kAttachmentKeySize bytes
  AttachmentDigest digest{};
  uint64_t size = 0;
  uint32_t chunk_size = kMaxAttachmentChunkPlain;
  std::string file_name;
  std::string media_type;

  AttachmentDescriptor Clone() const;
};

// kInvalidArgument when a field is out of its bounds (the decoder's rules).
Result<SecretBytes> EncodeAttachment(const AttachmentDescriptor& descriptor);
// kMalformed or kUnsupportedVersion.
Result<AttachmentDescriptor> DecodeAttachment(std::span<const uint8_t> bytes);

// Number of secretstream chunks for `size` plaintext bytes (an empty file is one empty final chunk).
uint64_t AttachmentChunkCount(uint64_t size, uint32_t chunk_size);
// Exact blob size for `size` plaintext bytes in chunks of `chunk_size`.
uint64_t BlobSize(uint64_t size, uint32_t chunk_size);

// A bare file name from any path or name a user or peer gives: the part after the last '/' or '\\', cut to
// kMaxFileNameSize bytes (never inside a UTF-8 sequence), with each byte that is not well-formed UTF-8 and
// each control character (C0, DEL, C1) or bidirectional mark or override (U+061C, U+200E, U+200F,
// U+202A..U+202E, U+2066..U+2069) replaced by '_'; "", "." and ".." become "file".
// IsSafeFileName(SanitizeFileName(x)) always holds.
std::string SanitizeFileName(std::string_view name);
bool IsSafeFileName(std::string_view name);
bool IsValidMediaType(std::string_view media_type);

}  // namespace cw::wire
