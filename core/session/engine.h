// Engine: one local identity's Signal-protocol sessions, on libsignal-protocol-c.
//
// It does X3DH from pre-key bundles, 1:1 Double-Ratchet encryption in the standard Signal v3 wire format
// (PreKeySignalMessage, SignalMessage), sender-key groups for care teams, safety numbers, and the
// healthcare identity policy: trust on first use, and a changed identity key blocks encryption to that
// contact until the user accepts it again.
//
// Every operation reads the store, stages its writes, and commits them in one batch only when it succeeds:
// a failed decrypt (tampered, replayed, malformed, untrusted) changes no session state. The one record a
// failure may write is a contact's pending identity key: from a bundle signed by the new key, or from a first
// message whose MAC verifies under it (a bit-flipped or truncated one records nothing). Neither proves who
// holds the new key, since the relay names the sender: that is what comparing safety numbers is for. While
// a change is pending, no other key replaces it.
//
// Thread rules: an Engine belongs to the thread that opened it (its owner). Every call must come from that
// thread; a call from another thread fails with kPermissionDenied and touches nothing. libsignal's objects
// are never shared across threads (their reference counts are not atomic).
//
// Ownership: the Engine does not own the store, clock or random it is given; they must outlive it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/session/store.h"
#include "core/wire/bundle.h"

namespace cw::session {

// A contact's device. Names are non-empty, at most 256 bytes, and hold no NUL byte.
struct Address {
  std::string name;
  uint32_t device_id = 1;
  friend bool operator==(const Address&, const Address&) = default;
};

// Signal message types, as numbered by the protocol (CiphertextMessage.type).
enum class MessageType : uint8_t {
  kSignal = 2,        // SignalMessage: an established 1:1 session
  kPreKey = 3,        // PreKeySignalMessage: the first messages of a 1:1 session
  kSenderKey = 4,     // SenderKeyMessage: a group message
  kSenderKeyDistribution = 5,  // only ever travels inside a 1:1 session
};

struct Ciphertext {
  MessageType type = MessageType::kSignal;
  Bytes body;            // exactly libsignal's serialized message
  std::string group_id;  // set for kSenderKey, empty otherwise
};

struct Outgoing {
  Address to;
  Ciphertext message;
};

struct Received {
  enum class Kind { kMessage, kGroupMessage, kGroupMembers, kSenderKey };
  Kind kind = Kind::kMessage;
  Address sender;
  std::string group_id;              // for group kinds
  SecretBytes body;                  // the user's plaintext for kMessage and kGroupMessage
  std::vector<std::string> members;  // for kGroupMembers: the group's member list now
  // Messages the engine wants sent as a consequence (its own sender key to a new member, a rotated sender
  // key after a removal). The caller delivers them like any other Outgoing.
  std::vector<Outgoing> replies;
  // Group members with whom no 1:1 session exists yet, so no sender key could go to them: fetch their
  // bundles, ProcessBundle, then (once the user vouched for them) CatchUpGroups.
  std::vector<Address> missing_sessions;
  // Group members whose identity change awaits acceptance. They were sent this group upkeep all the same,
  // over the session with the key still trusted (so a member cannot be left out of a removal); after
  // accepting a new key, their new device needs CatchUpGroups.
  std::vector<Address> untrusted_members;
  // Group members whose session with us runs under another identity key than the one the group's admin lists
  // for them (or, where it lists none, one the user did not verify): they got nothing. A name is all a
  // roster would otherwise bind, and anyone writing first to this device may claim one. CatchUpGroups sends
  // what they missed once the keys agree (the admin lists a member's accepted new key, or we accept it).
  std::vector<Address> unvouched_members;
};

// What a membership change sends, and to whom it could not yet be sent (see Received).
struct GroupDelivery {
  std::vector<Outgoing> messages;
  std::vector<Address> missing_sessions;
  std::vector<Address> untrusted_members;
  std::vector<Address> unvouched_members;
};

enum class TrustState {
  kUnknown,   // never seen
  kTrusted,   // first seen and accepted on first use
  kVerified,  // the user compared safety numbers
  kChanged,   // the identity key changed; encryption is blocked until AcceptIdentityChange or
              // RejectIdentityChange
};

struct Contact {
  TrustState state = TrustState::kUnknown;
  wire::PublicKey identity_key{};
  std::optional<wire::PublicKey> pending_identity_key;  // set when kChanged
};

struct IdentityChange {
  Address contact;
  wire::PublicKey previous_key{};
  wire::PublicKey new_key{};
};

struct SafetyNumber {
  std::string digits;  // 60 decimal digits, the same on both sides
  Bytes scannable;     // the QR code payload (libsignal's scannable fingerprint, version 1)
};

struct EngineOptions {
  Clock* clock = nullptr;    // SystemClock when null
  Random* random = nullptr;  // SystemRandom when null; feeds libsignal's random callback too
  uint32_t device_id = 1;
  int64_t signed_pre_key_rotation_ms = 2LL * 24 * 3600 * 1000;
  // Old signed pre-keys stay this long after their replacement, so a first message built from an old bundle
  // still decrypts. The relay's mailbox TTL is 30 days, so a message can be that late.
  int64_t signed_pre_key_retention_ms = 30LL * 24 * 3600 * 1000;
  uint32_t one_time_pre_key_batch = 100;
  uint32_t one_time_pre_key_refill_below = 10;
  // Told whenever a contact's identity key changes (on a new bundle or a first message).
  std::function<void(const IdentityChange&)> on_identity_change;
};

class Engine {
 public:
  // Opens the identity in `store`, creating a new identity, registration id, signed pre-key and first batch
  // of one-time pre-keys when the store is empty.
  static Result<std::unique_ptr<Engine>> Open(ProtocolStore* store, std::string local_name,
                                              EngineOptions options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const std::string& local_name() const;
  uint32_t registration_id() const;
  uint32_t device_id() const;
  const wire::PublicKey& identity_key() const;

  // --- Pre-keys ---
  // A bundle of this device for a peer to start a session with: the current signed pre-key and, if one is
  // left that was never handed out, a one-time pre-key (marked handed out, so never given twice).
  // The relay normally assembles bundles from the uploaded public keys; this serves in-process use.
  Result<wire::PreKeyBundle> MakeBundle(bool with_one_time_pre_key = true);
  // The current signed pre-key, public half.
  Result<wire::SignedPreKeyPublic> CurrentSignedPreKey();
  // Generates a new batch of one-time pre-keys and returns their public halves for upload.
  Result<std::vector<wire::OneTimePreKeyPublic>> GenerateOneTimePreKeys();
  // How many one-time pre-keys are stored and not yet consumed by a first message.
  Result<size_t> OneTimePreKeyCount();
  // True when fewer than one_time_pre_key_refill_below remain unconsumed.
  Result<bool> NeedsOneTimePreKeyRefill();
  // Replaces the signed pre-key when it is older than the rotation interval and drops replaced ones past
  // their retention. Returns true when it rotated.
  Result<bool> RotateSignedPreKeyIfDue();

  // --- Identity signatures ---
  // An XEdDSA signature (libsignal's curve_calculate_signature) over exactly `message` with the identity
  // private key: what curve_verify_signature accepts under identity_key(). The runtime signs compliance
  // records with it (core/compliance/signing.h, SignatureScheme::kXEdDSA). 64 bytes.
  Result<Bytes> SignWithIdentityKey(ByteView message);

  // --- 1:1 sessions ---
  // X3DH with the peer's bundle. Verifies the signed pre-key's signature (kBadSignature) and the identity
  // policy (kUntrustedIdentity when the peer's identity key changed and was not accepted).
  Status ProcessBundle(const Address& peer, const wire::PreKeyBundle& bundle);
  bool HasSession(const Address& peer);
  // Called after a successful encrypt or decrypt, before anything is committed: the writes it adds to the
  // batch commit atomically with the new session state (a transcript row, an outbox entry, a dedup key). An
  // error from it fails the whole operation and nothing is written.
  using EncryptHook = std::function<Status(const Ciphertext&, WriteBatch*)>;
  using DecryptHook = std::function<Status(const Received&, WriteBatch*)>;

  // Pads and encrypts. kNoSession without a session; kUntrustedIdentity while the contact's key change
  // awaits acceptance.
  Result<Ciphertext> Encrypt(const Address& peer, std::span<const uint8_t> plaintext,
                             const EncryptHook& also_write = nullptr);
  // Decrypts a 1:1 message (kPreKey or kSignal) or a group message (kSenderKey). Errors: kDuplicate,
  // kTampered (MAC), kMalformed, kUnsupportedVersion, kTooFarAhead (more than 2000 skipped keys),
  // kNoSession, kNotFound (unknown pre-key), kUntrustedIdentity, kPermissionDenied (group content from a
  // non-member). Nothing is stored unless it succeeds.
  Result<Received> Decrypt(const Address& sender, const Ciphertext& message,
                           const DecryptHook& also_write = nullptr);

  // --- Identity policy and verification ---
  Result<Contact> GetContact(const std::string& name);
  // Accepts the pending identity key of a contact: encryption resumes, sessions with the old key end, and
  // the verified flag is cleared. Pass the key the user compared (GetSafetyNumber shows the pending key's
  // number while a change awaits) so that a different key is never accepted by mistake.
  Status AcceptIdentityChange(const std::string& name,
                              const std::optional<wire::PublicKey>& expected_key = std::nullopt);
  // Rejects the pending identity key of a contact after the user found it is not theirs (the safety numbers
  // did not match): the contact's trusted key and its verified flag are as before the change, so sending
  // resumes; messages from the rejected key fail with kRejected from then on (drop them) instead of
  // asking the user again. A different new key is a new change. kInvalidArgument when `rejected_key` is not
  // the pending key (the user compared another).
  Status RejectIdentityChange(const std::string& name, const wire::PublicKey& rejected_key);
  // Takes back the user's last rejection of a new key of `name` (the contact's real new device, rejected by
  // mistake): without it that device could never write to us again. The key awaits a decision again, as a
  // pending change (GetSafetyNumber shows its number), and its messages are no longer refused for good.
  // Rejected again, it goes behind the others, so calling this again offers the key rejected before it.
  // Returns that key. kNotFound when no key of the contact was rejected; kInvalidArgument while another
  // change awaits a decision.
  Result<wire::PublicKey> ReconsiderIdentityChange(const std::string& name);
  Result<SafetyNumber> GetSafetyNumber(const std::string& name);
  // True when `scanned` (the peer's scannable safety number) matches ours. kTampered... never: a mismatch
  // is false; malformed bytes are kMalformed.
  Result<bool> CompareScannedSafetyNumber(const std::string& name, ByteView scanned);
  Status SetVerified(const std::string& name, bool verified);

  // --- Care-team groups ---
  // A group is administered by its creator (the care-team lead): only the admin adds and removes members,
  // and each change carries a higher epoch, so neither a member nor the relay can rewrite, replay or
  // reorder membership. Make group ids with NewGroupId: a device accepts an invitation to a group it does not
  // know only when the group id is bound to the inviter's identity key, so no one, another member included,
  // can claim a group on a device before its admin's invitation gets there.
  //
  // The membership changes take a hook like Encrypt's: it sees what the change sends and adds writes (the
  // outbox entries that carry it) that commit atomically with the new group and session state, so a crash
  // cannot keep the advanced ratchets and lose the messages built with them.
  using GroupHook = std::function<Status(const GroupDelivery&, WriteBatch*)>;
  // Creates a group with this identity as admin and `members`, and returns the membership and this
  // device's sender key for each member, over their 1:1 sessions.
  Result<GroupDelivery> CreateGroup(const std::string& group_id, const std::vector<std::string>& members,
                                    const GroupHook& also_write = nullptr);
  Result<GroupDelivery> AddGroupMember(const std::string& group_id, const std::string& member,
                                       const GroupHook& also_write = nullptr);
  // Removes a member; this device's sender key is rotated and the new one goes to everyone remaining, and
  // each remaining member rotates theirs when the membership update reaches them.
  Result<GroupDelivery> RemoveGroupMember(const std::string& group_id, const std::string& member,
                                          const GroupHook& also_write = nullptr);
  // 128 random bits and a 128-bit tag binding them to this identity key, 64 hex digits: a group id nobody can
  // guess, and that only this identity can invite others to.
  std::string NewGroupId();
  Result<std::vector<std::string>> GroupMembers(const std::string& group_id);
  // For every group we share with `member`: this device's current sender key, and from the admin the
  // membership at its current epoch too, which a new device takes as its invitation. Without it a member we
  // had no session with never got our key, and a member's new device was in no group at all. Only a session
  // under the key the group's admin lists for the member gets anything (see Received::unvouched_members), so
  // it is safe to run on any new session. On the admin, a member whose trusted key is no longer the listed
  // one (a new device whose identity change the user accepted) is listed under that key at a new epoch, and
  // every member's sender key is rotated as at a removal: the old key's holder reads nothing more. A group
  // recorded before rosters had keys gets them the same way (and at the admin's next Add or Remove); a
  // member then drops what it holds from, and rotates away from, a session under a member's name that the
  // first list does not vouch for.
  Result<GroupDelivery> CatchUpGroups(const std::string& member, const GroupHook& also_write = nullptr);
  // Encrypts once for the whole group; the same Ciphertext goes to every member.
  Result<Ciphertext> GroupEncrypt(const std::string& group_id, std::span<const uint8_t> plaintext,
                                  const EncryptHook& also_write = nullptr);

  class Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Parses a serialized Signal message of any of the four types without decrypting, as the engine would before
// decrypting. For fuzzing and for a relay-side sanity check; kMalformed or kUnsupportedVersion on failure.
Status ParseSignalMessage(MessageType type, ByteView bytes);

}  // namespace cw::session
