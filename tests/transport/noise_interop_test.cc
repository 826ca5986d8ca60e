// Interop with an independent Noise implementation: Debian's python3-dissononce, run as a subprocess that
// speaks the Cipherward link format over its stdin/stdout (tests/transport/dissononce_peer.py). Both roles,
// for the production path (NoiseLink, XK) and for the IK and KK patterns at the HandshakeState level.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/base/random.h"
#include "transport/frame.h"
#include "transport/link.h"
#include "transport/noise.h"

namespace cw::transport {
namespace {

constexpr int kHangGuardMillis = 60'000;  // a hung peer fails the test instead of blocking ctest

// A child process with pipes to its stdin and from its stdout; stderr is inherited.
class PeerProcess {
 public:
  static std::unique_ptr<PeerProcess> Spawn(const std::vector<std::string>& args) {
    signal(SIGPIPE, SIG_IGN);
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) return nullptr;
    const pid_t pid = fork();
    if (pid < 0) return nullptr;
    if (pid == 0) {
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      close(to_child[0]);
      close(to_child[1]);
      close(from_child[0]);
      close(from_child[1]);
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    auto p = std::unique_ptr<PeerProcess>(new PeerProcess);
    p->pid_ = pid;
    p->in_ = to_child[1];
    p->out_ = from_child[0];
    return p;
  }

  ~PeerProcess() {
    CloseStdin();
    if (out_ >= 0) close(out_);
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  bool Write(ByteView data) {
    while (!data.empty()) {
      const ssize_t n = write(in_, data.data(), data.size());
      if (n <= 0) return false;
      data = data.subspan(static_cast<size_t>(n));
    }
    return true;
  }

  // Whatever the pipe has (at least one byte); false at end of stream.
  bool ReadSome(Bytes* out) {
    pollfd p{out_, POLLIN, 0};
    if (poll(&p, 1, kHangGuardMillis) <= 0) return false;
    uint8_t buf[4096];
    const ssize_t n = read(out_, buf, sizeof buf);
    if (n <= 0) return false;
    out->assign(buf, buf + n);
    return true;
  }

  bool ReadExact(size_t n, Bytes* out) {
    out->clear();
    while (out->size() < n) {
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, kHangGuardMillis) <= 0) return false;
      std::vector<uint8_t> buf(n - out->size());
      const ssize_t r = read(out_, buf.data(), buf.size());
      if (r <= 0) return false;
      out->insert(out->end(), buf.begin(), buf.begin() + r);
    }
    return true;
  }

  bool ReadRecord(Bytes* message) {
    Bytes header;
    if (!ReadExact(2, &header)) return false;
    return ReadExact(static_cast<size_t>(header[0]) << 8 | header[1], message);
  }

  void CloseStdin() {
    if (in_ >= 0) close(in_);
    in_ = -1;
  }

  // The exit code, or -1 if it did not exit normally.
  int Wait() {
    CloseStdin();
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  PeerProcess() = default;
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
};

const char kPrologue[] = "cipherward-link-v1";

std::unique_ptr<PeerProcess> SpawnDissononce(std::string pattern, std::string role, const StaticKeyPair& s,
                                             const PublicKey* rs) {
  return PeerProcess::Spawn({CW_PYTHON3, CW_DISSONONCE_PEER, std::move(pattern), std::move(role),
                             ToHex(s.private_key().reveal()), rs ? KeyToHex(*rs) : "-",
                             ToHex(AsBytes(kPrologue))});
}

Bytes Concat(std::string_view prefix, ByteView rest) {
  Bytes out = ToBytes(prefix);
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

// Drives a NoiseLink against the peer: pumps bytes until `want` frames arrived in total.
class LinkDriver {
 public:
  LinkDriver(NoiseLink* link, PeerProcess* peer) : link_(link), peer_(peer) {}

  ::testing::AssertionResult Pump(size_t want) {
    while (frames.size() < want) {
      Bytes chunk;
      if (!peer_->ReadSome(&chunk)) return ::testing::AssertionFailure() << "peer closed or hung";
      Status s = link_->Feed(chunk);
      if (!s.ok()) return ::testing::AssertionFailure() << s.ToString();
      for (;;) {
        Bytes out;
        auto ev = link_->Next(&out);
        if (!out.empty() && !peer_->Write(out))
          return ::testing::AssertionFailure() << "write to peer failed";
        if (!ev) return ::testing::AssertionFailure() << ev.error().ToString();
        if (ev->kind == NoiseLink::EventKind::kNeedMore) break;
        if (ev->kind == NoiseLink::EventKind::kHandshakeComplete) {
          ++completions;
        } else {
          frames.emplace_back(ev->frame.begin(), ev->frame.end());
        }
      }
    }
    return ::testing::AssertionSuccess();
  }

  ::testing::AssertionResult SendFrames(const std::vector<Bytes>& payloads) {
    Bytes stream, sealed;
    for (const auto& p : payloads) {
      Status s = AppendFrame(p, kDefaultMaxFrameSize, &stream);
      if (!s.ok()) return ::testing::AssertionFailure() << s.ToString();
    }
    Status s = link_->SealFrames(stream, &sealed);
    if (!s.ok()) return ::testing::AssertionFailure() << s.ToString();
    if (!peer_->Write(sealed)) return ::testing::AssertionFailure() << "write to peer failed";
    return ::testing::AssertionSuccess();
  }

  std::vector<Bytes> frames;
  int completions = 0;

 private:
  NoiseLink* link_;
  PeerProcess* peer_;
};

// The conversation of dissononce_peer.py, from our side, once the link is up.
void Converse(NoiseLink& link, LinkDriver& d, PeerProcess& peer) {
  ASSERT_TRUE(d.Pump(2));
  EXPECT_EQ(d.completions, 1);
  ASSERT_TRUE(link.handshake_complete());
  EXPECT_EQ(d.frames[0], Concat("hh:", link.handshake_hash())) << "handshake hashes differ";
  EXPECT_EQ(d.frames[1], ToBytes("hello from dissononce"));

  ASSERT_TRUE(d.SendFrames({ToBytes("ping")}));
  ASSERT_TRUE(d.Pump(3));
  EXPECT_EQ(d.frames[2], ToBytes("echo:ping"));

  // Several frames in one Noise message.
  ASSERT_TRUE(d.SendFrames({ToBytes("a"), ToBytes("bb"), ToBytes("ccc")}));
  ASSERT_TRUE(d.Pump(6));
  EXPECT_EQ(d.frames[3], ToBytes("echo:a"));
  EXPECT_EQ(d.frames[4], ToBytes("echo:bb"));
  EXPECT_EQ(d.frames[5], ToBytes("echo:ccc"));

  // One frame larger than a Noise message, both ways: cut into several transport messages.
  Bytes big(100 * 1024);
  SeededRandom(7).Fill(big.data(), big.size());
  ASSERT_TRUE(d.SendFrames({big}));
  ASSERT_TRUE(d.Pump(7));
  EXPECT_EQ(d.frames[6], Concat("echo:", big));

  ASSERT_TRUE(d.SendFrames({ToBytes("bye")}));
  ASSERT_TRUE(d.Pump(8));
  EXPECT_EQ(d.frames[7], ToBytes("bye-ack"));
  EXPECT_EQ(peer.Wait(), 0);
}

TEST(NoiseInterop, XkLinkInitiatorWithDissononceResponder) {
  SeededRandom rng(1);
  const auto ours = StaticKeyPair::Generate(rng);
  const auto theirs = StaticKeyPair::Generate(rng);
  auto peer = SpawnDissononce("XK", "responder", theirs, nullptr);
  ASSERT_NE(peer, nullptr);
  NoiseLink::Config c;
  c.role = noise::Role::kInitiator;
  c.local_static = &ours;
  c.remote_static = theirs.public_key();
  c.prologue = AsBytes(kPrologue);
  c.random = &rng;
  auto link = NoiseLink::New(c);
  ASSERT_TRUE(link.has_value());
  Bytes first;
  ASSERT_TRUE((*link)->Start(&first).ok());
  ASSERT_TRUE(peer->Write(first));
  LinkDriver d(link->get(), peer.get());
  Converse(**link, d, *peer);
  EXPECT_EQ(*(*link)->remote_static(), theirs.public_key());
}

TEST(NoiseInterop, XkLinkResponderWithDissononceInitiator) {
  SeededRandom rng(2);
  const auto ours = StaticKeyPair::Generate(rng);
  const auto theirs = StaticKeyPair::Generate(rng);
  auto peer = SpawnDissononce("XK", "initiator", theirs, &ours.public_key());
  ASSERT_NE(peer, nullptr);
  NoiseLink::Config c;
  c.role = noise::Role::kResponder;
  c.local_static = &ours;
  c.prologue = AsBytes(kPrologue);
  c.random = &rng;
  auto link = NoiseLink::New(c);
  ASSERT_TRUE(link.has_value());
  LinkDriver d(link->get(), peer.get());
  Converse(**link, d, *peer);
  // XK proved the initiator's static key to us: the relay's mailbox link key.
  EXPECT_EQ(*(*link)->remote_static(), theirs.public_key());
}

TEST(NoiseInterop, DissononceInitiatorPinningAnotherKeyIsRefused) {
  SeededRandom rng(3);
  const auto ours = StaticKeyPair::Generate(rng);
  const auto theirs = StaticKeyPair::Generate(rng);
  const auto someone_else = StaticKeyPair::Generate(rng);
  auto peer = SpawnDissononce("XK", "initiator", theirs, &someone_else.public_key());
  ASSERT_NE(peer, nullptr);
  NoiseLink::Config c;
  c.role = noise::Role::kResponder;
  c.local_static = &ours;
  c.prologue = AsBytes(kPrologue);
  c.random = &rng;
  auto link = NoiseLink::New(c);
  ASSERT_TRUE(link.has_value());
  Bytes message;
  ASSERT_TRUE(peer->ReadRecord(&message));
  Bytes record = {static_cast<uint8_t>(message.size() >> 8), static_cast<uint8_t>(message.size())};
  record.insert(record.end(), message.begin(), message.end());
  ASSERT_TRUE((*link)->Feed(record).ok());
  Bytes out;
  auto ev = (*link)->Next(&out);
  ASSERT_FALSE(ev.has_value());
  EXPECT_EQ(ev.error().code(), StatusCode::kTampered);
  EXPECT_TRUE(out.empty()) << "no reply to an initiator that did not encrypt to our key";
  EXPECT_FALSE((*link)->handshake_complete());
}

TEST(NoiseInterop, OurInitiatorPinningAnotherKeyIsRefusedByDissononce) {
  SeededRandom rng(4);
  const auto ours = StaticKeyPair::Generate(rng);
  const auto theirs = StaticKeyPair::Generate(rng);
  const auto someone_else = StaticKeyPair::Generate(rng);
  auto peer = SpawnDissononce("XK", "responder", theirs, nullptr);
  ASSERT_NE(peer, nullptr);
  NoiseLink::Config c;
  c.local_static = &ours;
  c.remote_static = someone_else.public_key();
  c.prologue = AsBytes(kPrologue);
  c.random = &rng;
  auto link = NoiseLink::New(c);
  ASSERT_TRUE(link.has_value());
  Bytes first;
  ASSERT_TRUE((*link)->Start(&first).ok());
  ASSERT_TRUE(peer->Write(first));
  Bytes reply;
  EXPECT_FALSE(peer->ReadSome(&reply)) << "dissononce answered a message not encrypted to its key";
  EXPECT_NE(peer->Wait(), 0);
}

// IK and KK at the HandshakeState level, both roles: handshake payloads both ways, then the same
// conversation over the frame stream.
struct PatternCase {
  noise::Pattern pattern;
  const char* name;
  noise::Role role;
};

void PrintTo(const PatternCase& c, std::ostream* os) {
  *os << c.name << (c.role == noise::Role::kInitiator ? " initiator" : " responder");
}

class NoiseInteropPatterns : public ::testing::TestWithParam<PatternCase> {};

TEST_P(NoiseInteropPatterns, HandshakeAndTransport) {
  const PatternCase pc = GetParam();
  SeededRandom rng(10 + static_cast<int>(pc.pattern) * 2 + static_cast<int>(pc.role));
  const auto ours = StaticKeyPair::Generate(rng);
  const auto theirs = StaticKeyPair::Generate(rng);
  const bool we_initiate = pc.role == noise::Role::kInitiator;
  // What the peer knows of us in advance: KK both ways; IK the initiator knows the responder.
  const bool peer_knows_us = pc.pattern == noise::Pattern::kKK || !we_initiate;
  auto peer = SpawnDissononce(pc.name, we_initiate ? "responder" : "initiator", theirs,
                              peer_knows_us ? &ours.public_key() : nullptr);
  ASSERT_NE(peer, nullptr);

  noise::HandshakeConfig hc;
  hc.pattern = pc.pattern;
  hc.role = pc.role;
  hc.prologue = AsBytes(kPrologue);
  hc.local_static = &ours;
  if (pc.pattern == noise::Pattern::kKK || we_initiate) hc.remote_static = theirs.public_key();
  hc.random = &rng;
  auto hs = noise::HandshakeState::New(hc);
  ASSERT_TRUE(hs.has_value()) << hs.error().ToString();
  for (int index = 0; !(*hs)->IsComplete(); ++index) {
    if ((*hs)->IsMyTurn()) {
      auto m = (*hs)->WriteMessage(ToBytes("cw-hs-" + std::to_string(index)));
      ASSERT_TRUE(m.has_value()) << m.error().ToString();
      Bytes record = {static_cast<uint8_t>(m->size() >> 8), static_cast<uint8_t>(m->size())};
      record.insert(record.end(), m->begin(), m->end());
      ASSERT_TRUE(peer->Write(record));
    } else {
      Bytes message;
      ASSERT_TRUE(peer->ReadRecord(&message));
      auto payload = (*hs)->ReadMessage(message);
      ASSERT_TRUE(payload.has_value()) << payload.error().ToString();
      EXPECT_EQ(*payload, ToBytes("py-hs-" + std::to_string(index)));
    }
  }
  ASSERT_EQ((*hs)->remote_static(), std::optional<PublicKey>(theirs.public_key()));
  auto ciphers = (*hs)->Split();
  ASSERT_TRUE(ciphers.has_value());

  FrameDecoder decoder;
  std::vector<Bytes> frames;
  auto pump = [&](size_t want) -> ::testing::AssertionResult {
    while (frames.size() < want) {
      Bytes message;
      if (!peer->ReadRecord(&message)) return ::testing::AssertionFailure() << "peer closed";
      auto plain = ciphers->receive.DecryptWithAd({}, message);
      if (!plain) return ::testing::AssertionFailure() << plain.error().ToString();
      if (!decoder.Append(*plain).ok()) return ::testing::AssertionFailure() << "bad frame";
      for (;;) {
        auto f = decoder.Next();
        if (!f) return ::testing::AssertionFailure() << f.error().ToString();
        if (!*f) break;
        frames.emplace_back((*f)->begin(), (*f)->end());
      }
    }
    return ::testing::AssertionSuccess();
  };
  auto send = [&](std::string_view payload) {
    Bytes stream;
    ASSERT_TRUE(AppendFrame(AsBytes(payload), kDefaultMaxFrameSize, &stream).ok());
    auto c = ciphers->send.EncryptWithAd({}, stream);
    ASSERT_TRUE(c.has_value());
    Bytes record = {static_cast<uint8_t>(c->size() >> 8), static_cast<uint8_t>(c->size())};
    record.insert(record.end(), c->begin(), c->end());
    ASSERT_TRUE(peer->Write(record));
  };

  ASSERT_TRUE(pump(2));
  EXPECT_EQ(frames[0], Concat("hh:", ciphers->handshake_hash));
  EXPECT_EQ(frames[1], ToBytes("hello from dissononce"));
  send("ping");
  ASSERT_TRUE(pump(3));
  EXPECT_EQ(frames[2], ToBytes("echo:ping"));
  send("bye");
  ASSERT_TRUE(pump(4));
  EXPECT_EQ(frames[3], ToBytes("bye-ack"));
  EXPECT_EQ(peer->Wait(), 0);
}

INSTANTIATE_TEST_SUITE_P(All, NoiseInteropPatterns,
                         ::testing::Values(PatternCase{noise::Pattern::kXK, "XK", noise::Role::kInitiator},
                                           PatternCase{noise::Pattern::kXK, "XK", noise::Role::kResponder},
                                           PatternCase{noise::Pattern::kIK, "IK", noise::Role::kInitiator},
                                           PatternCase{noise::Pattern::kIK, "IK", noise::Role::kResponder},
                                           PatternCase{noise::Pattern::kKK, "KK", noise::Role::kInitiator},
                                           PatternCase{noise::Pattern::kKK, "KK", noise::Role::kResponder}),
                         [](const auto& info) {
                           return std::string(info.param.name) +
                                  (info.param.role == noise::Role::kInitiator ? "Initiator" : "Responder");
                         });

}  // namespace
}  // namespace cw::transport
