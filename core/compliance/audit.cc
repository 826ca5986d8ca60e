#include "core/compliance/audit.h"

#include <algorithm>
#include <map>

#include "core/compliance/canonical.h"

namespace cw::compliance {

namespace {

using internal::Fields;
using internal::Packer;

constexpr std::string_view kGenesisDomain = "cipherward-audit-genesis-v1";
constexpr std::string_view kCheckpointDomain = "cipherward-audit-checkpoint-v1";

bool OptionalId(const std::string& s) { return s.empty() || IsValidId(s, kMaxAuditIdSize); }

Status ValidateEntry(const AuditEntry& e) {
  if (e.sequence == 0) return Status(StatusCode::kInvalidArgument, "audit sequences start at 1");
  if (e.time_ms < 0) return Status(StatusCode::kInvalidArgument, "audit time is negative");
  const auto type = static_cast<uint8_t>(e.type);
  if (type < 1 || type > kMaxAuditEventType)
    return Status(StatusCode::kInvalidArgument, "unknown audit event type");
  if (!OptionalId(e.subject) || !OptionalId(e.ref)) {
    return Status(StatusCode::kInvalidArgument, "audit subject and ref must be ids, never content");
  }
  if (!e.digest.empty() && e.digest.size() != kDigestSize) {
    return Status(StatusCode::kInvalidArgument, "audit digest must be 32 bytes");
  }
  return Status::Ok();
}

Bytes CheckpointBody(const AuditCheckpoint& c) {
  Packer p;
  p.Array(6).Uint(kAuditFormatVersion).Str(c.chain_id).Uint(c.sequence).Bin(c.head).Int(c.time_ms);
  p.Array(2).Uint(static_cast<uint8_t>(c.signer.scheme)).Bin(c.signer.key);
  return p.Take();
}

Status Broken(uint64_t sequence, const char* how) {
  return Status(StatusCode::kTampered,
                "audit chain broken at entry " + std::to_string(sequence) + ": " + how);
}

}  // namespace

std::string_view AuditEventTypeName(AuditEventType type) {
  switch (type) {
    case AuditEventType::kUnlockSucceeded:
      return "unlock_succeeded";
    case AuditEventType::kUnlockFailed:
      return "unlock_failed";
    case AuditEventType::kLocked:
      return "locked";
    case AuditEventType::kSessionEstablished:
      return "session_established";
    case AuditEventType::kIdentityKeyChanged:
      return "identity_key_changed";
    case AuditEventType::kVerification:
      return "verification";
    case AuditEventType::kMessageSent:
      return "message_sent";
    case AuditEventType::kMessageReceived:
      return "message_received";
    case AuditEventType::kMessageRead:
      return "message_read";
    case AuditEventType::kMessageRefused:
      return "message_refused";
    case AuditEventType::kAttachment:
      return "attachment";
    case AuditEventType::kExport:
      return "export";
    case AuditEventType::kErasure:
      return "erasure";
    case AuditEventType::kConsentGiven:
      return "consent_given";
    case AuditEventType::kConsentWithdrawn:
      return "consent_withdrawn";
    case AuditEventType::kPolicyChanged:
      return "policy_changed";
    case AuditEventType::kRetentionConflict:
      return "retention_conflict";
    case AuditEventType::kPeerChainHead:
      return "peer_chain_head";
    case AuditEventType::kEmergencyAccess:
      return "emergency_access";
  }
  return "unknown";
}

Digest AuditGenesis(std::string_view chain_id) {
  const uint8_t zero = 0;
  return Blake2b256({AsBytes(kGenesisDomain), ByteView(&zero, 1), AsBytes(chain_id)});
}

Result<Bytes> EncodeAuditEntry(const AuditEntry& e) {
  CW_RETURN_IF_ERROR(ValidateEntry(e));
  Packer p;
  p.Array(9)
      .Uint(kAuditFormatVersion)
      .Uint(e.sequence)
      .Int(e.time_ms)
      .Uint(static_cast<uint8_t>(e.type))
      .Str(e.subject)
      .Str(e.ref)
      .Uint(e.code)
      .Bin(e.digest)
      .Bin(e.prev_hash);
  return p.Take();
}

Digest AuditEntryHash(const AuditEntry& e) {
  auto encoded = EncodeAuditEntry(e);
  // An entry that cannot be encoded can match no honest hash: hash a marker instead of failing, so a verifier
  // reports a mismatch rather than crashing. (Decoded and appended entries are always encodable.)
  if (!encoded) return Blake2b256({e.prev_hash, AsBytes("invalid-entry")});
  return Blake2b256({e.prev_hash, *encoded});
}

Result<AuditEntry> DecodeAuditEntry(ByteView bytes) {
  if (bytes.size() > kMaxAuditEntrySize) return Error(StatusCode::kMalformed, "audit entry too large");
  CW_RETURN_IF_ERROR(internal::CheckHeader(bytes, kAuditFormatVersion, "audit entry"));
  internal::Limits limits;
  limits.array = 9;
  limits.str = kMaxAuditIdSize;
  limits.bin = kDigestSize;
  limits.depth = 1;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return Error(StatusCode::kMalformed, "audit entry is not valid msgpack within limits");
  AuditEntry e;
  uint64_t version = 0, type = 0;
  Bytes prev;
  Fields f(handle->get(), 9);
  f.Uint(&version)
      .Uint(&e.sequence)
      .Int(&e.time_ms)
      .Uint(&type)
      .Str(&e.subject, kMaxAuditIdSize)
      .Str(&e.ref, kMaxAuditIdSize)
      .Uint(&e.code)
      .Bin(&e.digest, kDigestSize)
      .Bin(&prev, kDigestSize);
  if (!f.ok() || prev.size() != kDigestSize || type < 1 || type > kMaxAuditEventType) {
    return Error(StatusCode::kMalformed, "audit entry field has wrong type or size");
  }
  e.type = static_cast<AuditEventType>(type);
  std::copy(prev.begin(), prev.end(), e.prev_hash.begin());
  auto again = EncodeAuditEntry(e);
  if (!again) return Error(StatusCode::kMalformed, "audit entry breaks a rule: " + again.error().message());
  if (!std::equal(again->begin(), again->end(), bytes.begin(), bytes.end())) {
    return Error(StatusCode::kMalformed, "audit entry is not in canonical form");
  }
  return e;
}

Result<Bytes> EncodeCheckpoint(const AuditCheckpoint& c) {
  if (!IsValidId(c.chain_id, kMaxAuditIdSize) || c.time_ms < 0 || !IsWellFormed(c.signer) ||
      c.signature.size() != kSignatureSize) {
    return Error(StatusCode::kInvalidArgument, "checkpoint is incomplete");
  }
  Packer p;
  p.Array(3).Uint(kAuditFormatVersion).Bin(CheckpointBody(c)).Bin(c.signature);
  return p.Take();
}

Result<AuditCheckpoint> DecodeCheckpoint(ByteView bytes) {
  if (bytes.size() > kMaxCheckpointSize) return Error(StatusCode::kMalformed, "checkpoint too large");
  CW_RETURN_IF_ERROR(internal::CheckHeader(bytes, kAuditFormatVersion, "checkpoint"));
  internal::Limits outer;
  outer.array = 3;
  outer.str = 0;
  outer.bin = kMaxCheckpointSize;
  outer.depth = 1;
  auto handle = internal::UnpackOne(bytes, outer);
  if (!handle) return Error(StatusCode::kMalformed, "checkpoint is not valid msgpack within limits");
  AuditCheckpoint c;
  uint64_t version = 0;
  Bytes body;
  Fields f(handle->get(), 3);
  f.Uint(&version).Bin(&body, kMaxCheckpointSize).Bin(&c.signature, kSignatureSize);
  if (!f.ok()) return Error(StatusCode::kMalformed, "checkpoint field has wrong type or size");
  CW_RETURN_IF_ERROR(internal::CheckHeader(body, kAuditFormatVersion, "checkpoint body"));
  internal::Limits limits;
  limits.array = 6;
  limits.str = kMaxAuditIdSize;
  limits.bin = kXEdDSAPublicKeySize;
  limits.depth = 2;
  auto inner = internal::UnpackOne(body, limits);
  if (!inner) return Error(StatusCode::kMalformed, "checkpoint body is not valid msgpack within limits");
  Bytes head;
  uint64_t scheme = 0;
  const msgpack::object* signer = nullptr;
  Fields g(inner->get(), 6);
  g.Uint(&version)
      .Str(&c.chain_id, kMaxAuditIdSize)
      .Uint(&c.sequence)
      .Bin(&head, kDigestSize)
      .Int(&c.time_ms)
      .Any(&signer);
  if (!g.ok() || head.size() != kDigestSize)
    return Error(StatusCode::kMalformed, "checkpoint field has wrong type");
  Fields k(*signer, 2);
  k.Uint(&scheme).Bin(&c.signer.key, kXEdDSAPublicKeySize);
  if (!k.ok() || (scheme != 1 && scheme != 2))
    return Error(StatusCode::kMalformed, "checkpoint signer malformed");
  c.signer.scheme = static_cast<SignatureScheme>(scheme);
  std::copy(head.begin(), head.end(), c.head.begin());
  auto again = EncodeCheckpoint(c);
  if (!again) return Error(StatusCode::kMalformed, "checkpoint breaks a rule: " + again.error().message());
  if (!std::equal(again->begin(), again->end(), bytes.begin(), bytes.end())) {
    return Error(StatusCode::kMalformed, "checkpoint is not in canonical form");
  }
  return c;
}

Digest CheckpointDigest(const AuditCheckpoint& c) {
  return Blake2b256({AsBytes(kCheckpointDomain), CheckpointBody(c), c.signature});
}

Status VerifyCheckpoint(const AuditCheckpoint& c, std::string_view chain_id,
                        const SigningPublicKey& device_key, const Verifier& verifier) {
  if (c.chain_id != chain_id) return Status(StatusCode::kBadSignature, "checkpoint belongs to another chain");
  if (!(c.signer == device_key)) return Status(StatusCode::kBadSignature, "checkpoint signed by another key");
  return verifier.Verify(c.signer, SignedMessage(kCheckpointDomain, CheckpointBody(c)), c.signature);
}

Result<ChainVerification> VerifyChain(std::string_view chain_id, const std::vector<AuditEntry>& entries,
                                      const std::vector<AuditCheckpoint>& checkpoints,
                                      const SigningPublicKey& device_key, const Verifier& verifier) {
  // Every checkpoint first: an unsigned one proves nothing and must not be used to anchor anything.
  std::map<uint64_t, const AuditCheckpoint*> by_sequence;
  for (const auto& c : checkpoints) {
    CW_RETURN_IF_ERROR(VerifyCheckpoint(c, chain_id, device_key, verifier));
    auto [it, inserted] = by_sequence.emplace(c.sequence, &c);
    if (!inserted && it->second->head != c.head) {
      // Two signed heads for one position: the device itself forked its history.
      return Error(Broken(c.sequence, "two signed checkpoints disagree (forked history)"));
    }
  }
  ChainVerification out;
  Digest h = AuditGenesis(chain_id);
  auto check_anchor = [&](uint64_t n) -> Status {
    auto it = by_sequence.find(n);
    if (it == by_sequence.end()) return Status::Ok();
    if (it->second->head != h)
      return Broken(n, "a signed checkpoint covers a different history (entry modified)");
    out.anchored_through = n;
    return Status::Ok();
  };
  CW_RETURN_IF_ERROR(check_anchor(0));
  for (size_t i = 0; i < entries.size(); ++i) {
    const AuditEntry& e = entries[i];
    const uint64_t expected = i + 1;
    if (e.sequence != expected) {
      if (e.sequence > expected) return Error(Broken(expected, "sequence gap (an entry deleted or moved)"));
      return Error(Broken(expected, "out of order, repeated or inserted sequence number"));
    }
    if (e.prev_hash != h)
      return Error(Broken(expected, "does not follow the entry before it (modified or inserted)"));
    if (!ValidateEntry(e).ok()) return Error(Broken(expected, "entry breaks the entry rules"));
    h = AuditEntryHash(e);
    CW_RETURN_IF_ERROR(check_anchor(expected));
  }
  if (!by_sequence.empty() && by_sequence.rbegin()->first > entries.size()) {
    return Error(Status(StatusCode::kTampered, "audit chain truncated: a signed checkpoint covers entry " +
                                                   std::to_string(by_sequence.rbegin()->first) +
                                                   " but the chain ends at " +
                                                   std::to_string(entries.size())));
  }
  out.entries = entries.size();
  out.unanchored_tail = out.entries - out.anchored_through;
  out.head = h;
  return out;
}

Result<ChainVerification> VerifyChainRecords(std::string_view chain_id, const std::vector<Bytes>& entries,
                                             const std::vector<Bytes>& checkpoints,
                                             const SigningPublicKey& device_key, const Verifier& verifier) {
  std::vector<AuditEntry> decoded;
  decoded.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    auto e = DecodeAuditEntry(entries[i]);
    if (!e) return Error(StatusCode::kMalformed, "audit entry " + std::to_string(i + 1) + " does not decode");
    decoded.push_back(std::move(*e));
  }
  std::vector<AuditCheckpoint> cps;
  for (const auto& b : checkpoints) {
    auto c = DecodeCheckpoint(b);
    if (!c) return Error(StatusCode::kMalformed, "a checkpoint does not decode");
    cps.push_back(std::move(*c));
  }
  return VerifyChain(chain_id, decoded, cps, device_key, verifier);
}

Status InMemoryAuditSink::AppendEntry(uint64_t sequence, ByteView record) {
  if (fail_next_) {
    fail_next_ = false;
    return Status(StatusCode::kUnavailable, "injected audit write failure");
  }
  if (sequence != entries_.size() + 1) return Status(StatusCode::kAlreadyExists, "audit log is append-only");
  entries_.emplace_back(record.begin(), record.end());
  return Status::Ok();
}

Status InMemoryAuditSink::AppendCheckpoint(uint64_t sequence, ByteView record) {
  if (fail_next_) {
    fail_next_ = false;
    return Status(StatusCode::kUnavailable, "injected audit write failure");
  }
  if (sequence > entries_.size())
    return Status(StatusCode::kInvalidArgument, "checkpoint past the end of the log");
  checkpoints_.emplace_back(record.begin(), record.end());
  return Status::Ok();
}

AuditLog::AuditLog(AuditSink* sink, AuditLogOptions options) : sink_(sink), options_(std::move(options)) {}

Result<std::unique_ptr<AuditLog>> AuditLog::Open(AuditSink* sink, AuditLogOptions options) {
  if (sink == nullptr || options.signer == nullptr || !IsValidId(options.chain_id, kMaxAuditIdSize)) {
    return Error(StatusCode::kInvalidArgument, "audit log needs a sink, a signer and a valid chain id");
  }
  static StandardVerifier standard;
  if (options.clock == nullptr) options.clock = &SystemClock::Default();
  if (options.verifier == nullptr) options.verifier = &standard;
  CW_ASSIGN_OR_RETURN(std::vector<Bytes> entries, sink->ReadEntries());
  CW_ASSIGN_OR_RETURN(std::vector<Bytes> checkpoints, sink->ReadCheckpoints());
  CW_ASSIGN_OR_RETURN(ChainVerification v,
                      VerifyChainRecords(options.chain_id, entries, checkpoints, options.signer->public_key(),
                                         *options.verifier));
  std::unique_ptr<AuditLog> log(new AuditLog(sink, std::move(options)));
  log->size_ = v.entries;
  log->head_ = v.head;
  log->last_checkpoint_ = v.anchored_through;
  return log;
}

Result<AuditEntry> AuditLog::MakeEntry(const AuditEvent& event) const {
  AuditEntry e;
  e.sequence = size_ + 1;
  e.time_ms = options_.clock->NowMillis();
  e.type = event.type;
  e.subject = event.subject;
  e.ref = event.ref;
  e.code = event.code;
  e.digest = event.digest;
  e.prev_hash = head_;
  CW_RETURN_IF_ERROR(ValidateEntry(e));
  return e;
}

Result<PendingAuditEntry> AuditLog::Prepare(const AuditEvent& event) {
  if (pending_) return Error(StatusCode::kInvalidArgument, "another audit entry is pending");
  PendingAuditEntry p;
  CW_ASSIGN_OR_RETURN(p.entry, MakeEntry(event));
  CW_ASSIGN_OR_RETURN(p.record, EncodeAuditEntry(p.entry));
  p.hash = Blake2b256({p.entry.prev_hash, p.record});
  pending_ = true;
  return p;
}

Status AuditLog::Confirm(const PendingAuditEntry& p) {
  if (!pending_ || p.entry.sequence != size_ + 1 || p.entry.prev_hash != head_) {
    return Status(StatusCode::kInvalidArgument, "not the pending audit entry");
  }
  pending_ = false;
  size_ = p.entry.sequence;
  head_ = p.hash;
  if (options_.checkpoint_interval != 0 && size_ - last_checkpoint_ >= options_.checkpoint_interval) {
    auto c = Checkpoint();
    if (!c) return c.error();
  }
  return Status::Ok();
}

Result<AuditEntry> AuditLog::Append(const AuditEvent& event) {
  CW_ASSIGN_OR_RETURN(PendingAuditEntry p, Prepare(event));
  Status written = sink_->AppendEntry(p.entry.sequence, p.record);
  if (!written.ok()) {
    Abandon();
    return Error(std::move(written));
  }
  Status confirmed = Confirm(p);
  // The entry is durable even if the interval checkpoint failed; the next Checkpoint() covers it.
  (void)confirmed;
  return p.entry;
}

Result<AuditCheckpoint> AuditLog::Checkpoint() {
  AuditCheckpoint c;
  c.chain_id = options_.chain_id;
  c.sequence = size_;
  c.head = head_;
  c.time_ms = options_.clock->NowMillis();
  c.signer = options_.signer->public_key();
  CW_ASSIGN_OR_RETURN(c.signature,
                      options_.signer->Sign(SignedMessage(kCheckpointDomain, CheckpointBody(c))));
  CW_ASSIGN_OR_RETURN(Bytes record, EncodeCheckpoint(c));
  CW_RETURN_IF_ERROR(sink_->AppendCheckpoint(c.sequence, record));
  last_checkpoint_ = size_;
  return c;
}

Result<AuditEntry> RecordPeerHead(AuditLog& log, const AuditCheckpoint& peer_head,
                                  std::string_view peer_chain_id, const SigningPublicKey& peer_key,
                                  const Verifier& verifier) {
  CW_RETURN_IF_ERROR(VerifyCheckpoint(peer_head, peer_chain_id, peer_key, verifier));
  AuditEvent event;
  event.type = AuditEventType::kPeerChainHead;
  event.subject = std::string(peer_chain_id);
  event.code = peer_head.sequence;
  const Digest d = CheckpointDigest(peer_head);
  event.digest.assign(d.begin(), d.end());
  return log.Append(event);
}

}  // namespace cw::compliance
