// The runtime's consent, audit, export and erasure logic (issue 6). See compliance_runtime.h.
#include "core/runtime/compliance_runtime.h"

#include <sodium.h>

#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/compliance/export_bundle.h"
#include "core/runtime/file_message.h"
#include "storage/export.h"

namespace cw::runtime {

namespace {

using compliance::AuditEvent;
using compliance::AuditEventType;
using session::Table;
using json = nlohmann::json;

constexpr std::string_view kControlPrefix = "ctl:";

std::string Padded(uint64_t n) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%020" PRIu64, n);
  return buf;
}

// A conversation named in the audit trail by a hash, never by its id (which holds the contact's name).
std::string ConversationRef(std::string_view conversation_id) {
  const compliance::Digest d = compliance::Blake2b256({AsBytes("cipherward-audit-conversation-v1"), AsBytes(conversation_id)});
  return "conv:" + ToHex(d);
}

compliance::SigningPublicKey XKey(ByteView identity_key) {
  return compliance::SigningPublicKey{compliance::SignatureScheme::kXEdDSA, Bytes(identity_key.begin(), identity_key.end())};
}

// contact NUL bytes
Bytes Tagged(const std::string& contact, ByteView value) {
  Bytes out(contact.begin(), contact.end());
  out.push_back(0);
  out.insert(out.end(), value.begin(), value.end());
  return out;
}
bool Untag(ByteView stored, std::string* contact, Bytes* value) {
  const auto nul = std::find(stored.begin(), stored.end(), uint8_t{0});
  if (nul == stored.end()) return false;
  contact->assign(stored.begin(), nul);
  value->assign(nul + 1, stored.end());
  return true;
}

std::string_view CategoryFor(std::string_view label) {
  if (label == compliance::kPurposeTreatment) return "Health care delivery";
  if (label == compliance::kPurposeScheduling) return "Appointments";
  if (label == compliance::kPurposeBilling) return "Payment";
  if (label == compliance::kPurposeMarketing) return "Marketing";
  return "Clinic-defined purpose";
}

Bytes DigestBytes(const compliance::Digest& d) { return Bytes(d.begin(), d.end()); }

template <typename T>
Status StatusOf(const Result<T>& r) {
  return r ? Status::Ok() : r.error();
}

}  // namespace

std::string ControlConversationId(std::string_view contact) { return std::string(kControlPrefix) + std::string(contact); }
bool IsControlConversation(std::string_view conversation_id) { return conversation_id.starts_with(kControlPrefix); }

std::string AuditChainIdFor(ByteView identity_key) { return "device:" + compliance::IdentityFingerprint(identity_key); }

IdentitySigner::IdentitySigner(session::Engine* engine)
    : engine_(engine), key_(XKey(engine->identity_key())) {}

Result<Bytes> IdentitySigner::Sign(ByteView message) { return engine_->SignWithIdentityKey(message); }

// ==================================================================== the audit sink over kMeta

class ComplianceRuntime::Sink final : public compliance::AuditSink {
 public:
  explicit Sink(session::ProtocolStore* store) : store_(store) {}

  Status Load() {
    CW_ASSIGN_OR_RETURN(auto e, store_->ListKeys(Table::kMeta, kAuditEntryPrefix));
    CW_ASSIGN_OR_RETURN(auto c, store_->ListKeys(Table::kMeta, kAuditCheckpointPrefix));
    // The next sequence follows the highest stored one (not the count): a deleted record then shows as a
    // gap to VerifyChain instead of being silently reused.
    entries_ = e.empty() ? 0 : std::strtoull(e.back().c_str() + kAuditEntryPrefix.size(), nullptr, 10);
    checkpoints_ = c.empty() ? 0 : std::strtoull(c.back().c_str() + kAuditCheckpointPrefix.size(), nullptr, 10);
    return Status::Ok();
  }

  Result<session::Write> StageEntry(uint64_t sequence, ByteView record) const {
    if (sequence != entries_ + 1) return Error(StatusCode::kInvalidArgument, "audit entries are append-only");
    return session::Write{Table::kMeta, std::string(kAuditEntryPrefix) + Padded(sequence), SecretBytes(record)};
  }
  void EntryCommitted(uint64_t sequence) { entries_ = sequence; }

  Status AppendEntry(uint64_t sequence, ByteView record) override {
    CW_ASSIGN_OR_RETURN(session::Write w, StageEntry(sequence, record));
    session::WriteBatch b;
    b.writes.push_back(std::move(w));
    CW_RETURN_IF_ERROR(store_->Commit(std::move(b)));
    entries_ = sequence;
    return Status::Ok();
  }
  Status AppendCheckpoint(uint64_t, ByteView record) override {
    session::WriteBatch b;
    b.writes.push_back({Table::kMeta, std::string(kAuditCheckpointPrefix) + Padded(checkpoints_ + 1), SecretBytes(record)});
    CW_RETURN_IF_ERROR(store_->Commit(std::move(b)));
    ++checkpoints_;
    return Status::Ok();
  }
  Result<std::vector<Bytes>> ReadEntries() const override { return Read(kAuditEntryPrefix); }
  Result<std::vector<Bytes>> ReadCheckpoints() const override { return Read(kAuditCheckpointPrefix); }

 private:
  Result<std::vector<Bytes>> Read(std::string_view prefix) const {
    CW_ASSIGN_OR_RETURN(auto keys, store_->ListKeys(Table::kMeta, prefix));
    std::vector<Bytes> out;
    for (const auto& k : keys) {
      CW_ASSIGN_OR_RETURN(auto v, store_->Get(Table::kMeta, k));
      if (v) out.emplace_back(v->reveal().begin(), v->reveal().end());
    }
    return out;
  }

  session::ProtocolStore* store_;
  uint64_t entries_ = 0;
  uint64_t checkpoints_ = 0;
};

// ==================================================================== opening

ComplianceRuntime::ComplianceRuntime(Deps deps)
    : deps_(std::move(deps)),
      signer_(deps_.engine),
      sink_(std::make_unique<Sink>(deps_.store)),
      ledger_(&verifier_, deps_.clock),
      consent_policy_(compliance::ConsentPolicy::HipaaDefault()) {}

ComplianceRuntime::~ComplianceRuntime() = default;

Result<std::unique_ptr<ComplianceRuntime>> ComplianceRuntime::Open(Deps deps, uint32_t failed_unlocks) {
  std::unique_ptr<ComplianceRuntime> cr(new ComplianceRuntime(std::move(deps)));
  CW_RETURN_IF_ERROR(cr->sink_->Load());
  compliance::AuditLogOptions ao;
  ao.chain_id = AuditChainIdFor(cr->deps_.engine->identity_key());
  ao.clock = cr->deps_.clock;
  ao.signer = &cr->signer_;
  ao.verifier = &cr->verifier_;
  ao.checkpoint_interval = kAuditCheckpointInterval;
  auto log = compliance::AuditLog::Open(cr->sink_.get(), std::move(ao));
  if (log) {
    cr->log_ = std::move(*log);
  } else {
    cr->log_status_ = Status(log.error().code(), "the audit trail does not verify: " + log.error().message());
    if (cr->deps_.report) cr->deps_.report(cr->log_status_);
  }
  CW_RETURN_IF_ERROR(cr->LoadRecords());
  if (failed_unlocks > 0) (void)cr->Audit({AuditEventType::kUnlockFailed, "", "", failed_unlocks, {}});
  (void)cr->Audit({AuditEventType::kUnlockSucceeded, "", "", 0, {}});
  return cr;
}

Status ComplianceRuntime::LoadRecords() {
  session::ProtocolStore* st = deps_.store;
  CW_ASSIGN_OR_RETURN(auto pol, st->Get(Table::kMeta, kPolicyKey));
  if (pol) {
    json j = json::parse(pol->reveal().begin(), pol->reveal().end(), nullptr, false);
    CompliancePolicy p;
    try {
      p.clinic = j.at("clinic").get<bool>();
      p.requires_consent = j.at("requires").get<std::vector<std::string>>();
      p.exempt = j.at("exempt").get<std::vector<std::string>>();
      p.unlisted_requires_consent = j.at("unlisted").get<bool>();
      p.retention_floor_ms = j.at("floor_ms").get<int64_t>();
    } catch (...) {
      return Status(StatusCode::kMalformed, "stored compliance policy is malformed");
    }
    CW_ASSIGN_OR_RETURN(consent_policy_, compliance::ConsentPolicy::New(p.requires_consent, p.exempt, p.unlisted_requires_consent));
    policy_ = std::move(p);
  }
  // Receipts entered the store only after verifying against their session; re-adding them checks both
  // signatures again against the keys and binding they carry.
  auto each = [&](std::string_view prefix, auto fn) -> Status {
    CW_ASSIGN_OR_RETURN(auto keys, st->ListKeys(Table::kMeta, prefix));
    for (const auto& k : keys) {
      CW_ASSIGN_OR_RETURN(auto v, st->Get(Table::kMeta, k));
      if (v) CW_RETURN_IF_ERROR(fn(k, v->reveal()));
    }
    return Status::Ok();
  };
  CW_RETURN_IF_ERROR(each(kReceiptPrefix, [&](const std::string&, ByteView v) -> Status {
    std::string contact;
    Bytes bytes;
    if (!Untag(v, &contact, &bytes)) return Status(StatusCode::kMalformed, "stored receipt is malformed");
    CW_ASSIGN_OR_RETURN(auto sr, compliance::DecodeSignedReceipt(bytes));
    const compliance::ReceiptExpectations ex{sr.receipt.binding, sr.receipt.patient_key, sr.receipt.clinician_key};
    CW_RETURN_IF_ERROR(ledger_.AddReceipt(sr, ex));
    receipt_contacts_[sr.receipt.receipt_id] = contact;
    return Status::Ok();
  }));
  CW_RETURN_IF_ERROR(each(kPendingReceiptPrefix, [&](const std::string&, ByteView v) -> Status {
    std::string contact;
    Bytes bytes;
    if (!Untag(v, &contact, &bytes)) return Status(StatusCode::kMalformed, "stored receipt is malformed");
    CW_ASSIGN_OR_RETURN(auto sr, compliance::DecodeReceiptRequest(bytes));
    if (ledger_.FindReceipt(sr.receipt.receipt_id) == nullptr) pending_[sr.receipt.receipt_id] = {contact, std::move(sr)};
    return Status::Ok();
  }));
  CW_RETURN_IF_ERROR(each(kWithdrawalPrefix, [&](const std::string&, ByteView v) -> Status {
    CW_ASSIGN_OR_RETURN(auto w, compliance::DecodeWithdrawal(v));
    ++withdrawals_stored_;
    return ledger_.AddWithdrawal(w);
  }));
  CW_RETURN_IF_ERROR(each(kOwnErasurePrefix, [&](const std::string&, ByteView v) -> Status {
    std::string contact;
    Bytes bytes;
    if (!Untag(v, &contact, &bytes)) return Status(StatusCode::kMalformed, "stored erasure receipt is malformed");
    CW_ASSIGN_OR_RETURN(auto r, compliance::DecodeErasureReceipt(bytes));
    own_erasures_.push_back(std::move(r));
    return Status::Ok();
  }));
  CW_ASSIGN_OR_RETURN(auto heads, st->ListKeys(Table::kMeta, kPeerHeadPrefix));
  peer_heads_ = heads.size();
  return Status::Ok();
}

// ==================================================================== helpers

Status ComplianceRuntime::AuditReady() const { return log_ ? Status::Ok() : log_status_; }

Status ComplianceRuntime::Audit(AuditEvent event) {
  CW_RETURN_IF_ERROR(AuditReady());
  auto e = log_->Append(event);
  if (!e) {
    if (deps_.report) deps_.report(Status(e.error().code(), "audit entry not written: " + e.error().message()));
    return e.error();
  }
  return Status::Ok();
}

Status ComplianceRuntime::Put(std::string key, ByteView value) {
  session::WriteBatch b;
  b.writes.push_back({Table::kMeta, std::move(key), SecretBytes(value)});
  return deps_.store->Commit(std::move(b));
}

Status ComplianceRuntime::PutTagged(std::string key, const std::string& contact, ByteView value) {
  return Put(std::move(key), Tagged(contact, value));
}

Result<Bytes> ComplianceRuntime::ContactKey(const std::string& contact) const {
  CW_ASSIGN_OR_RETURN(auto c, deps_.engine->GetContact(contact));
  if (c.state == session::TrustState::kUnknown) return Error(StatusCode::kNotFound, "no such contact");
  if (c.state == session::TrustState::kChanged) {
    return Error(StatusCode::kUntrustedIdentity, "the contact's identity key changed and is not accepted");
  }
  return Bytes(c.identity_key.begin(), c.identity_key.end());
}

Result<compliance::SessionBinding> ComplianceRuntime::BindingWith(const std::string& contact, bool we_are_patient) const {
  CW_ASSIGN_OR_RETURN(Bytes theirs, ContactKey(contact));
  CW_ASSIGN_OR_RETURN(auto sn, deps_.engine->GetSafetyNumber(contact));
  const auto& mine = deps_.engine->identity_key();
  compliance::SessionBinding b;
  b.patient_identity_key = we_are_patient ? Bytes(mine.begin(), mine.end()) : theirs;
  b.clinician_identity_key = we_are_patient ? theirs : Bytes(mine.begin(), mine.end());
  b.safety_number = sn.digits;
  return b;
}

// ==================================================================== the message path

Status ComplianceRuntime::CheckOutgoing(const std::string& contact, std::string_view purpose) const {
  if (!compliance::IsValidPurposeLabel(purpose)) return Status(StatusCode::kInvalidArgument, "not a purpose label");
  if (!policy_.clinic) return Status::Ok();
  CW_ASSIGN_OR_RETURN(Bytes key, ContactKey(contact));
  return consent_policy_.CheckOutgoing(purpose, compliance::IdentityFingerprint(key), ledger_);
}

void ComplianceRuntime::BeforeDecrypt(const std::string& sender) {
  auto key = ContactKey(sender);
  incoming_key_ = key ? std::optional<Bytes>(std::move(*key)) : std::nullopt;
}

Status ComplianceRuntime::CheckIncoming(std::string_view purpose) const {
  if (policy_.clinic) return Status::Ok();
  if (!compliance::IsValidPurposeLabel(purpose)) {
    return Status(StatusCode::kPermissionDenied, "message without a valid purpose label (incoming message refused)");
  }
  if (!consent_policy_.RequiresConsent(purpose)) return Status::Ok();
  // The ledger answers for a patient across all clinicians; a patient's consent to one clinician does not
  // cover another, so only receipts bound to this sender count. (A sender not known before this message
  // cannot hold a receipt.)
  if (!incoming_key_) return Status(StatusCode::kPermissionDenied, "no valid consent for purpose (incoming message refused)");
  const Bytes& theirs = *incoming_key_;
  const auto& mine = deps_.engine->identity_key();
  const Bytes me(mine.begin(), mine.end());
  for (const auto* r : ledger_.Receipts()) {
    if (r->receipt.binding.patient_identity_key != me || r->receipt.binding.clinician_identity_key != theirs) continue;
    auto state = ledger_.StateOf(r->receipt.receipt_id, purpose);
    if (state && *state == compliance::ConsentState::kGiven) return Status::Ok();
  }
  return Status(StatusCode::kPermissionDenied, "no valid consent for purpose (incoming message refused)");
}

Status ComplianceRuntime::StageIncoming(const session::Received& rec, const std::string& relay_id,
                                        ByteView arrived_with, const storage::IncomingDetails& incoming,
                                        session::WriteBatch* batch, uint64_t* sequence, SecretBytes* text,
                                        std::optional<wire::AttachmentDescriptor>* file,
                                        std::optional<wire::AppMessage>* control, bool* refused) {
  CW_ASSIGN_OR_RETURN(wire::AppMessage app, wire::DecodeAppMessage(rec.body.reveal()));
  storage::IncomingDetails details = incoming.Clone();
  // What the transcript sees: the text for a shown message; otherwise a non-user kind, so only the dedup
  // key is written (the relay id is remembered either way and a replay is dropped).
  session::Received staged;
  staged.sender = rec.sender;
  staged.kind = session::Received::Kind::kSenderKey;
  if (app.kind == wire::AppKind::kText || app.kind == wire::AppKind::kFile) {
    // A file is gated by its purpose like a text; its row shows the file name and refers to the attachment.
    AuditEvent ev;
    ev.ref = relay_id;
    if (Status gate = CheckIncoming(app.purpose); !gate.ok()) {
      *refused = true;
      ev.type = AuditEventType::kMessageRefused;
      if (incoming_key_) ev.subject = compliance::IdentityFingerprint(*incoming_key_);
    } else {
      staged.kind = rec.kind;
      if (app.kind == wire::AppKind::kFile) {
        CW_ASSIGN_OR_RETURN(FileRow row, FileRowFromPayload(app.payload));
        details.attachments = std::move(row.attachments);
        staged.body = std::move(row.body);
        *file = std::move(row.descriptor);
      } else {
        staged.body = std::move(app.payload);
      }
      ev.type = AuditEventType::kMessageReceived;
      ev.subject = ConversationRef(storage::Transcripts::ConversationIdFor(rec));  // the group's, for a group text
    }
    CW_RETURN_IF_ERROR(deps_.transcripts->StageIncoming(staged, relay_id, batch, details, sequence));
    if (log_) {
      CW_ASSIGN_OR_RETURN(auto pending, log_->Prepare(ev));
      CW_ASSIGN_OR_RETURN(session::Write w, sink_->StageEntry(pending.entry.sequence, pending.record));
      batch->writes.push_back(std::move(w));
      staged_ = std::move(pending);
    }
    if (!*refused) *text = std::move(staged.body);
    return Status::Ok();
  }
  CW_RETURN_IF_ERROR(deps_.transcripts->StageIncoming(staged, relay_id, batch, details, sequence));
  // The relay forgets the message once this batch commits, so the message itself commits with it and is
  // handled from the store: a crash before HandleControl finishes leaves it for ResumeInbox.
  if (arrived_with.size() != kInboxTokenSize)
    return Status(StatusCode::kInternal, "deposit token of the wrong size");
  // Built in wiping memory from the start (it wipes what it outgrows): the token and the message are secrets.
  const std::string& sender = rec.sender.name;
  SecretBytes value;
  value.Append(std::span(reinterpret_cast<const uint8_t*>(sender.data()), sender.size()));
  const uint8_t nul = 0;
  value.Append(std::span(&nul, 1));
  value.Append(arrived_with);
  value.Append(rec.body.reveal());
  batch->writes.push_back({Table::kMeta, std::string(kInboxWithTokenPrefix) + relay_id, std::move(value)});
  *control = std::move(app);
  return Status::Ok();
}

Status ComplianceRuntime::StageSent(const std::string& conversation_id, const std::string& message_ref,
                                    session::WriteBatch* batch) {
  if (!log_) return Status::Ok();  // the client keeps working; VerifyAudit reports why nothing is recorded
  AuditEvent ev{AuditEventType::kMessageSent, ConversationRef(conversation_id), message_ref, 0, {}};
  CW_ASSIGN_OR_RETURN(auto pending, log_->Prepare(ev));
  CW_ASSIGN_OR_RETURN(session::Write w, sink_->StageEntry(pending.entry.sequence, pending.record));
  batch->writes.push_back(std::move(w));
  staged_ = std::move(pending);
  return Status::Ok();
}

void ComplianceRuntime::AfterCommit(bool committed) {
  if (!staged_ || !log_) return;
  if (committed) {
    sink_->EntryCommitted(staged_->entry.sequence);
    // An interval checkpoint that fails to sign is retried by the next Checkpoint(); the entry stands.
    (void)log_->Confirm(*staged_);
  } else {
    log_->Abandon();
  }
  staged_.reset();
}

void ComplianceRuntime::HandleControl(const std::string& sender, const std::string& relay_id,
                                      wire::AppMessage message, ByteView arrived_with) {
  Status s;
  switch (message.kind) {
    case wire::AppKind::kConsent: s = HandleConsent(sender, message.payload.reveal()); break;
    case wire::AppKind::kConsentWithdrawal: s = HandleWithdrawal(sender, message.payload.reveal()); break;
    case wire::AppKind::kAuditHead: s = HandleAuditHead(sender, message.payload.reveal()); break;
    case wire::AppKind::kErasure: s = HandleErasure(sender, message.payload.reveal()); break;
    case wire::AppKind::kReceipt:
      s = deps_.receipt ? deps_.receipt(sender, message.payload.reveal())
                        : Status(StatusCode::kMalformed, "unexpected control message");
      break;
    case wire::AppKind::kDirectEndpoint:
      // A contact's link key and direct endpoint: transport metadata like a relay card, so neither gated by
      // a consent purpose nor audited (no ePHI, no consent or record event); it is kept sealed by the client.
      s = deps_.direct_endpoint ? deps_.direct_endpoint(sender, message.payload.reveal())
                                : Status(StatusCode::kMalformed, "unexpected control message");
      break;
    case wire::AppKind::kInviteAnswer:
      s = deps_.invite_answer ? deps_.invite_answer(sender, message.payload.reveal(), arrived_with)
                              : Status(StatusCode::kMalformed, "unexpected control message");
      break;
    default: s = Status(StatusCode::kMalformed, "unexpected control message"); break;
  }
  if (!s.ok() && deps_.report) deps_.report(s);
  // A refusal is final; a storage or signing failure is retried at the next ResumeInbox.
  if (s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kInternal) return;
  session::WriteBatch b;
  // Only a record of an earlier build comes without its token.
  b.writes.push_back({Table::kMeta,
                      std::string(arrived_with.empty() ? kInboxPrefix : kInboxWithTokenPrefix) + relay_id,
                      std::nullopt});
  if (Status done = deps_.store->Commit(std::move(b)); !done.ok() && deps_.report) deps_.report(done);
}

void ComplianceRuntime::ResumeInbox() {
  for (const std::string_view prefix : {kInboxWithTokenPrefix, kInboxPrefix}) {
    const bool with_token = prefix == kInboxWithTokenPrefix;
    auto keys = deps_.store->ListKeys(Table::kMeta, prefix);
    if (!keys) {
      if (deps_.report) deps_.report(keys.error());
      return;
    }
    for (const auto& key : *keys) {
      auto stored = deps_.store->Get(Table::kMeta, key);
      if (!stored || !*stored) continue;
      std::string sender;
      Bytes bytes;
      const size_t token_size = with_token ? kInboxTokenSize : 0;
      std::optional<wire::AppMessage> app;
      SecretBytes token;
      if (Untag((*stored)->reveal(), &sender, &bytes) && bytes.size() >= token_size) {
        token = SecretBytes(ByteView(bytes).first(token_size));
        if (auto decoded = wire::DecodeAppMessage(ByteView(bytes).subspan(token_size)))
          app = std::move(*decoded);
      }
      sodium_memzero(bytes.data(), bytes.size());
      if (!app) {
        // It decoded once before it was stored, so only a foreign write gets here: dropped, not re-read at
        // every open.
        if (deps_.report) deps_.report(Status(StatusCode::kMalformed, "dropped an unreadable inbox record"));
        session::WriteBatch b;
        b.writes.push_back({Table::kMeta, key, std::nullopt});
        if (Status s = deps_.store->Commit(std::move(b)); !s.ok() && deps_.report) deps_.report(s);
        continue;
      }
      HandleControl(sender, key.substr(prefix.size()), std::move(*app), token.reveal());
    }
  }
}

// ==================================================================== events

void ComplianceRuntime::OnSessionEstablished(const std::string& contact) {
  auto key = ContactKey(contact);
  if (!key) return;
  (void)Audit({AuditEventType::kSessionEstablished, compliance::IdentityFingerprint(*key), "", 0, {}});
}

void ComplianceRuntime::OnVerification(const std::string& contact, bool verified) {
  auto c = deps_.engine->GetContact(contact);
  if (!c) return;
  (void)Audit({AuditEventType::kVerification, compliance::IdentityFingerprint(c->identity_key), "", verified ? 1u : 0u, {}});
}

void ComplianceRuntime::OnAttachment(const wire::AttachmentDescriptor& attachment) {
  (void)Audit({AuditEventType::kAttachment, "", ToHex(attachment.blob_id), 0,
               Bytes(attachment.digest.begin(), attachment.digest.end())});
}

void ComplianceRuntime::OnLocked(bool automatic) {
  (void)Audit({AuditEventType::kLocked, "", "", automatic ? 1u : 0u, {}});
}

void ComplianceRuntime::DeferIdentityChange(ByteView previous_key, ByteView new_key) {
  // Runs inside an engine call, so it asks the engine nothing: the peer is named by the key it had.
  deferred_.push_back({AuditEventType::kIdentityKeyChanged, compliance::IdentityFingerprint(previous_key), "", 0,
                       DigestBytes(compliance::Blake2b256({new_key}))});
}

void ComplianceRuntime::OnIdentityDecision(ByteView previous_key, ByteView new_key,
                                           IdentityDecision decision) {
  (void)Audit({AuditEventType::kIdentityKeyChanged, compliance::IdentityFingerprint(previous_key), "",
               static_cast<uint32_t>(decision), DigestBytes(compliance::Blake2b256({new_key}))});
}

void ComplianceRuntime::FlushDeferred() {
  auto events = std::move(deferred_);
  deferred_.clear();
  for (auto& ev : events) (void)Audit(std::move(ev));
}

void ComplianceRuntime::CheckpointIfNeeded() {
  if (log_ && log_->size() > 0) (void)log_->Checkpoint();
}

// ==================================================================== consent

Result<std::string> ComplianceRuntime::GrantConsent(const std::string& contact, const ConsentGrant& grant) {
  CW_RETURN_IF_ERROR(AuditReady());
  if (grant.purposes.empty()) return Error(StatusCode::kInvalidArgument, "consent needs at least one purpose");
  CW_ASSIGN_OR_RETURN(compliance::SessionBinding binding, BindingWith(contact, /*we_are_patient=*/true));
  compliance::ConsentReceipt r;
  r.receipt_id = compliance::NewReceiptId(*deps_.random);
  r.consent_timestamp_ms = deps_.clock->NowMillis();
  r.jurisdiction = grant.jurisdiction;
  r.collection_method = grant.collection_method;
  r.policy_url = grant.policy_url;
  r.principal_id = compliance::IdentityFingerprint(binding.patient_identity_key);
  compliance::Controller ctl;
  ctl.id = grant.controller_id;
  ctl.name = grant.controller_name;
  ctl.contact = grant.controller_contact;
  r.controllers = {ctl};
  compliance::Service svc;
  svc.service = grant.service;
  for (const auto& label : grant.purposes) {
    compliance::Purpose p;
    p.purpose = label;
    p.purpose_category = std::string(CategoryFor(label));
    p.pii_categories = grant.data_categories;
    p.termination = grant.expires_at_ms ? "at the receipt's expiry, or when withdrawn" : "when withdrawn";
    svc.purposes.push_back(std::move(p));
  }
  r.services = {svc};
  r.retention_period = grant.retention_period;
  r.expires_at_ms = grant.expires_at_ms;
  r.withdrawal_method = "in the app (cipherward consent withdraw " + r.receipt_id + "), as easily as it was given";
  r.patient_key = XKey(binding.patient_identity_key);
  r.clinician_key = XKey(binding.clinician_identity_key);
  r.binding = std::move(binding);
  CW_RETURN_IF_ERROR(compliance::ValidateReceipt(r));
  CW_ASSIGN_OR_RETURN(auto sr, compliance::SignReceipt(r, signer_));
  CW_ASSIGN_OR_RETURN(Bytes encoded, compliance::EncodeReceiptRequest(sr));
  CW_RETURN_IF_ERROR(PutTagged(std::string(kPendingReceiptPrefix) + r.receipt_id, contact, encoded));
  pending_[r.receipt_id] = {contact, std::move(sr)};
  wire::AppMessage m;
  m.kind = wire::AppKind::kConsent;
  m.payload = SecretBytes(encoded);
  CW_RETURN_IF_ERROR(deps_.send(contact, m));
  return r.receipt_id;
}

// A patient-signed receipt reaching the clinician (countersign, keep, return it), or the countersigned
// receipt coming back to the patient (keep). Either way it enters the ledger only if it verifies against the
// session this device holds with the sender: a receipt for another session or signed by another key is
// refused here.
Status ComplianceRuntime::HandleConsent(const std::string& sender, ByteView payload) {
  CW_RETURN_IF_ERROR(AuditReady());
  auto decoded = compliance::DecodeReceiptRequest(payload);
  const bool request = decoded.has_value();
  if (!request) decoded = compliance::DecodeSignedReceipt(payload);
  if (!decoded) return Status(decoded.error().code(), "consent receipt refused: " + decoded.error().message());
  compliance::SignedConsentReceipt sr = std::move(*decoded);
  CW_ASSIGN_OR_RETURN(compliance::SessionBinding binding, BindingWith(sender, /*we_are_patient=*/!request));
  const compliance::ReceiptExpectations expect{binding, XKey(binding.patient_identity_key),
                                               XKey(binding.clinician_identity_key)};
  if (request) {
    // CountersignReceipt checks the patient signature under the key the receipt names; the clinician signs
    // only for the key its own session authenticates.
    if (!(sr.receipt.patient_key == expect.patient_key)) {
      return Status(StatusCode::kBadSignature, "consent receipt refused: not signed with the patient's identity key");
    }
    if (Status s = compliance::CountersignReceipt(&sr, binding, signer_, verifier_); !s.ok()) {
      return Status(s.code(), "consent receipt refused: " + s.message());
    }
  }
  if (Status s = ledger_.AddReceipt(sr, expect); !s.ok()) return Status(s.code(), "consent receipt refused: " + s.message());
  CW_ASSIGN_OR_RETURN(Bytes encoded, compliance::EncodeSignedReceipt(sr));
  session::WriteBatch b;
  b.writes.push_back({Table::kMeta, std::string(kReceiptPrefix) + sr.receipt.receipt_id, SecretBytes(Tagged(sender, encoded))});
  if (!request) b.writes.push_back({Table::kMeta, std::string(kPendingReceiptPrefix) + sr.receipt.receipt_id, std::nullopt});
  CW_RETURN_IF_ERROR(deps_.store->Commit(std::move(b)));
  receipt_contacts_[sr.receipt.receipt_id] = sender;
  pending_.erase(sr.receipt.receipt_id);
  CW_RETURN_IF_ERROR(Audit({AuditEventType::kConsentGiven, sr.receipt.principal_id, sr.receipt.receipt_id, 0,
                            DigestBytes(compliance::ReceiptDigest(sr))}));
  if (request) {
    wire::AppMessage m;
    m.kind = wire::AppKind::kConsent;
    m.payload = SecretBytes(encoded);
    CW_RETURN_IF_ERROR(deps_.send(sender, m));
  }
  return Status::Ok();
}

Status ComplianceRuntime::WithdrawConsent(const std::string& receipt_id, const std::vector<std::string>& purposes) {
  CW_RETURN_IF_ERROR(AuditReady());
  const compliance::SignedConsentReceipt* sr = ledger_.FindReceipt(receipt_id);
  if (sr == nullptr) return Status(StatusCode::kNotFound, "no countersigned receipt with that id");
  if (!(sr->receipt.patient_key == signer_.public_key())) {
    return Status(StatusCode::kPermissionDenied, "only the patient who gave consent can withdraw it");
  }
  CW_ASSIGN_OR_RETURN(auto w, compliance::Withdraw(*sr, purposes, *deps_.clock, signer_));
  CW_RETURN_IF_ERROR(ledger_.AddWithdrawal(w));
  CW_ASSIGN_OR_RETURN(Bytes encoded, compliance::EncodeWithdrawal(w));
  CW_RETURN_IF_ERROR(Put(std::string(kWithdrawalPrefix) + receipt_id + "." + Padded(++withdrawals_stored_), encoded));
  CW_RETURN_IF_ERROR(Audit({AuditEventType::kConsentWithdrawn, sr->receipt.principal_id, receipt_id, 0,
                            DigestBytes(compliance::Blake2b256({encoded}))}));
  wire::AppMessage m;
  m.kind = wire::AppKind::kConsentWithdrawal;
  m.payload = SecretBytes(encoded);
  return deps_.send(receipt_contacts_[receipt_id], m);
}

Status ComplianceRuntime::HandleWithdrawal(const std::string& sender, ByteView payload) {
  CW_RETURN_IF_ERROR(AuditReady());
  CW_ASSIGN_OR_RETURN(auto w, compliance::DecodeWithdrawal(payload));
  auto it = receipt_contacts_.find(w.receipt_id);
  if (it == receipt_contacts_.end() || it->second != sender) {
    return Status(StatusCode::kNotFound, "withdrawal of a receipt not held with this contact");
  }
  if (Status s = ledger_.AddWithdrawal(w); !s.ok()) return Status(s.code(), "withdrawal refused: " + s.message());
  CW_RETURN_IF_ERROR(Put(std::string(kWithdrawalPrefix) + w.receipt_id + "." + Padded(++withdrawals_stored_), payload));
  const auto* sr = ledger_.FindReceipt(w.receipt_id);
  return Audit({AuditEventType::kConsentWithdrawn, sr ? sr->receipt.principal_id : "", w.receipt_id, 0,
                DigestBytes(compliance::Blake2b256({payload}))});
}

Result<std::vector<ConsentRecord>> ComplianceRuntime::ConsentReceipts() const {
  std::vector<ConsentRecord> out;
  const auto& mine = deps_.engine->identity_key();
  const Bytes me(mine.begin(), mine.end());
  auto fill = [&](const compliance::SignedConsentReceipt& sr, const std::string& contact, bool countersigned) {
    ConsentRecord rec;
    rec.receipt_id = sr.receipt.receipt_id;
    rec.contact = contact;
    rec.we_are_patient = sr.receipt.binding.patient_identity_key == me;
    rec.countersigned = countersigned;
    rec.consent_timestamp_ms = sr.receipt.consent_timestamp_ms;
    rec.expires_at_ms = sr.receipt.expires_at_ms;
    for (const auto& svc : sr.receipt.services) {
      for (const auto& p : svc.purposes) {
        compliance::ConsentState state = compliance::ConsentState::kGiven;
        if (countersigned) {
          auto s = ledger_.StateOf(sr.receipt.receipt_id, p.purpose);
          if (s) state = *s;
        }
        rec.purposes.emplace_back(p.purpose, state);
      }
    }
    if (countersigned) rec.kantara_json = compliance::ReceiptToKantaraJson(sr);
    out.push_back(std::move(rec));
  };
  for (const auto* sr : ledger_.Receipts()) {
    auto it = receipt_contacts_.find(sr->receipt.receipt_id);
    fill(*sr, it == receipt_contacts_.end() ? "" : it->second, true);
  }
  for (const auto& [id, p] : pending_) fill(p.second, p.first, false);
  return out;
}

Status ComplianceRuntime::SetPolicy(const CompliancePolicy& policy) {
  CW_RETURN_IF_ERROR(AuditReady());
  if (policy.retention_floor_ms < 0) return Status(StatusCode::kInvalidArgument, "retention floor must not be negative");
  CW_ASSIGN_OR_RETURN(auto cp, compliance::ConsentPolicy::New(policy.requires_consent, policy.exempt,
                                                              policy.unlisted_requires_consent));
  json j{{"clinic", policy.clinic},
         {"requires", policy.requires_consent},
         {"exempt", policy.exempt},
         {"unlisted", policy.unlisted_requires_consent},
         {"floor_ms", policy.retention_floor_ms}};
  const std::string text = j.dump();
  CW_RETURN_IF_ERROR(Put(std::string(kPolicyKey), AsBytes(text)));
  consent_policy_ = std::move(cp);
  policy_ = policy;
  // The digest covers the consent rules, the role and the floor: any change shows as a new digest.
  const compliance::Digest consent = consent_policy_.PolicyDigest();
  return Audit({AuditEventType::kPolicyChanged, "", policy.clinic ? "clinic" : "patient",
                static_cast<uint64_t>(policy.retention_floor_ms),
                DigestBytes(compliance::Blake2b256({consent, AsBytes(text)}))});
}

// ==================================================================== audit

Result<AuditStatus> ComplianceRuntime::VerifyAudit() const {
  CW_RETURN_IF_ERROR(AuditReady());
  CW_ASSIGN_OR_RETURN(auto entries, sink_->ReadEntries());
  CW_ASSIGN_OR_RETURN(auto checkpoints, sink_->ReadCheckpoints());
  AuditStatus st;
  st.chain_id = log_->chain_id();
  CW_ASSIGN_OR_RETURN(st.chain, compliance::VerifyChainRecords(st.chain_id, entries, checkpoints, signer_.public_key(), verifier_));
  st.checkpoints = checkpoints.size();
  st.peer_heads = peer_heads_;
  return st;
}

Result<std::vector<compliance::AuditEntry>> ComplianceRuntime::AuditTrail() const {
  CW_ASSIGN_OR_RETURN(auto records, sink_->ReadEntries());
  std::vector<compliance::AuditEntry> out;
  for (const auto& r : records) {
    CW_ASSIGN_OR_RETURN(auto e, compliance::DecodeAuditEntry(r));
    out.push_back(std::move(e));
  }
  return out;
}

Status ComplianceRuntime::SendAuditHead(const std::string& contact) {
  CW_RETURN_IF_ERROR(AuditReady());
  CW_RETURN_IF_ERROR(StatusOf(ContactKey(contact)));
  CW_ASSIGN_OR_RETURN(auto head, log_->Checkpoint());
  CW_ASSIGN_OR_RETURN(Bytes encoded, compliance::EncodeCheckpoint(head));
  wire::AppMessage m;
  m.kind = wire::AppKind::kAuditHead;
  m.payload = SecretBytes(encoded);
  return deps_.send(contact, m);
}

Status ComplianceRuntime::HandleAuditHead(const std::string& sender, ByteView payload) {
  CW_RETURN_IF_ERROR(AuditReady());
  CW_ASSIGN_OR_RETURN(auto head, compliance::DecodeCheckpoint(payload));
  CW_ASSIGN_OR_RETURN(Bytes key, ContactKey(sender));
  auto entry = compliance::RecordPeerHead(*log_, head, AuditChainIdFor(key), XKey(key), verifier_);
  if (!entry) return Status(entry.error().code(), "peer chain head refused: " + entry.error().message());
  CW_RETURN_IF_ERROR(PutTagged(std::string(kPeerHeadPrefix) + Padded(entry->sequence), sender, payload));
  ++peer_heads_;
  return Status::Ok();
}

// ==================================================================== export and erasure

Result<Bytes> ComplianceRuntime::ExportSigned(const std::string& exporter) {
  CW_RETURN_IF_ERROR(AuditReady());
  compliance::ExportContents c;
  c.created_at_ms = deps_.clock->NowMillis();
  c.exporter = exporter;
  CW_ASSIGN_OR_RETURN(SecretBytes transcript, storage::ExportJson(*deps_.transcripts, std::nullopt, exporter, c.created_at_ms));
  c.transcript_json.assign(transcript.reveal().begin(), transcript.reveal().end());
  // Wiped however this returns (the early returns below included).
  struct WipeOnExit {
    Bytes& b;
    ~WipeOnExit() { sodium_memzero(b.data(), b.size()); }
  } wipe_transcript{c.transcript_json};
  // The export is recorded before it is made (with the digest of the transcript it discloses), and a
  // checkpoint then covers the whole chain, so the bundle carries no unanchored tail.
  CW_RETURN_IF_ERROR(Audit({AuditEventType::kExport, "", "", 0, DigestBytes(compliance::Blake2b256({c.transcript_json}))}));
  CW_RETURN_IF_ERROR(StatusOf(log_->Checkpoint()));
  // Durable before the bundle leaves: else a crash could lose the kExport entry and the checkpoint an auditor
  // already holds, and the chain would then go on under the same sequence numbers with other entries.
  if (deps_.sync) CW_RETURN_IF_ERROR(deps_.sync());
  for (const auto* r : ledger_.Receipts()) c.receipts.push_back(*r);
  for (const auto* w : ledger_.Withdrawals()) c.withdrawals.push_back(*w);
  c.audit_chain_id = log_->chain_id();
  CW_ASSIGN_OR_RETURN(c.audit_entries, AuditTrail());
  CW_ASSIGN_OR_RETURN(auto checkpoints, sink_->ReadCheckpoints());
  for (const auto& rec : checkpoints) {
    CW_ASSIGN_OR_RETURN(auto cp, compliance::DecodeCheckpoint(rec));
    c.checkpoints.push_back(std::move(cp));
  }
  c.erasures = own_erasures_;
  return compliance::BuildExport(c, signer_, verifier_);
}

Result<std::string> ComplianceRuntime::Erase(const std::string& contact, session::WriteBatch also) {
  CW_RETURN_IF_ERROR(AuditReady());
  const std::string conv = storage::Transcripts::DirectConversationId(contact);
  CW_ASSIGN_OR_RETURN(auto receipt, compliance::MakeErasureReceipt(conv, compliance::ErasureReason::kPatientRequest,
                                                                   *deps_.clock, *deps_.random, signer_));
  CW_ASSIGN_OR_RETURN(Bytes encoded, compliance::EncodeErasureReceipt(receipt));
  // The receipt and its kErasure entry commit in the deletion's own batch: a crash leaves either all three or
  // the conversation as it was (erase it again), never a conversation gone with no record of its erasure.
  also.writes.push_back({Table::kMeta, std::string(kOwnErasurePrefix) + receipt.erasure_id,
                         SecretBytes(Tagged(contact, encoded))});
  CW_ASSIGN_OR_RETURN(auto pending, log_->Prepare(compliance::ErasureEvent(receipt)));
  CW_ASSIGN_OR_RETURN(session::Write entry, sink_->StageEntry(pending.entry.sequence, pending.record));
  also.writes.push_back(std::move(entry));
  Status purged;
  if (Status deleted = deps_.transcripts->DeleteConversation(conv, std::move(also), &purged); !deleted.ok()) {
    log_->Abandon();
    return Error(std::move(deleted));
  }
  sink_->EntryCommitted(pending.entry.sequence);
  (void)log_->Confirm(pending);  // an interval checkpoint that fails to sign is retried by the next one
  own_erasures_.push_back(receipt);
  if (!purged.ok() && deps_.report) {
    // Erased all the same: the key is deleted, and the copy left in a file goes at that file's compaction.
    deps_.report(
        Status(purged.code(),
               "erased, but the deleted key is not yet purged from the store's files: " + purged.message()));
  }
  wire::AppMessage m;
  m.kind = wire::AppKind::kErasure;
  m.payload = SecretBytes(encoded);
  // The conversation is gone whatever happens next; a contact we cannot reach yet just gets no receipt.
  if (Status sent = deps_.send(contact, m); !sent.ok() && deps_.report) {
    deps_.report(Status(sent.code(), "erasure receipt not sent to the contact: " + sent.message()));
  }
  return receipt.erasure_id;
}

Status ComplianceRuntime::HandleErasure(const std::string& sender, ByteView payload) {
  CW_RETURN_IF_ERROR(AuditReady());
  CW_ASSIGN_OR_RETURN(auto receipt, compliance::DecodeErasureReceipt(payload));
  CW_ASSIGN_OR_RETURN(Bytes key, ContactKey(sender));
  if (Status s = compliance::VerifyErasureReceipt(receipt, XKey(key), verifier_); !s.ok()) {
    return Status(s.code(), "erasure receipt refused: " + s.message());
  }
  // The sender erased its conversation with us, which it names "dm:<our name>".
  if (!compliance::ErasureNames(receipt, storage::Transcripts::DirectConversationId(deps_.local_name))) {
    return Status(StatusCode::kPermissionDenied, "erasure receipt for another conversation refused");
  }
  CW_RETURN_IF_ERROR(PutTagged(std::string(kPeerErasurePrefix) + receipt.erasure_id, sender, payload));
  return StatusOf(compliance::RecordErasure(*log_, receipt));
}

Result<int64_t> ComplianceRuntime::SetDisappearingTimer(const std::string& contact, int64_t ms) {
  if (ms < 0) return Error(StatusCode::kInvalidArgument, "a timer must not be negative");
  const std::string conv = storage::Transcripts::DirectConversationId(contact);
  const int64_t now = deps_.clock->NowMillis();
  const compliance::RetentionDecision d = compliance::ApplyRetentionFloor({policy_.retention_floor_ms}, now, ms);
  const int64_t effective = d.expires_at_ms == 0 ? 0 : d.expires_at_ms - now;
  CW_RETURN_IF_ERROR(deps_.transcripts->SetDisappearingTimer(conv, effective));
  if (d.conflict) {
    CW_RETURN_IF_ERROR(Audit({AuditEventType::kRetentionConflict, ConversationRef(conv), "", static_cast<uint64_t>(d.extended_by_ms), {}}));
  }
  return effective;
}

Status ComplianceRuntime::RecordMessageRead(const std::string& contact, const std::string& message_ref,
                                            bool by_contact) {
  if (!log_) return Status::Ok();  // the client keeps working; VerifyAudit reports why nothing is recorded
  return Audit({AuditEventType::kMessageRead, ConversationRef(storage::Transcripts::DirectConversationId(contact)),
                message_ref, by_contact ? 1u : 0u, {}});
}

}  // namespace cw::runtime
