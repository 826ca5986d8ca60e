// SessionFixture: two engines, "alice" and "bob", in a fixed state reached deterministically: a two-way 1:1
// session and a care-team group in which bob holds alice's sender key. Shared by the session_decrypt fuzz
// target (which attacks bob) and the corpus generator (which uses alice to write real messages to bob that
// decrypt against exactly this state).
//
// Determinism: everything random comes from SeededRandom instances with fixed seeds and from libsodium set to
// its deterministic test generator, and time from a FakeClock; so building the fixture twice in a process, or
// in two processes, gives byte-identical stores, as long as the engine itself draws randomness only through
// those seams.
//
// Thread rules: single-threaded, like the engines inside. Build failures are bugs of the engine or of this
// fixture, not of fuzz input: they abort.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/session/engine.h"
#include "core/session/store.h"

namespace cw::fuzz {

inline constexpr uint64_t kFixtureSeed = 0x43574655'5a5a3031;  // "CWFUZZ01"

class SessionFixture {
 public:
  // Builds a fresh fixture. Resets libsodium's deterministic generator to kFixtureSeed first.
  static std::unique_ptr<SessionFixture> Build();

  SessionFixture(const SessionFixture&) = delete;
  SessionFixture& operator=(const SessionFixture&) = delete;

  // Puts bob back into the state Build() left him in: rewrites his store to the snapshot taken then and
  // reopens his engine on it (no key generation, so far cheaper than Build()). Bob's random stream is not
  // rewound; nothing on a failing decrypt path draws from it.
  void RestoreBob();
  // Bob's store as Build() left it.
  const std::map<std::string, SecretBytes>& bob_snapshot() const { return bob_snapshot_; }

  session::Address alice_address() const { return {"alice", 1}; }
  session::Address bob_address() const { return {"bob", 1}; }

  FakeClock clock;
  SeededRandom alice_random{kFixtureSeed ^ 0xa11ce};
  SeededRandom bob_random{kFixtureSeed ^ 0xb0b};
  session::InMemoryStore alice_store;
  session::InMemoryStore bob_store;
  // Declared after what they point to, so they are destroyed first.
  std::unique_ptr<session::Engine> alice;
  std::unique_ptr<session::Engine> bob;
  // The PreKeySignalMessage that started the session (bob has decrypted it).
  session::Ciphertext first_message;
  // Alice's group with bob (Engine::NewGroupId: bound to alice, its admin).
  std::string group_id;

 private:
  SessionFixture() = default;

  session::EngineOptions bob_options_;
  std::map<std::string, SecretBytes> bob_snapshot_;
};

// Equal key sets and byte-equal values (SecretBytes::Equals).
bool SameSnapshot(const std::map<std::string, SecretBytes>& a, const std::map<std::string, SecretBytes>& b);
// Prints to stderr the keys added, removed or changed from `before` to `after` (keys only: values are
// secret). Keys are "<table number>:<key>" with NUL separators shown as '|'.
void PrintSnapshotDifference(const std::map<std::string, SecretBytes>& before,
                             const std::map<std::string, SecretBytes>& after);

}  // namespace cw::fuzz
