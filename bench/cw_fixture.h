// CwPair: two Cipherward engines ("alice" and "bob"), each on its own InMemoryStore, with SystemRandom and
// SystemClock (the defaults), for benchmarks. Every call checks its result and ends the process on failure.
//
// Ownership: a CwPair owns both stores and both engines (engines are destroyed first).
// Thread rules: an engine belongs to the thread that opened it, so build and use a CwPair on one thread
// (Google Benchmark runs a single-threaded benchmark's body on one thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/base/bytes.h"
#include "core/session/engine.h"
#include "core/session/store.h"
#include "core/wire/bundle.h"

namespace cw::bench {

class CwPair {
 public:
  // `one_time_pre_key_batch` keys are generated when each engine opens: message benchmarks need only a
  // few, the session set-up benchmark a full batch.
  explicit CwPair(uint32_t one_time_pre_key_batch = 100);
  ~CwPair();

  session::Engine& alice() { return *alice_; }
  session::Engine& bob() { return *bob_; }

  // X3DH from Bob's bundle, then alice→bob, bob→alice, alice→bob: both sides hold a session whose
  // ratchet has turned once each way, so further alice→bob messages are SignalMessages on one chain.
  void Establish();

  // One message encrypted by `direction`'s sender and decrypted by its receiver (checked to round-trip).
  // Returns the ciphertext size.
  size_t Send(Direction direction, ByteView plaintext);

  // A bundle of Bob's with a one-time pre-key; refills Bob's one-time pre-keys first when they run low.
  wire::PreKeyBundle FreshBobBundle();
  // A whole first contact: Alice processes `bundle` as `bob_as_seen_by_alice` and encrypts `plaintext`;
  // Bob creates the inbound session and decrypts it from `alice_as_seen_by_bob`. Pass names not used
  // before, so no session record collects archived states from earlier iterations.
  void SetUpSession(const session::Address& bob_as_seen_by_alice,
                    const session::Address& alice_as_seen_by_bob, const wire::PreKeyBundle& bundle,
                    ByteView plaintext);

  // Creates `group_id` with Alice and Bob and delivers every resulting message (membership, sender keys,
  // and whatever the receivers send back) until none is left.
  // Alice makes a group with Bob and delivers its set-up; returns its id.
  std::string CreateGroup();
  // Alice encrypts once for the group; Bob decrypts. Returns the ciphertext size.
  size_t GroupSend(const std::string& group_id, ByteView plaintext);

 private:
  void DeliverAll(std::vector<session::Outgoing> queue, const session::Address& from);

  // Declared before the engines, which are opened under these names.
  const session::Address alice_address_{"alice", 1};
  const session::Address bob_address_{"bob", 1};
  session::InMemoryStore alice_store_;
  session::InMemoryStore bob_store_;
  std::unique_ptr<session::Engine> alice_;
  std::unique_ptr<session::Engine> bob_;
};

}  // namespace cw::bench
