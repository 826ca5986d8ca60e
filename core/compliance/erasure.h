// Erasure receipts (GDPR Art. 17) and the retention floor.
//
// When the runtime deletes a conversation (storage::Transcripts::DeleteConversation crypto-shreds it: the
// conversation key goes, then PurgeDeleted), it makes an ErasureReceipt: which conversation (a salted hash of
// its id, so the receipt names nothing by itself, while whoever knows the id can check it), when, and why,
// signed by the device. RecordErasure appends it to the audit chain as kErasure; the runtime also sends the
// encoded receipt to the peer, whose device records it the same way.
//
// Retention floor: a clinic must keep records for a legal minimum. ApplyRetentionFloor stretches a
// disappearing-message timer that would delete sooner, and says so; the runtime records each such conflict
// as kRetentionConflict.
//
// Thread rules: free functions over values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/base/bytes.h"
#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/status.h"
#include "core/compliance/audit.h"
#include "core/compliance/signing.h"

namespace cw::compliance {

inline constexpr size_t kErasureSaltSize = 16;
inline constexpr size_t kMaxErasureSize = 512;

enum class ErasureReason : uint8_t {
  kPatientRequest = 1,     // GDPR Art. 17 request
  kDisappearingTimer = 2,  // a disappearing-message timer ran out
  kRetentionExpired = 3,   // the retention period ended
  kAccountClosed = 4,
};

struct ErasureReceipt {
  std::string erasure_id;  // 128 random bits, hex
  Digest conversation_hash{};
  Bytes salt;  // kErasureSaltSize
  int64_t erased_at_ms = 0;
  ErasureReason reason = ErasureReason::kPatientRequest;
  SigningPublicKey signer;
  Bytes signature;
  friend bool operator==(const ErasureReceipt&, const ErasureReceipt&) = default;
};

// BLAKE2b-256("cipherward-erasure-conversation-v1" || 0x00 || salt || conversation id).
Digest ConversationHash(ByteView salt, std::string_view conversation_id);

Result<ErasureReceipt> MakeErasureReceipt(std::string_view conversation_id, ErasureReason reason,
                                          const Clock& clock, Random& random, Signer& device);
Result<Bytes> EncodeErasureReceipt(const ErasureReceipt& receipt);
Result<ErasureReceipt> DecodeErasureReceipt(ByteView bytes);
Status VerifyErasureReceipt(const ErasureReceipt& receipt, const SigningPublicKey& device_key,
                            const Verifier& verifier);
// True when the receipt names `conversation_id`.
bool ErasureNames(const ErasureReceipt& receipt, std::string_view conversation_id);
Digest ErasureDigest(const ErasureReceipt& receipt);
// The kErasure event (subject: conversation hash, ref: erasure id, code: reason, digest: ErasureDigest).
AuditEvent ErasureEvent(const ErasureReceipt& receipt);
// Appends ErasureEvent(receipt).
Result<AuditEntry> RecordErasure(AuditLog& log, const ErasureReceipt& receipt);

struct RetentionPolicy {
  int64_t floor_ms = 0;  // records are kept at least this long after they are stored; 0 = no floor
};
struct RetentionDecision {
  int64_t expires_at_ms = 0;  // 0 = never
  bool conflict = false;      // the timer asked for sooner than the floor allows
  int64_t extended_by_ms = 0;
};
// When a message stored at `stored_at_ms` with disappearing timer `timer_ms` (0 = off) may be deleted.
RetentionDecision ApplyRetentionFloor(const RetentionPolicy& policy, int64_t stored_at_ms, int64_t timer_ms);

}  // namespace cw::compliance
