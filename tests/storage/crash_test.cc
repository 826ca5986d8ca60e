// Crash test: the receiving device runs as a child process (cw_crash_child) and is killed with SIGKILL at
// random points while it decrypts a stream of messages and commits each one's session state, transcript row
// and dedup key in one batch. The parent plays the sender and the relay: it keeps its own engine in memory,
// and re-delivers every message the child has not acknowledged, as a relay would. Twice: with every commit
// synced, and under group commit (the runtime's policy), where the child acknowledges a message only after a
// sync covered it, and the kill may land among unsynced commits, in a write-out of the overlay or in a sync.
//
// After every restart: every acknowledged message is in the transcript exactly once, every row has its dedup
// key and no dedup key lacks its row (nothing torn), and the session goes on decrypting.
//
// CW_CRASH_CYCLES (default 30) and CW_CRASH_SEED (default 1) set the number of kills and the seed of the
// kill points; scripts/crash-test.sh runs 200.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/session/engine.h"
#include "core/session/store.h"
#include "core/wire/bundle.h"
#include "tests/storage/storage_test_util.h"

namespace cw::storage {
namespace {

using session::Address;
using session::Ciphertext;

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

std::string Body(uint64_t n) {
  std::string s = "message number ";
  s.append(std::to_string(n));
  return s;
}

// One run of the child, with pipes to its stdin and from its stdout.
class Child {
 public:
  Child(const std::string& dir, int start, bool group) {
    int in[2], out[2];
    if (::pipe(in) != 0 || ::pipe(out) != 0) {
      ADD_FAILURE() << "pipe";
      return;
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::close(in[0]);
      ::close(in[1]);
      ::close(out[0]);
      ::close(out[1]);
      const std::string s = std::to_string(start);
      ::execl(CW_CRASH_CHILD, CW_CRASH_CHILD, dir.c_str(), s.c_str(), group ? "group" : nullptr,
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = ::fdopen(in[1], "w");
    from_ = ::fdopen(out[0], "r");
  }
  ~Child() {
    Kill();
    if (to_) std::fclose(to_);
    if (from_) std::fclose(from_);
  }

  // A line from the child without its newline; false at EOF.
  bool ReadLine(std::string* line) {
    char buf[8192];
    if (!from_ || !std::fgets(buf, sizeof buf, from_)) return false;
    *line = buf;
    if (!line->empty() && line->back() == '\n') line->pop_back();
    return true;
  }
  void Write(const std::string& line) {
    if (!to_) return;
    std::fputs(line.c_str(), to_);
    std::fputc('\n', to_);
    std::fflush(to_);  // errors (EPIPE after a kill) are expected and ignored
  }
  void Kill() { ::cw::testing::KillAndReap(&pid_); }
  // Closes stdin and waits for a clean exit.
  bool Finish() {
    if (to_) std::fclose(to_);
    to_ = nullptr;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

 private:
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
};

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    session::EngineOptions o;
    o.random = &sender_random_;
    o.one_time_pre_key_batch = 5;
    auto e = session::Engine::Open(&sender_store_, "patient.bob", o);
    ASSERT_TRUE(e.has_value()) << e.error().ToString();
    sender_ = std::move(*e);
  }

  // Handles one line of the child's output; false for a line that means the test failed.
  bool Handle(const std::string& line) {
    unsigned long long n = 0;
    if (std::sscanf(line.c_str(), "ACK %llu", &n) == 1) {
      if (!pending_.count(n) && !acked_.count(n)) {
        ADD_FAILURE() << "ACK for a message never sent: " << line;
        return false;
      }
      acked_.insert(n);
      pending_.erase(n);
      return true;
    }
    ADD_FAILURE() << "child: " << line;
    return false;
  }

  // Asks a running child for its transcript and checks it against what was acknowledged.
  void Check(Child& child) {
    child.Write("CHECK");
    std::multiset<std::string> rows;
    std::vector<uint64_t> sequences;
    size_t dedup = 0;
    std::string line;
    while (child.ReadLine(&line) && line != "END") {
      unsigned long long seq = 0;
      int consumed = 0;
      if (std::sscanf(line.c_str(), "ROW %llu %n", &seq, &consumed) == 1 && consumed > 0) {
        rows.insert(line.substr(consumed));
        sequences.push_back(seq);
      } else if (std::sscanf(line.c_str(), "DEDUP %zu", &dedup) != 1) {
        ADD_FAILURE() << "unexpected: " << line;
      }
    }
    ASSERT_EQ(line, "END") << "the child died during CHECK";
    for (uint64_t n : acked_) EXPECT_EQ(rows.count(Body(n)), 1u) << "acknowledged message " << n;
    for (const auto& body : rows) EXPECT_EQ(rows.count(body), 1u) << "stored twice: " << body;
    // Every stored row was sent (no garbage) and has exactly one dedup key: row and key commit together.
    EXPECT_EQ(dedup, rows.size()) << "a row without its dedup key, or the reverse: torn state";
    for (size_t i = 1; i < sequences.size(); ++i) EXPECT_LT(sequences[i - 1], sequences[i]);
    stored_ = rows.size();
  }

  // Kills the child `cycles` times; `group`: the child runs under group commit.
  void Run(bool group) {
    const uint64_t cycles = EnvOr("CW_CRASH_CYCLES", 30);
    SeededRandom kills(EnvOr("CW_CRASH_SEED", 1));
    int start = 0;
    {
      Child first(dir_.path(), start++, group);
      std::string line;
      ASSERT_TRUE(first.ReadLine(&line));
      ASSERT_TRUE(line.starts_with("BUNDLE ")) << line;
      Bytes encoded;
      ASSERT_TRUE(FromHex(line.substr(7), &encoded));
      auto bundle = wire::DecodeBundle(encoded);
      ASSERT_TRUE(bundle.has_value()) << bundle.error().ToString();
      Status s = sender_->ProcessBundle(alice_, *bundle);
      ASSERT_TRUE(s.ok()) << s.ToString();
      ASSERT_TRUE(first.Finish());
    }

    uint64_t killed_mid_stream = 0;
    for (uint64_t cycle = 0; cycle < cycles; ++cycle) {
      Child child(dir_.path(), start++, group);
      std::string line;
      ASSERT_TRUE(child.ReadLine(&line));
      ASSERT_EQ(line, "READY");
      ASSERT_NO_FATAL_FAILURE(Check(child));

      // Re-deliver what was not acknowledged, then new messages; kill after a random number of ACKs, often
      // after a further random pause so the kill lands inside a decrypt or a commit.
      while (pending_.size() < 4 + kills.Uniform(8)) NewMessage();
      std::vector<uint64_t> batch(pending_.begin(), pending_.end());
      for (size_t i = 0; i < batch.size(); ++i) {
        child.Write(MsgLine(batch[i]));
        // Under group commit a sync now and then, as the runtime syncs after each fetch, and after the last.
        if (group && (i + 1 == batch.size() || kills.Uniform(3) == 0)) child.Write("SYNC");
      }
      const uint32_t wait_for = kills.Uniform(static_cast<uint32_t>(batch.size()) + 1);
      for (uint32_t i = 0; i < wait_for; ++i) {
        ASSERT_TRUE(child.ReadLine(&line)) << "the child died on its own";
        ASSERT_TRUE(Handle(line));
      }
      if (kills.Uniform(2) == 0) ::usleep(kills.Uniform(3000));
      child.Kill();
      if (wait_for < batch.size()) ++killed_mid_stream;
      // ACKs the child wrote before it died are still in the pipe: the relay would have seen them.
      while (child.ReadLine(&line)) ASSERT_TRUE(Handle(line));
    }
    EXPECT_GT(killed_mid_stream, 0u);

    // A last, clean run: everything pending is delivered once, one new message decrypts, state checks out.
    Child last(dir_.path(), start++, group);
    std::string line;
    ASSERT_TRUE(last.ReadLine(&line));
    ASSERT_EQ(line, "READY");
    NewMessage();
    std::vector<uint64_t> rest(pending_.begin(), pending_.end());
    for (uint64_t n : rest) last.Write(MsgLine(n));
    if (group) last.Write("SYNC");
    for (size_t i = 0; i < rest.size(); ++i) {
      ASSERT_TRUE(last.ReadLine(&line));
      ASSERT_TRUE(Handle(line));
    }
    EXPECT_TRUE(pending_.empty());
    ASSERT_NO_FATAL_FAILURE(Check(last));
    EXPECT_EQ(stored_, next_ - 1) << "every message sent is stored exactly once";
    EXPECT_TRUE(last.Finish());
  }

  std::string MsgLine(uint64_t n) {
    const Ciphertext& ct = ciphertexts_.at(n);
    std::string line = "MSG ";
    line.append(std::to_string(n));
    line.push_back(' ');
    line.append(std::to_string(static_cast<int>(ct.type)));
    line.push_back(' ');
    line.append(ToHex(ct.body));
    return line;
  }

  // A new message from the sender, pending until acknowledged.
  uint64_t NewMessage() {
    const uint64_t n = next_++;
    auto ct = sender_->Encrypt(alice_, AsBytes(Body(n)));
    if (!ct.has_value()) {
      ADD_FAILURE() << ct.error().ToString();
      return n;
    }
    ciphertexts_[n] = *ct;
    pending_.insert(n);
    return n;
  }

  testing::TempDir dir_;
  SeededRandom sender_random_{5};
  session::InMemoryStore sender_store_;
  std::unique_ptr<session::Engine> sender_;
  const Address alice_{"dr.alice", 1};
  uint64_t next_ = 1;
  std::map<uint64_t, Ciphertext> ciphertexts_;
  std::set<uint64_t> pending_;
  std::set<uint64_t> acked_;
  size_t stored_ = 0;
};

TEST_F(CrashTest, KilledAtRandomPointsNoAcknowledgedMessageIsLostOrDoubledAndTheSessionGoesOn) {
  Run(/*group=*/false);
}

TEST_F(CrashTest, UnderGroupCommitKilledAtRandomPointsNoAcknowledgedMessageIsLostOrDoubled) {
  Run(/*group=*/true);
}

}  // namespace
}  // namespace cw::storage
