#include "core/wire/attachment.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/wire/msgpack_writer.h"
#include "tests/wire/print_status.h"

namespace cw::wire {
namespace {

using testing::MsgpackWriter;

AttachmentDescriptor Sample() {
  AttachmentDescriptor d;
  for (size_t i = 0; i < d.blob_id.size(); ++i) d.blob_id[i] = static_cast<uint8_t>(i + 1);
  d.key = SecretBytes(kAttachmentKeySize);
  for (size_t i = 0; i < kAttachmentKeySize; ++i) d.key.reveal_mutable()[i] = static_cast<uint8_t>(0xa0 + i);
  d.digest.fill(0x5d);
  d.size = 20ull << 20;
  d.chunk_size = kMaxAttachmentChunkPlain;
  d.file_name = "lab-results.pdf";
  d.media_type = "application/pdf";
  return d;
}

struct Fields {
  uint64_t version = 1;
  size_t blob_id = kBlobIdSize;
  size_t key = kAttachmentKeySize;
  size_t digest = kAttachmentDigestSize;
  uint64_t size = 1000;
  uint64_t chunk_size = 4096;
  std::string file_name = "x-ray.png";
  std::string media_type = "image/png";
};

Bytes HandWritten(const Fields& f) {
  MsgpackWriter w;
  w.Array(8).Uint(f.version).Bin(f.blob_id, 1).Bin(f.key, 2).Bin(f.digest, 3).Uint(f.size).Uint(f.chunk_size);
  w.Str(f.file_name).Str(f.media_type);
  return w.bytes();
}

void ExpectRejected(const Bytes& b, StatusCode code, const char* what) {
  auto r = DecodeAttachment(b);
  ASSERT_FALSE(r.has_value()) << what;
  EXPECT_EQ(r.error().code(), code) << what << ": " << r.error().ToString();
}

TEST(AttachmentTest, RoundTrip) {
  const AttachmentDescriptor d = Sample();
  auto encoded = EncodeAttachment(d);
  ASSERT_TRUE(encoded.has_value()) << encoded.error().ToString();
  auto decoded = DecodeAttachment(encoded->reveal());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(decoded->blob_id, d.blob_id);
  EXPECT_TRUE(decoded->key.Equals(d.key));
  EXPECT_EQ(decoded->digest, d.digest);
  EXPECT_EQ(decoded->size, d.size);
  EXPECT_EQ(decoded->chunk_size, d.chunk_size);
  EXPECT_EQ(decoded->file_name, d.file_name);
  EXPECT_EQ(decoded->media_type, d.media_type);
}

TEST(AttachmentTest, RoundTripAtTheLimits) {
  AttachmentDescriptor d = Sample();
  d.size = 0;
  d.chunk_size = 1;
  d.media_type = "";
  d.file_name = std::string(kMaxFileNameSize, 'n');
  auto encoded = EncodeAttachment(d);
  ASSERT_TRUE(encoded.has_value()) << encoded.error().ToString();
  auto decoded = DecodeAttachment(encoded->reveal());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(decoded->file_name, d.file_name);
  EXPECT_EQ(decoded->size, 0u);
  d.size = kMaxAttachmentSize;
  d.chunk_size = kMaxAttachmentChunkPlain;
  d.file_name = "caf\xc3\xa9 notes.txt";  // UTF-8 is fine
  d.media_type = std::string(60, 'a') + "/" + std::string(kMaxMediaTypeSize - 61, 'b');
  encoded = EncodeAttachment(d);
  ASSERT_TRUE(encoded.has_value()) << encoded.error().ToString();
  decoded = DecodeAttachment(encoded->reveal());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(decoded->media_type, d.media_type);
}

TEST(AttachmentTest, EncodeRefusesWhatTheDecoderWouldRefuse) {
  const auto refused = [](AttachmentDescriptor d, const char* what) {
    auto r = EncodeAttachment(d);
    ASSERT_FALSE(r.has_value()) << what;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << what;
  };
  AttachmentDescriptor d = Sample();
  d.key = SecretBytes(31);
  refused(std::move(d), "short key");
  d = Sample();
  d.file_name = "../../etc/passwd";
  refused(std::move(d), "path");
  d = Sample();
  d.chunk_size = kMaxAttachmentChunkPlain + 1;
  refused(std::move(d), "chunk too large");
  d = Sample();
  d.size = kMaxAttachmentSize + 1;
  refused(std::move(d), "file too large");
  d = Sample();
  d.media_type = "text/plain; charset=utf-8";
  refused(std::move(d), "media type with spaces");
}

TEST(AttachmentTest, HandWrittenDescriptorDecodes) {
  // Guards the variants below: with nothing wrong, they parse.
  auto r = DecodeAttachment(HandWritten({}));
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->file_name, "x-ray.png");
  EXPECT_EQ(r->chunk_size, 4096u);
}

TEST(AttachmentTest, UnknownVersionIsUnsupported) {
  Fields f;
  f.version = 2;
  ExpectRejected(HandWritten(f), StatusCode::kUnsupportedVersion, "version 2");
}

TEST(AttachmentTest, WrongSizedBinariesAreMalformed) {
  Fields f;
  f.blob_id = kBlobIdSize - 1;
  ExpectRejected(HandWritten(f), StatusCode::kMalformed, "blob id");
  f = {};
  f.key = kAttachmentKeySize + 1;
  ExpectRejected(HandWritten(f), StatusCode::kMalformed, "key");
  f = {};
  f.digest = 0;
  ExpectRejected(HandWritten(f), StatusCode::kMalformed, "digest");
}

TEST(AttachmentTest, PathsAndControlBytesInTheNameAreMalformed) {
  for (const std::string& name :
       std::vector<std::string>{"../secret", "a/b", "a\\b", "..", ".", "", std::string("a\0b", 3), "bell\x07",
                                std::string(kMaxFileNameSize + 1, 'n')}) {
    Fields f;
    f.file_name = name;
    ExpectRejected(HandWritten(f), StatusCode::kMalformed, "hostile file name");
  }
}

TEST(AttachmentTest, ChunkSizeAndFileSizeOutOfRangeAreMalformed) {
  Fields f;
  f.chunk_size = 0;
  ExpectRejected(HandWritten(f), StatusCode::kMalformed, "chunk 0");
  f.chunk_size = kMaxAttachmentChunkPlain + 1;
  ExpectRejected(HandWritten(f), StatusCode::kMalformed, "chunk too large");
  f = {};
  f.size = kMaxAttachmentSize + 1;
  ExpectRejected(HandWritten(f), StatusCode::kMalformed, "size too large");
}

TEST(AttachmentTest, BadMediaTypeIsMalformed) {
  for (const std::string& t :
       std::vector<std::string>{"pdf", "/pdf", "application/", "a/b/c", "text/plain; x=y", "t\x01/p"}) {
    Fields f;
    f.media_type = t;
    ExpectRejected(HandWritten(f), StatusCode::kMalformed, "media type");
  }
}

TEST(AttachmentTest, WrongShapeIsMalformed) {
  ExpectRejected({}, StatusCode::kMalformed, "empty");
  Bytes b = HandWritten({});
  b.push_back(0);
  ExpectRejected(b, StatusCode::kMalformed, "trailing byte");
  b = HandWritten({});
  b.pop_back();
  ExpectRejected(b, StatusCode::kMalformed, "truncated");
  MsgpackWriter w;
  w.Array(7)
      .Uint(1)
      .Bin(kBlobIdSize, 1)
      .Bin(kAttachmentKeySize, 2)
      .Bin(kAttachmentDigestSize, 3)
      .Uint(1)
      .Uint(1)
      .Str("a");
  ExpectRejected(w.bytes(), StatusCode::kMalformed, "7 fields");
  MsgpackWriter s;
  s.Array(8)
      .Uint(1)
      .Str("0123456789abcdef")
      .Bin(kAttachmentKeySize, 2)
      .Bin(kAttachmentDigestSize, 3)
      .Uint(1)
      .Uint(1);
  s.Str("a").Str("");
  ExpectRejected(s.bytes(), StatusCode::kMalformed, "blob id as a string");
}

TEST(AttachmentTest, SanitizeFileNameKeepsOnlyABareName) {
  EXPECT_EQ(SanitizeFileName("/home/dr/scans/x-ray 1.png"), "x-ray 1.png");
  EXPECT_EQ(SanitizeFileName("C:\\Users\\pat\\notes.txt"), "notes.txt");
  EXPECT_EQ(SanitizeFileName("../../etc/passwd"), "passwd");
  EXPECT_EQ(SanitizeFileName("dir/"), "file");
  EXPECT_EQ(SanitizeFileName(".."), "file");
  EXPECT_EQ(SanitizeFileName(""), "file");
  EXPECT_EQ(SanitizeFileName(std::string("a\nb\x7f", 4)), "a_b_");
  // Cut at the limit without splitting a two-byte character that straddles it.
  const std::string long_name = std::string(kMaxFileNameSize - 1, 'n') + "\xc3\xa9";
  const std::string cut = SanitizeFileName(long_name);
  EXPECT_EQ(cut, std::string(kMaxFileNameSize - 1, 'n'));
  for (const std::string& hostile : std::vector<std::string>{
           "a/b/../..", "\\\\server\\share\\", std::string(300, '/'), long_name, std::string("\0", 1)}) {
    EXPECT_TRUE(IsSafeFileName(SanitizeFileName(hostile))) << hostile;
  }
}

// Found in review: a name is shown to the user, handed to Swift and Kotlin as UTF-8, and saved under. So it
// must be well-formed UTF-8 (JNI's NewStringUTF aborts on anything else), and may not hold a bidirectional
// override that shows "scan<U+202E>fdp.exe" as "scanexe.pdf".
TEST(AttachmentTest, NamesAreWellFormedUtf8WithoutBidiControls) {
  EXPECT_TRUE(IsSafeFileName("Röntgen Thorax 2026.pdf"));
  EXPECT_TRUE(IsSafeFileName("\xe5\xa0\xb1\xe5\x91\x8a.pdf"));  // CJK
  EXPECT_TRUE(IsSafeFileName("scan \xf0\x9f\x98\x80.png"));     // outside the BMP
  EXPECT_FALSE(
      IsSafeFileName("scan\xe2\x80\xae"
                     "fdp.exe"));  // U+202E RIGHT-TO-LEFT OVERRIDE
  EXPECT_FALSE(
      IsSafeFileName("a\xe2\x81\xa6"
                     "b.pdf"));  // U+2066 LEFT-TO-RIGHT ISOLATE
  EXPECT_FALSE(
      IsSafeFileName("a\xe2\x80\x8f"
                     "b.pdf"));  // U+200F RIGHT-TO-LEFT MARK
  EXPECT_FALSE(
      IsSafeFileName("a\xc2\x85"
                     "b.pdf"));                      // U+0085, a C1 control
  EXPECT_FALSE(IsSafeFileName("scan\xff\xfe.pdf"));  // not UTF-8
  EXPECT_FALSE(
      IsSafeFileName("a\xc0\xaf"
                     "b"));  // overlong '/'
  EXPECT_FALSE(
      IsSafeFileName("a\xed\xa0\x80"
                     "b"));                   // a surrogate
  EXPECT_FALSE(IsSafeFileName("a\xe5\xa0"));  // cut short
  EXPECT_EQ(SanitizeFileName("scan\xe2\x80\xae"
                             "fdp.exe"),
            "scan_fdp.exe");
  EXPECT_EQ(SanitizeFileName("scan\xff\xfe.pdf"), "scan__.pdf");
  EXPECT_EQ(SanitizeFileName("a\xc0\xaf"
                             "b"),
            "a__b");
  for (const std::string& hostile :
       std::vector<std::string>{"\xe2\x80\xae", "\xff", "\xc2\x85\xc2\x85", "a\xf4\x90\x80\x80"}) {
    EXPECT_TRUE(IsSafeFileName(SanitizeFileName(hostile))) << hostile;
  }
}

TEST(AttachmentTest, BlobSizeCountsHeaderAndPerChunkOverhead) {
  EXPECT_EQ(AttachmentChunkCount(0, 100), 1u);
  EXPECT_EQ(AttachmentChunkCount(100, 100), 1u);
  EXPECT_EQ(AttachmentChunkCount(101, 100), 2u);
  EXPECT_EQ(BlobSize(0, 100), kAttachmentHeaderSize + kAttachmentChunkOverhead);
  EXPECT_EQ(BlobSize(250, 100), kAttachmentHeaderSize + 250 + 3 * kAttachmentChunkOverhead);
  // The first encrypted chunk, behind the header, fills a relay chunk exactly at the largest chunk size.
  EXPECT_EQ(kAttachmentHeaderSize + kMaxAttachmentChunkPlain + kAttachmentChunkOverhead, kRelayChunkSize);
}

}  // namespace
}  // namespace cw::wire
