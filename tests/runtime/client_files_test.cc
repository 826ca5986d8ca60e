// Files end to end over loopback with a real relay (RelayService on RocksDB behind RelayServer): SendFile,
// on_file, FetchAttachment, the transcript's attachment reference, a relay restart in the middle of an upload
// and of a download, and what goes wrong on bad input.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <iterator>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/runtime/client.h"
#include "tests/runtime/runtime_test_util.h"

namespace cw::runtime {
namespace {

using testing::TempDir;
using testing::TestRelay;

using testing::kPass;


Bytes Pattern(size_t n, uint64_t seed) {
  Bytes b(n);
  SeededRandom r(seed);
  r.Fill(b.data(), n);
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

// Progress as a callback sees it: every report, checked to rise to the total.
struct Progress {
  std::vector<uint64_t> done;
  uint64_t total = 0;
  ProgressFn Fn(std::function<void(uint64_t)> also = {}) {
    return [this, also](uint64_t d, uint64_t t) {
      done.push_back(d);
      total = t;
      if (also) also(d);
    };
  }
  void ExpectComplete(uint64_t size) const {
    ASSERT_FALSE(done.empty());
    EXPECT_EQ(total, size);
    EXPECT_EQ(done.front(), 0u);
    EXPECT_EQ(done.back(), size);
    EXPECT_TRUE(std::is_sorted(done.begin(), done.end()));
  }
};

class ClientFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    relay_ = std::make_unique<TestRelay>(dir_.Sub("relay"));
    ASSERT_OK(relay_->Start());
  }

  ClientOptions Options() {
    ClientOptions o;
    o.keystore = storage::KeystoreOptions::MinimumCostForTesting();
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 200;
    o.callbacks.on_connection = [this](bool up) {
      if (!up) ++drops_;
    };
    o.callbacks.on_file = [this](const IncomingFile& f) {
      std::lock_guard<std::mutex> lock(mu_);
      files_.push_back(
          IncomingFile{f.contact, f.sequence, f.sent_at_ms, f.received_at_ms, f.attachment.Clone()});
    };
    o.callbacks.on_message = [this](const IncomingMessage&) { ++texts_; };
    return o;
  }

  // dr.lee invites pat; pat's first message makes them reachable to each other.
  void Connect(const ClientOptions& clinician_options) {
    auto c = Client::Create(dir_.Sub("clinician"), "dr.lee", kPass, clinician_options);
    auto p = Client::Create(dir_.Sub("patient"), "pat", kPass, Options());
    ASSERT_HAS(c);
    ASSERT_HAS(p);
    clinician_ = std::move(*c);
    patient_ = std::move(*p);
    ASSERT_OK(clinician_->Register(relay_->address()));
    auto code = clinician_->CreateInvite();
    ASSERT_HAS(code);
    ASSERT_HAS(patient_->AcceptInvite(*code, "hello doctor"));
    ASSERT_HAS(clinician_->Sync());
    texts_ = 0;
  }
  void Connect() { Connect(Options()); }

  // Stops the relay now and starts it again (same address and key) a little later, from another thread:
  // whatever the client sends meanwhile meets a closed link and then a refused connection.
  void RestartRelaySoon() {
    relay_->Stop();
    restarter_ = std::thread([this] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      restarted_ = relay_->Start().ok();
    });
  }
  void JoinRestart() {
    if (restarter_.joinable()) restarter_.join();
  }
  void TearDown() override { JoinRestart(); }

  TempDir dir_;
  std::unique_ptr<TestRelay> relay_;
  std::unique_ptr<Client> clinician_;
  std::unique_ptr<Client> patient_;
  std::thread restarter_;
  std::atomic<bool> restarted_{false};
  std::atomic<int> drops_{0};
  std::atomic<int> texts_{0};
  std::mutex mu_;
  std::vector<IncomingFile> files_;
};

TEST_F(ClientFiles, TwentyMebibytesSurviveARelayRestartDuringUploadAndDownload) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  const size_t size = 20u << 20;
  const Bytes content = Pattern(size, 20);
  WriteFile(dir_.Sub("ct-scan.bin"), content);

  Progress up;
  bool restarted_up = false;
  auto seq = clinician_->SendFile("pat", dir_.Sub("ct-scan.bin"), up.Fn([&](uint64_t done) {
    if (!restarted_up && done >= size / 2) {
      restarted_up = true;
      RestartRelaySoon();
    }
  }));
  ASSERT_HAS(seq);
  JoinRestart();
  ASSERT_TRUE(restarted_up && restarted_);
  up.ExpectComplete(size);
  EXPECT_GE(drops_.load(), 1) << "the link really went down";
  // What the relay holds is the blob: ciphertext of exactly the framed size, nothing more.
  EXPECT_EQ(relay_->Stats().attachments, 1u);
  EXPECT_EQ(relay_->Stats().attachment_bytes, wire::BlobSize(size, wire::kMaxAttachmentChunkPlain));
  ASSERT_HAS(clinician_->Sync());

  ASSERT_HAS(patient_->Sync());
  std::optional<wire::AttachmentDescriptor> got;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ASSERT_EQ(files_.size(), 1u);
    EXPECT_EQ(files_[0].contact, "dr.lee");
    EXPECT_EQ(files_[0].attachment.file_name, "ct-scan.bin");
    EXPECT_EQ(files_[0].attachment.size, size);
    got = files_[0].attachment.Clone();
  }
  EXPECT_EQ(texts_.load(), 0) << "a file is not reported as a text";

  const int drops_before = drops_.load();
  Progress down;
  bool restarted_down = false;
  const std::string dest = dir_.Sub("downloads-ct-scan.bin");
  ASSERT_OK(patient_->FetchAttachment(*got, dest, down.Fn([&](uint64_t done) {
    if (!restarted_down && done >= size / 3) {
      restarted_down = true;
      RestartRelaySoon();
    }
  })));
  JoinRestart();
  ASSERT_TRUE(restarted_down && restarted_);
  EXPECT_GT(drops_.load(), drops_before);
  down.ExpectComplete(size);
  EXPECT_TRUE(ReadFile(dest) == content) << "byte-identical after two interrupted transfers";
}

TEST_F(ClientFiles, TranscriptRowsOnBothSidesReferToTheFile) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  const Bytes content = Pattern(200000, 7);
  WriteFile(dir_.Sub("lab results.pdf"), content);
  auto seq = clinician_->SendFile("pat", dir_.Sub("lab results.pdf"));
  ASSERT_HAS(seq);
  ASSERT_HAS(clinician_->SendText("pat", "see attached"));
  ASSERT_HAS(clinician_->Sync());
  ASSERT_HAS(patient_->Sync());
  EXPECT_EQ(texts_.load(), 1);

  for (Client* c : {clinician_.get(), patient_.get()}) {
    auto h = c->History(c == clinician_.get() ? "pat" : "dr.lee");
    ASSERT_HAS(h);
    ASSERT_EQ(h->size(), 3u);
    const auto& row = (*h)[1];
    EXPECT_EQ(std::string(row.body.reveal().begin(), row.body.reveal().end()), "lab results.pdf");
    auto d = Client::AttachmentOf(row);
    ASSERT_HAS(d);
    EXPECT_EQ(d->size, content.size());
    EXPECT_EQ(Client::AttachmentOf((*h)[2]).error().code(), StatusCode::kNotFound) << "a text row has none";
    // Both audit trails name the blob and its digest (never its key).
    auto trail = c->AuditTrail();
    ASSERT_HAS(trail);
    size_t attachments = 0;
    for (const auto& e : *trail) {
      if (e.type != compliance::AuditEventType::kAttachment) continue;
      ++attachments;
      EXPECT_EQ(e.ref, ToHex(d->blob_id));
      EXPECT_EQ(e.digest, Bytes(d->digest.begin(), d->digest.end()));
    }
    EXPECT_EQ(attachments, 1u) << c->name();
  }
  // After a restart the patient fetches the file from the history alone.
  patient_.reset();
  auto reopened = Client::Open(dir_.Sub("patient"), kPass, Options());
  ASSERT_HAS(reopened);
  auto h = (*reopened)->History("dr.lee");
  ASSERT_HAS(h);
  auto d = Client::AttachmentOf((*h)[1]);
  ASSERT_HAS(d);
  ASSERT_OK((*reopened)->FetchAttachment(*d, dir_.Sub("from-history.pdf")));
  EXPECT_TRUE(ReadFile(dir_.Sub("from-history.pdf")) == content);
}

// On a link slower than the transfer, the upload's pieces in flight fill the client's send queue past its
// high-water mark (here set below one piece): the commands wait in the client until the queue drains, in
// order, and neither the upload nor a text sent from another thread in the middle of it fails, even when the
// relay restarts at that moment (the link drops with commands still waiting in the client).
TEST_F(ClientFiles, CommandsWaitForAFullSendQueueInsteadOfFailing) {
  ClientOptions o = Options();
  o.link_send_high_water = 16 * 1024;
  o.link_send_low_water = 4 * 1024;
  ASSERT_NO_FATAL_FAILURE(Connect(o));
  const Bytes content = Pattern(3 << 20, 11);
  WriteFile(dir_.Sub("scan.bin"), content);
  std::mutex m;
  std::condition_variable cv;
  bool halfway = false;
  std::optional<Result<uint64_t>> text;
  std::thread texter([&] {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return halfway; });
    lock.unlock();
    text = clinician_->SendText("pat", "the scan is on its way");
  });
  auto sent = clinician_->SendFile("pat", dir_.Sub("scan.bin"), [&](uint64_t done, uint64_t total) {
    if (done * 2 < total) return;
    std::lock_guard<std::mutex> lock(m);
    if (!halfway) RestartRelaySoon();
    halfway = true;
    cv.notify_all();
  });
  {
    std::lock_guard<std::mutex> lock(m);
    halfway = true;  // an upload that failed early still lets the texter finish
    cv.notify_all();
  }
  texter.join();
  JoinRestart();
  ASSERT_HAS(sent);
  ASSERT_TRUE(restarted_);
  EXPECT_GE(drops_.load(), 1) << "the link really went down";
  ASSERT_TRUE(text.has_value());
  ASSERT_HAS(*text);
  ASSERT_HAS(clinician_->Sync());
  ASSERT_HAS(patient_->Sync());
  EXPECT_EQ(texts_.load(), 1);
  std::optional<wire::AttachmentDescriptor> got;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ASSERT_EQ(files_.size(), 1u);
    got = files_[0].attachment.Clone();
  }
  ASSERT_OK(patient_->FetchAttachment(*got, dir_.Sub("scan-received.bin")));
  EXPECT_TRUE(ReadFile(dir_.Sub("scan-received.bin")) == content);
}

TEST_F(ClientFiles, ATamperedDescriptorLeavesNoFile) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  WriteFile(dir_.Sub("note.txt"), Pattern(5000, 3));
  ASSERT_HAS(clinician_->SendFile("pat", dir_.Sub("note.txt")));
  ASSERT_HAS(clinician_->Sync());
  ASSERT_HAS(patient_->Sync());
  wire::AttachmentDescriptor d;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ASSERT_EQ(files_.size(), 1u);
    d = files_[0].attachment.Clone();
  }
  d.digest[3] ^= 0x40;
  const std::string dest = dir_.Sub("note.txt.received");
  Status s = patient_->FetchAttachment(d, dest);
  EXPECT_EQ(s.code(), StatusCode::kTampered) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(dest));
  EXPECT_FALSE(std::filesystem::exists(dest + ".part"));
}

TEST_F(ClientFiles, BadInputIsAClearErrorAndUploadsNothing) {
  ASSERT_NO_FATAL_FAILURE(Connect());
  WriteFile(dir_.Sub("x.bin"), Pattern(10, 1));
  auto unknown = clinician_->SendFile("nobody", dir_.Sub("x.bin"));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code(), StatusCode::kNotFound);
  auto missing = clinician_->SendFile("pat", dir_.Sub("no-such-file.bin"));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(relay_->Stats().attachments, 0u);
  auto pending = clinician_->PendingOutboxCount();
  ASSERT_HAS(pending);
  EXPECT_EQ(*pending, 0u) << "no message was queued";
}

}  // namespace
}  // namespace cw::runtime
