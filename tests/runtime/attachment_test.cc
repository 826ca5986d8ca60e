// Attachments without a network: encryption, upload, download and every check, against FakeBlobChannel.
#include "core/runtime/attachment.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/test_util.h"
#include "tests/runtime/fake_blob_channel.h"

namespace cw::runtime {
namespace {

using cw::testing::CodeOf;
using cw::testing::Describe;
using cw::testing::TempDir;
using testing::FakeBlobChannel;

constexpr uint32_t kChunk = 100;  // small chunks: many of them in a small file

Bytes Pattern(size_t n, uint64_t seed) {
  Bytes b(n);
  SeededRandom r(seed);
  if (n > 0) r.Fill(b.data(), n);
  return b;
}

void WriteFile(const std::string& path, const Bytes& b) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

Bytes ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool Exists(const std::string& path) { return std::filesystem::exists(path); }

TransferOptions NoWait() {
  TransferOptions o;
  o.wait = [](int) {};
  return o;
}

UploadOptions Small() {
  UploadOptions o;
  o.transfer = NoWait();
  o.chunk_size = kChunk;
  return o;
}

class AttachmentTest : public ::testing::Test {
 protected:
  // Uploads `content` from a file; returns the descriptor.
  wire::AttachmentDescriptor Upload(const Bytes& content, UploadOptions o = Small()) {
    const std::string src = dir_.Sub("source.bin");
    WriteFile(src, content);
    auto d = UploadAttachment(channel_, src, o);
    EXPECT_TRUE(d.has_value()) << Describe(d);
    return d ? std::move(*d) : wire::AttachmentDescriptor{};
  }
  std::string Dest() { return dir_.Sub("received-" + std::to_string(++n_)); }
  // A download that must fail with `code` and leave nothing behind, under any name.
  void ExpectRefused(const wire::AttachmentDescriptor& d, StatusCode code) {
    const std::set<std::string> before = Names();
    const std::string dest = Dest();
    Status s = DownloadAttachment(channel_, d, dest, NoWait());
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_EQ(Names(), before);
  }
  // Every name in the test's directory, hidden ones included.
  std::set<std::string> Names() {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_.path())) out.insert(e.path().filename());
    return out;
  }

  TempDir dir_{"cw_attachment_test"};
  FakeBlobChannel channel_;
  int n_ = 0;
};

TEST_F(AttachmentTest, RoundTripsFilesOfEverySizeAroundTheChunkEdges) {
  for (size_t size : {0, 1, 99, 100, 101, 250, 1000, 1001}) {
    const Bytes content = Pattern(size, size);
    const auto d = Upload(content);
    EXPECT_EQ(d.size, size);
    EXPECT_EQ(d.file_name, "source.bin");
    EXPECT_EQ(channel_.blob(d.blob_id).data.size(), wire::BlobSize(size, kChunk));
    const std::string dest = Dest();
    Status s = DownloadAttachment(channel_, d, dest, NoWait());
    ASSERT_TRUE(s.ok()) << size << ": " << s.ToString();
    EXPECT_EQ(ReadFile(dest), content) << size;
    EXPECT_FALSE(Exists(dest + ".part"));
  }
}

TEST_F(AttachmentTest, LargestChunksFitTheRelayCap) {
  UploadOptions o = Small();
  o.chunk_size = wire::kMaxAttachmentChunkPlain;
  const Bytes content = Pattern(3 * wire::kMaxAttachmentChunkPlain + 5, 1);
  const auto d = Upload(content, o);
  ASSERT_TRUE(DownloadAttachment(channel_, d, Dest(), NoWait()).ok());
  EXPECT_EQ(ReadFile(dir_.Sub("received-1")), content);
}

TEST_F(AttachmentTest, BlobIsCiphertextUnderAFreshKeyEachTime) {
  const Bytes content(1000, 'A');  // a plaintext pattern that would show through
  const auto a = Upload(content);
  const auto b = Upload(content);
  EXPECT_FALSE(a.key.Equals(b.key));
  EXPECT_NE(a.digest, b.digest);
  const Bytes& blob = channel_.blob(a.blob_id).data;
  const Bytes run(16, 'A');
  EXPECT_EQ(std::search(blob.begin(), blob.end(), run.begin(), run.end()), blob.end());
}

TEST_F(AttachmentTest, ProgressRisesToTheTotalBothWays) {
  const Bytes content = Pattern(1000, 2);
  std::vector<uint64_t> up, down;
  UploadOptions o = Small();
  o.transfer.window = 1;  // a report per chunk
  o.transfer.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_EQ(total, 1000u);
    up.push_back(done);
  };
  const auto d = Upload(content, o);
  TransferOptions t = NoWait();
  t.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_EQ(total, 1000u);
    down.push_back(done);
  };
  ASSERT_TRUE(DownloadAttachment(channel_, d, Dest(), t).ok());
  EXPECT_EQ(up.size(), 11u);                          // 0, then once per chunk
  EXPECT_EQ(down, (std::vector<uint64_t>{0, 1000}));  // the small chunks share one request: one batch
  // Chunks too large to share a request (two do not fit one relay chunk): a report per batch of 2.
  UploadOptions large = Small();
  large.chunk_size = 40'000;
  const auto d2 = Upload(Pattern(200'000, 2), large);
  std::vector<uint64_t> down2;
  t.window = 2;
  t.progress = [&](uint64_t done, uint64_t) { down2.push_back(done); };
  ASSERT_TRUE(DownloadAttachment(channel_, d2, Dest(), t).ok());
  EXPECT_EQ(down2, (std::vector<uint64_t>{0, 80'000, 160'000, 200'000}));
  for (const auto* p : {&up, &down}) {
    ASSERT_FALSE(p->empty());
    EXPECT_EQ(p->front(), 0u);
    EXPECT_EQ(p->back(), 1000u);
    EXPECT_TRUE(std::is_sorted(p->begin(), p->end()));
  }
}

TEST_F(AttachmentTest, UploadResumesAfterTheLinkDropsWithOrWithoutThePieceStored) {
  const Bytes content = Pattern(1000, 3);
  channel_.DropPutAnswer(3);  // stored, answer lost: the retry is a retransmission
  channel_.DropCalls(7, 10);  // calls 7..9 fail before reaching the store
  int waits = 0;
  UploadOptions o = Small();
  o.transfer.wait = [&](int) { ++waits; };
  const auto d = Upload(content, o);
  EXPECT_EQ(waits, 4);
  EXPECT_EQ(channel_.blob(d.blob_id).data.size(), wire::BlobSize(1000, kChunk));
  const std::string dest = Dest();
  ASSERT_TRUE(DownloadAttachment(channel_, d, dest, NoWait()).ok());
  EXPECT_EQ(ReadFile(dest), content);
}

TEST_F(AttachmentTest, DownloadResumesAfterTheLinkDrops) {
  // Chunks too large to share a request, so each Get is one chunk's.
  const Bytes content = Pattern(400'000, 4);
  UploadOptions o = Small();
  o.chunk_size = 40'000;
  const auto d = Upload(content, o);
  channel_.DropGet(1);
  channel_.DropGet(5);
  channel_.DropGet(6);
  int waits = 0;
  TransferOptions t = NoWait();
  t.wait = [&](int) { ++waits; };
  const std::string dest = Dest();
  ASSERT_TRUE(DownloadAttachment(channel_, d, dest, t).ok());
  EXPECT_EQ(waits, 3);
  EXPECT_EQ(ReadFile(dest), content);
}

TEST_F(AttachmentTest, GivesUpWhenTheLinkStaysDown) {
  const Bytes content = Pattern(500, 5);
  const auto d = Upload(content);
  channel_.DropCalls(channel_.calls() + 1, 1 << 30);
  ExpectRefused(d, StatusCode::kUnavailable);
  WriteFile(dir_.Sub("again.bin"), content);
  auto again = UploadAttachment(channel_, dir_.Sub("again.bin"), Small());
  EXPECT_EQ(CodeOf(again), StatusCode::kUnavailable);
}

TEST_F(AttachmentTest, AFlippedByteAnywhereIsTampered) {
  const auto d = Upload(Pattern(1000, 6));
  Bytes& blob = channel_.blob(d.blob_id).data;
  for (size_t at : {size_t{0}, size_t{30}, blob.size() / 2, blob.size() - 1}) {
    blob[at] ^= 0x01;
    ExpectRefused(d, StatusCode::kTampered);
    blob[at] ^= 0x01;
  }
  const std::string dest = Dest();
  ASSERT_TRUE(DownloadAttachment(channel_, d, dest, NoWait()).ok()) << "the untouched blob still opens";
}

TEST_F(AttachmentTest, TruncatedExtendedOrReorderedBlobIsTampered) {
  const auto d = Upload(Pattern(1000, 7));
  FakeBlobChannel::Blob& b = channel_.blob(d.blob_id);
  const Bytes original = b.data;
  const size_t piece = kChunk + wire::kAttachmentChunkOverhead;
  const size_t first = wire::kAttachmentHeaderSize + piece;

  b.data.resize(original.size() - piece);  // the last chunk dropped
  b.declared = b.data.size();
  ExpectRefused(d, StatusCode::kTampered);

  b.data = original;  // a chunk too many: the last one again
  b.data.insert(b.data.end(), original.end() - static_cast<ptrdiff_t>(piece), original.end());
  b.declared = b.data.size();
  ExpectRefused(d, StatusCode::kTampered);

  b.data = original;  // one trailing byte
  b.data.push_back(0);
  b.declared = b.data.size();
  ExpectRefused(d, StatusCode::kTampered);

  b.data = original;  // chunks 1 and 2 swapped
  b.declared = b.data.size();
  std::swap_ranges(b.data.begin() + static_cast<ptrdiff_t>(first),
                   b.data.begin() + static_cast<ptrdiff_t>(first + piece),
                   b.data.begin() + static_cast<ptrdiff_t>(first + piece));
  ExpectRefused(d, StatusCode::kTampered);

  // The last chunk replaced by a chunk 1 of the right length: a MESSAGE tag where FINAL belongs, or a MAC
  // that fails; either way no partial file.
  b.data = original;
  std::copy(original.begin() + static_cast<ptrdiff_t>(first),
            original.begin() + static_cast<ptrdiff_t>(first + piece),
            b.data.end() - static_cast<ptrdiff_t>(piece));
  ExpectRefused(d, StatusCode::kTampered);
}

TEST_F(AttachmentTest, ADescriptorThatDoesNotMatchTheBlobIsTampered) {
  const auto d = Upload(Pattern(1000, 8));
  auto wrong = d.Clone();
  wrong.digest[0] ^= 1;
  ExpectRefused(wrong, StatusCode::kTampered);
  wrong = d.Clone();
  wrong.key.reveal_mutable()[0] ^= 1;
  ExpectRefused(wrong, StatusCode::kTampered);
  wrong = d.Clone();
  wrong.size = 900;  // a shorter file claimed: the blob has the wrong size
  ExpectRefused(wrong, StatusCode::kTampered);
  wrong = d.Clone();
  wrong.blob_id[5] ^= 1;
  ExpectRefused(wrong, StatusCode::kNotFound);
}

TEST_F(AttachmentTest, ABlobSwappedByTheRelayIsTampered) {
  // Two blobs of one size: a relay answering for one id with the other's bytes gets refused.
  const auto a = Upload(Pattern(300, 9));
  const auto b = Upload(Pattern(300, 10));
  auto swapped = a.Clone();
  swapped.blob_id = b.blob_id;
  ExpectRefused(swapped, StatusCode::kTampered);
}

TEST_F(AttachmentTest, ExistingDestinationIsNeverOverwritten) {
  const auto d = Upload(Pattern(100, 11));
  const std::string dest = dir_.Sub("notes.txt");
  WriteFile(dest, ToBytes("keep me"));
  Status s = DownloadAttachment(channel_, d, dest, NoWait());
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadFile(dest), ToBytes("keep me"));
}

TEST_F(AttachmentTest, BadSourcesAndOptionsAreClearErrors) {
  EXPECT_EQ(CodeOf(UploadAttachment(channel_, dir_.Sub("missing.pdf"), Small())), StatusCode::kNotFound);
  EXPECT_EQ(CodeOf(UploadAttachment(channel_, dir_.path(), Small())), StatusCode::kInvalidArgument);
  WriteFile(dir_.Sub("f"), Bytes(10, 1));
  UploadOptions o = Small();
  o.chunk_size = wire::kMaxAttachmentChunkPlain + 1;
  EXPECT_EQ(CodeOf(UploadAttachment(channel_, dir_.Sub("f"), o)), StatusCode::kInvalidArgument);
  o = Small();
  o.media_type = "not a type";
  EXPECT_EQ(CodeOf(UploadAttachment(channel_, dir_.Sub("f"), o)), StatusCode::kInvalidArgument);
  EXPECT_EQ(channel_.calls(), 0) << "nothing was created at the store";
}

TEST_F(AttachmentTest, FileNameIsSanitisedFromThePathOrTheOption) {
  WriteFile(dir_.Sub("scan.png"), Bytes(10, 1));
  UploadOptions o = Small();
  o.file_name = "../../.ssh/authorized_keys";
  o.media_type = "image/png";
  auto d = UploadAttachment(channel_, dir_.Sub("scan.png"), o);
  ASSERT_TRUE(d.has_value()) << Describe(d);
  EXPECT_EQ(d->file_name, "authorized_keys");
  EXPECT_EQ(d->media_type, "image/png");
}

// Found in review: the sender picks the chunk size, and a download made one request per chunk, so a blob of
// 1-byte chunks took a relay round trip (and a frame against the per-address limit) per 18 bytes. Small
// chunks now share requests of up to a relay chunk.
TEST_F(AttachmentTest, TinyChunksAreFetchedManyToARequest) {
  UploadOptions o = Small();
  o.chunk_size = 1;
  const Bytes content = Pattern(10000, 26);
  const auto d = Upload(content, o);
  const int before = channel_.calls();
  const std::string dest = Dest();
  ASSERT_TRUE(DownloadAttachment(channel_, d, dest, NoWait()).ok());
  // 10000 pieces of 18 bytes (and the header): three requests of at most 64 KiB.
  EXPECT_EQ(channel_.calls() - before, 3);
  EXPECT_EQ(ReadFile(dest), content);
  // Cut short anywhere, such a blob is still refused.
  FakeBlobChannel::Blob& blob = channel_.blob(d.blob_id);
  blob.data.resize(blob.data.size() - 5);
  blob.declared = blob.data.size();
  ExpectRefused(d, StatusCode::kTampered);
}

// Holds the first Get until released, so a test can run a second download while this one is in flight.
class GatedChannel final : public BlobChannel {
 public:
  explicit GatedChannel(FakeBlobChannel& inner) : inner_(inner) {}
  Result<wire::BlobId> Create(uint64_t size) override { return inner_.Create(size); }
  Result<uint64_t> Put(const wire::BlobId& id, uint64_t offset, ByteView piece) override {
    return inner_.Put(id, offset, piece);
  }
  Result<Read> Get(const wire::BlobId& id, uint64_t offset, uint32_t max_len) override {
    if (!gated_) {
      gated_ = true;
      started.set_value();
      release.get_future().wait();
    }
    return inner_.Get(id, offset, max_len);
  }
  std::promise<void> started, release;

 private:
  FakeBlobChannel& inner_;
  bool gated_ = false;
};

// Found in review: two downloads to one name (two contacts' "scan.pdf", fetched at once through the C API)
// shared one "<name>.part" file, and the one reported as done could hold the other's bytes.
TEST_F(AttachmentTest, TwoDownloadsToOneNameNeverMix) {
  FakeBlobChannel other;
  const Bytes first = Pattern(500, 21), second = Pattern(1000, 22);
  const auto a = Upload(first);
  const std::string src = dir_.Sub("second.bin");
  WriteFile(src, second);
  auto b = UploadAttachment(other, src, Small());
  ASSERT_TRUE(b.has_value()) << Describe(b);
  const std::string dest = dir_.Sub("scan.pdf");
  GatedChannel gated(channel_);
  Status sa;
  std::thread ta([&] { sa = DownloadAttachment(gated, a, dest, NoWait()); });
  gated.started.get_future().wait();  // a is in flight
  const Status sb = DownloadAttachment(other, *b, dest, NoWait());
  gated.release.set_value();
  ta.join();
  EXPECT_TRUE(sb.ok()) << sb.ToString();
  EXPECT_EQ(sa.code(), StatusCode::kAlreadyExists) << sa.ToString();
  EXPECT_EQ(ReadFile(dest), second);
}

// A download creates its file and nothing else: an unrelated "labs.pdf.part" (a legal attachment name) used
// to be truncated and deleted by a download of "labs.pdf".
TEST_F(AttachmentTest, ADownloadTouchesNoOtherFile) {
  const auto d = Upload(Pattern(1000, 23));
  const std::string neighbour = dir_.Sub("labs.pdf.part");
  WriteFile(neighbour, ToBytes("an earlier attachment"));
  ASSERT_TRUE(DownloadAttachment(channel_, d, dir_.Sub("labs.pdf"), NoWait()).ok());
  EXPECT_EQ(ReadFile(neighbour), ToBytes("an earlier attachment"));
}

// An app killed mid-download (as mobile systems do) leaves no partial plaintext under any name.
TEST_F(AttachmentTest, AKilledDownloadLeavesNothingBehind) {
  const auto d = Upload(Pattern(100000, 24));
  const std::set<std::string> before = Names();
  const std::string dest = dir_.Sub("scan.dcm");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    TransferOptions o = NoWait();
    o.progress = [](uint64_t done, uint64_t) {
      if (done > 0) ::_exit(0);
    };
    (void)DownloadAttachment(channel_, d, dest, o);
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child did not die mid-download";
  EXPECT_EQ(Names(), before);
}

// The longest name the wire allows (255 bytes, what SanitizeFileName keeps) is saved under that name: no
// suffix is added to it on the way.
TEST_F(AttachmentTest, TheLongestAllowedNameDownloads) {
  UploadOptions o = Small();
  o.file_name = std::string(300, 'a') + ".pdf";
  const auto d = Upload(Pattern(10, 25), o);
  ASSERT_EQ(d.file_name.size(), 255u);
  const Status s = DownloadAttachment(channel_, d, dir_.Sub(d.file_name), NoWait());
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(DownloadAttachment(channel_, d, dir_.Sub(d.file_name + "x"), NoWait()).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cw::runtime
