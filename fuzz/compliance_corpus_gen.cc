// cw_fuzz_compliance_corpus_gen: writes the seed corpora of the consent_receipt and audit_chain targets.
//
//   cw_fuzz_compliance_corpus_gen FUZZ_DIR      (normally: build/rel/fuzz/cw_fuzz_compliance_corpus_gen fuzz)
//
// Replaces the gen-* files of FUZZ_DIR/consent_receipt/corpus and FUZZ_DIR/audit_chain/corpus, named
// gen-<first 8 bytes of BLAKE2b of the content, hex>; other files are left alone. Everything comes from the
// fixed world of compliance_fixture.h, so two runs write identical files.
#include <sodium.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz/compliance_fixture.h"

namespace {

namespace fs = std::filesystem;
using cw::Bytes;
using namespace cw::fuzz::compliance;

void Write(const fs::path& dir, const std::vector<Bytes>& inputs) {
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind("gen-", 0) == 0) fs::remove(entry.path());
  }
  for (const auto& input : inputs) {
    uint8_t h[8];
    crypto_generichash(h, sizeof h, input.data(), input.size(), nullptr, 0);
    std::ofstream out(dir / ("gen-" + cw::ToHex(cw::ByteView(h, sizeof h))), std::ios::binary);
    out.write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
  }
  std::printf("%s: %zu seeds\n", dir.c_str(), inputs.size());
}

Bytes Framed(uint8_t mode, const std::vector<Bytes>& records) {
  Bytes out{mode};
  for (const auto& r : records) {
    out.push_back(static_cast<uint8_t>(r.size() >> 8));
    out.push_back(static_cast<uint8_t>(r.size()));
    out.insert(out.end(), r.begin(), r.end());
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || sodium_init() < 0) {
    std::fprintf(stderr, "usage: %s FUZZ_DIR\n", argv[0]);
    return 1;
  }
  const fs::path root = argv[1];
  const World& w = TheWorld();

  std::vector<Bytes> receipts{w.receipt_bytes, w.receipt.receipt_bytes, w.withdrawal_bytes};
  Bytes newer = w.receipt_bytes;
  newer[1] = 2;
  receipts.push_back(newer);
  receipts.emplace_back(w.receipt_bytes.begin(), w.receipt_bytes.begin() + w.receipt_bytes.size() / 2);
  Bytes flipped = w.receipt_bytes;
  flipped[flipped.size() - 5] ^= 1;  // inside the clinician's signature
  receipts.push_back(flipped);
  auto request = EncodeReceiptRequest(w.receipt);
  if (!request) {
    std::fprintf(stderr, "receipt request: %s\n", request.error().ToString().c_str());
    return 1;
  }
  receipts.push_back(*request);
  Write(root / "consent_receipt" / "corpus", receipts);

  std::vector<Bytes> chains;
  // kRecords: the chain interleaved with its checkpoints (entry, checkpoint, entry, ...).
  std::vector<Bytes> interleaved;
  for (size_t i = 0; i < w.entries.size(); ++i) {
    interleaved.push_back(w.entries[i]);
    interleaved.push_back(i < w.checkpoints.size() ? w.checkpoints[i] : Bytes{});
  }
  chains.push_back(Framed(0, interleaved));
  chains.push_back(Framed(0, {w.entries[0], w.checkpoints[0]}));
  // kMutate: no edit, then one of each operation.
  chains.push_back({1});
  chains.push_back({1, 0, 3, 5, 0x01});   // flip a byte of entry 3
  chains.push_back({1, 1, 2});            // delete entry 2
  chains.push_back({1, 2, 6});            // swap entries 6 and 7
  chains.push_back({1, 3, 9});            // duplicate entry 9
  chains.push_back({1, 4, 10});           // truncate after the last checkpoint: accepted
  chains.push_back({1, 4, 5});            // truncate before it: refused
  chains.push_back({1, 5, 1, 4, 3});      // drop the last checkpoint, then truncate
  chains.push_back({1, 6, 0, 20, 0x80});  // flip a checkpoint byte
  Write(root / "audit_chain" / "corpus", chains);
  return 0;
}
