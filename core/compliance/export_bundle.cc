#include "core/compliance/export_bundle.h"

#include <sodium.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/compliance/canonical.h"

namespace cw::compliance {

namespace {

using internal::Fields;
using internal::Packer;

constexpr std::string_view kExportDomain = "cipherward-export-v1";

template <typename T, typename Encode>
Result<std::vector<Bytes>> EncodeAll(const std::vector<T>& items, Encode encode) {
  std::vector<Bytes> out;
  out.reserve(items.size());
  for (const auto& item : items) {
    CW_ASSIGN_OR_RETURN(Bytes b, encode(item));
    out.push_back(std::move(b));
  }
  return out;
}

void PackBins(Packer& p, const std::vector<Bytes>& bins) {
  p.Array(static_cast<uint32_t>(bins.size()));
  for (const auto& b : bins) p.Bin(b);
}

bool ReadBins(const msgpack::object_array& a, std::vector<Bytes>* out, size_t max_each) {
  for (uint32_t i = 0; i < a.size; ++i) {
    const msgpack::object& o = a.ptr[i];
    if (o.type != msgpack::type::BIN || o.via.bin.size > max_each) return false;
    const auto* p = reinterpret_cast<const uint8_t*>(o.via.bin.ptr);
    out->emplace_back(p, p + o.via.bin.size);
  }
  return true;
}

bool IsJson(ByteView bytes) { return nlohmann::json::accept(bytes.begin(), bytes.end()); }

bool ContainsKey(const std::vector<SigningPublicKey>& keys, const SigningPublicKey& k) {
  return std::find(keys.begin(), keys.end(), k) != keys.end();
}

// Every cross-record rule, shared by BuildExport (so nothing unverifiable is ever signed) and VerifyExport.
Result<ChainVerification> CheckContents(const ExportContents& c, const SigningPublicKey& exporter_key,
                                        const std::vector<SigningPublicKey>& party_keys,
                                        const Verifier& verifier) {
  if (c.exporter.size() > kMaxExporterSize || c.created_at_ms < 0) {
    return Error(StatusCode::kMalformed, "export header is invalid");
  }
  if (!IsJson(c.transcript_json)) return Error(StatusCode::kMalformed, "transcript is not JSON");
  CW_ASSIGN_OR_RETURN(ChainVerification chain,
                      VerifyChain(c.audit_chain_id, c.audit_entries, c.checkpoints, exporter_key, verifier));
  if (chain.unanchored_tail != 0) {
    return Error(StatusCode::kTampered, "export's audit chain ends after its last checkpoint");
  }
  for (const auto& r : c.receipts) {
    CW_RETURN_IF_ERROR(VerifyReceiptSelfConsistent(r, verifier));
    if (!(r.receipt.patient_key == exporter_key) && !(r.receipt.clinician_key == exporter_key)) {
      return Error(StatusCode::kBadSignature, "a receipt in the export is not the exporter's");
    }
    if (!party_keys.empty() && (!ContainsKey(party_keys, r.receipt.patient_key) ||
                                !ContainsKey(party_keys, r.receipt.clinician_key))) {
      return Error(StatusCode::kBadSignature, "a receipt is signed by a key the verifier does not trust");
    }
  }
  for (const auto& w : c.withdrawals) {
    auto it = std::find_if(c.receipts.begin(), c.receipts.end(), [&](const SignedConsentReceipt& r) {
      return r.receipt.receipt_id == w.receipt_id;
    });
    if (it == c.receipts.end())
      return Error(StatusCode::kMalformed, "a withdrawal names a receipt not exported");
    Status s = VerifyWithdrawal(w, *it, verifier);
    if (!s.ok()) return Error(StatusCode::kBadSignature, "a withdrawal does not verify: " + s.message());
  }
  for (const auto& e : c.erasures) {
    CW_RETURN_IF_ERROR(VerifyErasureReceipt(e, exporter_key, verifier));
    const Digest d = ErasureDigest(e);
    const bool recorded =
        std::any_of(c.audit_entries.begin(), c.audit_entries.end(), [&](const AuditEntry& a) {
          return a.type == AuditEventType::kErasure && a.ref == e.erasure_id &&
                 std::equal(a.digest.begin(), a.digest.end(), d.begin(), d.end());
        });
    if (!recorded) return Error(StatusCode::kTampered, "an erasure receipt has no audit entry");
  }
  return chain;
}

}  // namespace

Result<Bytes> BuildExport(const ExportContents& c, Signer& exporter, const Verifier& verifier) {
  if (c.transcript_json.size() > kMaxTranscriptSize)
    return Error(StatusCode::kInvalidArgument, "transcript too large");
  {
    auto checked = CheckContents(c, exporter.public_key(), {}, verifier);
    if (!checked)
      return Error(StatusCode::kInvalidArgument, "export would not verify: " + checked.error().message());
  }
  CW_ASSIGN_OR_RETURN(auto receipts, EncodeAll(c.receipts, EncodeSignedReceipt));
  CW_ASSIGN_OR_RETURN(auto withdrawals, EncodeAll(c.withdrawals, EncodeWithdrawal));
  CW_ASSIGN_OR_RETURN(auto entries, EncodeAll(c.audit_entries, EncodeAuditEntry));
  CW_ASSIGN_OR_RETURN(auto checkpoints, EncodeAll(c.checkpoints, EncodeCheckpoint));
  CW_ASSIGN_OR_RETURN(auto erasures, EncodeAll(c.erasures, EncodeErasureReceipt));
  for (const auto* list : {&receipts, &withdrawals, &entries, &checkpoints, &erasures}) {
    if (list->size() > kMaxExportRecords)
      return Error(StatusCode::kInvalidArgument, "too many records to export");
  }
  Packer body;
  body.Array(10).Uint(kExportFormatVersion).Int(c.created_at_ms).Str(c.exporter).Bin(c.transcript_json);
  PackBins(body, receipts);
  PackBins(body, withdrawals);
  body.Str(c.audit_chain_id);
  PackBins(body, entries);
  PackBins(body, checkpoints);
  PackBins(body, erasures);
  // The body holds the transcript in plaintext: every copy of it here is wiped on the way out.
  const SecretBytes body_bytes = body.TakeSecret();
  Bytes to_sign = SignedMessage(kExportDomain, body_bytes.reveal());
  auto signature = exporter.Sign(to_sign);
  sodium_memzero(to_sign.data(), to_sign.size());
  if (!signature) return Error(signature.error());
  Packer out;
  out.Array(4).Uint(kExportFormatVersion).Bin(body_bytes.reveal());
  out.Array(2).Uint(static_cast<uint8_t>(exporter.public_key().scheme)).Bin(exporter.public_key().key);
  out.Bin(*signature);
  Bytes bytes = out.Take();
  if (bytes.size() > kMaxExportSize) {
    sodium_memzero(bytes.data(), bytes.size());
    return Error(StatusCode::kInvalidArgument, "export too large");
  }
  return bytes;
}

namespace {

// The outer layer, [1, body, signer, signature], parsed but not yet verified.
struct OuterExport {
  Bytes body;
  SigningPublicKey signer;
  Bytes signature;
};

Result<OuterExport> ParseOuter(ByteView bytes) {
  if (bytes.size() > kMaxExportSize) return Error(StatusCode::kMalformed, "export too large");
  CW_RETURN_IF_ERROR(internal::CheckHeader(bytes, kExportFormatVersion, "export"));
  internal::Limits outer;
  outer.array = 4;
  outer.str = 0;
  outer.bin = kMaxExportSize;
  outer.depth = 2;
  auto handle = internal::UnpackOne(bytes, outer);
  if (!handle) return Error(StatusCode::kMalformed, "export is not valid msgpack within limits");
  uint64_t version = 0, scheme = 0;
  OuterExport o;
  const msgpack::object* signer_object = nullptr;
  Fields f(handle->get(), 4);
  f.Uint(&version).Bin(&o.body, kMaxExportSize).Any(&signer_object).Bin(&o.signature, kSignatureSize);
  if (!f.ok()) return Error(StatusCode::kMalformed, "export field has wrong type or size");
  Fields k(*signer_object, 2);
  k.Uint(&scheme).Bin(&o.signer.key, kXEdDSAPublicKeySize);
  if (!k.ok() || (scheme != 1 && scheme != 2))
    return Error(StatusCode::kMalformed, "export signer malformed");
  o.signer.scheme = static_cast<SignatureScheme>(scheme);
  return o;
}

}  // namespace

Result<SigningPublicKey> ExportSigner(ByteView bytes) {
  CW_ASSIGN_OR_RETURN(OuterExport o, ParseOuter(bytes));
  return o.signer;
}

Result<VerifiedExport> VerifyExport(ByteView bytes, const ExportTrust& trust, const Verifier& verifier) {
  CW_ASSIGN_OR_RETURN(OuterExport o, ParseOuter(bytes));
  const SigningPublicKey& signer = o.signer;
  const Bytes& body = o.body;
  const Bytes& signature = o.signature;
  uint64_t version = 0;

  // The signature first, before parsing the body: nothing an unknown party wrote is interpreted further.
  if (!(signer == trust.exporter_key))
    return Error(StatusCode::kBadSignature, "export signed by an untrusted key");
  CW_RETURN_IF_ERROR(verifier.Verify(signer, SignedMessage(kExportDomain, body), signature));

  CW_RETURN_IF_ERROR(internal::CheckHeader(body, kExportFormatVersion, "export body"));
  internal::Limits limits;
  limits.array = kMaxExportRecords;
  limits.str = kMaxExporterSize;
  limits.bin = kMaxTranscriptSize;
  limits.depth = 2;
  auto inner = internal::UnpackOne(body, limits);
  if (!inner) return Error(StatusCode::kMalformed, "export body is not valid msgpack within limits");
  VerifiedExport out;
  ExportContents& c = out.contents;
  const msgpack::object_array *receipts = nullptr, *withdrawals = nullptr, *entries = nullptr,
                              *checkpoints = nullptr, *erasures = nullptr;
  Fields g(inner->get(), 10);
  g.Uint(&version)
      .Int(&c.created_at_ms)
      .Str(&c.exporter, kMaxExporterSize)
      .Bin(&c.transcript_json, kMaxTranscriptSize)
      .Array(&receipts, kMaxExportRecords)
      .Array(&withdrawals, kMaxExportRecords)
      .Str(&c.audit_chain_id, kMaxAuditIdSize)
      .Array(&entries, kMaxExportRecords)
      .Array(&checkpoints, kMaxExportRecords)
      .Array(&erasures, kMaxExportRecords);
  if (!g.ok()) return Error(StatusCode::kMalformed, "export body field has wrong type or size");

  std::vector<Bytes> bins;
  auto decode_all = [&](const msgpack::object_array* list, size_t max_each, auto decode, auto* into,
                        const char* what) -> Status {
    bins.clear();
    if (!ReadBins(*list, &bins, max_each))
      return Status(StatusCode::kMalformed, std::string(what) + " malformed");
    for (const auto& b : bins) {
      auto item = decode(b);
      if (!item) return Status(item.error().code(), std::string(what) + ": " + item.error().message());
      into->push_back(std::move(*item));
    }
    return Status::Ok();
  };
  CW_RETURN_IF_ERROR(
      decode_all(receipts, kMaxReceiptSize + 256, DecodeSignedReceipt, &c.receipts, "receipt"));
  CW_RETURN_IF_ERROR(decode_all(withdrawals, 4096, DecodeWithdrawal, &c.withdrawals, "withdrawal"));
  CW_RETURN_IF_ERROR(
      decode_all(entries, kMaxAuditEntrySize, DecodeAuditEntry, &c.audit_entries, "audit entry"));
  CW_RETURN_IF_ERROR(
      decode_all(checkpoints, kMaxCheckpointSize, DecodeCheckpoint, &c.checkpoints, "checkpoint"));
  CW_RETURN_IF_ERROR(
      decode_all(erasures, kMaxErasureSize, DecodeErasureReceipt, &c.erasures, "erasure receipt"));

  CW_ASSIGN_OR_RETURN(out.chain, CheckContents(c, signer, trust.party_keys, verifier));
  out.body_digest = Blake2b256({AsBytes(kExportDomain), body});
  return out;
}

}  // namespace cw::compliance
