#include "fuzz/session_fixture.h"

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string_view>
#include <utility>

namespace cw::fuzz {

namespace {

[[noreturn]] void Fail(std::string_view step, const Status& status) {
  std::fprintf(stderr, "session fixture: %.*s failed: %s\n", static_cast<int>(step.size()), step.data(),
               status.ToString().c_str());
  std::abort();
}

void Check(std::string_view step, const Status& status) {
  if (!status.ok()) Fail(step, status);
}

template <typename T>
T Take(std::string_view step, Result<T> result) {
  if (!result) Fail(step, result.error());
  return std::move(*result);
}

// Delivers messages between the two engines until none are left (group creation makes each side answer
// with its own sender key).
void Deliver(SessionFixture& f, std::deque<std::pair<session::Address, session::Outgoing>> queue) {
  for (int steps = 0; !queue.empty(); ++steps) {
    if (steps > 64) Fail("delivery", Status(StatusCode::kInternal, "messages keep coming"));
    auto [from, out] = std::move(queue.front());
    queue.pop_front();
    session::Engine* to = out.to.name == "alice" ? f.alice.get()
                          : out.to.name == "bob" ? f.bob.get()
                                                 : nullptr;
    if (to == nullptr) continue;  // not part of this fixture
    session::Received received = Take("delivery decrypt", to->Decrypt(from, out.message));
    const session::Address self = out.to.name == "alice" ? f.alice_address() : f.bob_address();
    for (auto& reply : received.replies) queue.emplace_back(self, std::move(reply));
  }
}

}  // namespace

std::unique_ptr<SessionFixture> SessionFixture::Build() {
  UseDeterministicSodiumRandomForTesting(kFixtureSeed);
  std::unique_ptr<SessionFixture> f(new SessionFixture());

  session::EngineOptions alice_options;
  alice_options.clock = &f->clock;
  alice_options.random = &f->alice_random;
  // A small batch keeps the stores (and so the per-input snapshot comparison) small.
  alice_options.one_time_pre_key_batch = 8;
  alice_options.one_time_pre_key_refill_below = 2;
  session::EngineOptions bob_options = alice_options;
  bob_options.random = &f->bob_random;

  f->alice = Take("open alice", session::Engine::Open(&f->alice_store, "alice", alice_options));
  f->bob_options_ = bob_options;
  f->bob = Take("open bob", session::Engine::Open(&f->bob_store, "bob", bob_options));

  const wire::PreKeyBundle bob_bundle = Take("bob bundle", f->bob->MakeBundle(true));
  Check("alice processes bob's bundle", f->alice->ProcessBundle(f->bob_address(), bob_bundle));

  const std::string_view hello = "hello bob";
  f->first_message = Take("alice encrypts", f->alice->Encrypt(f->bob_address(), AsBytes(hello)));
  if (f->first_message.type != session::MessageType::kPreKey) {
    Fail("first message", Status(StatusCode::kInternal, "not a PreKeySignalMessage"));
  }
  session::Received r1 = Take("bob decrypts", f->bob->Decrypt(f->alice_address(), f->first_message));
  if (r1.kind != session::Received::Kind::kMessage || !r1.body.Equals(SecretBytes(AsBytes(hello)))) {
    Fail("bob decrypts", Status(StatusCode::kInternal, "wrong plaintext"));
  }

  // Bob answers, so alice's later messages are plain SignalMessages.
  session::Ciphertext reply =
      Take("bob encrypts", f->bob->Encrypt(f->alice_address(), AsBytes("hello alice")));
  Take("alice decrypts", f->alice->Decrypt(f->bob_address(), reply));

  std::deque<std::pair<session::Address, session::Outgoing>> queue;
  f->group_id = f->alice->NewGroupId();
  for (auto& out : Take("create group", f->alice->CreateGroup(f->group_id, {"bob"})).messages) {
    queue.emplace_back(f->alice_address(), std::move(out));
  }
  Deliver(*f, std::move(queue));

  // One group message, so bob's copy of alice's sender-key chain has moved once.
  session::Ciphertext group_message =
      Take("group encrypt", f->alice->GroupEncrypt(f->group_id, AsBytes("hi team")));
  session::Received r2 =
      Take("bob decrypts group message", f->bob->Decrypt(f->alice_address(), group_message));
  if (r2.kind != session::Received::Kind::kGroupMessage) {
    Fail("bob decrypts group message", Status(StatusCode::kInternal, "not a group message"));
  }
  f->bob_snapshot_ = f->bob_store.Snapshot();
  return f;
}

void SessionFixture::RestoreBob() {
  bob.reset();
  // Snapshot keys are "<table number>:<key>".
  auto split = [](const std::string& key) {
    const size_t colon = key.find(':');
    return std::pair(static_cast<session::Table>(std::stoi(key.substr(0, colon))), key.substr(colon + 1));
  };
  session::WriteBatch batch;
  for (const auto& [key, value] : bob_store.Snapshot()) {
    if (!bob_snapshot_.contains(key)) {
      auto [table, k] = split(key);
      batch.writes.push_back({table, std::move(k), std::nullopt});
    }
  }
  for (const auto& [key, value] : bob_snapshot_) {
    auto [table, k] = split(key);
    batch.writes.push_back({table, std::move(k), value.Clone()});
  }
  Check("restore bob's store", bob_store.Commit(std::move(batch)));
  bob = Take("reopen bob", session::Engine::Open(&bob_store, "bob", bob_options_));
  if (!SameSnapshot(bob_store.Snapshot(), bob_snapshot_)) {
    Fail("reopen bob", Status(StatusCode::kInternal, "opening the engine changed its store"));
  }
}

bool SameSnapshot(const std::map<std::string, SecretBytes>& a, const std::map<std::string, SecretBytes>& b) {
  if (a.size() != b.size()) return false;
  for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
    if (ia->first != ib->first || !ia->second.Equals(ib->second)) return false;
  }
  return true;
}

void PrintSnapshotDifference(const std::map<std::string, SecretBytes>& before,
                             const std::map<std::string, SecretBytes>& after) {
  auto printable = [](std::string key) {
    for (char& c : key) {
      if (c == '\0') c = '|';
    }
    return key;
  };
  for (const auto& [key, value] : before) {
    auto it = after.find(key);
    if (it == after.end()) {
      std::fprintf(stderr, "  removed %s\n", printable(key).c_str());
    } else if (!it->second.Equals(value)) {
      std::fprintf(stderr, "  changed %s (%zu -> %zu bytes)\n", printable(key).c_str(), value.size(),
                   it->second.size());
    }
  }
  for (const auto& [key, value] : after) {
    if (!before.contains(key))
      std::fprintf(stderr, "  added   %s (%zu bytes)\n", printable(key).c_str(), value.size());
  }
}

}  // namespace cw::fuzz
