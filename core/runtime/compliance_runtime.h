// ComplianceRuntime: the client runtime's side of issue 6. It owns the device's audit log, consent ledger
// and clinic policy, keeps their records in the sealed store, and runs the consent, audit-head and erasure
// exchanges that travel as AppMessages (core/wire/app_message.h) inside the Signal session.
//
// Storage: every record lives in the engine's kMeta table under a fixed-prefix name (kMeta keys are stored
// plain, so the names below identify nobody: sequence numbers and random ids; the values are sealed under
// the master key like every other record). Using kMeta needs no new column family, so stores made before
// this code open unchanged.
//   runtime.audit.entry.<20-digit sequence>       an audit entry (compliance::EncodeAuditEntry)
//   runtime.audit.checkpoint.<20-digit counter>   a signed checkpoint, in the order written
//   runtime.audit.peer_head.<20-digit sequence>   contact NUL a peer's signed chain head; keyed by the
//                                                 sequence of our kPeerChainHead entry that recorded it
//   runtime.consent.receipt.<receipt id>          contact NUL a countersigned receipt
//   runtime.consent.pending.<receipt id>          contact NUL our receipt request (EncodeReceiptRequest),
//                                                 awaiting the clinician's countersignature
//   runtime.consent.withdrawal.<receipt id>.<20-digit n>   a withdrawal
//   runtime.erasure.own.<erasure id>              contact NUL our erasure receipt
//   runtime.erasure.peer.<erasure id>             contact NUL a contact's erasure receipt
//   runtime.compliance.policy                     the policy (JSON)
//   runtime.inbox-with-token.<relay message id, hex>  sender NUL deposit token (32 bytes) a received control
//                                                 AppMessage, committed with its dedup key, deleted once
//                                                 handled
//   runtime.inbox.<relay message id, hex>         the same without the token, as earlier builds wrote it
//   (read)
//
// Signing: IdentitySigner signs with XEdDSA on the engine's identity key (Engine::SignWithIdentityKey), so
// receipts, checkpoints, exports and erasure receipts verify with the public identity keys alone.
//
// Thread rules: the engine's owner thread only (the client's loop thread). Nothing here may run inside an
// engine hook except the Stage* methods, which only add writes to the hook's batch: anything that signs calls
// the engine. Ownership: every pointer in Deps is borrowed and must outlive this object.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/compliance/audit.h"
#include "core/compliance/erasure.h"
#include "core/compliance/ledger.h"
#include "core/runtime/compliance_types.h"
#include "core/session/engine.h"
#include "core/wire/app_message.h"
#include "core/wire/attachment.h"
#include "storage/transcript.h"

namespace cw::runtime {

inline constexpr std::string_view kAuditEntryPrefix = "runtime.audit.entry.";
inline constexpr std::string_view kAuditCheckpointPrefix = "runtime.audit.checkpoint.";
inline constexpr std::string_view kPeerHeadPrefix = "runtime.audit.peer_head.";
inline constexpr std::string_view kReceiptPrefix = "runtime.consent.receipt.";
inline constexpr std::string_view kPendingReceiptPrefix = "runtime.consent.pending.";
inline constexpr std::string_view kWithdrawalPrefix = "runtime.consent.withdrawal.";
inline constexpr std::string_view kOwnErasurePrefix = "runtime.erasure.own.";
inline constexpr std::string_view kPeerErasurePrefix = "runtime.erasure.peer.";
inline constexpr std::string_view kPolicyKey = "runtime.compliance.policy";
// A control message committed with its decrypt batch and not yet handled, under its relay id. Value: the
// sender's name, a NUL byte, the message. It is now kept under kInboxWithTokenPrefix, with the deposit token
// its envelope came with (kInboxTokenSize bytes) between the NUL and the message, so that an invite answer
// handled after a restart is checked like one handled at once. Records of earlier builds (kInboxPrefix, no
// token) are still read and taken as before; neither prefix is a prefix of the other. An earlier build run
// on a newer store does not see the new records: a control message committed but not handled before such a
// downgrade is lost (the relay copy is gone), which a downgrade within one crash window makes rare.
inline constexpr std::string_view kInboxPrefix = "runtime.inbox.";
inline constexpr std::string_view kInboxWithTokenPrefix = "runtime.inbox-with-token.";
inline constexpr size_t kInboxTokenSize = 32;
inline constexpr uint64_t kAuditCheckpointInterval = 64;

// Control messages (consent, withdrawal, audit heads, erasure) go through the outbox like text, in a
// conversation of their own so they never show as chat and survive the erasure of the chat they concern.
std::string ControlConversationId(std::string_view contact);
bool IsControlConversation(std::string_view conversation_id);

// "device:" + the identity fingerprint: the audit chain id of the device with that identity key.
std::string AuditChainIdFor(ByteView identity_key);

// The runtime's compliance::Signer: XEdDSA with the engine's identity key.
class IdentitySigner final : public compliance::Signer {
 public:
  explicit IdentitySigner(session::Engine* engine);
  const compliance::SigningPublicKey& public_key() const override { return key_; }
  Result<Bytes> Sign(ByteView message) override;

 private:
  session::Engine* engine_;
  compliance::SigningPublicKey key_;
};

class ComplianceRuntime {
 public:
  struct Deps {
    session::ProtocolStore* store = nullptr;
    session::Engine* engine = nullptr;
    storage::Transcripts* transcripts = nullptr;
    Clock* clock = nullptr;
    Random* random = nullptr;
    std::string local_name;
    // Queues a control AppMessage for `contact` through the outbox, with no consent check.
    std::function<Status(const std::string& contact, const wire::AppMessage&)> send;
    // Background problems (a refused receipt, a message refused for lack of consent). No plaintext.
    std::function<void(const Status&)> report;
    // A kReceipt message from `sender` (core/runtime/receipts.h), handled by the client. Null: refused.
    std::function<Status(const std::string& sender, ByteView payload)> receipt;
    // A kDirectEndpoint announcement from `sender` (core/runtime/direct_links.h). Null: refused. It is link
    // metadata, not clinical content: no purpose gate and no audit entry (see HandleControl).
    std::function<Status(const std::string& sender, ByteView payload)> direct_endpoint;
    // A kInviteAnswer from `sender`: which of our invite tokens it holds (handled by the client), with the
    // deposit token its envelope came with (empty: not known, from an inbox record of an older version).
    // Null: refused. Like the announcement, mailbox metadata: no purpose gate and no audit entry.
    std::function<Status(const std::string& sender, ByteView payload, ByteView arrived_with)> invite_answer;
    // Makes everything committed so far durable (the store commits in groups and syncs behind). Null: not
    // needed (a store that syncs every commit).
    std::function<Status()> sync;
  };

  // Loads the policy, ledger and audit chain. A chain that does not verify does not stop the client: the
  // error is kept, every audit-dependent call returns it, and VerifyAudit shows it. `failed_unlocks` is the
  // keystore's failure count before this unlock (recorded as kUnlockFailed, then kUnlockSucceeded).
  static Result<std::unique_ptr<ComplianceRuntime>> Open(Deps deps, uint32_t failed_unlocks);
  ~ComplianceRuntime();
  ComplianceRuntime(const ComplianceRuntime&) = delete;
  ComplianceRuntime& operator=(const ComplianceRuntime&) = delete;

  // --- The message path ---
  // Before encrypting `purpose` to `contact`: kInvalidArgument for a bad label; kPermissionDenied when this
  // is a clinic device and the contact (the patient) has no valid consent for it.
  Status CheckOutgoing(const std::string& contact, std::string_view purpose) const;
  // Before decrypting a message from `sender` (outside the engine call): looks up what the hook will need,
  // since the hook itself must not call the engine.
  void BeforeDecrypt(const std::string& sender);
  // Inside the decrypt hook of a 1:1 message: decodes the AppMessage and stages the dedup key plus either
  // the transcript row and kMessageReceived (text shown: *text set; for a file also *file, and the row shows
  // its name and refers to the attachment), the kMessageRefused entry (*refused),
  // or the message itself as an inbox record (a control message: *control set, to HandleControl after the
  // commit), kept with `arrived_with`, the deposit token (kInboxTokenSize bytes) its envelope came with.
  Status StageIncoming(const session::Received& rec, const std::string& relay_id, ByteView arrived_with,
                       const storage::IncomingDetails& details, session::WriteBatch* batch,
                       uint64_t* sequence, SecretBytes* text, std::optional<wire::AttachmentDescriptor>* file,
                       std::optional<wire::AppMessage>* control, bool* refused);
  // Inside the encrypt hook of a text message: stages its kMessageSent entry.
  Status StageSent(const std::string& conversation_id, const std::string& message_ref, session::WriteBatch* batch);
  // After the hook's batch committed (or did not): confirms or forgets what Stage* prepared.
  void AfterCommit(bool committed);
  // A control message from `sender`, after its batch committed.
  // `relay_id` names its inbox record, deleted once it is handled (or refused for good); `arrived_with` is
  // the deposit token its envelope came with (empty when not known).
  void HandleControl(const std::string& sender, const std::string& relay_id, wire::AppMessage message,
                     ByteView arrived_with);
  // Handles control messages whose batch committed but whose handling did not finish (a crash, a storage
  // failure). Call once the client can send (after Open, on the owner thread).
  void ResumeInbox();

  // --- Events the client reports ---
  void OnSessionEstablished(const std::string& contact);
  void OnVerification(const std::string& contact, bool verified);
  // The client is locking (kLocked; `automatic`: by the idle timer). Called before the keys go.
  void OnLocked(bool automatic);
  // A file was sent or received (kAttachment: the relay blob id and the blob's digest, never its key).
  void OnAttachment(const wire::AttachmentDescriptor& attachment);
  // From the engine's identity-change callback (inside an engine call): queued, written by FlushDeferred.
  void DeferIdentityChange(ByteView previous_key, ByteView new_key);
  void FlushDeferred();
  // The user accepted or rejected a contact's change from `previous_key` to `new_key`, or took back a
  // rejection of `new_key` (the audit entry's code, see AuditEventType::kIdentityKeyChanged).
  enum class IdentityDecision : uint32_t { kAccepted = 1, kRejected = 2, kRejectionTakenBack = 3 };
  void OnIdentityDecision(ByteView previous_key, ByteView new_key, IdentityDecision decision);
  // Signs a checkpoint when entries were added since the last one (on close).
  void CheckpointIfNeeded();

  // --- Client API (see client.h) ---
  Result<std::string> GrantConsent(const std::string& contact, const ConsentGrant& grant);
  Status WithdrawConsent(const std::string& receipt_id, const std::vector<std::string>& purposes);
  Result<std::vector<ConsentRecord>> ConsentReceipts() const;
  Status SetPolicy(const CompliancePolicy& policy);
  const CompliancePolicy& policy() const { return policy_; }
  Result<AuditStatus> VerifyAudit() const;
  Result<std::vector<compliance::AuditEntry>> AuditTrail() const;
  Status SendAuditHead(const std::string& contact);
  Result<Bytes> ExportSigned(const std::string& exporter);
  // `also` commits in the erasure's batch (the client's receipt records of the conversation).
  Result<std::string> Erase(const std::string& contact, session::WriteBatch also = {});
  Result<int64_t> SetDisappearingTimer(const std::string& contact, int64_t ms);
  // kMessageRead for message `message_ref` (a relay message id) of `contact`'s conversation: read on this
  // device (by_contact false, code 0), or reported read by the contact's receipt (true, code 1).
  Status RecordMessageRead(const std::string& contact, const std::string& message_ref, bool by_contact);
  const compliance::SigningPublicKey& device_key() const { return signer_.public_key(); }

 private:
  explicit ComplianceRuntime(Deps deps);
  class Sink;

  Result<compliance::SessionBinding> BindingWith(const std::string& contact, bool we_are_patient) const;
  Result<Bytes> ContactKey(const std::string& contact) const;
  Status Audit(compliance::AuditEvent event);
  Status AuditReady() const;
  Status CheckIncoming(std::string_view purpose) const;
  Status Put(std::string key, ByteView value);
  Status PutTagged(std::string key, const std::string& contact, ByteView value);
  Status HandleConsent(const std::string& sender, ByteView payload);
  Status HandleWithdrawal(const std::string& sender, ByteView payload);
  Status HandleAuditHead(const std::string& sender, ByteView payload);
  Status HandleErasure(const std::string& sender, ByteView payload);
  Status LoadRecords();

  Deps deps_;
  IdentitySigner signer_;
  compliance::StandardVerifier verifier_;
  std::unique_ptr<Sink> sink_;
  std::unique_ptr<compliance::AuditLog> log_;
  Status log_status_;  // why log_ is null, when it is
  compliance::ConsentLedger ledger_;
  CompliancePolicy policy_;
  compliance::ConsentPolicy consent_policy_;
  std::map<std::string, std::string> receipt_contacts_;  // receipt id -> the other party
  std::map<std::string, std::pair<std::string, compliance::SignedConsentReceipt>> pending_;
  std::vector<compliance::ErasureReceipt> own_erasures_;
  size_t withdrawals_stored_ = 0;
  size_t peer_heads_ = 0;
  std::optional<compliance::PendingAuditEntry> staged_;
  std::optional<Bytes> incoming_key_;  // the sender's identity key, set by BeforeDecrypt
  std::vector<compliance::AuditEvent> deferred_;
};

}  // namespace cw::runtime
