// RelayService: every rule of issue 4's relay core, through encoded command frames as a transport would
// deliver them, on the in-memory store (and on RocksDB where durability is the point).
#include "relay/relay_service.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

#include "core/base/random.h"
#include "relay/rocksdb_mailbox_store.h"
#include "tests/relay/index_only_store.h"
#include "tests/relay/relay_test_util.h"

namespace cw::relay {
namespace {

using testing::Filled;
using testing::Key;
using testing::Mid;

constexpr int64_t kDay = 24ll * 3600 * 1000;

class RecordingSink final : public PushSink {
 public:
  void Push(Bytes frame) override {
    std::lock_guard<std::mutex> lock(mu_);
    frames_.push_back(std::move(frame));
  }
  std::vector<ServerFrame> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ServerFrame> out;
    for (const auto& f : frames_) out.push_back(DecodeServerFrame(f).value());
    frames_.clear();
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<Bytes> frames_;
};

// A client's view: sends a command, decodes what comes back.
struct Reply {
  std::vector<Delivery> deliveries;
  Response response;
};

class RelayServiceTest : public ::testing::Test {
 protected:
  RelayServiceTest() : store_(NewInMemoryMailboxStore()) { Reset(RelayOptions{}); }

  void Reset(RelayOptions options) {
    options.stats_keys = {Key(0xad)};
    service_ = std::make_unique<RelayService>(*store_, clock_, random_, options, &log_);
  }

  Reply Send(const LinkKey& who, CommandBody body) { return SendRaw(who, EncodeCommand(Command{++rid_, std::move(body)})); }
  Reply SendRaw(const LinkKey& who, ByteView frame) {
    Reply reply;
    auto frames = service_->Handle(who, frame);
    EXPECT_FALSE(frames.empty());
    for (size_t i = 0; i < frames.size(); ++i) {
      auto decoded = DecodeServerFrame(frames[i]);
      EXPECT_TRUE(decoded.has_value()) << decoded.error().ToString();
      if (!decoded) continue;
      if (i + 1 < frames.size()) {
        reply.deliveries.push_back(std::get<Delivery>(*decoded));
      } else {
        reply.response = std::get<Response>(*decoded);
      }
    }
    return reply;
  }

  MailboxId NewMailbox(const LinkKey& owner) {
    Reply r = Send(owner, CreateMailbox{});
    EXPECT_EQ(r.response.code, ResponseCode::kOk) << r.response.message;
    return std::get<MailboxCreated>(r.response.body).mailbox;
  }
  DepositToken Issue(const LinkKey& owner, const MailboxId& box) {
    Reply r = Send(owner, IssueDepositToken{box});
    EXPECT_EQ(r.response.code, ResponseCode::kOk) << r.response.message;
    return std::get<TokenIssued>(r.response.body).token;
  }
  ResponseCode Deposit(const MailboxId& box, const DepositToken& token, const MessageId& id, Bytes env) {
    return Send(Key(0x55), relay::Deposit{box, token, id, std::move(env)}).response.code;
  }
  UploadPreKeys Upload(const MailboxId& box, uint32_t first, size_t n) {
    UploadPreKeys u;
    u.mailbox = box;
    u.registration_id = 1234;
    u.identity_key = Filled<wire::kPublicKeySize>(0x05);
    u.signed_pre_key = {1, Filled<wire::kPublicKeySize>(0x06), Filled<wire::kSignatureSize>(0x07)};
    for (size_t i = 0; i < n; ++i) u.one_time_pre_keys.push_back({first + uint32_t(i), Filled<wire::kPublicKeySize>(uint8_t(i))});
    return u;
  }

  FakeClock clock_;
  SeededRandom random_{7};
  MemoryLogSink log_;
  std::unique_ptr<MailboxStore> store_;
  std::unique_ptr<RelayService> service_;
  uint32_t rid_ = 0;
  const LinkKey alice_ = Key(0xa1);
  const LinkKey mallory_ = Key(0x66);
};

// ---- Mailboxes ----

TEST_F(RelayServiceTest, MailboxIsReadOnlyByTheLinkKeyThatCreatedIt) {
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  ASSERT_EQ(Deposit(box, token, Mid(1), Bytes(256, 1)), ResponseCode::kOk);

  Reply own = Send(alice_, FetchMessages{box, 0, 10});
  EXPECT_EQ(own.response.code, ResponseCode::kOk);
  ASSERT_EQ(own.deliveries.size(), 1u);
  EXPECT_EQ(own.deliveries[0].envelope, Bytes(256, 1));
  EXPECT_EQ(own.deliveries[0].request_id, own.response.request_id);

  // Another key: fetch, ack, token issue/revoke and pre-key upload are all "no such mailbox", exactly as
  // for a mailbox that does not exist.
  const MailboxId nowhere = Filled<kMailboxIdSize>(0x77);
  for (const MailboxId& target : {box, nowhere}) {
    std::vector<CommandBody> cmds = {FetchMessages{target, 0, 10}, Ack{target, {Mid(1)}},
                                     IssueDepositToken{target}, RevokeDepositToken{target, token},
                                     Upload(target, 1, 1)};
    for (auto& c : cmds) {
      Reply r = Send(mallory_, c);
      EXPECT_EQ(r.response.code, ResponseCode::kNotFound);
      EXPECT_EQ(r.response.message, "no such mailbox");
      EXPECT_TRUE(r.deliveries.empty());
    }
  }
  // Mallory's ack did nothing.
  EXPECT_EQ(Send(alice_, FetchMessages{box, 0, 10}).deliveries.size(), 1u);
}

// What a loop thread may take in: deposits and attachment chunks (answered through the callback exactly as
// Handle answers them, refusals included), downloads the store can read without waiting (all of them for
// an in-memory store), and undecodable frames; every other command but acknowledgements (next test) is
// left for a thread that may block.
TEST_F(RelayServiceTest, OnlyDepositsChunksDownloadsAndBadFramesAreTakenWithoutBlocking) {
  const LinkKey owner = Key(1);
  const MailboxId box = NewMailbox(owner);
  const DepositToken token = Issue(owner, box);
  std::vector<std::vector<Bytes>> answers;
  const RelayService::Reply record = [&](std::vector<Bytes> frames) { answers.push_back(std::move(frames)); };
  auto take = [&](CommandBody body) {
    return service_->TryHandleWithoutBlocking(Key(2), EncodeCommand(Command{++rid_, std::move(body)}), record);
  };

  EXPECT_FALSE(take(FetchMessages{box, 0, 10}));
  EXPECT_FALSE(take(CreateMailbox{}));
  EXPECT_FALSE(take(IssueDepositToken{box}));
  EXPECT_TRUE(answers.empty()) << "a command left to Handle was answered anyway";
  EXPECT_EQ(Send(owner, FetchMessages{box, 0, 10}).deliveries.size(), 0u) << "a refused take changed something";

  ASSERT_TRUE(take(relay::Deposit{box, token, Mid(1), Bytes(40, 1)}));
  ASSERT_TRUE(take(relay::Deposit{box, token, Mid(1), Bytes(40, 1)}));  // a retry
  ASSERT_TRUE(take(relay::Deposit{box, DepositToken{}, Mid(2), Bytes(40, 1)}));
  ASSERT_TRUE(service_->TryHandleWithoutBlocking(Key(2), Bytes{0xc1}, record));
  ASSERT_EQ(answers.size(), 4u);
  const ResponseCode expected[] = {ResponseCode::kOk, ResponseCode::kOk, ResponseCode::kDepositRefused,
                                   ResponseCode::kMalformed};
  for (size_t i = 0; i < answers.size(); ++i) {
    ASSERT_EQ(answers[i].size(), 1u);
    auto frame = DecodeServerFrame(answers[i][0]);
    ASSERT_TRUE(frame.has_value());
    EXPECT_EQ(std::get<Response>(*frame).code, expected[i]) << "answer " << i;
  }
  EXPECT_EQ(std::get<Response>(DecodeServerFrame(answers[0][0]).value()).request_id, rid_ - 2);
  EXPECT_EQ(Send(owner, FetchMessages{box, 0, 10}).deliveries.size(), 1u);

  // Chunks are taken too, each answered with the bytes now stored (an in-memory store answers at once; the
  // RocksDB store's tests cover answers that wait for a sync); another link key's chunk is "no such
  // attachment". So are downloads, from memory: an unfinished attachment's is "no such attachment", a
  // finished one's carries its bytes, both as Handle answers them.
  answers.clear();
  Reply created = Send(Key(2), CreateAttachment{9});
  ASSERT_EQ(created.response.code, ResponseCode::kOk);
  const AttachmentId id = std::get<AttachmentCreated>(created.response.body).id;
  ASSERT_TRUE(take(GetAttachmentChunk{id, 0, 9}));
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(std::get<Response>(DecodeServerFrame(answers[0].at(0)).value()).code, ResponseCode::kNotFound);
  answers.clear();
  ASSERT_TRUE(take(PutAttachmentChunk{id, 0, Bytes{1, 2, 3}}));
  ASSERT_TRUE(take(PutAttachmentChunk{id, 3, Bytes{4, 5, 6}}));
  ASSERT_TRUE(take(PutAttachmentChunk{id, 6, Bytes{7, 8, 9}}));
  ASSERT_TRUE(service_->TryHandleWithoutBlocking(
      mallory_, EncodeCommand(Command{++rid_, PutAttachmentChunk{id, 9, Bytes{0}}}), record));
  ASSERT_EQ(answers.size(), 4u);
  for (size_t i = 0; i < 3; ++i) {
    const Response r = std::get<Response>(DecodeServerFrame(answers[i].at(0)).value());
    ASSERT_EQ(r.code, ResponseCode::kOk) << r.message;
    EXPECT_EQ(r.command, static_cast<uint8_t>(CommandType::kPutAttachmentChunk));
    EXPECT_EQ(std::get<ChunkStored>(r.body).written, 3 * (i + 1));
  }
  EXPECT_EQ(std::get<Response>(DecodeServerFrame(answers[3].at(0)).value()).code, ResponseCode::kNotFound);
  Reply back = Send(mallory_, GetAttachmentChunk{id, 0, 9});
  ASSERT_EQ(back.response.code, ResponseCode::kOk);
  EXPECT_EQ(std::get<ChunkData>(back.response.body).data, (Bytes{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  answers.clear();
  ASSERT_TRUE(take(GetAttachmentChunk{id, 2, 4}));
  ASSERT_TRUE(take(GetAttachmentChunk{id, 10, 1}));
  ASSERT_EQ(answers.size(), 2u);
  const Response piece = std::get<Response>(DecodeServerFrame(answers[0].at(0)).value());
  ASSERT_EQ(piece.code, ResponseCode::kOk) << piece.message;
  EXPECT_EQ(piece.request_id, rid_ - 1);
  EXPECT_EQ(piece.command, static_cast<uint8_t>(CommandType::kGetAttachmentChunk));
  EXPECT_EQ(std::get<ChunkData>(piece.body).data, (Bytes{3, 4, 5, 6}));
  EXPECT_EQ(std::get<ChunkData>(piece.body).total_size, 9u);
  EXPECT_EQ(std::get<Response>(DecodeServerFrame(answers[1].at(0)).value()).code,
            ResponseCode::kInvalidRequest);
}

// Acknowledgements are taken on the loop thread as well (every message is acknowledged once, as often as it
// is deposited) and answered as Handle answers them: the count removed, "no such mailbox" for a link key
// that does not own it, nothing removed for ids already gone.
TEST_F(RelayServiceTest, AcknowledgementsAreTakenWithoutBlocking) {
  const LinkKey owner = Key(1);
  const MailboxId box = NewMailbox(owner);
  const DepositToken token = Issue(owner, box);
  for (uint8_t i = 1; i <= 3; ++i) {
    ASSERT_EQ(Send(Key(2), relay::Deposit{box, token, Mid(i), Bytes(40, i)}).response.code,
              ResponseCode::kOk);
  }
  std::vector<Response> answers;
  const RelayService::Reply record = [&](std::vector<Bytes> frames) {
    ASSERT_EQ(frames.size(), 1u);
    answers.push_back(std::get<Response>(DecodeServerFrame(frames[0]).value()));
  };
  auto take = [&](const LinkKey& from, CommandBody body) {
    return service_->TryHandleWithoutBlocking(from, EncodeCommand(Command{++rid_, std::move(body)}), record);
  };
  const uint32_t first = rid_ + 1;
  ASSERT_TRUE(take(Key(2), Ack{box, {Mid(1)}}));
  ASSERT_TRUE(take(owner, Ack{box, {Mid(1), Mid(2), Mid(99)}}));
  ASSERT_TRUE(take(owner, Ack{box, {Mid(1)}}));
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[0].code, ResponseCode::kNotFound);
  EXPECT_EQ(answers[0].message, Send(Key(2), Ack{box, {Mid(1)}}).response.message) << "as Handle answers it";
  for (size_t i = 0; i < answers.size(); ++i) {
    EXPECT_EQ(answers[i].command, static_cast<uint8_t>(CommandType::kAck));
    EXPECT_EQ(answers[i].request_id, first + i) << "answer " << i;
  }
  for (size_t i = 1; i < answers.size(); ++i)
    ASSERT_EQ(answers[i].code, ResponseCode::kOk) << answers[i].message;
  EXPECT_EQ(std::get<Acked>(answers[1].body).removed, 2u);
  EXPECT_EQ(std::get<Acked>(answers[2].body).removed, 0u);
  const Reply left = Send(owner, FetchMessages{box, 0, 10});
  ASSERT_EQ(left.deliveries.size(), 1u);
  EXPECT_EQ(left.deliveries[0].message_id, Mid(3));
}

// A store that cannot read without waiting (the default MailboxStore answer) leaves every download to
// Handle, untouched.
TEST(RelayServiceLoop, ADownloadTheStoreWouldWaitForIsLeftForHandle) {
  class WaitsForDisk final : public testing::IndexOnlyStore {
   public:
    std::optional<Result<AttachmentChunkRead>> TryReadAttachmentWithoutBlocking(const AttachmentId&, uint64_t,
                                                                                size_t) override {
      ++asked;
      return std::nullopt;
    }
    int asked = 0;
  } store;
  FakeClock clock;
  SeededRandom random(4);
  MemoryLogSink log;
  RelayService service(store, clock, random, RelayOptions{}, &log);
  const LinkKey alice = Key(1);
  auto frames = service.Handle(alice, EncodeCommand(Command{1, CreateAttachment{3}}));
  const AttachmentId id =
      std::get<AttachmentCreated>(std::get<Response>(DecodeServerFrame(frames.back()).value()).body).id;
  service.Handle(alice, EncodeCommand(Command{2, PutAttachmentChunk{id, 0, Bytes{1, 2, 3}}}));
  bool answered = false;
  EXPECT_FALSE(service.TryHandleWithoutBlocking(alice,
                                                EncodeCommand(Command{3, GetAttachmentChunk{id, 0, 3}}),
                                                [&](std::vector<Bytes>) { answered = true; }));
  EXPECT_EQ(store.asked, 1);
  EXPECT_FALSE(answered);
  frames = service.Handle(alice, EncodeCommand(Command{3, GetAttachmentChunk{id, 0, 3}}));
  EXPECT_EQ(std::get<ChunkData>(std::get<Response>(DecodeServerFrame(frames.back()).value()).body).data,
            (Bytes{1, 2, 3}));
}

TEST_F(RelayServiceTest, MailboxesPerLinkKeyAreCapped) {
  RelayOptions o;
  o.max_mailboxes_per_key = 2;
  Reset(o);
  NewMailbox(alice_);
  NewMailbox(alice_);
  EXPECT_EQ(Send(alice_, CreateMailbox{}).response.code, ResponseCode::kLimitExceeded);
  NewMailbox(mallory_);
}

// ---- Deposits ----

TEST_F(RelayServiceTest, UnknownMailboxAndWrongTokenAreIndistinguishable) {
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  Reply wrong_token = Send(mallory_, relay::Deposit{box, Filled<kDepositTokenSize>(9), Mid(1), Bytes(10, 1)});
  Reply no_box = Send(mallory_, relay::Deposit{Filled<kMailboxIdSize>(0x42), token, Mid(1), Bytes(10, 1)});
  // Another mailbox's valid token does not open this one either.
  const MailboxId box2 = NewMailbox(alice_);
  Reply other_token = Send(mallory_, relay::Deposit{box2, token, Mid(1), Bytes(10, 1)});
  for (const Reply* r : {&wrong_token, &no_box, &other_token}) {
    EXPECT_EQ(r->response.code, ResponseCode::kDepositRefused);
    EXPECT_EQ(r->response.message, "deposit refused");
  }
  // Byte-identical frames apart from the request id.
  auto strip = [](Response r) {
    r.request_id = 0;
    return EncodeServerFrame(ServerFrame(r));
  };
  EXPECT_EQ(strip(wrong_token.response), strip(no_box.response));
  EXPECT_TRUE(Send(alice_, FetchMessages{box, 0, 10}).deliveries.empty());
}

TEST_F(RelayServiceTest, RevokedTokenIsRefused) {
  const MailboxId box = NewMailbox(alice_);
  const DepositToken t1 = Issue(alice_, box);
  const DepositToken t2 = Issue(alice_, box);
  EXPECT_NE(t1, t2);
  ASSERT_EQ(Deposit(box, t1, Mid(1), Bytes(10, 1)), ResponseCode::kOk);
  EXPECT_EQ(Send(alice_, RevokeDepositToken{box, t1}).response.code, ResponseCode::kOk);
  EXPECT_EQ(Deposit(box, t1, Mid(2), Bytes(10, 1)), ResponseCode::kDepositRefused);
  EXPECT_EQ(Deposit(box, t2, Mid(3), Bytes(10, 1)), ResponseCode::kOk);  // the other contact is unaffected
  EXPECT_EQ(Send(alice_, RevokeDepositToken{box, t1}).response.code, ResponseCode::kNotFound);
}

TEST_F(RelayServiceTest, RetriedDepositIsStoredOnce) {
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Deposit(box, token, Mid(1), Bytes(300, 1)), ResponseCode::kOk);
  EXPECT_EQ(Send(alice_, FetchMessages{box, 0, 10}).deliveries.size(), 1u);
  EXPECT_EQ(service_->Stats().queued_messages, 1u);
}

TEST_F(RelayServiceTest, FullMailboxAnswersMailboxFullAndDropsNothing) {
  RelayOptions o;
  o.quota = {5, 1 << 20};
  Reset(o);
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  for (uint32_t i = 1; i <= 5; ++i) ASSERT_EQ(Deposit(box, token, Mid(i), Bytes(100, uint8_t(i))), ResponseCode::kOk);
  Reply full = Send(Key(0x55), relay::Deposit{box, token, Mid(6), Bytes(100, 6)});
  EXPECT_EQ(full.response.code, ResponseCode::kMailboxFull);
  Reply fetched = Send(alice_, FetchMessages{box, 0, 64});
  ASSERT_EQ(fetched.deliveries.size(), 5u);
  for (uint32_t i = 0; i < 5; ++i) EXPECT_EQ(fetched.deliveries[i].message_id, Mid(i + 1));
  // The owner acks one; the depositor's retry now goes in.
  EXPECT_EQ(std::get<Acked>(Send(alice_, Ack{box, {Mid(1)}}).response.body).removed, 1u);
  EXPECT_EQ(Deposit(box, token, Mid(6), Bytes(100, 6)), ResponseCode::kOk);
}

TEST_F(RelayServiceTest, ByteQuotaAlsoAnswersMailboxFull) {
  RelayOptions o;
  o.quota = {1000, 1000};
  Reset(o);
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  ASSERT_EQ(Deposit(box, token, Mid(1), Bytes(900, 1)), ResponseCode::kOk);
  EXPECT_EQ(Deposit(box, token, Mid(2), Bytes(101, 1)), ResponseCode::kMailboxFull);
  EXPECT_EQ(Deposit(box, token, Mid(3), Bytes(100, 1)), ResponseCode::kOk);
}

TEST_F(RelayServiceTest, DefaultQuotaIsOneThousandMessages) {
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  for (uint32_t i = 1; i <= 1000; ++i) ASSERT_EQ(Deposit(box, token, Mid(i), Bytes(16, 1)), ResponseCode::kOk) << i;
  EXPECT_EQ(Deposit(box, token, Mid(1001), Bytes(16, 1)), ResponseCode::kMailboxFull);
}

TEST_F(RelayServiceTest, MessagesExpireAfterThirtyDaysByDefault) {
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  ASSERT_EQ(Deposit(box, token, Mid(1), Bytes(10, 1)), ResponseCode::kOk);
  clock_.Advance(29 * kDay);
  ASSERT_EQ(Deposit(box, token, Mid(2), Bytes(10, 2)), ResponseCode::kOk);
  EXPECT_EQ(service_->PurgeExpired().value(), 0u);
  clock_.Advance(kDay);  // message 1 is now exactly 30 days old
  EXPECT_EQ(service_->PurgeExpired().value(), 1u);
  Reply r = Send(alice_, FetchMessages{box, 0, 10});
  ASSERT_EQ(r.deliveries.size(), 1u);
  EXPECT_EQ(r.deliveries[0].message_id, Mid(2));
}

TEST_F(RelayServiceTest, FetchPagesAfterSequenceAndAckRemoves) {
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  for (uint32_t i = 1; i <= 5; ++i) ASSERT_EQ(Deposit(box, token, Mid(i), Bytes(10, uint8_t(i))), ResponseCode::kOk);
  Reply p1 = Send(alice_, FetchMessages{box, 0, 3});
  ASSERT_EQ(p1.deliveries.size(), 3u);
  const auto& done = std::get<FetchDone>(p1.response.body);
  EXPECT_TRUE(done.more);
  EXPECT_EQ(done.delivered, 3u);
  EXPECT_EQ(done.last_seq, p1.deliveries.back().seq);
  Reply p2 = Send(alice_, FetchMessages{box, done.last_seq, 3});
  ASSERT_EQ(p2.deliveries.size(), 2u);
  EXPECT_FALSE(std::get<FetchDone>(p2.response.body).more);
  // At-least-once: without an ack the messages come again.
  EXPECT_EQ(Send(alice_, FetchMessages{box, 0, 64}).deliveries.size(), 5u);
  Reply acked = Send(alice_, Ack{box, {Mid(1), Mid(2), Mid(99)}});
  EXPECT_EQ(std::get<Acked>(acked.response.body).removed, 2u);
  EXPECT_EQ(Send(alice_, FetchMessages{box, 0, 64}).deliveries.size(), 3u);
}

// ---- Push ----

TEST_F(RelayServiceTest, ConnectedOwnerGetsPushesForOldAndNewMailboxes) {
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  auto sink = std::make_shared<RecordingSink>();
  auto sub = service_->Subscribe(alice_, sink);
  ASSERT_EQ(Deposit(box, token, Mid(1), Bytes(64, 1)), ResponseCode::kOk);
  ASSERT_EQ(Deposit(box, token, Mid(1), Bytes(64, 1)), ResponseCode::kOk);  // a retry: no second push
  const MailboxId later = NewMailbox(alice_);
  ASSERT_EQ(Deposit(later, Issue(alice_, later), Mid(2), Bytes(64, 2)), ResponseCode::kOk);
  auto pushed = sink->Take();
  ASSERT_EQ(pushed.size(), 2u);
  const auto& d0 = std::get<Delivery>(pushed[0]);
  EXPECT_EQ(d0.request_id, 0u);
  EXPECT_EQ(d0.mailbox, box);
  EXPECT_EQ(d0.message_id, Mid(1));
  EXPECT_EQ(d0.envelope, Bytes(64, 1));
  EXPECT_EQ(std::get<Delivery>(pushed[1]).mailbox, later);
  // Mallory subscribing hears nothing of alice's mailboxes.
  auto msink = std::make_shared<RecordingSink>();
  auto msub = service_->Subscribe(mallory_, msink);
  ASSERT_EQ(Deposit(box, token, Mid(3), Bytes(64, 3)), ResponseCode::kOk);
  EXPECT_TRUE(msink->Take().empty());
  EXPECT_EQ(sink->Take().size(), 1u);
  sub.reset();
  ASSERT_EQ(Deposit(box, token, Mid(4), Bytes(64, 4)), ResponseCode::kOk);
  EXPECT_TRUE(sink->Take().empty());  // disconnected: fetched on reconnect instead
  EXPECT_EQ(Send(alice_, FetchMessages{box, 0, 64}).deliveries.size(), 3u);
}

// ---- Pre-key directory ----

TEST_F(RelayServiceTest, DirectoryHandsOutBundlesAndWarnsOwnerBelowTen) {
  const MailboxId box = NewMailbox(alice_);
  Reply up = Send(alice_, Upload(box, 1, 12));
  ASSERT_EQ(up.response.code, ResponseCode::kOk);
  EXPECT_EQ(std::get<PreKeysStored>(up.response.body).one_time_remaining, 12u);
  auto sink = std::make_shared<RecordingSink>();
  auto sub = service_->Subscribe(alice_, sink);
  EXPECT_TRUE(sink->Take().empty());  // 12 left: no warning yet

  std::set<uint32_t> ids;
  for (int i = 0; i < 3; ++i) {
    Reply r = Send(Key(uint8_t(0x10 + i)), FetchBundle{box});  // three requesters
    ASSERT_EQ(r.response.code, ResponseCode::kOk);
    auto bundle = wire::DecodeBundle(std::get<BundleFound>(r.response.body).bundle);
    ASSERT_TRUE(bundle.has_value());
    EXPECT_EQ(bundle->registration_id, 1234u);
    ASSERT_TRUE(bundle->one_time_pre_key.has_value());
    EXPECT_TRUE(ids.insert(bundle->one_time_pre_key->id).second);
  }
  // 12 -> 11 -> 10 -> 9: one warning, after the fetch that left 9.
  auto pushed = sink->Take();
  ASSERT_EQ(pushed.size(), 1u);
  EXPECT_EQ(std::get<PreKeysLow>(pushed[0]).remaining, 9u);
  EXPECT_EQ(std::get<PreKeysLow>(pushed[0]).mailbox, box);
  // Reconnecting while low: warned at once.
  sub.reset();
  auto sink2 = std::make_shared<RecordingSink>();
  auto sub2 = service_->Subscribe(alice_, sink2);
  auto again = sink2->Take();
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(std::get<PreKeysLow>(again[0]).remaining, 9u);
}

TEST_F(RelayServiceTest, BundleWithoutOneTimePreKeyStillServed) {
  const MailboxId box = NewMailbox(alice_);
  ASSERT_EQ(Send(alice_, Upload(box, 1, 0)).response.code, ResponseCode::kOk);
  Reply r = Send(mallory_, FetchBundle{box});
  ASSERT_EQ(r.response.code, ResponseCode::kOk);
  auto bundle = wire::DecodeBundle(std::get<BundleFound>(r.response.body).bundle);
  ASSERT_TRUE(bundle.has_value());
  EXPECT_FALSE(bundle->one_time_pre_key.has_value());
  EXPECT_EQ(bundle->signed_pre_key.id, 1u);
}

TEST_F(RelayServiceTest, DirectoryAnswersNoBundleAlikeForUnknownAndEmptyMailboxes) {
  const MailboxId box = NewMailbox(alice_);  // no keys uploaded
  Reply empty = Send(mallory_, FetchBundle{box});
  Reply unknown = Send(mallory_, FetchBundle{Filled<kMailboxIdSize>(0x99)});
  EXPECT_EQ(empty.response.code, ResponseCode::kNotFound);
  EXPECT_EQ(empty.response.message, unknown.response.message);
  EXPECT_EQ(empty.response.code, unknown.response.code);
}

TEST_F(RelayServiceTest, DirectoryRateLimitsEachRequester) {
  const MailboxId box = NewMailbox(alice_);
  ASSERT_EQ(Send(alice_, Upload(box, 1, 100)).response.code, ResponseCode::kOk);
  for (int i = 0; i < 6; ++i) ASSERT_EQ(Send(mallory_, FetchBundle{box}).response.code, ResponseCode::kOk) << i;
  EXPECT_EQ(Send(mallory_, FetchBundle{box}).response.code, ResponseCode::kRateLimited);
  // Probing unknown addresses costs tokens too.
  EXPECT_EQ(Send(mallory_, FetchBundle{Filled<kMailboxIdSize>(1)}).response.code, ResponseCode::kRateLimited);
  EXPECT_EQ(Send(Key(0x12), FetchBundle{box}).response.code, ResponseCode::kOk);  // others unaffected
  clock_.Advance(10 * 60 * 1000);
  EXPECT_EQ(Send(mallory_, FetchBundle{box}).response.code, ResponseCode::kOk);
  EXPECT_EQ(Send(mallory_, FetchBundle{box}).response.code, ResponseCode::kRateLimited);
  // Only 8 of 100 keys consumed: the pool could not be drained.
  EXPECT_EQ(store_->CountOneTimePreKeys(box).value().value(), 92u);
}

TEST_F(RelayServiceTest, DirectoryTooManyPreKeysIsLimitExceeded) {
  RelayOptions o;
  o.max_one_time_pre_keys = 150;
  Reset(o);
  const MailboxId box = NewMailbox(alice_);
  ASSERT_EQ(Send(alice_, Upload(box, 1, 100)).response.code, ResponseCode::kOk);
  EXPECT_EQ(Send(alice_, Upload(box, 101, 100)).response.code, ResponseCode::kLimitExceeded);
  EXPECT_EQ(store_->CountOneTimePreKeys(box).value().value(), 100u);  // the refused upload changed nothing
}

// Concurrent bundle fetches from many threads (each its own requester, so the rate limit is not what
// stops them) never get the same one-time pre-key. RocksDB, so the removal path includes the sync.
TEST(RelayDirectoryConcurrency, ConcurrentFetchesNeverShareAOneTimePreKey) {
  testing::TempDir dir;
  auto store = RocksDbMailboxStore::Open(dir.Sub("db")).value();
  FakeClock clock;
  SeededRandom random(3);
  RelayService service(*store, clock, random);
  const LinkKey owner = Key(1);
  auto created = DecodeServerFrame(service.Handle(owner, EncodeCommand(Command{1, CreateMailbox{}})).back());
  const MailboxId box = std::get<MailboxCreated>(std::get<Response>(*created).body).mailbox;
  for (uint32_t batch = 0; batch < 3; ++batch) {
    UploadPreKeys u;
    u.mailbox = box;
    u.identity_key = Filled<wire::kPublicKeySize>(5);
    for (uint32_t i = 0; i < 100; ++i) u.one_time_pre_keys.push_back({batch * 100 + i + 1, Filled<wire::kPublicKeySize>(uint8_t(i))});
    auto r = DecodeServerFrame(service.Handle(owner, EncodeCommand(Command{2, u})).back());
    ASSERT_EQ(std::get<Response>(*r).code, ResponseCode::kOk);
  }
  constexpr int kThreads = 8;
  constexpr int kRequestersPerThread = 8;
  constexpr int kFetchesEach = 6;  // 8 * 8 * 6 = 384 fetches for 300 keys
  std::vector<std::vector<uint32_t>> got(kThreads);
  std::atomic<int> without{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int q = 0; q < kRequestersPerThread; ++q) {
        LinkKey requester = Key(0x80);
        requester[0] = uint8_t(t);
        requester[1] = uint8_t(q);
        for (int f = 0; f < kFetchesEach; ++f) {
          auto frames = service.Handle(requester, EncodeCommand(Command{3, FetchBundle{box}}));
          auto r = DecodeServerFrame(frames.back());
          if (!r || std::get<Response>(*r).code != ResponseCode::kOk) {
            failed.fetch_add(1);
            continue;
          }
          auto b = wire::DecodeBundle(std::get<BundleFound>(std::get<Response>(*r).body).bundle);
          if (b && b->one_time_pre_key) {
            got[t].push_back(b->one_time_pre_key->id);
          } else {
            without.fetch_add(1);
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<uint32_t> unique;
  size_t total = 0;
  for (const auto& g : got) {
    total += g.size();
    unique.insert(g.begin(), g.end());
  }
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(total, 300u);
  EXPECT_EQ(unique.size(), 300u);
  EXPECT_EQ(without.load(), kThreads * kRequestersPerThread * kFetchesEach - 300);
}

// ---- Attachments ----

TEST_F(RelayServiceTest, AttachmentUploadAndDownloadInChunks) {
  Bytes blob(150'000);
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = uint8_t(i * 31);
  Reply c = Send(alice_, CreateAttachment{blob.size()});
  ASSERT_EQ(c.response.code, ResponseCode::kOk);
  const AttachmentId id = std::get<AttachmentCreated>(c.response.body).id;
  // Not downloadable until complete.
  EXPECT_EQ(Send(mallory_, GetAttachmentChunk{id, 0, 100}).response.code, ResponseCode::kNotFound);
  for (size_t off = 0; off < blob.size(); off += kMaxAttachmentChunk) {
    const size_t n = std::min(kMaxAttachmentChunk, blob.size() - off);
    Reply p = Send(alice_, PutAttachmentChunk{id, off, Bytes(blob.begin() + off, blob.begin() + off + n)});
    ASSERT_EQ(p.response.code, ResponseCode::kOk) << p.response.message;
    EXPECT_EQ(std::get<ChunkStored>(p.response.body).written, off + n);
    // Mallory cannot write into it.
    EXPECT_EQ(Send(mallory_, PutAttachmentChunk{id, off + n, Bytes(1, 0)}).response.code, ResponseCode::kNotFound);
  }
  Bytes back;
  while (back.size() < blob.size()) {
    Reply g = Send(mallory_, GetAttachmentChunk{id, back.size(), 50'000});  // anyone holding the id
    ASSERT_EQ(g.response.code, ResponseCode::kOk);
    const auto& data = std::get<ChunkData>(g.response.body);
    EXPECT_EQ(data.total_size, blob.size());
    ASSERT_FALSE(data.data.empty());
    back.insert(back.end(), data.data.begin(), data.data.end());
  }
  EXPECT_EQ(back, blob);
  EXPECT_EQ(Send(alice_, PutAttachmentChunk{id, 5, Bytes(10, 0)}).response.code, ResponseCode::kOk);  // resend
  EXPECT_EQ(Send(alice_, PutAttachmentChunk{id, blob.size(), Bytes(1, 0)}).response.code,
            ResponseCode::kInvalidRequest);
}

// An in-memory store on a disk whose free space the test sets.
class DiskOfKnownSize final : public testing::IndexOnlyStore {
 public:
  std::atomic<uint64_t> free_bytes{0};
  Result<uint64_t> FreeDiskBytes() override { return free_bytes.load(); }
};

// Attachments are weighed against the disk as their bytes come: a chunk (or a new attachment, as an early
// answer) that would leave less than min_free_disk_bytes free is refused with "try again later", and goes
// through once there is room. Announcing an attachment reserves nothing, so announcing many that never
// come (an easy flood) takes no room from anyone.
TEST(RelayServiceDisk, AttachmentBytesAreRefusedBeforeTheDiskFills) {
  DiskOfKnownSize store;
  FakeClock clock;
  SeededRandom random(3);
  MemoryLogSink log;
  RelayOptions o;
  o.min_free_disk_bytes = 1000;
  RelayService service(store, clock, random, o, &log);
  const LinkKey alice = Key(1);
  uint32_t rid = 0;
  auto send = [&](CommandBody body) {
    auto frames = service.Handle(alice, EncodeCommand(Command{++rid, std::move(body)}));
    return std::get<Response>(DecodeServerFrame(frames.back()).value());
  };
  // The same through the path a server takes for chunks (answered from the store's committer).
  auto put_async = [&](const AttachmentId& id, uint64_t offset, Bytes chunk) {
    std::vector<Bytes> out;
    const bool taken = service.TryHandleWithoutBlocking(
        alice, EncodeCommand(Command{++rid, PutAttachmentChunk{id, offset, std::move(chunk)}}),
        [&](std::vector<Bytes> frames) { out = std::move(frames); });
    EXPECT_TRUE(taken);
    return std::get<Response>(DecodeServerFrame(out.back()).value());
  };
  auto id_of = [](const Response& r) { return std::get<AttachmentCreated>(r.body).id; };
  store.free_bytes = 1000 + 600;
  const Response refused = send(CreateAttachment{700});
  EXPECT_EQ(refused.code, ResponseCode::kUnavailable);
  EXPECT_NE(refused.message.find("storage is full"), std::string::npos) << refused.message;
  const Response a = send(CreateAttachment{500});
  ASSERT_EQ(a.code, ResponseCode::kOk) << a.message;
  for (int i = 0; i < 50; ++i)
    ASSERT_EQ(send(CreateAttachment{500}).code, ResponseCode::kOk);  // no reservation
  const Response b = send(CreateAttachment{500});
  ASSERT_EQ(b.code, ResponseCode::kOk);
  EXPECT_EQ(store.Stats()->attachment_bytes_pending, 52u * 500);
  ASSERT_EQ(send(PutAttachmentChunk{id_of(a), 0, Bytes(500, 1)}).code, ResponseCode::kOk);
  store.free_bytes = 1000 + 100;  // what the disk says once those 500 bytes are written
  EXPECT_EQ(send(PutAttachmentChunk{id_of(b), 0, Bytes(500, 2)}).code, ResponseCode::kUnavailable);
  EXPECT_EQ(put_async(id_of(b), 0, Bytes(500, 2)).code, ResponseCode::kUnavailable);
  EXPECT_EQ(put_async(id_of(b), 0, Bytes(100, 2)).code, ResponseCode::kOk);  // what fits goes
  store.free_bytes = 1000 + 400;                                             // room again
  EXPECT_EQ(put_async(id_of(b), 100, Bytes(400, 2)).code, ResponseCode::kOk);
  auto read = send(GetAttachmentChunk{id_of(b), 0, 500});
  ASSERT_EQ(read.code, ResponseCode::kOk);
  EXPECT_EQ(std::get<ChunkData>(read.body).data.size(), 500u);
}

TEST_F(RelayServiceTest, AttachmentSizeCapAndTtl) {
  EXPECT_EQ(Send(alice_, CreateAttachment{(100ull << 20) + 1}).response.code, ResponseCode::kTooLarge);
  Reply c = Send(alice_, CreateAttachment{100ull << 20});
  EXPECT_EQ(c.response.code, ResponseCode::kOk);
  Reply small = Send(alice_, CreateAttachment{3});
  const AttachmentId id = std::get<AttachmentCreated>(small.response.body).id;
  ASSERT_EQ(Send(alice_, PutAttachmentChunk{id, 0, Bytes{1, 2, 3}}).response.code, ResponseCode::kOk);
  clock_.Advance(30 * kDay);
  EXPECT_EQ(service_->PurgeExpired().value(), 2u);
  EXPECT_EQ(Send(alice_, GetAttachmentChunk{id, 0, 3}).response.code, ResponseCode::kNotFound);
}

// An upload left unfinished holds its bytes on the relay's disk for a day, not for the 30 days a finished
// attachment is kept: a client that walked away mid-upload (or one that does so on purpose, again and again)
// cannot keep the disk full. One still uploading on its last hour is untouched.
TEST_F(RelayServiceTest, AnUnfinishedUploadIsGivenUpAfterADay) {
  const auto create = [&](uint64_t size) {
    Reply c = Send(alice_, CreateAttachment{size});
    EXPECT_EQ(c.response.code, ResponseCode::kOk);
    return std::get<AttachmentCreated>(c.response.body).id;
  };
  const AttachmentId finished = create(3);
  const AttachmentId abandoned = create(6);
  ASSERT_EQ(Send(alice_, PutAttachmentChunk{finished, 0, Bytes{1, 2, 3}}).response.code, ResponseCode::kOk);
  ASSERT_EQ(Send(alice_, PutAttachmentChunk{abandoned, 0, Bytes{1, 2, 3}}).response.code, ResponseCode::kOk);
  clock_.Advance(kDay - 3600 * 1000);
  const AttachmentId slow = create(6);
  ASSERT_EQ(Send(alice_, PutAttachmentChunk{slow, 0, Bytes{1, 2, 3}}).response.code, ResponseCode::kOk);
  EXPECT_EQ(service_->PurgeExpired().value(), 0u);
  clock_.Advance(3600 * 1000);  // the abandoned upload is a day old
  EXPECT_EQ(service_->PurgeExpired().value(), 1u);
  EXPECT_EQ(Send(alice_, PutAttachmentChunk{abandoned, 3, Bytes{4, 5, 6}}).response.code,
            ResponseCode::kNotFound);
  ASSERT_EQ(Send(alice_, PutAttachmentChunk{slow, 3, Bytes{4, 5, 6}}).response.code, ResponseCode::kOk);
  EXPECT_EQ(Send(mallory_, GetAttachmentChunk{finished, 0, 3}).response.code, ResponseCode::kOk);
  EXPECT_EQ(Send(mallory_, GetAttachmentChunk{slow, 0, 6}).response.code, ResponseCode::kOk);
  clock_.Advance(29 * kDay);
  EXPECT_EQ(service_->PurgeExpired().value(), 1u);  // the finished one, 30 days after it was created
  EXPECT_EQ(Send(mallory_, GetAttachmentChunk{finished, 0, 3}).response.code, ResponseCode::kNotFound);
}

// ---- Bad input ----

TEST_F(RelayServiceTest, BadFramesGetClearErrorsAndServiceKeepsServing) {
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  struct Case {
    Bytes frame;
    ResponseCode code;
  };
  std::vector<Case> cases = {
      {Bytes{}, ResponseCode::kMalformed},
      {Bytes{0xc1, 0x00}, ResponseCode::kMalformed},
      {Bytes(kMaxCommandSize + 1, 0), ResponseCode::kTooLarge},
      {Bytes{0x93, 0x01, 0x05, 0x63}, ResponseCode::kUnknownCommand},    // [1, 5, 99]
      {Bytes{0x93, 0x02, 0x05, 0x01}, ResponseCode::kUnsupportedVersion},  // [2, 5, 1]
  };
  for (const auto& c : cases) {
    Reply r = SendRaw(mallory_, c.frame);
    EXPECT_EQ(r.response.code, c.code) << ResponseCodeName(r.response.code);
    EXPECT_FALSE(r.response.message.empty());
  }
  Reply unknown = SendRaw(mallory_, Bytes{0x93, 0x01, 0x05, 0x63});
  EXPECT_EQ(unknown.response.request_id, 5u);
  EXPECT_EQ(unknown.response.command, 0x63);
  // Random garbage from a seeded stream: every frame answered, nothing thrown.
  SeededRandom garbage(11);
  for (int i = 0; i < 2000; ++i) {
    Bytes f(1 + garbage.Uniform(200));
    garbage.Fill(f.data(), f.size());
    if (i % 2 == 0) f[0] = 0x90 | uint8_t(garbage.Uniform(12));  // an array header, to get deeper
    auto frames = service_->Handle(mallory_, f);
    ASSERT_EQ(frames.size(), 1u);
    ASSERT_TRUE(DecodeServerFrame(frames[0]).has_value());
  }
  // Everyone else still served.
  EXPECT_EQ(Deposit(box, token, Mid(1), Bytes(10, 1)), ResponseCode::kOk);
  EXPECT_EQ(Send(alice_, FetchMessages{box, 0, 10}).deliveries.size(), 1u);
  EXPECT_GE(service_->Stats().errors, 2005u);
}

TEST_F(RelayServiceTest, StatsOnlyForOperatorKeys) {
  EXPECT_EQ(Send(mallory_, GetStats{}).response.code, ResponseCode::kPermissionDenied);
  const MailboxId box = NewMailbox(alice_);
  ASSERT_EQ(Deposit(box, Issue(alice_, box), Mid(1), Bytes(300, 1)), ResponseCode::kOk);
  service_->SetConnectionCount(3);
  Reply r = Send(Key(0xad), GetStats{});
  ASSERT_EQ(r.response.code, ResponseCode::kOk);
  const auto& s = std::get<RelayStatsView>(r.response.body);
  EXPECT_EQ(s.connections, 3u);
  EXPECT_EQ(s.mailboxes, 1u);
  EXPECT_EQ(s.queued_messages, 1u);
  EXPECT_EQ(s.queued_bytes, 300u);
}

// A relay-data audit of the service's own output: after a session of deposits, nothing it logged holds an
// envelope, a token, a key or an id, and what the store holds for a message is the allow-listed fields.
TEST_F(RelayServiceTest, LogsHoldNoEnvelopeTokenKeyOrId) {
  RelayOptions o;
  Reset(o);
  const MailboxId box = NewMailbox(alice_);
  const DepositToken token = Issue(alice_, box);
  const Bytes envelope(200, 0x5a);
  ASSERT_EQ(Deposit(box, token, Mid(1), envelope), ResponseCode::kOk);
  EXPECT_EQ(Deposit(box, Filled<kDepositTokenSize>(3), Mid(2), envelope), ResponseCode::kDepositRefused);
  Send(alice_, FetchMessages{box, 0, 10});
  SendRaw(mallory_, Bytes{0xc1});
  const auto lines = log_.Lines();
  ASSERT_FALSE(lines.empty());
  for (const auto& line : lines) {
    for (ByteView secret : {ByteView(token), ByteView(box), ByteView(alice_), ByteView(envelope).first(16)}) {
      EXPECT_EQ(line.find(ToHex(secret)), std::string::npos) << line;
      EXPECT_EQ(line.find(std::string(secret.begin(), secret.end())), std::string::npos) << line;
    }
  }
}

}  // namespace
}  // namespace cw::relay
