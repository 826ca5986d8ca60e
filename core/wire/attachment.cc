#include "core/wire/attachment.h"

#include <algorithm>

#include "core/wire/msgpack_util.h"

namespace cw::wire {

namespace {

constexpr uint8_t kAttachmentFields = 8;

// One UTF-8 sequence at the start of `s`: its length, with the code point in *cp; 0 when the bytes there are
// not well-formed UTF-8 (a stray continuation byte, a cut sequence, an overlong form, a surrogate, past
// U+10FFFF).
size_t DecodeUtf8(std::string_view s, char32_t* cp) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  size_t n = 0;
  char32_t v = 0, min = 0;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xe0) == 0xc0) {
    n = 2, v = c & 0x1f, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, v = c & 0x0f, min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xc0) != 0x80) return 0;
    v = (v << 6) | (b(i) & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return n;
}

// Not in a file name: control characters (C0, DEL, C1), and the bidirectional marks and overrides that make
// a name display as something else ("scan<U+202E>fdp.exe" shows as "scanexe.pdf").
bool IsUnsafeInName(char32_t c) {
  return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x061c || c == 0x200e || c == 0x200f ||
         (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

template <size_t N>
bool IsBinOf(const msgpack::object& o) {
  return o.type == msgpack::type::BIN && o.via.bin.size == N;
}

void PackBin(msgpack::packer<internal::SecretSink>& pk, std::span<const uint8_t> b) {
  pk.pack_bin(static_cast<uint32_t>(b.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
}

}  // namespace

AttachmentDescriptor AttachmentDescriptor::Clone() const {
  AttachmentDescriptor d;
  d.blob_id = blob_id;
  d.key = key.Clone();
  d.digest = digest;
  d.size = size;
  d.chunk_size = chunk_size;
  d.file_name = file_name;
  d.media_type = media_type;
  return d;
}

uint64_t AttachmentChunkCount(uint64_t size, uint32_t chunk_size) {
  if (chunk_size == 0) return 0;
  // An exact multiple still ends with a final chunk of its own only when the file is empty: the last full
  // chunk carries the final tag.
  return size == 0 ? 1 : (size + chunk_size - 1) / chunk_size;
}

uint64_t BlobSize(uint64_t size, uint32_t chunk_size) {
  return kAttachmentHeaderSize + size + AttachmentChunkCount(size, chunk_size) * kAttachmentChunkOverhead;
}

bool IsSafeFileName(std::string_view name) {
  if (name.empty() || name.size() > kMaxFileNameSize || name == "." || name == "..") return false;
  while (!name.empty()) {
    char32_t c = 0;
    const size_t n = DecodeUtf8(name, &c);
    if (n == 0 || c == '/' || c == '\\' || IsUnsafeInName(c)) return false;
    name.remove_prefix(n);
  }
  return true;
}

std::string SanitizeFileName(std::string_view name) {
  const size_t slash = name.find_last_of("/\\");
  if (slash != std::string_view::npos) name.remove_prefix(slash + 1);
  std::string out(name.substr(0, std::min(name.size(), kMaxFileNameSize)));
  if (name.size() > kMaxFileNameSize) {
    // Back off to the start of a UTF-8 sequence rather than keep half a character.
    size_t cut = out.size();
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xc0) == 0x80) --cut;
    out.resize(cut);
  }
  // Each byte that is not well-formed UTF-8, and each character not allowed in a name, becomes one '_'.
  std::string clean;
  clean.reserve(out.size());
  for (std::string_view rest = out; !rest.empty();) {
    char32_t c = 0;
    const size_t n = DecodeUtf8(rest, &c);
    if (n == 0) {
      clean.push_back('_');
      rest.remove_prefix(1);
      continue;
    }
    if (IsUnsafeInName(c)) {
      clean.push_back('_');
    } else {
      clean.append(rest.substr(0, n));
    }
    rest.remove_prefix(n);
  }
  if (clean.empty() || clean == "." || clean == "..") return "file";
  return clean;
}

bool IsValidMediaType(std::string_view t) {
  if (t.empty()) return true;
  if (t.size() > kMaxMediaTypeSize) return false;
  const size_t slash = t.find('/');
  if (slash == 0 || slash == std::string_view::npos || slash + 1 == t.size() ||
      t.find('/', slash + 1) != std::string_view::npos) {
    return false;
  }
  return std::all_of(t.begin(), t.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c > 0x20 && c < 0x7f;
  });
}

namespace {

Status Validate(uint64_t size, uint32_t chunk_size, size_t key_size, std::string_view file_name,
                std::string_view media_type) {
  if (key_size != kAttachmentKeySize)
    return Status(StatusCode::kInvalidArgument, "attachment key has the wrong size");
  if (size > kMaxAttachmentSize) return Status(StatusCode::kInvalidArgument, "attachment too large");
  if (chunk_size == 0 || chunk_size > kMaxAttachmentChunkPlain) {
    return Status(StatusCode::kInvalidArgument, "attachment chunk size out of range");
  }
  if (!IsSafeFileName(file_name))
    return Status(StatusCode::kInvalidArgument, "attachment file name is not a bare name");
  if (!IsValidMediaType(media_type))
    return Status(StatusCode::kInvalidArgument, "attachment media type is invalid");
  return Status::Ok();
}

}  // namespace

Result<SecretBytes> EncodeAttachment(const AttachmentDescriptor& d) {
  CW_RETURN_IF_ERROR(Validate(d.size, d.chunk_size, d.key.size(), d.file_name, d.media_type));
  internal::SecretSink sink;
  msgpack::packer<internal::SecretSink> pk(sink);
  pk.pack_array(kAttachmentFields);
  pk.pack(kAttachmentVersion);
  PackBin(pk, d.blob_id);
  PackBin(pk, d.key.reveal());
  PackBin(pk, d.digest);
  pk.pack(d.size);
  pk.pack(d.chunk_size);
  pk.pack(d.file_name);
  pk.pack(d.media_type);
  return sink.Take();
}

Result<AttachmentDescriptor> DecodeAttachment(std::span<const uint8_t> bytes) {
  // The root must be a fixarray of exactly kAttachmentFields; checking the first bytes first tells an
  // unknown version apart from garbage.
  if (bytes.empty() || bytes[0] != (0x90 | kAttachmentFields)) {
    if (bytes.size() > 2 && (bytes[0] & 0xf0) == 0x90 && bytes[1] != kAttachmentVersion && bytes[1] < 0x80) {
      return Error(StatusCode::kUnsupportedVersion, "unknown attachment descriptor version");
    }
    return Error(StatusCode::kMalformed, "attachment descriptor is not an 8-element array");
  }
  internal::Limits limits;
  limits.array = kAttachmentFields;
  limits.str = kMaxFileNameSize;
  limits.bin = kAttachmentKeySize;
  limits.depth = 1;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return Error(StatusCode::kMalformed, "attachment descriptor is not valid msgpack");
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size != kAttachmentFields) {
    return Error(StatusCode::kMalformed, "attachment descriptor has the wrong field count");
  }
  const msgpack::object* f = root.via.array.ptr;
  if (f[0].type != msgpack::type::POSITIVE_INTEGER)
    return Error(StatusCode::kMalformed, "attachment version missing");
  if (f[0].via.u64 != kAttachmentVersion) {
    return Error(StatusCode::kUnsupportedVersion, "unknown attachment descriptor version");
  }
  if (!IsBinOf<kBlobIdSize>(f[1]) || !IsBinOf<kAttachmentKeySize>(f[2]) ||
      !IsBinOf<kAttachmentDigestSize>(f[3]) || f[4].type != msgpack::type::POSITIVE_INTEGER ||
      f[5].type != msgpack::type::POSITIVE_INTEGER || f[5].via.u64 > kMaxAttachmentChunkPlain ||
      f[6].type != msgpack::type::STR || f[7].type != msgpack::type::STR) {
    return Error(StatusCode::kMalformed, "attachment descriptor field has the wrong type or size");
  }
  const std::string_view file_name(f[6].via.str.ptr, f[6].via.str.size);
  const std::string_view media_type(f[7].via.str.ptr, f[7].via.str.size);
  Status valid =
      Validate(f[4].via.u64, static_cast<uint32_t>(f[5].via.u64), kAttachmentKeySize, file_name, media_type);
  if (!valid.ok()) return Error(StatusCode::kMalformed, valid.message());
  AttachmentDescriptor d;
  std::copy_n(reinterpret_cast<const uint8_t*>(f[1].via.bin.ptr), kBlobIdSize, d.blob_id.begin());
  d.key = SecretBytes(reinterpret_cast<const uint8_t*>(f[2].via.bin.ptr), kAttachmentKeySize);
  std::copy_n(reinterpret_cast<const uint8_t*>(f[3].via.bin.ptr), kAttachmentDigestSize, d.digest.begin());
  d.size = f[4].via.u64;
  d.chunk_size = static_cast<uint32_t>(f[5].via.u64);
  d.file_name.assign(file_name);
  d.media_type.assign(media_type);
  return d;
}

}  // namespace cw::wire
