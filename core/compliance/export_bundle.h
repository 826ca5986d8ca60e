// The export bundle (HIPAA right of access, GDPR Art. 15 and 20): one signed file with the transcript, the
// consent receipts and withdrawals, the audit chain with its checkpoints, and the erasure receipts, which
// VerifyExport checks offline with public keys only.
//
// Layout: [1, body (bin), signer [scheme, key], signature], the signature over
// "cipherward-export-v1" 0x00 || body, and body =
//   [1, created_at_ms, exporter, transcript_json (bin), receipts [bin], withdrawals [bin], audit_chain_id,
//    audit_entries [bin], checkpoints [bin], erasures [bin]]
// where each bin is that record's own canonical encoding (consent.h, audit.h, erasure.h), parsed with its own
// tight limits. The transcript is opaque JSON (storage::ExportJson's document): it must be JSON, and its
// bytes are signed as they are. The export holds plaintext; it is made only on the user's request.
//
// VerifyExport checks, and fails closed on the first problem:
//   - the bundle signature, by the exporter key the caller trusts (kBadSignature);
//   - the audit chain under that same key (the device signs checkpoints and exports with one Signer), with
//     no unanchored tail: BuildExport refuses to export a chain whose last entry no checkpoint covers;
//   - each receipt's two signatures under the keys it names, the exporter being one of its two parties, and,
//     when the caller lists trusted party keys, both keys being among them;
//   - each withdrawal against its receipt, which must be in the bundle;
//   - each erasure receipt's signature by the exporter, and a kErasure audit entry with its digest.
// Any flipped, added, removed or reordered byte fails one of these.
//
// Thread rules: free functions over values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/status.h"
#include "core/compliance/audit.h"
#include "core/compliance/consent.h"
#include "core/compliance/erasure.h"
#include "core/compliance/signing.h"

namespace cw::compliance {

inline constexpr uint8_t kExportFormatVersion = 1;
inline constexpr size_t kMaxExportSize = 256u * 1024 * 1024;
inline constexpr size_t kMaxTranscriptSize = 200u * 1024 * 1024;
inline constexpr size_t kMaxExportRecords = 1u << 20;  // per list
inline constexpr size_t kMaxExporterSize = 256;

struct ExportContents {
  int64_t created_at_ms = 0;
  std::string exporter;  // the exporting user's address name (their own data), at most kMaxExporterSize
  Bytes transcript_json;
  std::vector<SignedConsentReceipt> receipts;
  std::vector<ConsentWithdrawal> withdrawals;
  std::string audit_chain_id;
  std::vector<AuditEntry> audit_entries;
  std::vector<AuditCheckpoint> checkpoints;
  std::vector<ErasureReceipt> erasures;
};

// Signs `contents` with the device signer (the one whose key signed the checkpoints). kInvalidArgument when
// something would not verify: transcript not JSON, the chain not verifying under the signer's key or ending
// after its last checkpoint (take Checkpoint() first), a receipt not countersigned.
Result<Bytes> BuildExport(const ExportContents& contents, Signer& exporter, const Verifier& verifier);

struct ExportTrust {
  SigningPublicKey exporter_key;             // the device that made the export
  std::vector<SigningPublicKey> party_keys;  // optional: the only keys receipts may be signed with
};

struct VerifiedExport {
  ExportContents contents;
  ChainVerification chain;
  Digest body_digest{};  // what the exporter's kExport audit entry (in a later export) records
};

// Errors: kMalformed (does not parse, a record inside does not parse, transcript not JSON),
// kUnsupportedVersion, kBadSignature (bundle, receipt, withdrawal, checkpoint or erasure signature; an
// untrusted key), kTampered (the audit chain).
Result<VerifiedExport> VerifyExport(ByteView bytes, const ExportTrust& trust, const Verifier& verifier);

// The key the bundle says signed it, read without verifying anything: for a verifier that was not given
// the exporter's key and must show it (its fingerprint) to a person who compares it with the exporter's
// safety number before trusting the result. kMalformed / kUnsupportedVersion as VerifyExport.
Result<SigningPublicKey> ExportSigner(ByteView bytes);

}  // namespace cw::compliance
