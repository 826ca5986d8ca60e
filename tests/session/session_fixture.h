// Test fixture for the session engine: parties (one Engine each, on its own InMemoryStore, with a seeded
// Random and a shared FakeClock), and a post office that delivers Outgoing messages to the right engine,
// pumps the replies the engine asks for, and fetches bundles for missing sessions.
#pragma once

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/session/engine.h"
#include "core/session/store.h"
#include "core/wire/bundle.h"
#include "tests/wire/print_status.h"

namespace cw::session::testing {

inline StatusCode CodeOf(const Status& s) { return s.code(); }
template <typename T>
StatusCode CodeOf(const Result<T>& r) {
  return r.has_value() ? StatusCode::kOk : r.error().code();
}
inline std::string Describe(const Status& s) { return s.ToString(); }
template <typename T>
std::string Describe(const Result<T>& r) {
  return r.has_value() ? std::string("OK") : r.error().ToString();
}

#define CW_ASSERT_OK(expr)                                                      \
  do {                                                                          \
    const auto& cw_r_ = (expr);                                                 \
    ASSERT_EQ(::cw::session::testing::CodeOf(cw_r_), ::cw::StatusCode::kOk)     \
        << #expr << ": " << ::cw::session::testing::Describe(cw_r_);            \
  } while (0)
#define CW_EXPECT_OK(expr)                                                      \
  do {                                                                          \
    const auto& cw_r_ = (expr);                                                 \
    EXPECT_EQ(::cw::session::testing::CodeOf(cw_r_), ::cw::StatusCode::kOk)     \
        << #expr << ": " << ::cw::session::testing::Describe(cw_r_);            \
  } while (0)

// "<CODE: message>", built without operator+ on a literal (GCC 12 warns falsely on it under -O3).
inline std::string Failed(const Status& s) {
  std::string out(1, '<');
  out.append(s.ToString());
  out.push_back('>');
  return out;
}

// "<prefix><n>", for numbered test messages.
inline std::string Numbered(std::string_view prefix, int n) {
  std::string out(prefix);
  out.append(std::to_string(n));
  return out;
}

inline std::string Text(const SecretBytes& s) { return std::string(s.reveal().begin(), s.reveal().end()); }

using Snapshot = std::map<std::string, SecretBytes>;

// Byte-for-byte equality of two store snapshots, naming the first difference.
inline ::testing::AssertionResult SameState(const Snapshot& before, const Snapshot& after) {
  for (const auto& [k, v] : before) {
    auto it = after.find(k);
    if (it == after.end()) return ::testing::AssertionFailure() << "key removed: " << k;
    if (!it->second.Equals(v)) return ::testing::AssertionFailure() << "value changed: " << k;
  }
  for (const auto& [k, v] : after) {
    if (!before.count(k)) return ::testing::AssertionFailure() << "key added: " << k;
  }
  return ::testing::AssertionSuccess();
}

class Party {
 public:
  Party(std::string name, FakeClock* clock, uint64_t seed, EngineOptions base)
      : name_(std::move(name)), clock_(clock), base_(std::move(base)) {
    Recreate(seed);
  }
  Party(const Party&) = delete;
  Party& operator=(const Party&) = delete;

  // A fresh store and a fresh identity under the same name: the peer reinstalled the app.
  void Recreate(uint64_t seed) {
    engine_.reset();
    store_ = std::make_unique<InMemoryStore>();
    random_ = std::make_unique<SeededRandom>(seed);
    Reopen();
  }
  // A new Engine over the same store: the app restarted.
  void Reopen() {
    engine_.reset();
    EngineOptions options = base_;
    options.clock = clock_;
    options.random = random_.get();
    options.on_identity_change = [this](const IdentityChange& c) { identity_changes.push_back(c); };
    auto opened = Engine::Open(store_.get(), name_, options);
    if (!opened.has_value()) {
      ADD_FAILURE() << "Engine::Open(" << name_ << "): " << opened.error().ToString();
      return;
    }
    engine_ = std::move(*opened);
  }

  Engine& engine() { return *engine_; }
  Engine* operator->() { return engine_.get(); }
  InMemoryStore& store() { return *store_; }
  Snapshot snapshot() const { return store_->Snapshot(); }
  const std::string& name() const { return name_; }
  Address address() const { return Address{name_, 1}; }

  std::vector<IdentityChange> identity_changes;

 private:
  std::string name_;
  FakeClock* clock_;
  EngineOptions base_;
  // Declared before engine_: the engine must be destroyed first.
  std::unique_ptr<InMemoryStore> store_;
  std::unique_ptr<SeededRandom> random_;
  std::unique_ptr<Engine> engine_;
};

// One delivery the post office made, and what came of it.
struct Delivery {
  std::string from;
  std::string to;
  Ciphertext message;
  Result<Received> result;
};

class World {
 public:
  explicit World(EngineOptions base = SmallBatch()) : base_(std::move(base)) {}

  // Tests that do not count pre-keys use small batches: Open is much faster.
  static EngineOptions SmallBatch() {
    EngineOptions o;
    o.one_time_pre_key_batch = 5;
    o.one_time_pre_key_refill_below = 2;
    return o;
  }

  Party& Add(const std::string& name) {
    auto p = std::make_unique<Party>(name, &clock, next_seed_++, base_);
    Party& ref = *p;
    parties_[name] = std::move(p);
    return ref;
  }
  Party& operator[](const std::string& name) {
    auto it = parties_.find(name);
    if (it == parties_.end()) {
      ADD_FAILURE() << "no party " << name;
      return Add(name);
    }
    return *it->second;
  }
  uint64_t NextSeed() { return next_seed_++; }

  // `to`'s bundle, as it would arrive from the relay (through the wire encoding).
  static Result<wire::PreKeyBundle> FetchBundle(Party& to, bool with_one_time_pre_key = true) {
    auto b = to->MakeBundle(with_one_time_pre_key);
    if (!b.has_value()) return b;
    return wire::DecodeBundle(wire::EncodeBundle(*b));
  }

  // X3DH from `a` to `b`, a first message each way, and both sessions settled.
  void Establish(Party& a, Party& b) {
    auto bundle = FetchBundle(b);
    ASSERT_TRUE(bundle.has_value()) << bundle.error().ToString();
    CW_ASSERT_OK(a->ProcessBundle(b.address(), *bundle));
    auto hello = a->Encrypt(b.address(), AsBytes("hello " + b.name()));
    CW_ASSERT_OK(hello);
    auto got = b->Decrypt(a.address(), *hello);
    CW_ASSERT_OK(got);
    ASSERT_EQ(Text(got->body), "hello " + b.name());
    auto reply = b->Encrypt(a.address(), AsBytes("hello " + a.name()));
    CW_ASSERT_OK(reply);
    auto got2 = a->Decrypt(b.address(), *reply);
    CW_ASSERT_OK(got2);
    ASSERT_EQ(Text(got2->body), "hello " + a.name());
  }

  // Delivers one message from `from` to out.to.
  Result<Received> Deliver(const std::string& from, const Outgoing& out) {
    return (*this)[out.to.name]->Decrypt(Address{from, 1}, out.message);
  }

  // Delivers every message in FIFO order, then the replies each delivery produced, until none are left.
  // For a member reported in missing_sessions, the receiver fetches that member's bundle and shares its
  // sender key, as a client would. Returns every delivery made.
  std::vector<Delivery> Pump(const std::string& from, const GroupDelivery& delivery) {
    return Pump(from, delivery.messages);
  }
  std::vector<Delivery> Pump(const std::string& from, const std::vector<Outgoing>& outs) {
    std::deque<std::pair<std::string, Outgoing>> queue;
    for (const auto& o : outs) queue.emplace_back(from, o);
    return PumpQueue(std::move(queue));
  }
  std::vector<Delivery> PumpQueue(std::deque<std::pair<std::string, Outgoing>> queue) {
    std::vector<Delivery> log;
    for (int guard = 0; !queue.empty() && guard < 10000; ++guard) {
      auto [sender, out] = std::move(queue.front());
      queue.pop_front();
      auto r = Deliver(sender, out);
      if (r.has_value()) {
        for (const auto& reply : r->replies) queue.emplace_back(out.to.name, reply);
        for (const auto& missing : r->missing_sessions) {
          Party& me = (*this)[out.to.name];
          auto bundle = FetchBundle((*this)[missing.name]);
          if (!bundle.has_value()) {
            ADD_FAILURE() << bundle.error().ToString();
            continue;
          }
          Status s = me->ProcessBundle(missing, *bundle);
          if (!s.ok()) {
            ADD_FAILURE() << "ProcessBundle for a missing session: " << s.ToString();
            continue;
          }
          auto share = me->ShareSenderKey(r->group_id, missing.name);
          if (!share.has_value()) {
            ADD_FAILURE() << "ShareSenderKey: " << share.error().ToString();
            continue;
          }
          queue.emplace_back(out.to.name, *share);
        }
      }
      log.push_back(Delivery{sender, out.to.name, out.message, std::move(r)});
    }
    return log;
  }

  FakeClock clock;

 private:
  EngineOptions base_;
  uint64_t next_seed_ = 1000;
  std::map<std::string, std::unique_ptr<Party>> parties_;
};

// Every delivery in `log` succeeded.
inline ::testing::AssertionResult AllDelivered(const std::vector<Delivery>& log) {
  for (const auto& d : log) {
    if (!d.result.has_value()) {
      return ::testing::AssertionFailure() << d.from << " -> " << d.to << " (type "
                                           << static_cast<int>(d.message.type) << "): " << d.result.error().ToString();
    }
  }
  return ::testing::AssertionSuccess();
}

// Encrypts or records a failure (the returned Ciphertext is then empty and will not decrypt).
inline Ciphertext MustEncrypt(Party& from, const Party& to, std::string_view text) {
  auto r = from->Encrypt(to.address(), AsBytes(text));
  if (!r.has_value()) {
    ADD_FAILURE() << from.name() << " -> " << to.name() << " Encrypt: " << r.error().ToString();
    return Ciphertext{};
  }
  return *r;
}

// The plaintext, or "<CODE: message>" for a failed decrypt.
inline std::string DecryptText(Party& to, const Party& from, const Ciphertext& ct) {
  auto r = to->Decrypt(from.address(), ct);
  if (!r.has_value()) return Failed(r.error());
  return Text(r->body);
}

}  // namespace cw::session::testing
