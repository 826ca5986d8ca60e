// Fuzz target: audit-chain verification. An export's chain, a peer's signed heads and a store an attacker
// could edit all reach VerifyChain. Two modes (compliance_fixture.h):
//   kRecords: arbitrary records as entries and checkpoints; decoders fail only with kMalformed or
//     kUnsupportedVersion and accept only canonical bytes; VerifyChain fails only with kTampered,
//     kBadSignature or kMalformed, and a chain that verifies with a checkpoint has the fixture's prefix.
//   kMutate: edits (flip, delete, swap, duplicate, truncate, drop or flip a checkpoint) applied to the
//     fixture's valid chain. The tamper-evidence property: whenever VerifyChain accepts the result, the
//     entries up to the last remaining checkpoint are the original ones, after it they are a truncation of
//     the original whose final entry alone may differ (the documented exposure of the unanchored tail; the
//     first fuzzing run found the final-entry edit, crashes/final-entry-edit-after-last-checkpoint), and
//     every checkpoint is one of the original ones.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "fuzz/compliance_fixture.h"
#include "fuzz/fuzz_check.h"

using namespace cw::fuzz::compliance;

namespace {

bool IsPrefix(const std::vector<cw::Bytes>& a, const std::vector<cw::Bytes>& b) {
  return a.size() <= b.size() && std::equal(a.begin(), a.end(), b.begin());
}

void CheckVerdict(const cw::Result<ChainVerification>& v) {
  if (!v) {
    const auto code = v.error().code();
    CW_FUZZ_CONTRACT_CHECK(code == cw::StatusCode::kTampered || code == cw::StatusCode::kBadSignature ||
                               code == cw::StatusCode::kMalformed,
                           v.error());
  }
}

void Records(const uint8_t* data, size_t size) {
  const World& w = TheWorld();
  std::vector<cw::Bytes> entries, checkpoints;
  size_t i = 0, n = 0;
  while (i + 2 <= size) {
    const size_t len = (size_t{data[i]} << 8) | data[i + 1];
    i += 2;
    const size_t take = std::min(len, size - i);
    cw::Bytes record(data + i, data + i + take);
    i += take;
    auto e = DecodeAuditEntry(record);
    if (e) {
      CW_FUZZ_CHECK(*EncodeAuditEntry(*e) == record);
    } else {
      CW_FUZZ_CONTRACT_CHECK(e.error().code() == cw::StatusCode::kMalformed ||
                                 e.error().code() == cw::StatusCode::kUnsupportedVersion,
                             e.error());
    }
    auto c = DecodeCheckpoint(record);
    if (c) {
      CW_FUZZ_CHECK(*EncodeCheckpoint(*c) == record);
    } else {
      CW_FUZZ_CONTRACT_CHECK(c.error().code() == cw::StatusCode::kMalformed ||
                                 c.error().code() == cw::StatusCode::kUnsupportedVersion,
                             c.error());
    }
    ((n++ % 2 == 0) ? entries : checkpoints).push_back(std::move(record));
  }
  auto v = VerifyChainRecords(kChainId, entries, checkpoints, w.device->public_key(), w.verifier);
  CheckVerdict(v);
  if (v && v->anchored_through > 0) {
    // Only the device signs checkpoints, so an anchored chain is the fixture's, up to the anchor.
    CW_FUZZ_CHECK(std::equal(entries.begin(), entries.begin() + static_cast<long>(v->anchored_through),
                             w.entries.begin(), w.entries.end()) ||
                  v->anchored_through > w.entries.size());
  }
}

void Mutate(const uint8_t* data, size_t size) {
  const World& w = TheWorld();
  std::vector<cw::Bytes> entries = w.entries, checkpoints = w.checkpoints;
  size_t i = 0;
  auto arg = [&]() -> uint8_t { return i < size ? data[i++] : 0; };
  while (i < size) {
    const uint8_t op = arg() % 7;
    switch (static_cast<ChainOp>(op)) {
      case ChainOp::kFlip: {
        const uint8_t idx = arg(), off = arg(), mask = arg();
        if (!entries.empty()) {
          auto& e = entries[idx % entries.size()];
          if (!e.empty()) e[off % e.size()] ^= mask;
        }
        break;
      }
      case ChainOp::kDelete: {
        const uint8_t idx = arg();
        if (!entries.empty()) entries.erase(entries.begin() + idx % entries.size());
        break;
      }
      case ChainOp::kSwap: {
        const uint8_t idx = arg();
        if (entries.size() >= 2) {
          const size_t k = idx % (entries.size() - 1);
          std::swap(entries[k], entries[k + 1]);
        }
        break;
      }
      case ChainOp::kDuplicate: {
        const uint8_t idx = arg();
        if (!entries.empty() && entries.size() < 64) {
          const size_t k = idx % entries.size();
          entries.insert(entries.begin() + k, entries[k]);
        }
        break;
      }
      case ChainOp::kTruncate: {
        const uint8_t n = arg();
        if (n < entries.size()) entries.resize(n);
        break;
      }
      case ChainOp::kDropCheckpoint: {
        const uint8_t idx = arg();
        if (!checkpoints.empty()) checkpoints.erase(checkpoints.begin() + idx % checkpoints.size());
        break;
      }
      case ChainOp::kFlipCheckpoint: {
        const uint8_t idx = arg(), off = arg(), mask = arg();
        if (!checkpoints.empty()) {
          auto& c = checkpoints[idx % checkpoints.size()];
          if (!c.empty()) c[off % c.size()] ^= mask;
        }
        break;
      }
    }
  }
  auto v = VerifyChainRecords(kChainId, entries, checkpoints, w.device->public_key(), w.verifier);
  CheckVerdict(v);
  if (v) {
    // Everything a checkpoint covers is the original; past the last checkpoint the documented exposure is
    // truncation and an edit of the final entry (nothing follows it to disagree). Editing an earlier tail
    // entry would need every later prev_hash recomputed, which no byte-level mutation achieves.
    CW_FUZZ_CHECK(v->anchored_through <= w.entries.size());
    CW_FUZZ_CHECK(std::equal(entries.begin(), entries.begin() + static_cast<long>(v->anchored_through),
                             w.entries.begin()));
    if (v->anchored_through == entries.size()) {
      CW_FUZZ_CHECK(IsPrefix(entries, w.entries));
    } else {
      CW_FUZZ_CHECK(IsPrefix(std::vector<cw::Bytes>(entries.begin(), entries.end() - 1), w.entries));
    }
    for (const auto& c : checkpoints) {
      CW_FUZZ_CHECK(std::find(w.checkpoints.begin(), w.checkpoints.end(), c) != w.checkpoints.end());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if (data[0] % 2 == static_cast<uint8_t>(ChainMode::kRecords)) {
    Records(data + 1, size - 1);
  } else {
    Mutate(data + 1, size - 1);
  }
  return 0;
}
