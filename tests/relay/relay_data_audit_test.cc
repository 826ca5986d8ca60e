// Relay-data audit (issue 4, Tests): after a conversation through a real RelayServer on loopback over Noise
// links (mailbox create, pre-key upload, deposits, push, fetch, ack), everything the relay stored (every file
// under its RocksDB directory, read raw) and everything it logged (captured at debug level, so more than a
// default relay writes) is scanned for what it must never hold:
//   - the plaintext of a message and the sender's name (marker strings that only ever exist inside the
//     end-to-end encryption: the test seals them with a key the relay never sees, as a client would);
//   - the depositor's link key (the sender's transport identity), raw, hex or base64url;
//   - deposit tokens (the relay keeps a keyed hash only).
// A control proves the raw scan can see stored data at all: the ciphertext of an unacknowledged envelope and
// the owner's link key (the mailbox binding, an allow-listed field) are found in the same bytes.
// Then the store API shows that each record holds exactly the allow-listed fields: sequence, message id,
// expiry, and the envelope byte for byte as deposited (no added bytes), and that the store's byte count is the
// sum of those envelopes.
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "relay/rocksdb_mailbox_store.h"
#include "relay/server.h"
#include "tests/relay/link_client.h"
#include "tests/relay/relay_test_util.h"
#include "transport/tcp_transport.h"

namespace cw::relay {
namespace {

using Client = testing::LinkClient;

std::string Hex(ByteView b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) {
    s.push_back(d[c >> 4]);
    s.push_back(d[c & 15]);
  }
  return s;
}
std::string AsString(ByteView b) { return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }

// Every regular file under `dir`, concatenated, with a file separator that cannot join two needles.
std::map<std::string, std::string> ReadAllFiles(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    out[e.path().string()] = std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return out;
}
// Names of the files holding `needle` (case-sensitive raw bytes).
std::vector<std::string> FilesHolding(const std::map<std::string, std::string>& files, const std::string& needle) {
  std::vector<std::string> hits;
  for (const auto& [name, bytes] : files) {
    if (bytes.find(needle) != std::string::npos) hits.push_back(name);
  }
  return hits;
}
std::vector<std::string> LinesHolding(const std::vector<std::string>& lines, const std::string& needle) {
  std::vector<std::string> hits;
  for (const auto& l : lines) {
    if (l.find(needle) != std::string::npos) hits.push_back(l);
  }
  return hits;
}

constexpr size_t kPaddedSize = 1024;  // the client pads envelopes to a bucket before sealing

// What a client does before depositing: sender name and text go inside the end-to-end encryption, padded.
Bytes SealEnvelope(const std::array<uint8_t, crypto_secretbox_KEYBYTES>& key, const std::string& inner) {
  std::string padded = inner;
  padded.resize(kPaddedSize - crypto_secretbox_MACBYTES - crypto_secretbox_NONCEBYTES, '\0');
  Bytes out(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + padded.size());
  randombytes_buf(out.data(), crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(out.data() + crypto_secretbox_NONCEBYTES, reinterpret_cast<const uint8_t*>(padded.data()),
                        padded.size(), out.data(), key.data());
  return out;
}

class RelayDataAuditTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GE(sodium_init(), 0); }
  void StartServer() {
    store_ = RocksDbMailboxStore::Open(dir_.Sub("db")).value();
    service_ = std::make_unique<RelayService>(*store_, SystemClock::Default(), random_, RelayOptions{}, &log_);
    SeededRandom r(99);
    transport_ = std::move(transport::TcpTransport::New(transport::StaticKeyPair::Generate(r)).value());
    server_ = RelayServer::Start(*transport_, *service_, transport::Endpoint::Parse("127.0.0.1:0").value(),
                                 ServerOptions{}, log_, SystemClock::Default())
                  .value();
  }
  void StopServer() {
    if (server_) server_->Stop();
    if (transport_) transport_->Shutdown().ok();
    server_.reset();
    transport_.reset();
    service_.reset();
    store_.reset();  // the committer finishes and the database is closed: every file is complete on disk
  }
  void TearDown() override { StopServer(); }

  // Runs the conversation; fills the members the assertions read.
  void Converse() {
    StartServer();
    const transport::Endpoint relay = server_->endpoint();
    Client owner(11, relay);
    ASSERT_TRUE(owner.connected());
    owner_key_ = owner.key();
    owner.Send(CreateMailbox{});
    Response created = owner.NextResponse();
    ASSERT_EQ(created.code, ResponseCode::kOk) << created.message;
    box_ = std::get<MailboxCreated>(created.body).mailbox;

    UploadPreKeys up;
    up.mailbox = box_;
    up.registration_id = 4242;
    up.identity_key = testing::Filled<wire::kPublicKeySize>(0x05);
    up.signed_pre_key = {1, testing::Filled<wire::kPublicKeySize>(0x06), testing::Filled<wire::kSignatureSize>(0x07)};
    for (uint32_t i = 1; i <= 20; ++i) up.one_time_pre_keys.push_back({i, testing::Filled<wire::kPublicKeySize>(uint8_t(0x80 + i))});
    owner.Send(up);
    ASSERT_EQ(owner.NextResponse().code, ResponseCode::kOk);

    // An invite's token, as clients issue them: claimable for a week, claimed by the sender's first deposit.
    owner.Send(IssueDepositToken{box_, 7ull * 24 * 3600 * 1000});
    Response issued = owner.NextResponse();
    ASSERT_EQ(issued.code, ResponseCode::kOk);
    token_ = std::get<TokenIssued>(issued.body).token;

    Client sender(22, relay);
    ASSERT_TRUE(sender.connected());
    sender_key_ = sender.key();
    sender.Send(FetchBundle{box_});
    ASSERT_EQ(sender.NextResponse().code, ResponseCode::kOk);

    randombytes_buf(e2e_key_.data(), e2e_key_.size());
    for (uint32_t i = 0; i < kMessages; ++i) {
      const std::string inner = "from=" + SenderMarker() + "\nbody=" + PlaintextMarker(i);
      Bytes env = SealEnvelope(e2e_key_, inner);
      ids_.push_back(testing::Mid(1000 + i));
      envelopes_.push_back(env);
      sender.Send(relay::Deposit{box_, token_, ids_.back(), env});
      const Response r = sender.NextResponse();
      ASSERT_EQ(r.code, ResponseCode::kOk) << r.message;
    }
    // A retried deposit (same message id) is stored once.
    sender.Send(relay::Deposit{box_, token_, ids_[0], envelopes_[0]});
    ASSERT_EQ(sender.NextResponse().code, ResponseCode::kOk);

    // The owner, connected, heard of every deposit by push; it also fetches (as after a reconnect) and acks
    // the first kAcked messages.
    owner.Send(FetchMessages{box_, 0, kMaxFetchCount});
    const Response fetched = owner.NextResponse();
    ASSERT_EQ(fetched.code, ResponseCode::kOk) << fetched.message;
    EXPECT_EQ(std::get<FetchDone>(fetched.body).delivered, kMessages);
    std::vector<MessageId> to_ack(ids_.begin(), ids_.begin() + kAcked);
    owner.Send(Ack{box_, to_ack});
    const Response acked = owner.NextResponse();
    ASSERT_EQ(acked.code, ResponseCode::kOk);
    EXPECT_EQ(std::get<Acked>(acked.body).removed, kAcked);
    // Every delivery carried the envelope unchanged and opens to the sender's text on the client side only.
    size_t deliveries = 0;
    for (const auto& f : owner.other_) {
      if (const auto* d = std::get_if<Delivery>(&f)) {
        ++deliveries;
        auto it = std::find(ids_.begin(), ids_.end(), d->message_id);
        ASSERT_NE(it, ids_.end());
        EXPECT_EQ(d->envelope, envelopes_[size_t(it - ids_.begin())]);
      }
    }
    EXPECT_EQ(deliveries, 2 * size_t(kMessages));  // one push and one fetched copy each
    StopServer();
  }

  std::string SenderMarker() const { return "SENDER-NAME-alice-wonderland-7f3a91"; }
  std::string PlaintextMarker(uint32_t i) const { return "PLAINTEXT-MARKER-meet-at-noon-" + std::to_string(i) + "-c0ffee"; }

  static constexpr uint32_t kMessages = 12;
  static constexpr uint32_t kAcked = 8;

  testing::TempDir dir_;
  SeededRandom random_{5};
  MemoryLogSink log_;
  std::unique_ptr<RocksDbMailboxStore> store_;
  std::unique_ptr<RelayService> service_;
  std::unique_ptr<transport::TcpTransport> transport_;
  std::unique_ptr<RelayServer> server_;

  transport::PublicKey owner_key_{};
  transport::PublicKey sender_key_{};
  MailboxId box_{};
  DepositToken token_{};
  std::array<uint8_t, crypto_secretbox_KEYBYTES> e2e_key_{};
  std::vector<MessageId> ids_;
  std::vector<Bytes> envelopes_;
};

TEST_F(RelayDataAuditTest, StoredFilesHoldNoPlaintextNoSenderNoToken) {
  ASSERT_NO_FATAL_FAILURE(Converse());
  const auto files = ReadAllFiles(dir_.Sub("db"));
  ASSERT_FALSE(files.empty());

  // Controls: the raw scan sees stored data. An unacknowledged envelope's ciphertext (past its nonce, so a
  // 64-byte run that exists nowhere else) and the owner's link key (the mailbox binding) are in the files.
  for (uint32_t i = kAcked; i < kMessages; ++i) {
    const std::string run = AsString(ByteView(envelopes_[i]).subspan(crypto_secretbox_NONCEBYTES, 64));
    EXPECT_FALSE(FilesHolding(files, run).empty()) << "control: envelope " << i << " not found raw";
  }
  EXPECT_FALSE(FilesHolding(files, AsString(owner_key_)).empty()) << "control: owner link key not found raw";

  // Never there: plaintext, the sender's name, the sender's link key in any spelling, the deposit token,
  // the end-to-end key.
  std::vector<std::pair<std::string, std::string>> forbidden = {
      {"sender name marker", SenderMarker()},
      {"sender link key (raw)", AsString(sender_key_)},
      {"sender link key (hex)", transport::KeyToHex(sender_key_)},
      {"sender link key (base64url)", transport::KeyToBase64Url(sender_key_)},
      {"deposit token (raw)", AsString(token_)},
      {"deposit token (hex)", Hex(token_)},
      {"end-to-end key", AsString(e2e_key_)},
      {"plaintext marker stem", "PLAINTEXT-MARKER"},
      {"sender marker stem", "SENDER-NAME"},
  };
  for (uint32_t i = 0; i < kMessages; ++i) forbidden.push_back({"plaintext " + std::to_string(i), PlaintextMarker(i)});
  for (const auto& [what, needle] : forbidden) {
    const auto hits = FilesHolding(files, needle);
    EXPECT_TRUE(hits.empty()) << what << " found in " << (hits.empty() ? "" : hits.front());
  }
}

TEST_F(RelayDataAuditTest, LogsHoldNoEnvelopeNoPlaintextNoKeysNoIds) {
  ASSERT_NO_FATAL_FAILURE(Converse());
  const std::vector<std::string> lines = log_.Lines();
  ASSERT_FALSE(lines.empty());
  std::vector<std::pair<std::string, std::string>> forbidden = {
      {"sender name marker", SenderMarker()},
      {"plaintext marker stem", "PLAINTEXT-MARKER"},
      {"sender link key (hex)", transport::KeyToHex(sender_key_)},
      {"sender link key (base64url)", transport::KeyToBase64Url(sender_key_)},
      {"sender link key (raw)", AsString(sender_key_)},
      {"owner link key (hex)", transport::KeyToHex(owner_key_)},
      {"deposit token (hex)", Hex(token_)},
      {"deposit token (raw)", AsString(token_)},
      {"mailbox id (hex)", Hex(box_)},
      {"mailbox id (raw)", AsString(box_)},
  };
  for (size_t i = 0; i < envelopes_.size(); ++i) {
    forbidden.push_back({"message id " + std::to_string(i), Hex(ids_[i])});
    forbidden.push_back({"envelope " + std::to_string(i) + " (hex prefix)", Hex(ByteView(envelopes_[i]).first(16))});
    forbidden.push_back({"envelope " + std::to_string(i) + " (raw run)", AsString(ByteView(envelopes_[i]).subspan(24, 32))});
  }
  for (const auto& [what, needle] : forbidden) {
    const auto hits = LinesHolding(lines, needle);
    EXPECT_TRUE(hits.empty()) << what << " logged: " << (hits.empty() ? "" : hits.front());
  }
}

// The relay's logs must not let the operator link deposits to their sender: no line, at any level (the
// audit's sink keeps debug lines too), may carry the depositor's link-key tag next to a deposit. The sender's
// own commands (its mailbox, its pre-keys) may carry it; those say nothing about whom it writes to.
TEST_F(RelayDataAuditTest, LogsNeverTagTheDepositorOfADeposit) {
  ASSERT_NO_FATAL_FAILURE(Converse());
  const std::string sender_tag = LogTag(sender_key_);
  const std::string deposit = "command=" + std::to_string(static_cast<int>(CommandType::kDeposit));
  size_t deposit_lines = 0;
  for (const auto& l : log_.Lines()) {
    if (l.find(deposit) == std::string::npos) continue;
    ++deposit_lines;
    EXPECT_EQ(l.find(sender_tag), std::string::npos) << "depositor tag in: " << l;
  }
  EXPECT_GT(deposit_lines, 0u) << "the audit saw no deposit in the logs at all";
}

TEST_F(RelayDataAuditTest, StoreRecordsHoldOnlyAllowListedFields) {
  ASSERT_NO_FATAL_FAILURE(Converse());
  auto store = RocksDbMailboxStore::Open(dir_.Sub("db")).value();
  // Exactly the unacknowledged messages remain; each record is (seq, message id, expiry, envelope), with the
  // envelope byte for byte what the sender deposited: the relay added nothing to it.
  bool more = true;
  auto left = store->FetchAfter(box_, 0, 1000, 1 << 24, &more);
  ASSERT_TRUE(left.has_value());
  EXPECT_FALSE(more);
  ASSERT_EQ(left->size(), size_t(kMessages - kAcked));
  const int64_t now = SystemClock::Default().NowMillis();
  uint64_t prev_seq = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < left->size(); ++i) {
    const StoredMessage& m = (*left)[i];
    EXPECT_GT(m.seq, prev_seq);
    prev_seq = m.seq;
    EXPECT_EQ(m.id, ids_[kAcked + i]);
    EXPECT_EQ(m.envelope, envelopes_[kAcked + i]);
    // Expiry is the default TTL (30 days) from the deposit: a coarse bound, not a timing assertion.
    EXPECT_GT(m.expires_at_millis, now + 29ll * 24 * 3600 * 1000);
    EXPECT_LE(m.expires_at_millis, now + 30ll * 24 * 3600 * 1000);
    bytes += m.envelope.size();
  }
  auto stats = store->Stats();
  ASSERT_TRUE(stats.has_value());
  EXPECT_EQ(stats->messages, uint64_t(kMessages - kAcked));
  EXPECT_EQ(stats->message_bytes, bytes);
  EXPECT_EQ(stats->mailboxes, 1u);
  // The mailbox is bound to its owner's link key, and to nothing of the sender's.
  auto owner = store->MailboxOwner(box_);
  ASSERT_TRUE(owner.has_value() && owner->has_value());
  EXPECT_EQ(**owner, owner_key_);
  auto by_sender = store->MailboxesOwnedBy(sender_key_);
  ASSERT_TRUE(by_sender.has_value());
  EXPECT_TRUE(by_sender->empty());
  // The token is kept only as its keyed hash: the hash matches, and the raw token is not a stored hash. The
  // sender's deposits claimed it, so no claim-by time is kept any more: it admits deposits a year on.
  EXPECT_TRUE(store->HasDepositToken(box_, HashDepositToken(box_, token_), now + 366ll * 24 * 3600 * 1000).value());
  TokenHash raw_as_hash{};
  std::copy(token_.begin(), token_.end(), raw_as_hash.begin());
  EXPECT_FALSE(store->HasDepositToken(box_, raw_as_hash, now).value());
  // The pre-key directory holds public keys only: one one-time key was consumed by the sender's fetch.
  EXPECT_EQ(store->CountOneTimePreKeys(box_).value(), std::optional<uint32_t>(19));
}

}  // namespace
}  // namespace cw::relay
