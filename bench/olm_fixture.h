// libolm fixtures for the comparison benchmarks: owning wrappers for olm's objects, a pair of accounts with
// an Olm (1:1 Double Ratchet) session, and a Megolm group session with one member.
//
// olm takes its randomness from the caller; here it comes from libsodium's randombytes_buf, the same CSPRNG
// behind Cipherward's SystemRandom. Random bytes and decrypted plaintext live in SecretBytes (wiped on
// free); olm objects are wiped with olm_clear_* before their memory is freed.
// Thread rules: single-threaded; olm objects have no locking.
#pragma once

#include <olm/inbound_group_session.h>
#include <olm/olm.h>
#include <olm/outbound_group_session.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/base/bytes.h"
#include "core/base/secret.h"

namespace cw::bench {

// One olm object in memory of its own: olm_<type>(memory) on construction, olm_clear_<type> then free on
// destruction. Move-free and copy-free: hold it in place or in a unique_ptr.
template <typename T, size_t (*SizeOf)(), T* (*Init)(void*), size_t (*Clear)(T*)>
class OlmObject {
 public:
  OlmObject() : memory_(std::malloc(SizeOf())) {
    if (memory_ == nullptr) Fail("malloc", "out of memory for an olm object");
    object_ = Init(memory_);
  }
  ~OlmObject() {
    Clear(object_);
    std::free(memory_);
  }
  OlmObject(const OlmObject&) = delete;
  OlmObject& operator=(const OlmObject&) = delete;

  T* get() const { return object_; }

 private:
  void* memory_ = nullptr;
  T* object_ = nullptr;
};

using OlmAccountObject = OlmObject<OlmAccount, olm_account_size, olm_account, olm_clear_account>;
using OlmSessionObject = OlmObject<OlmSession, olm_session_size, olm_session, olm_clear_session>;
using OlmOutboundGroupObject = OlmObject<OlmOutboundGroupSession, olm_outbound_group_session_size,
                                         olm_outbound_group_session, olm_clear_outbound_group_session>;
using OlmInboundGroupObject = OlmObject<OlmInboundGroupSession, olm_inbound_group_session_size,
                                        olm_inbound_group_session, olm_clear_inbound_group_session>;

// Two olm accounts, "alice" and "bob", and (after Establish) a session between them.
class OlmPair {
 public:
  OlmPair();
  ~OlmPair();

  // Alice's outbound session from one of Bob's one-time keys, then alice→bob (a pre-key message),
  // bob→alice, alice→bob: both ratchets have turned once, as in CwPair::Establish.
  void Establish();
  // One message encrypted by `direction`'s sender and decrypted by its receiver (checked to round-trip).
  // Returns the message size (olm's messages are base64).
  size_t Send(Direction direction, ByteView plaintext);

  // One of Bob's published one-time keys, never handed out before; generates a full batch when none is left.
  std::string TakeBobOneTimeKey();
  // A whole first contact in fresh sessions: Alice's outbound session from Bob's identity key and
  // `one_time_key`, a first (pre-key) message of `plaintext`, Bob's inbound session from it, removal of the
  // used one-time key from Bob's account, and Bob's decrypt. Both sessions are freed afterwards.
  void SetUpSession(const std::string& one_time_key, ByteView plaintext);

 private:
  OlmAccountObject alice_;
  OlmAccountObject bob_;
  std::string alice_identity_key_;  // Curve25519, base64
  std::string bob_identity_key_;
  std::vector<std::string> bob_one_time_keys_;
  std::unique_ptr<OlmSessionObject> alice_session_;
  std::unique_ptr<OlmSessionObject> bob_session_;
};

// A Megolm outbound group session and one member's inbound session created from its session key.
class MegolmGroup {
 public:
  MegolmGroup();
  // Encrypts once and decrypts at the one member (checked to round-trip). Returns the message size.
  size_t Send(ByteView plaintext);

 private:
  OlmOutboundGroupObject outbound_;
  OlmInboundGroupObject inbound_;
};

}  // namespace cw::bench
