// Power-loss simulation: the receiving device's store runs on PowerCutFileSystem, which keeps only what was
// synced when the power goes. Under the default policy (every commit synced before the engine returns) no
// acknowledged message is lost; with sync off the same run loses messages, which shows the simulation bites.
#include <gtest/gtest.h>
#include <rocksdb/env.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/session/engine.h"
#include "core/session/store.h"
#include "core/wire/bundle.h"
#include "storage/keystore.h"
#include "storage/sealed_store_internal.h"
#include "storage/transcript.h"
#include "tests/storage/power_cut_fs.h"
#include "tests/storage/storage_test_util.h"

namespace cw::storage {
namespace {

using session::Address;
using session::Ciphertext;

std::string Body(uint64_t n) {
  std::string s = "power message ";
  s.append(std::to_string(n));
  return s;
}
std::string RelayId(uint64_t n) {
  std::string s = "relay-";
  s.append(std::to_string(n));
  return s;
}

class PowerLossTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ks = Keystore::Create(dir_.Sub("keystore"), AsBytes("power loss passphrase"),
                               KeystoreOptions::MinimumCostForTesting());
    ASSERT_TRUE(ks.has_value()) << ks.error().ToString();
    keystore_ = std::move(*ks);
    session::EngineOptions o;
    o.random = &sender_random_;
    o.one_time_pre_key_batch = 5;
    auto e = session::Engine::Open(&sender_store_, "patient.bob", o);
    ASSERT_TRUE(e.has_value()) << e.error().ToString();
    sender_ = std::move(*e);
  }

  void Start(bool sync) {
    fs_ = std::make_shared<testing::PowerCutFileSystem>(rocksdb::FileSystem::Default());
    env_ = rocksdb::NewCompositeEnv(fs_);
    SealedStoreOptions so;
    so.sync = sync;
    auto st = internal::OpenSealedStoreWithEnv(dir_.Sub("db"), keystore_.get(), so, env_.get());
    ASSERT_TRUE(st.has_value()) << st.error().ToString();
    store_ = std::move(*st);
    receiver_random_ = std::make_unique<SeededRandom>(900 + starts_++);
    session::EngineOptions eo;
    eo.random = receiver_random_.get();
    eo.one_time_pre_key_batch = 5;
    auto e = session::Engine::Open(store_.get(), "dr.alice", eo);
    ASSERT_TRUE(e.has_value()) << e.error().ToString();
    receiver_ = std::move(*e);
    TranscriptOptions to;
    to.random = receiver_random_.get();
    auto t = Transcripts::New(store_.get(), to);
    ASSERT_TRUE(t.has_value());
    transcripts_ = std::move(*t);
  }
  // The power goes off mid-stream; returns the bytes the disk never got.
  uint64_t CutAndRestart(bool sync) {
    fs_->PowerCut();
    transcripts_.reset();
    receiver_.reset();
    store_.reset();  // its writes now fail, like those of a machine without power
    const uint64_t dropped = fs_->Restore();
    env_.reset();
    fs_.reset();
    Start(sync);
    return dropped;
  }

  void Establish() {
    auto bundle = receiver_->MakeBundle(true);
    ASSERT_TRUE(bundle.has_value());
    auto decoded = wire::DecodeBundle(wire::EncodeBundle(*bundle));
    ASSERT_TRUE(decoded.has_value());
    Status s = sender_->ProcessBundle(alice_, *decoded);
    ASSERT_TRUE(s.ok()) << s.ToString();
    // The receiver's identity and pre-keys must be durable before anything is sent to it.
    ASSERT_TRUE(store_->FlushForTesting().ok());
  }

  // Delivers one message as the runtime would: skip a known relay id, else decrypt with the hook. True when
  // the relay may be acknowledged.
  bool Deliver(uint64_t n) {
    auto dup = transcripts_->IsDuplicate(RelayId(n));
    if (!dup.has_value()) {
      ADD_FAILURE() << dup.error().ToString();
      return false;
    }
    if (*dup) return true;
    auto r = receiver_->Decrypt(alice_sender_, ciphertexts_.at(n),
                                [&](const session::Received& rec, session::WriteBatch* b) {
                                  return transcripts_->StageIncoming(rec, RelayId(n), b);
                                });
    if (!r.has_value()) ADD_FAILURE() << "message " << n << ": " << r.error().ToString();
    return r.has_value();
  }

  uint64_t NewMessage() {
    const uint64_t n = next_++;
    auto ct = sender_->Encrypt(alice_, AsBytes(Body(n)));
    if (!ct.has_value())
      ADD_FAILURE() << ct.error().ToString();
    else
      ciphertexts_[n] = *ct;
    pending_.insert(n);
    return n;
  }

  // How many acknowledged messages are missing from the transcript; checks nothing is doubled or torn.
  size_t LostAcknowledged() {
    auto rows = transcripts_->All(Transcripts::DirectConversationId("patient.bob"));
    if (!rows.has_value()) {
      ADD_FAILURE() << rows.error().ToString();
      return acked_.size();
    }
    std::multiset<std::string> bodies;
    for (const auto& m : *rows) bodies.emplace(m.body.reveal().begin(), m.body.reveal().end());
    for (const auto& b : bodies) EXPECT_EQ(bodies.count(b), 1u) << b;
    auto dedup = store_->ListKeys(session::Table::kInboundDedup, "");
    EXPECT_TRUE(dedup.has_value());
    if (dedup.has_value()) {
      EXPECT_EQ(dedup->size(), bodies.size()) << "torn: rows and dedup keys differ";
    }
    size_t lost = 0;
    for (uint64_t n : acked_) lost += bodies.count(Body(n)) == 0;
    return lost;
  }

  testing::TempDir dir_;
  std::unique_ptr<Keystore> keystore_;
  std::shared_ptr<testing::PowerCutFileSystem> fs_;
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<SealedStore> store_;
  std::unique_ptr<SeededRandom> receiver_random_;
  std::unique_ptr<session::Engine> receiver_;
  std::unique_ptr<Transcripts> transcripts_;
  int starts_ = 0;

  SeededRandom sender_random_{8};
  session::InMemoryStore sender_store_;
  std::unique_ptr<session::Engine> sender_;
  const Address alice_{"dr.alice", 1};
  const Address alice_sender_{"patient.bob", 1};
  uint64_t next_ = 1;
  std::map<uint64_t, Ciphertext> ciphertexts_;
  std::set<uint64_t> pending_;
  std::set<uint64_t> acked_;
};

TEST_F(PowerLossTest, NoAcknowledgedMessageIsLostUnderTheDefaultSyncPolicy) {
  ASSERT_NO_FATAL_FAILURE(Start(/*sync=*/true));
  ASSERT_NO_FATAL_FAILURE(Establish());
  SeededRandom cuts(3);
  for (int cycle = 0; cycle < 15; ++cycle) {
    while (pending_.size() < 2 + cuts.Uniform(8)) NewMessage();
    // Deliver a random part of what is pending, acknowledging each on success; the rest is in flight when
    // the power goes and the relay keeps it.
    const uint32_t deliver = cuts.Uniform(static_cast<uint32_t>(pending_.size()) + 1);
    std::vector<uint64_t> batch(pending_.begin(), pending_.end());
    for (uint32_t i = 0; i < deliver; ++i) {
      if (Deliver(batch[i])) {
        acked_.insert(batch[i]);
        pending_.erase(batch[i]);
      }
    }
    ASSERT_NO_FATAL_FAILURE(CutAndRestart(/*sync=*/true));
    EXPECT_EQ(LostAcknowledged(), 0u) << "cycle " << cycle;
  }
  // Everything still pending arrives once, and the session goes on.
  NewMessage();
  for (uint64_t n : std::vector<uint64_t>(pending_.begin(), pending_.end())) {
    ASSERT_TRUE(Deliver(n));
    acked_.insert(n);
  }
  EXPECT_EQ(LostAcknowledged(), 0u);
  EXPECT_EQ(acked_.size(), next_ - 1);
}

// The control: the same simulation with commits not synced loses what it acknowledged.
TEST_F(PowerLossTest, WithoutSyncAcknowledgedMessagesAreLostSoTheSimulationBites) {
  ASSERT_NO_FATAL_FAILURE(Start(/*sync=*/false));
  ASSERT_NO_FATAL_FAILURE(Establish());
  for (int i = 0; i < 5; ++i) {
    const uint64_t n = NewMessage();
    ASSERT_TRUE(Deliver(n));
    acked_.insert(n);
  }
  // Under group commit the log may not even have reached the file system (manual_wal_flush), so the bytes
  // dropped by the cut can be none: what counts is that every acknowledged message is gone.
  CutAndRestart(/*sync=*/false);
  EXPECT_EQ(LostAcknowledged(), 5u);
}

// Group commit: commits unsynced, then one SyncNow() before acknowledging the burst. What SyncNow() covered
// survives the cut; a later burst that was never synced (and so never acknowledged) does not.
TEST_F(PowerLossTest, GroupCommitKeepsEverythingSyncNowCovered) {
  ASSERT_NO_FATAL_FAILURE(Start(/*sync=*/false));
  ASSERT_NO_FATAL_FAILURE(Establish());
  std::vector<uint64_t> burst;
  for (int i = 0; i < 8; ++i) {
    const uint64_t n = NewMessage();
    ASSERT_TRUE(Deliver(n));
    burst.push_back(n);
  }
  ASSERT_TRUE(store_->SyncNow().ok());
  for (uint64_t n : burst) {
    acked_.insert(n);
    pending_.erase(n);
  }
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Deliver(NewMessage()));  // received, not synced, not acknowledged
  CutAndRestart(/*sync=*/false);
  EXPECT_EQ(LostAcknowledged(), 0u);
  auto rows = transcripts_->All(Transcripts::DirectConversationId("patient.bob"));
  ASSERT_TRUE(rows.has_value());
  EXPECT_EQ(rows->size(), 8u);
  // The relay re-delivers the three unacknowledged messages; they decrypt again after the rollback.
  for (uint64_t n : std::vector<uint64_t>(pending_.begin(), pending_.end())) {
    ASSERT_TRUE(Deliver(n));
    acked_.insert(n);
  }
  ASSERT_TRUE(store_->SyncNow().ok());
  EXPECT_EQ(LostAcknowledged(), 0u);
}

// Group commit as the runtime does it: each received message's commit sequence is handed to WhenSynced, and
// the relay is acknowledged from the callback, which the store's sync thread calls once one fsync covered
// it. Power is cut at several points of a stream; every message acknowledged that way survives.
TEST_F(PowerLossTest, AcknowledgingFromWhenSyncedLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(Start(/*sync=*/false));
  ASSERT_NO_FATAL_FAILURE(Establish());
  std::mutex mu;
  std::condition_variable cv;
  std::set<uint64_t> synced;  // acknowledged by the callbacks, under mu
  for (int round = 0; round < 4; ++round) {
    std::vector<uint64_t> sent;
    for (int i = 0; i < 6; ++i) {
      const uint64_t n = NewMessage();
      ASSERT_TRUE(Deliver(n));
      sent.push_back(n);
      const uint64_t sequence = store_->LastCommitSequence();
      // The first half of each round is waited for; the rest may or may not be synced when the power goes.
      Status s = store_->WhenSynced(sequence, [&, n](const Status& result) {
        if (!result.ok()) return;
        std::lock_guard<std::mutex> lock(mu);
        synced.insert(n);
        cv.notify_all();
      });
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] {
        return std::all_of(sent.begin(), sent.begin() + 3, [&](uint64_t n) { return synced.count(n) > 0; });
      })) << "the sync thread never reported";
      for (uint64_t n : synced) {
        acked_.insert(n);
        pending_.erase(n);
      }
    }
    CutAndRestart(/*sync=*/false);
    EXPECT_EQ(LostAcknowledged(), 0u) << "round " << round;
    // What was not acknowledged comes again from the relay.
    for (uint64_t n : std::vector<uint64_t>(pending_.begin(), pending_.end())) ASSERT_TRUE(Deliver(n));
    ASSERT_TRUE(store_->SyncNow().ok());
    std::lock_guard<std::mutex> lock(mu);
    for (uint64_t n : pending_) acked_.insert(n);
    pending_.clear();
    synced.clear();
  }
  EXPECT_EQ(LostAcknowledged(), 0u);
  EXPECT_EQ(acked_.size(), next_ - 1);
}

}  // namespace
}  // namespace cw::storage
