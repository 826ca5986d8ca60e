// RelayBlobChannel against the real RelayService (in-memory store), with a fake link that answers the
// commands in flight in reverse order, as the relay's worker pool may: pieces that overtake their
// predecessors are refused by the relay and must be sent again, and the blob must still come out whole.
// Uploads through it too, with two batches in flight.
#include "core/runtime/relay_blob_channel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "relay/mailbox_store.h"
#include "relay/relay_service.h"
#include "tests/common/test_util.h"

namespace cw::runtime {
namespace {

using cw::testing::Describe;

// A link to a RelayService on its own thread. Commands queue up; the thread answers every queued command
// newest first (after a short grace period for more to arrive), and can drop the link for a while.
class ReversingLink {
 public:
  // With `answers_in_order`, the relay still runs the commands newest first but the answers travel back
  // oldest first: a refused piece's answer then arrives after its predecessors' answers. No piece is
  // answered (for up to 10 s) before `hold_puts` pieces have come, so a test can tell whether a sender keeps
  // that many in flight without any answer.
  explicit ReversingLink(bool answers_in_order = false, size_t hold_puts = 0)
      : answers_in_order_(answers_in_order),
        hold_puts_(hold_puts),
        service_(*store_, SystemClock::Default(), random_) {
    thread_ = std::thread([this] { Run(); });
  }
  ~ReversingLink() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  RelayBlobChannel::Call call() {
    return [this](relay::CommandBody body, RelayBlobChannel::Done done) {
      std::lock_guard<std::mutex> lock(mu_);
      if (std::holds_alternative<relay::PutAttachmentChunk>(body)) ++puts_;
      queue_.push_back({std::move(body), std::move(done)});
      cv_.notify_all();
    };
  }
  // The next `n` commands fail as if the link dropped, without reaching the relay.
  void Drop(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    drop_ = n;
  }
  // The next `n` pieces reach the relay, but their answers are lost as if the link dropped after them.
  void LoseAnswers(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    lose_ = n;
  }
  // The relay runs each round's commands in the order they came (a relay that appends chunks as they
  // arrive), not newest first.
  void RunInOrder() {
    std::lock_guard<std::mutex> lock(mu_);
    in_order_ = true;
  }
  int refused() const { return refused_.load(); }
  // The most commands that were waiting for an answer at once.
  size_t most_unanswered() const { return most_unanswered_.load(); }

 private:
  struct Pending {
    relay::CommandBody body;
    RelayBlobChannel::Done done;
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      const auto holds_a_put = [&] {
        return std::any_of(queue_.begin(), queue_.end(), [](const Pending& p) {
          return std::holds_alternative<relay::PutAttachmentChunk>(p.body);
        });
      };
      cv_.wait_for(lock, std::chrono::seconds(10),
                   [&] { return stop_ || puts_ >= hold_puts_ || !holds_a_put(); });
      // Let the channel fill its window, so there is something to reorder.
      cv_.wait_for(lock, std::chrono::milliseconds(5), [&] { return stop_ || queue_.size() >= 8; });
      most_unanswered_.store(std::max(most_unanswered_.load(), queue_.size()));
      std::deque<Pending> batch;
      batch.swap(queue_);
      std::vector<Result<relay::Response>> answers(batch.size(),
                                                   Error(StatusCode::kUnavailable, "link dropped"));
      for (size_t j = 0; j < batch.size(); ++j) {
        const size_t k = in_order_ ? j : batch.size() - 1 - j;
        if (drop_ > 0) {
          --drop_;
          continue;
        }
        const bool lose = lose_ > 0 && std::holds_alternative<relay::PutAttachmentChunk>(batch[k].body);
        if (lose) --lose_;
        lock.unlock();
        answers[k] = Handle(std::move(batch[k].body));
        if (lose) answers[k] = Error(StatusCode::kUnavailable, "link dropped");
        lock.lock();
      }
      lock.unlock();
      for (size_t j = 0; j < batch.size(); ++j) {
        const size_t k = answers_in_order_ ? j : batch.size() - 1 - j;
        batch[k].done(std::move(answers[k]));
      }
      lock.lock();
    }
  }

  Result<relay::Response> Handle(relay::CommandBody body) {
    auto frames = service_.Handle(key_, relay::EncodeCommand(relay::Command{++request_id_, std::move(body)}));
    auto decoded = relay::DecodeServerFrame(frames.back());
    if (!decoded) return Error(decoded.error());
    auto* r = std::get_if<relay::Response>(&*decoded);
    if (!r) return Error(StatusCode::kInternal, "not a response");
    if (r->code == relay::ResponseCode::kInvalidRequest) ++refused_;
    return *r;
  }

  const bool answers_in_order_;
  const size_t hold_puts_;
  size_t puts_ = 0;  // pieces sent so far
  std::atomic<size_t> most_unanswered_{0};
  std::unique_ptr<relay::MailboxStore> store_ = relay::NewInMemoryMailboxStore();
  SeededRandom random_{3};
  relay::RelayService service_;
  relay::LinkKey key_{};
  uint32_t request_id_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  int drop_ = 0;
  int lose_ = 0;
  bool in_order_ = false;
  bool stop_ = false;
  std::atomic<int> refused_{0};
  std::thread thread_;
};

std::vector<Bytes> Pieces(size_t n, size_t size) {
  std::vector<Bytes> out;
  SeededRandom r(9);
  for (size_t i = 0; i < n; ++i) {
    Bytes b(size);
    r.Fill(b.data(), b.size());
    out.push_back(std::move(b));
  }
  return out;
}

TEST(RelayBlobChannelTest, PiecesAnsweredOutOfOrderStillMakeTheWholeBlob) {
  ReversingLink link;
  RelayBlobChannel channel(link.call(), 10'000);
  const auto pieces = Pieces(40, 1000);
  auto id = channel.Create(40 * 1000);
  ASSERT_TRUE(id.has_value()) << Describe(id);
  auto stored = channel.PutMany(*id, 0, pieces);
  ASSERT_TRUE(stored.has_value()) << Describe(stored);
  EXPECT_EQ(*stored, 40u * 1000);
  EXPECT_GT(link.refused(), 0) << "the reversing link did reorder pieces";

  std::vector<uint32_t> lengths(40, 1000);
  auto reads = channel.GetMany(*id, 0, lengths);
  ASSERT_TRUE(reads.has_value()) << Describe(reads);
  ASSERT_EQ(reads->size(), 40u);
  for (size_t i = 0; i < 40; ++i) {
    EXPECT_EQ((*reads)[i].total_size, 40u * 1000);
    EXPECT_EQ((*reads)[i].data, pieces[i]) << i;
  }
}

TEST(RelayBlobChannelTest, ARefusalWhoseAnswerTrailsItsPredecessorsIsStillARace) {
  ReversingLink link(/*answers_in_order=*/true);
  RelayBlobChannel channel(link.call(), 10'000);
  const auto pieces = Pieces(24, 700);
  auto id = channel.Create(24 * 700);
  ASSERT_TRUE(id.has_value()) << Describe(id);
  auto stored = channel.PutMany(*id, 0, pieces);
  ASSERT_TRUE(stored.has_value()) << Describe(stored);
  EXPECT_EQ(*stored, 24u * 700);
  EXPECT_GT(link.refused(), 0);
}

TEST(RelayBlobChannelTest, ADroppedLinkFailsTheBatchAndARetryCompletesIt) {
  ReversingLink link;
  RelayBlobChannel channel(link.call(), 10'000);
  const auto pieces = Pieces(20, 500);
  auto id = channel.Create(20 * 500);
  ASSERT_TRUE(id.has_value()) << Describe(id);
  link.Drop(3);
  auto first = channel.PutMany(*id, 0, pieces);
  ASSERT_FALSE(first.has_value());
  EXPECT_EQ(first.error().code(), StatusCode::kUnavailable);
  // Whatever part of the batch the relay took is accepted again unchanged.
  auto again = channel.PutMany(*id, 0, pieces);
  ASSERT_TRUE(again.has_value()) << Describe(again);
  EXPECT_EQ(*again, 20u * 500);
}

TEST(RelayBlobChannelTest, RealRefusalsAreNotRetriedForever) {
  ReversingLink link;
  RelayBlobChannel channel(link.call(), 10'000);
  auto id = channel.Create(1000);
  ASSERT_TRUE(id.has_value()) << Describe(id);
  // A piece past the declared size is refused even with everything before it stored.
  auto r = channel.PutMany(*id, 0, Pieces(2, 600));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  wire::BlobId unknown{};
  unknown[0] = 0xee;
  auto g = channel.Get(unknown, 0, 10);
  ASSERT_FALSE(g.has_value());
  EXPECT_EQ(g.error().code(), StatusCode::kNotFound);
}

// StartPutMany sends a batch without waiting for its answers, so the next batch follows it on the link at
// once (what keeps an upload's link busy while the relay syncs); each Wait gives what PutMany would have.
TEST(RelayBlobChannelTest, ABatchStartedBehindAnotherGoesOutBeforeEitherIsAnswered) {
  ReversingLink link(/*answers_in_order=*/false, /*hold_puts=*/20);
  RelayBlobChannel channel(link.call(), 20'000);
  const auto pieces = Pieces(20, 300);
  auto id = channel.Create(20 * 300);
  ASSERT_TRUE(id.has_value()) << Describe(id);
  const std::span<const Bytes> all(pieces);
  auto first = channel.StartPutMany(*id, 0, all.subspan(0, 10));
  auto second = channel.StartPutMany(*id, 10 * 300, all.subspan(10));
  auto a = first->Wait();
  ASSERT_TRUE(a.has_value()) << Describe(a);
  EXPECT_GE(*a, 10u * 300);
  EXPECT_EQ(link.most_unanswered(), 20u) << "the second batch waited for the first one's answers";
  // Reversed, the second batch reached the relay first and was refused: as the uploader does, it goes
  // again once the first is stored.
  auto b = second->Wait();
  if (!b) {
    ASSERT_EQ(b.error().code(), StatusCode::kInvalidArgument) << Describe(b);
    b = channel.PutMany(*id, 10 * 300, all.subspan(10));
  }
  ASSERT_TRUE(b.has_value()) << Describe(b);
  EXPECT_EQ(*b, 20u * 300);
  std::vector<uint32_t> lengths(20, 300);
  auto reads = channel.GetMany(*id, 0, lengths);
  ASSERT_TRUE(reads.has_value()) << Describe(reads);
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ((*reads)[i].data, pieces[i]) << i;
}

Bytes WriteContent(const std::string& path, size_t size, uint64_t seed) {
  Bytes content(size);
  SeededRandom(seed).Fill(content.data(), content.size());
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(content.data()), static_cast<std::streamsize>(content.size()));
  return content;
}

// Uploads in chunks of 100 bytes, `window` of them per batch, with no wait between retries.
UploadOptions SmallBatches(size_t window) {
  UploadOptions o;
  o.chunk_size = 100;
  o.transfer.window = window;
  o.transfer.wait = [](int) {};
  return o;
}

Bytes Download(RelayBlobChannel& channel, const wire::AttachmentDescriptor& d, const std::string& dest) {
  TransferOptions t;
  t.wait = [](int) {};
  const Status s = DownloadAttachment(channel, d, dest, t);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::ifstream in(dest, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// An upload through the relay channel keeps two batches in flight, and comes out whole although the link
// reorders pieces across the two (a later batch's pieces reach the relay before the earlier batch's, are
// refused as not continuing the blob, and are sent again).
TEST(RelayBlobChannelTest, AnUploadKeepsTwoBatchesInFlightAndSurvivesTheirReordering) {
  constexpr size_t kWindow = 8;
  ReversingLink link(/*answers_in_order=*/false, /*hold_puts=*/2 * kWindow);
  RelayBlobChannel channel(link.call(), 20'000);
  cw::testing::TempDir dir("cw_blob_channel");
  const std::string src = dir.Sub("scan.bin");
  const Bytes content = WriteContent(src, 5 * kWindow * 100 + 7, 11);
  const UploadOptions o = SmallBatches(kWindow);
  auto d = UploadAttachment(channel, src, o);
  ASSERT_TRUE(d.has_value()) << Describe(d);
  EXPECT_EQ(link.most_unanswered(), 2 * kWindow) << "the upload waited for each batch's answers";
  EXPECT_GT(link.refused(), 0) << "the link did not reorder across batches";
  EXPECT_EQ(Download(channel, *d, dir.Sub("received.bin")), content);
}

// The link drops while two batches are in flight: the earlier one is retried after a wait, the later one
// (refused where the earlier one's pieces were lost, or lost itself) is sent again behind it, and the
// upload still comes out whole.
TEST(RelayBlobChannelTest, AnUploadWhoseLinkDropsUnderTwoBatchesInFlightResumes) {
  constexpr size_t kWindow = 8;
  ReversingLink link;
  RelayBlobChannel channel(link.call(), 20'000);
  cw::testing::TempDir dir("cw_blob_channel");
  const std::string src = dir.Sub("scan.bin");
  const Bytes content = WriteContent(src, 6 * kWindow * 100, 12);
  UploadOptions o = SmallBatches(kWindow);
  int waits = 0;
  o.transfer.wait = [&](int) { ++waits; };
  bool dropped = false;
  o.transfer.progress = [&](uint64_t done, uint64_t) {
    if (done > 0 && !dropped) {
      dropped = true;
      // The rest of one batch in flight and half the next.
      link.Drop(static_cast<int>(kWindow + kWindow / 2));
    }
  };
  auto d = UploadAttachment(channel, src, o);
  ASSERT_TRUE(d.has_value()) << Describe(d);
  EXPECT_GT(waits, 0) << "nothing was dropped";
  EXPECT_EQ(Download(channel, *d, dir.Sub("received.bin")), content);
}

// Found in review: the relay appends a batch behind another as it comes, so when the first batch's answers
// are lost and it is sent again, the relay answers with a length that already takes in the batch behind.
// That length is ours, not another blob's: the upload goes on.
TEST(RelayBlobChannelTest, AnUploadWhoseAnswersAreLostWhileTheBatchBehindIsStoredGoesOn) {
  constexpr size_t kWindow = 8;
  ReversingLink link(/*answers_in_order=*/true, /*hold_puts=*/2 * kWindow);
  link.RunInOrder();
  link.LoseAnswers(kWindow / 2);  // of the first batch; the relay stores it and the second one
  RelayBlobChannel channel(link.call(), 20'000);
  cw::testing::TempDir dir("cw_blob_channel");
  const std::string src = dir.Sub("scan.bin");
  const Bytes content = WriteContent(src, 3 * kWindow * 100, 13);
  UploadOptions o = SmallBatches(kWindow);
  int waits = 0;
  o.transfer.wait = [&](int) { ++waits; };
  auto d = UploadAttachment(channel, src, o);
  ASSERT_TRUE(d.has_value()) << Describe(d);
  EXPECT_EQ(waits, 1) << "the lost answers were not what the upload met";
  EXPECT_EQ(link.most_unanswered(), 2 * kWindow);
  EXPECT_EQ(Download(channel, *d, dir.Sub("received.bin")), content);
}

// A batch larger than the channel's window goes one at a time: sent behind another, its first window would
// reach the relay before the tail of the batch ahead and be refused.
TEST(RelayBlobChannelTest, BatchesLargerThanTheWindowAreNotSentBehindAnother) {
  ReversingLink link;
  link.RunInOrder();
  RelayBlobChannel channel(link.call(), 20'000, kRelayPiecesInFlight, /*put_window=*/4);
  cw::testing::TempDir dir("cw_blob_channel");
  const std::string src = dir.Sub("scan.bin");
  const Bytes content = WriteContent(src, 5 * 16 * 100, 14);
  const UploadOptions o = SmallBatches(16);
  auto d = UploadAttachment(channel, src, o);
  ASSERT_TRUE(d.has_value()) << Describe(d);
  EXPECT_EQ(link.refused(), 0) << "pieces were sent out of order";
  EXPECT_EQ(Download(channel, *d, dir.Sub("received.bin")), content);
}

TEST(RelayBlobChannelTest, SilenceTimesOut) {
  RelayBlobChannel channel([](relay::CommandBody, RelayBlobChannel::Done) {}, 50);
  auto r = channel.Create(10);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cw::runtime
