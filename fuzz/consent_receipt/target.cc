// Fuzz target: consent receipt and withdrawal parsing and verification. A peer sends receipts and
// withdrawals inside the session, and exports carry them to auditors, so every byte is hostile.
// Asserts, for any input:
//   - decoders fail only with kMalformed or kUnsupportedVersion;
//   - anything accepted is canonical: re-encoding gives back exactly the input (so signatures cover values);
//   - verification fails only with kBadSignature or kPermissionDenied, and whatever verifies against the
//     fixture's session and keys is byte for byte the fixture's own receipt or withdrawal (no forgery);
//   - the Kantara JSON rendering of any accepted receipt does not fail;
//   - a receipt request (the patient's half) is countersigned only for the fixture session, and, when it
//     names the fixture patient's key, only as the fixture patient's own receipt.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "fuzz/compliance_fixture.h"
#include "fuzz/fuzz_check.h"

using namespace cw::fuzz::compliance;

namespace {

bool DecodeErrorOk(const cw::Status& s) {
  return s.code() == cw::StatusCode::kMalformed || s.code() == cw::StatusCode::kUnsupportedVersion;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const World& w = TheWorld();
  const cw::ByteView input(data, size);

  auto signed_receipt = DecodeSignedReceipt(input);
  if (!signed_receipt) {
    CW_FUZZ_CONTRACT_CHECK(DecodeErrorOk(signed_receipt.error()), signed_receipt.error());
  } else {
    auto again = EncodeSignedReceipt(*signed_receipt);
    CW_FUZZ_CHECK(again.has_value());
    CW_FUZZ_CHECK(std::equal(again->begin(), again->end(), input.begin(), input.end()));
    CW_FUZZ_CHECK(signed_receipt->receipt.sensitive);
    CW_FUZZ_CHECK(!ReceiptToKantaraJson(*signed_receipt).empty());
    cw::Status v = VerifyReceipt(*signed_receipt, w.expect, w.verifier);
    if (v.ok()) {
      CW_FUZZ_CHECK(*again == w.receipt_bytes);
    } else {
      CW_FUZZ_CONTRACT_CHECK(
          v.code() == cw::StatusCode::kBadSignature || v.code() == cw::StatusCode::kPermissionDenied, v);
    }
  }

  auto receipt = DecodeReceipt(input);
  if (!receipt) {
    CW_FUZZ_CONTRACT_CHECK(DecodeErrorOk(receipt.error()), receipt.error());
  } else {
    auto again = EncodeReceipt(*receipt);
    CW_FUZZ_CHECK(again.has_value());
    CW_FUZZ_CHECK(std::equal(again->begin(), again->end(), input.begin(), input.end()));
    CW_FUZZ_CHECK(ValidateReceipt(*receipt).ok());
  }

  auto request = DecodeReceiptRequest(input);
  if (!request) {
    CW_FUZZ_CONTRACT_CHECK(DecodeErrorOk(request.error()), request.error());
  } else {
    auto again = EncodeReceiptRequest(*request);
    CW_FUZZ_CHECK(again.has_value());
    CW_FUZZ_CHECK(std::equal(again->begin(), again->end(), input.begin(), input.end()));
    CW_FUZZ_CHECK(request->clinician_signature.empty());
    // Countersigning is what a clinician's device does with a request: it must refuse anything that is not
    // the fixture patient's signature over a receipt for the fixture session.
    SignedConsentReceipt copy = *request;
    cw::Status c = CountersignReceipt(&copy, w.session, *w.clinician, w.verifier);
    if (c.ok() && request->receipt.patient_key == w.expect.patient_key) {
      CW_FUZZ_CHECK(copy.receipt_bytes == w.receipt.receipt_bytes);
    } else if (c.ok()) {
      CW_FUZZ_CHECK(copy.receipt.binding == w.session);
    } else {
      CW_FUZZ_CONTRACT_CHECK(c.code() == cw::StatusCode::kBadSignature || c.code() == cw::StatusCode::kPermissionDenied ||
                                 c.code() == cw::StatusCode::kInvalidArgument,
                             c);
    }
  }

  auto withdrawal = DecodeWithdrawal(input);
  if (!withdrawal) {
    CW_FUZZ_CONTRACT_CHECK(DecodeErrorOk(withdrawal.error()), withdrawal.error());
  } else {
    auto again = EncodeWithdrawal(*withdrawal);
    CW_FUZZ_CHECK(again.has_value());
    CW_FUZZ_CHECK(std::equal(again->begin(), again->end(), input.begin(), input.end()));
    cw::Status v = VerifyWithdrawal(*withdrawal, w.receipt, w.verifier);
    if (v.ok()) CW_FUZZ_CHECK(*again == w.withdrawal_bytes);
  }
  return 0;
}
