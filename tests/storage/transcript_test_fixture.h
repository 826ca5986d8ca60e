// A SealedStore fixture with Transcripts on top (fake clock, seeded random, purge wired to the store), and
// helpers that stage and commit messages as the engine's hooks would.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/session/engine.h"
#include "storage/transcript.h"
#include "tests/storage/sealed_store_fixture.h"

namespace cw::storage::testing {

// "<prefix><n>", built without operator+ on a literal (GCC 12 warns falsely on it under -O3).
inline std::string N(std::string_view prefix, int n) {
  std::string out(prefix);
  out.append(std::to_string(n));
  return out;
}
inline std::string Text(const SecretBytes& s) { return std::string(s.reveal().begin(), s.reveal().end()); }

// Attachment references (kept in wiped memory) from and to plain strings, for building and comparing.
inline std::vector<SecretBytes> Refs(const std::vector<std::string>& refs) {
  std::vector<SecretBytes> out;
  for (const auto& r : refs) out.push_back(SecretBytes(AsBytes(r)));
  return out;
}
inline std::vector<std::string> Texts(const std::vector<SecretBytes>& refs) {
  std::vector<std::string> out;
  for (const auto& r : refs) out.push_back(Text(r));
  return out;
}

inline session::Received Incoming(const std::string& sender, const std::string& text) {
  session::Received r;
  r.kind = session::Received::Kind::kMessage;
  r.sender = session::Address{sender, 2};
  r.body = SecretBytes(AsBytes(text));
  return r;
}

class TranscriptFixture : public SealedStoreFixture {
 protected:
  void SetUp() override {
    SealedStoreFixture::SetUp();
    MakeTranscripts();
  }
  void MakeTranscripts() {
    TranscriptOptions o;
    o.clock = &clock_;
    o.random = &random_;
    o.local_name = "dr.alice";
    o.purge_deleted = [this](session::Table t) {
      ++purges_;
      if (!fail_purges_.ok()) return fail_purges_;
      return store_->PurgeDeleted(t);
    };
    auto t = Transcripts::New(store_.get(), o);
    ASSERT_TRUE(t.has_value()) << t.error().ToString();
    t_ = std::move(*t);
  }
  void ReopenAll() {
    t_.reset();
    Reopen();
    MakeTranscripts();
  }

  uint64_t Receive(const std::string& sender, const std::string& text, const std::string& relay_id,
                   const IncomingDetails& details = {}) {
    session::WriteBatch b;
    uint64_t seq = 0;
    Status s = t_->StageIncoming(Incoming(sender, text), relay_id, &b, details, &seq);
    EXPECT_TRUE(s.ok()) << s.ToString();
    Status c = store_->Commit(std::move(b));
    EXPECT_TRUE(c.ok()) << c.ToString();
    return seq;
  }
  uint64_t Send(const std::string& conv, const std::string& text, std::vector<std::string> attachments = {}) {
    session::WriteBatch b;
    uint64_t seq = 0;
    session::Ciphertext ct;
    std::string ctext = "ciphertext of ";
    ctext.append(text);
    ct.body = ToBytes(ctext);
    Status s = t_->StageOutgoing(conv, AsBytes(text), Refs(attachments), {session::Address{"patient.bob", 1}}, ct,
                                 &b, &seq);
    EXPECT_TRUE(s.ok()) << s.ToString();
    Status c = store_->Commit(std::move(b));
    EXPECT_TRUE(c.ok()) << c.ToString();
    return seq;
  }

  FakeClock clock_;
  SeededRandom random_{42};
  std::unique_ptr<Transcripts> t_;
  int purges_ = 0;      // purge_deleted calls
  Status fail_purges_;  // what purge_deleted answers instead of purging, when not ok
};

}  // namespace cw::storage::testing
