// Client: one local identity on a device, talking to its contacts through a blind relay.
//
// A Client owns, in its home directory:
//   keystore      the master key wrapped under the user's passphrase (storage/keystore.h)
//   store/        the sealed RocksDB store (storage/sealed_store.h): the session engine's records, the
//                 transcripts, the outbox, inbound dedup keys, and the runtime's own records (link key,
//                 sealed-sender box key, mailbox, contacts), all sealed under the master key
// and, while it lives, a TcpTransport (its loop thread) with one Noise XK link to its relay.
//
// What it does: registers a mailbox with the relay (bound to this device's link key) and uploads the signed
// pre-key and one-time pre-keys, refilling them when the relay reports fewer than the low-water mark; makes
// and accepts invitations (core/runtime/invite.h); sends text, keeping every outgoing message in the outbox
// until the relay has acknowledged its deposit (retried with backoff while the relay is unreachable; order is
// kept within each conversation, and a message that cannot go yet holds back only the later ones of its own
// conversation, so a group text waiting for the relay does not hold up a 1:1 text a direct link can carry);
// receives messages, writing the transcript row and the dedup key in the same batch as the session state
// and acknowledging the relay only after that batch is synced (the store commits in groups, one fsync for
// many commits); shows
// safety numbers and marks contacts verified; and surfaces identity changes as events. Every 1:1 message is
// a wire::AppMessage with a purpose label; consent receipts, the audit trail, signed exports and erasure
// (issue 6) are run by core/runtime/compliance_runtime.h over the same store and session. Care-team groups
// (sender keys; create, add, remove with key rotation, send, history) are run by
// core/runtime/client_groups.h: every membership change and group text goes through the same outbox, one
// envelope per member.
//
// Sealed sender: what the relay stores for a message is an Envelope (core/runtime/envelope.h): the Signal
// ciphertext, the sender's name and reply card, padded to a Padmé bucket and sealed with libsodium's
// crypto_box_seal to an X25519 key of the recipient's mailbox, published only in the recipient's invite or
// reply card. The relay sees the mailbox, a deposit token, a message id and a bucket-sized blob; never who
// wrote it or what it says. (It does see the depositor's link key: deposits use the sender's own link.)
//
// Thread rules: every public method is safe from any thread. Methods that talk to the relay block until
// the relay answered or `timeout_ms` passed, and must NOT be called from a callback (they fail with
// kPermissionDenied there); the others may. Internally everything runs on the transport's loop thread,
// which is the engine's owner thread. Every callback in ClientCallbacks runs on that loop thread: keep
// them short, and do not block in them.
//
// Ownership: the Clock and Random in ClientOptions are not owned and must outlive the Client.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/runtime/attachment.h"
#include "core/runtime/compliance_types.h"
#include "core/runtime/receipts.h"
#include "core/session/engine.h"
#include "core/wire/app_message.h"
#include "storage/keystore.h"
#include "storage/transcript.h"
#include "transport/transport.h"

namespace cw::runtime {

inline constexpr int64_t kDefaultTimeoutMs = 15'000;
inline constexpr int64_t kDefaultInviteValidForMs = 7LL * 24 * 3600 * 1000;  // a week
inline constexpr int64_t kReconnectMinMs = 200;
inline constexpr int64_t kReconnectMaxMs = 5'000;

// A text message received from a contact (committed to the transcript when this is called; synced soon
// after, and only then acknowledged to the relay, which hands it out again if a power loss came between).
struct IncomingMessage {
  std::string contact;
  uint64_t sequence = 0;
  int64_t sent_at_ms = 0;
  int64_t received_at_ms = 0;
  SecretBytes text;
  std::string group_id;  // the care-team group it was sent to (sequence is in its history); empty for 1:1
};

// A file received from a contact (the transcript row is committed when this is called; the file itself is
// still at the relay: FetchAttachment downloads it).
struct IncomingFile {
  std::string contact;
  uint64_t sequence = 0;
  int64_t sent_at_ms = 0;
  int64_t received_at_ms = 0;
  wire::AttachmentDescriptor attachment;  // holds the file's key: keep it only as long as needed
};

struct IdentityChangeEvent {
  std::string contact;
  std::string previous_fingerprint;  // hex of the identity public keys
  std::string new_fingerprint;
};

struct ClientCallbacks {
  std::function<void(const IncomingMessage&)> on_message;
  // A file message arrived (instead of on_message).
  std::function<void(const IncomingFile&)> on_file;
  // A contact's identity key changed: sending to them fails with kUntrustedIdentity, and their messages
  // wait at the relay, until the user decides (AcceptIdentityChange or RejectIdentityChange).
  std::function<void(const IdentityChangeEvent&)> on_identity_change;
  // An outgoing message was acknowledged by the relay.
  std::function<void(const std::string& contact, uint64_t sequence)> on_sent;
  // The relay link came up (true) or went down (false).
  std::function<void(bool connected)> on_connection;
  // Something went wrong in the background (a message that could not be decrypted, a refused deposit).
  // The message holds no plaintext, key or name.
  std::function<void(const Status&)> on_error;
  // The client locked itself after ClientOptions::auto_lock_after_ms without a call: ask for the passphrase
  // and call Unlock (from another thread than this callback's).
  std::function<void()> on_lock;
  // A contact's delivery or read receipt moved one of our sent messages (its transcript row, already updated)
  // to delivered or read. Once per message and type; never backwards.
  std::function<void(const ReceiptEvent&)> on_receipt;
  // The periodic sweep deleted `rows` transcript rows whose disappearing timer ran out (refresh what is shown).
  std::function<void(size_t rows)> on_disappeared;
};

struct ClientOptions {
  Clock* clock = nullptr;    // SystemClock when null
  Random* random = nullptr;  // SystemRandom when null
  // Argon2id cost when creating the keystore (Unlock uses what the file records).
  storage::KeystoreOptions keystore;
  ClientCallbacks callbacks;
  int64_t reconnect_min_ms = kReconnectMinMs;
  int64_t reconnect_max_ms = kReconnectMaxMs;
  // The links' send queue: the transport refuses frames above the high-water mark and says when it has
  // drained to the low one (REQUIRES low < high; Create/Open fail otherwise). Relay commands that find it
  // full wait in the client, in order, until it drains.
  size_t link_send_high_water = transport::kDefaultSendHighWater;
  size_t link_send_low_water = transport::kDefaultSendLowWater;
  // Automatic logoff (HIPAA 164.312(a)(2)(iii)): Lock() after this long without a call from the caller
  // (incoming messages do not count). 0 never locks by itself.
  int64_t auto_lock_after_ms = 0;
  // Receipts (core/runtime/receipts.h), for every contact alike: a delivery receipt when a text or file is
  // stored here, read receipts when MarkRead is called. Receipts from contacts are applied either way.
  bool send_delivery_receipts = true;
  bool send_read_receipts = true;
  // Delivery receipts for messages stored within this long of each other go out together, one receipt per
  // contact (a burst of 50 messages costs the sender one receipt to decrypt, not 50, and the receipts do not
  // compete with the next messages for the disk). Sync, Lock and closing send what waits at once. 0: each
  // receipt as its message is stored.
  int64_t delivery_receipt_delay_ms = 100;
  // How often expired (disappearing) transcript rows are deleted while unlocked; 0 never (SweepNow only).
  int64_t sweep_interval_ms = 60'000;
  // Direct P2P (core/runtime/direct_links.h): "host:port" to listen on for contacts' direct links (port 0:
  // any), announced to every contact inside the end-to-end session; messages then go directly to contacts
  // that listen too, and through the relay otherwise. Empty (the default): off, because a listening port
  // reveals this device's address to its contacts. The host is the address contacts will dial: 0.0.0.0 or
  // :: is refused (kInvalidArgument). Open and Create fail with kUnavailable when it cannot be bound.
  // Contacts' announced addresses are dialled only when they are unicast, not link-local, not loopback
  // (unless this device listens on loopback), on a port from 1024; one that fails 10 times in a row is left
  // alone until the contact announces again or links to us.
  std::string direct_listen;
  // How long a message sent over a direct link waits for the contact's ack before it goes to the relay.
  int64_t direct_ack_timeout_ms = 3'000;
  // How long an invite code from CreateInvite admits a new contact. The relay enforces it, whether or not
  // this device is online: the invite's deposit token takes a first deposit only until then (that deposit
  // claims it for the contact for good), and lapses if nobody made one. 0: invites never expire.
  // At most a year (relay::kMaxClaimWithinMillis).
  int64_t invite_valid_for_ms = kDefaultInviteValidForMs;
};

// An invite of ours that no contact has answered yet (Client::OpenInvites).
struct InviteInfo {
  std::string id;          // 12 hex digits naming it on this device (not its token)
  int64_t created_ms = 0;
  int64_t expires_ms = 0;  // 0: never
  std::string for_contact;  // empty: for a new contact; else for this contact's new device
};

struct ContactInfo {
  std::string name;
  session::TrustState trust = session::TrustState::kUnknown;
  std::string fingerprint;  // hex of the contact's identity key
  bool reachable = false;   // we know its mailbox (false until its first message after our invite)
  bool direct = false;      // a direct P2P link to it is up now (ClientOptions::direct_listen)
};

// What went over direct P2P links since the client was opened.
struct DirectStats {
  uint64_t delivered = 0;  // outgoing messages the contact acknowledged over a direct link
  uint64_t received = 0;   // messages that came in over a direct link
  uint64_t refused = 0;    // incoming links closed because their key was announced by no contact
};

struct SyncReport {
  size_t received = 0;  // new messages stored since the previous Sync (fetched or pushed)
  size_t sent = 0;      // outbox entries acknowledged by the relay since the previous Sync (here or in the background)
  size_t pending = 0;   // outbox entries still waiting
};

// An envelope as the relay stores it (Client::PeekRelay).
struct PeekedEnvelope {
  uint64_t seq = 0;
  std::string message_id;  // hex
  Bytes envelope;
};

// A care-team group as this device knows it (core/runtime/client_groups.h).
struct GroupInfo {
  std::string id;      // 64 hex digits (Engine::NewGroupId)
  std::string label;   // the name given at creation; only the creating device knows it (empty elsewhere)
  std::string admin;   // the creator, who alone adds and removes members
  std::vector<std::string> members;  // sorted, this identity included; empty once we were removed
  bool active = true;  // false once we were removed: the history stays, nothing more arrives
};

// What a group call could not reach. Members are named here, never in error text.
struct GroupChange {
  std::string group_id;
  // Members with no 1:1 session on this device: they got nothing yet, and are caught up (our sender key, the
  // admin's membership) once they are contacts under the identity key the group's admin lists for them.
  std::vector<std::string> missing_sessions;
  // Members whose identity change awaits AcceptIdentityChange. The change went to them all the same, over the
  // session with the key still trusted (a member must not miss a removal); the user should check the change.
  std::vector<std::string> untrusted_members;
  // Members whose session with this device runs under another identity key than the group's admin lists for
  // them (or, listed with none, one the user did not verify): they got nothing. A contact made by an invite
  // has a name its answerer chose, no proof of being that member; the admin's list is the proof.
  std::vector<std::string> unvouched_members;
};

class Client {
 public:
  // Creates a new identity named `name` in `home` (created if missing). kAlreadyExists when `home` holds
  // one; kInvalidArgument for a bad name or passphrase.
  static Result<std::unique_ptr<Client>> Create(const std::string& home, const std::string& name,
                                                std::span<const uint8_t> passphrase, ClientOptions options = {});
  // Opens the identity in `home`. kNotFound when there is none; kPermissionDenied on a wrong passphrase;
  // kUnavailable while the keystore backs off or another process has the store open.
  static Result<std::unique_ptr<Client>> Open(const std::string& home, std::span<const uint8_t> passphrase,
                                              ClientOptions options = {});
  // Stops the client (the destructor does this too). Every call waiting on the loop or the relay returns
  // kAborted, and so does every call made after this; the loop thread keeps running until destruction.
  // For an owner whose other threads may still be inside a call: Stop, wait for them to return, destroy.
  // Not from a callback: there it does nothing (what called the callback still uses the client).
  void Stop();
  // Whether the calling thread is this client's loop thread: the one every callback in ClientCallbacks runs
  // on (a C API close from there cannot wait for the loop).
  bool OnCallbackThread() const;
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& name() const;
  // Hex of this identity's public key (what a contact's safety number is built from).
  std::string Fingerprint() const;
  // Hex of this device's link (Noise static) public key.
  std::string LinkKeyHex() const;
  // The relay address this identity is registered with, or empty.
  std::string RelayAddress();

  // Registers with the relay at `relay` (cw://<key>@host:port): creates a mailbox bound to this device's
  // link key and uploads pre-keys. A no-op when already registered with that relay; kAlreadyExists when
  // registered with another.
  Status Register(const std::string& relay, int64_t timeout_ms = kDefaultTimeoutMs);

  // Keeps a link to the relay open from now on, reconnecting with backoff; messages are pushed to
  // on_message as they arrive and the outbox is flushed whenever the link comes up. Returns at once.
  Status StartBackground();
  bool connected();

  // Connects once (if not connected), delivers the outbox, fetches and stores every waiting message,
  // and returns what happened. kUnavailable when the relay cannot be reached (nothing is lost: the outbox
  // keeps its messages for the next attempt). A message the relay did not take fails the Sync with its error
  // once the other conversations' messages went; those count in the next report's `sent`.
  Result<SyncReport> Sync(int64_t timeout_ms = kDefaultTimeoutMs);

  // --- Invitations ---
  // A new invite code: a fresh deposit token for our mailbox, our relay, mailbox, sealed-sender key,
  // identity key and name. Needs the relay.
  // It is valid for ClientOptions::invite_valid_for_ms. kUnsupportedVersion from a relay too old to enforce
  // an invite's expiry (CreateInviteValidFor(0) still works with it).
  Result<std::string> CreateInvite(int64_t timeout_ms = kDefaultTimeoutMs);
  // The same, valid for `valid_for_ms` (0: never expires; kInvalidArgument when negative or over a year).
  // Its id (OpenInvites) is InviteIdOf the code's token (core/runtime/codec.h).
  Result<std::string> CreateInviteValidFor(int64_t valid_for_ms, int64_t timeout_ms = kDefaultTimeoutMs);
  // These codes are for new contacts: answered under the name of an existing contact, the message is
  // dropped, with a report. For a contact's new device (a lost phone, a reinstall), make one for that
  // contact: answered under that contact's name only, with a new identity key, it raises the identity change
  // the user then compares (AcceptIdentityChange or RejectIdentityChange). The code names that contact under
  // our signature (Invite::for_device_of), so clients under other names refuse it (a modified one could still
  // answer it: we admit that contact's name only). RevokeContact and RemoveContact withdraw a contact's
  // device codes (one made before would let the revoked key back in): for a lost phone, revoke first, then
  // make the new phone's code. `valid_for_ms` as above, or ClientOptions::invite_valid_for_ms when negative.
  // kNotFound when `contact` is no contact.
  Result<std::string> CreateInviteForNewDevice(const std::string& contact, int64_t valid_for_ms = -1,
                                               int64_t timeout_ms = kDefaultTimeoutMs);
  // Our invites that no contact has answered and that have not expired yet, oldest first.
  Result<std::vector<InviteInfo>> OpenInvites();
  // Cancels an invite of ours (an expired one too: the relay's clock may still admit it, or a stranger may
  // have claimed it in time): an answer to it binds nobody from then on, and its token is revoked at the
  // relay, so its code admits nobody, nor whoever already wrote with it. kNotFound for an id that names no
  // invite we remember. When the relay does not answer (kUnavailable), the cancellation still stands here
  // and the revocation goes out as soon as the relay is reached; what was written with the code meanwhile is
  // dropped unread.
  Status CancelInvite(const std::string& id, int64_t timeout_ms = kDefaultTimeoutMs);
  // Accepts an invite: checks the code is signed by the identity key it names (kBadSignature otherwise: it
  // was altered on the way; nothing else happens), registers with its relay if this identity is not
  // registered yet, fetches the
  // inviter's bundle, checks it carries the identity key the invite names (kBadSignature otherwise: the
  // relay served someone else's keys), runs X3DH, stores the contact, and queues `first_message`, which
  // carries our reply card. Returns the contact's name. kMalformed for a bad code; kInvalidArgument for an
  // invite of our own; kAlreadyExists for a contact we have, or for an invite whose author's name is ours or
  // is known under another identity key (contacts are known by name: two people of one name are refused).
  // A code for a new device (CreateInviteForNewDevice) names whose: kPermissionDenied when it is not ours;
  // when it is, it is taken from a contact we have too while that contact never wrote to us (a new phone that
  // answered a code for new contacts first, refused by the inviter): it replaces the contact's card, and
  // should the inviter's relay refuse it (a code cancelled or answered already), the earlier card comes back.
  Result<std::string> AcceptInvite(const std::string& code, const std::string& first_message,
                                   int64_t timeout_ms = kDefaultTimeoutMs);

  // --- Messages ---
  // Encrypts and stores `text` for `contact` and queues it in the outbox (committed together); delivery is
  // attempted at once when linked, else at the next Sync or reconnection. Returns the transcript sequence.
  // kNotFound for an unknown contact; kUntrustedIdentity while the contact's identity change awaits
  // AcceptIdentityChange; kNoSession before the contact's first message reached us.
  Result<uint64_t> SendText(const std::string& contact, const std::string& text);
  // The same with a purpose label (compliance::IsValidPurposeLabel; the two-argument form sends
  // kDefaultPurpose). kInvalidArgument for a bad label; on a clinic device (CompliancePolicy::clinic),
  // kPermissionDenied "no valid consent for purpose" when the policy needs the contact's consent and no
  // valid (given, not withdrawn, not lapsed) receipt holds it. Nothing is stored or sent then.
  Result<uint64_t> SendText(const std::string& contact, const std::string& text, const std::string& purpose);
  // Encrypts the file at `path` in chunks under a fresh key and uploads it to the relay (progress: plaintext
  // bytes uploaded), then sends its descriptor to `contact` as a kFile message through the outbox, like
  // SendText. The transcript row's body is the file name and its attachment reference the descriptor
  // (AttachmentOf). A dropped link during the upload is retried with backoff and the upload resumes where the
  // relay stopped; `timeout_ms` bounds each relay round trip. Errors as SendText and UploadAttachment.
  // Blocks: not from a callback.
  Result<uint64_t> SendFile(const std::string& contact, const std::string& path, ProgressFn progress = {},
                            int64_t timeout_ms = kDefaultTimeoutMs);
  // The same with a purpose label, gated like SendText's: the contact, its trust and the consent for
  // `purpose` are checked before anything is read or uploaded (a refused file leaves nothing at the relay),
  // and the consent again when the message is queued, since it may have been withdrawn during the upload
  // (kPermissionDenied then; the uploaded blob is left to expire at the relay).
  Result<uint64_t> SendFile(const std::string& contact, const std::string& path, const std::string& purpose,
                            ProgressFn progress = {}, int64_t timeout_ms = kDefaultTimeoutMs);
  // Downloads, checks and decrypts the attachment into `dest_path` (which must not exist), resuming after a
  // dropped link. Errors as DownloadAttachment (kTampered: nothing is written). Blocks: not from a callback.
  Status FetchAttachment(const wire::AttachmentDescriptor& attachment, const std::string& dest_path,
                         ProgressFn progress = {}, int64_t timeout_ms = kDefaultTimeoutMs);
  // The attachment a transcript row refers to; kNotFound for a row that is not a file.
  static Result<wire::AttachmentDescriptor> AttachmentOf(const storage::TranscriptMessage& row);

  // The latest `n` messages with `contact`, oldest first.
  Result<std::vector<storage::TranscriptMessage>> History(const std::string& contact, size_t n = 100);
  // Every conversation as JSON (storage/export.h).
  Result<SecretBytes> ExportJson();
  Result<size_t> PendingOutboxCount();

  // --- Care-team groups (issue 5; core/runtime/client_groups.h) ---
  // Creates a group administered by this identity with `members` (contacts with a 1:1 session; kNotFound /
  // kNoSession otherwise, and nothing is created). The membership and this device's sender key go to each
  // member through the outbox. `label` is kept on this device only.
  Result<GroupChange> CreateGroup(const std::string& label, const std::vector<std::string>& members);
  // Admin only (kPermissionDenied otherwise). Adding sends the membership and sender key to everyone;
  // removing rotates this device's sender key, sends the new one to the remaining members (who rotate theirs
  // on receipt) and tells the removed member, whose device then forgets the group's keys.
  Result<GroupChange> AddGroupMember(const std::string& group_id, const std::string& member);
  Result<GroupChange> RemoveGroupMember(const std::string& group_id, const std::string& member);
  // Encrypts `text` once with this device's sender key and queues it for every other member (one envelope
  // each). Consent-gated per member like SendText: on a clinic device, kPermissionDenied when any member
  // lacks consent for `purpose`, and nothing is stored or sent. kNotFound for a group we are not in.
  Result<uint64_t> SendGroupText(const std::string& group_id, const std::string& text,
                                 const std::string& purpose = std::string(kDefaultPurpose));
  Result<std::vector<std::string>> GroupMembers(const std::string& group_id);
  Result<std::vector<GroupInfo>> Groups();
  // The latest `n` messages of the group's conversation, oldest first (also after we were removed).
  Result<std::vector<storage::TranscriptMessage>> GroupHistory(const std::string& group_id, size_t n = 100);

  // --- Contacts and trust ---
  Result<std::vector<ContactInfo>> Contacts();
  Result<session::SafetyNumber> GetSafetyNumber(const std::string& contact);
  // Marking a contact verified also catches it up on the groups we share with it (our sender key; from the
  // admin, the membership).
  Status SetVerified(const std::string& contact, bool verified);
  // Accepts the contact's new identity key: sending resumes and their waiting messages are fetched at the
  // next Sync or reconnection. Once a message under the new key arrives, the new device is caught up on the
  // groups we share (our sender key; from a group's admin, the membership, which lets it rejoin).
  Status AcceptIdentityChange(const std::string& contact);
  // Rejects it, when the new safety number does not match the one the contact shows: whoever sent messages
  // under the contact's name with that key is not them. The contact's key, and its verified mark, are as
  // before, so sending resumes; messages from the rejected key are dropped, now (those waiting at the relay,
  // at the next Sync or reconnection) and later, without asking again. kInvalidArgument when no change
  // awaits. A change comes through an invite code of ours for the contact's new device
  // (CreateInviteForNewDevice): that code reached the wrong person; cancel the contact's other such invites
  // (OpenInvites, CancelInvite).
  Status RejectIdentityChange(const std::string& contact);
  // Takes back the last RejectIdentityChange for `contact`, when the user rejected their real new device by
  // mistake (without this, that device could never write to us again). The rejected key awaits a decision
  // again, as a change (Accept or Reject); returns the safety number to compare, the key's. Rejected again,
  // the next call offers the key rejected before it, and so on through every rejected key. What it sent
  // while rejected was dropped; what it sends from now on waits at the relay for the decision. kNotFound
  // when no key of the contact was rejected; kInvalidArgument while another change awaits.
  Result<session::SafetyNumber> ReconsiderIdentityChange(const std::string& contact);
  // Revokes at the relay the deposit token this device gave `contact`: the relay refuses the contact's
  // deposits from then on. Sending to the contact still works. The token is the one in our reply card when
  // we accepted the contact's invite, or, when the contact accepted ours, the invite token its kInviteAnswer
  // named (sent right after its first message; an answer naming a newer invite of ours replaces the token,
  // and the one it replaces is revoked at the next link up). kNotFound for an unknown contact, or when no
  // token of ours is known for it (already revoked; a contact whose device sends no kInviteAnswer).
  // Needs the relay.
  Status RevokeContact(const std::string& contact, int64_t timeout_ms = kDefaultTimeoutMs);
  // Revokes as RevokeContact, then forgets the contact (its card and our token; the transcript stays until
  // EraseConversation). A contact with no token of ours known is forgotten all the same; one whose token the
  // relay could not revoke (unreachable) is kept.
  Status RemoveContact(const std::string& contact, int64_t timeout_ms = kDefaultTimeoutMs);

  // --- Consent, audit, export, erasure (issue 6; core/runtime/compliance_runtime.h) ---
  // The patient grants consent to `contact` (the clinician): a receipt bound to both identity keys and the
  // safety number, signed with this identity key (XEdDSA), is sent end to end; the clinician's device checks
  // it against its own session, countersigns it, keeps it and sends it back, and this device keeps the
  // countersigned receipt. Returns the receipt id. kInvalidArgument for a grant that breaks a receipt rule.
  Result<std::string> GrantConsent(const std::string& contact, const ConsentGrant& grant);
  // The patient withdraws `purposes` (empty: all) of a countersigned receipt: a signed withdrawal, kept and
  // sent to the clinician. kPermissionDenied when this device is not the receipt's patient.
  Status WithdrawConsent(const std::string& receipt_id, const std::vector<std::string>& purposes = {});
  // Every receipt this device holds (countersigned, and its own still awaiting countersignature).
  Result<std::vector<ConsentRecord>> ConsentReceipts();
  // The clinic's policy on this device (recorded as kPolicyChanged), and the one in force.
  Status SetCompliancePolicy(const CompliancePolicy& policy);
  Result<CompliancePolicy> GetCompliancePolicy();
  // Verifies this device's audit chain against its signed checkpoints. kTampered / kBadSignature (naming
  // the first broken sequence) when a stored entry was modified, deleted, reordered or truncated.
  Result<AuditStatus> VerifyAudit();
  Result<std::vector<compliance::AuditEntry>> AuditTrail();
  // Signs a checkpoint of the audit chain and sends it to `contact` as a signed chain head, which their
  // device verifies and records (kPeerChainHead).
  Status SendAuditHead(const std::string& contact);
  // One signed bundle (compliance/export_bundle.h): every transcript, the consent receipts and withdrawals,
  // the audit chain with its checkpoints and this device's erasure receipts; checked offline by
  // compliance::VerifyExport with this identity key (Fingerprint()). Records kExport first.
  Result<Bytes> ExportSigned();
  // Erases the conversation with `contact`: its key is crypto-shredded (storage::Transcripts), a signed
  // erasure receipt enters the audit chain and goes to the contact. Returns the erasure id.
  Result<std::string> EraseConversation(const std::string& contact);
  // Sets the conversation's disappearing timer; the policy's retention floor stretches a shorter one (each
  // such conflict is audited as kRetentionConflict). Returns the timer in force.
  Result<int64_t> SetDisappearingTimer(const std::string& contact, int64_t ms);
  // The contact's messages up to transcript row `up_to_sequence` were read: a kMessageRead audit entry for
  // each not yet marked, and (ClientOptions::send_read_receipts) read receipts through the outbox. Returns
  // how many were newly marked read.
  Result<size_t> MarkRead(const std::string& contact, uint64_t up_to_sequence);
  // Deletes the transcript rows whose disappearing timer ran out (the periodic sweep does this too).
  // Returns how many rows went.
  Result<size_t> SweepNow();
  // For tests of the receiving side only: sends `message` as it is, with no consent check.
  Result<uint64_t> SendAppMessageForTesting(const std::string& contact, const wire::AppMessage& message);

  // What the relay holds for our mailbox right now, fetched without decrypting or acknowledging anything:
  // for showing that the relay stores only sealed, padded bytes.
  Result<std::vector<PeekedEnvelope>> PeekRelay(int64_t timeout_ms = kDefaultTimeoutMs);

  // --- Direct P2P (ClientOptions::direct_listen) ---
  // "host:port" this device listens on for contacts' direct links, or empty (off, or locked).
  std::string DirectEndpoint();
  // Hex of this device's link key is LinkKeyHex(): what an announcement carries and a direct link proves.
  Result<DirectStats> GetDirectStats();

  // --- Lock ---
  // Wipes every key this client holds in memory (the master key, the store's subkeys and cached records, the
  // identity, session and sealed-sender keys) and drops the relay link; messages wait at the relay. Direct
  // links and the direct listener close too (contacts fall back to the relay); Unlock opens them again. Until
  // Unlock, every other call fails with kPermissionDenied "the client is locked". Idempotent.
  Status Lock();
  // Unlocks with the passphrase: kPermissionDenied for a wrong one (counted, with the keystore's backoff and
  // erase policy: storage/keystore.h), kUnavailable while backing off. Reconnects if the client was in the
  // background. Not from a callback (kPermissionDenied).
  Status Unlock(std::span<const uint8_t> passphrase);
  bool locked();

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  // For SendFile and FetchAttachment (client_files.cc): the relay link as a BlobChannel that gives up when
  // the relay stays silent for `timeout_ms` (nullptr on the loop thread, where it would block its own
  // answers), and a kFile message queued like a text.
  std::unique_ptr<BlobChannel> RelayBlobs(int64_t timeout_ms);
  // Whether `contact` may be sent a message for `purpose` now (CompliancePolicy), on the loop thread.
  Status CheckOutgoingPurpose(const std::string& contact, const std::string& purpose);
  Result<uint64_t> SendFileMessage(const std::string& contact, wire::AttachmentDescriptor attachment,
                                   const std::string& purpose);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cw::runtime
