// cw_fuzz_sealed_record_corpus_gen: writes the sealed_record_open seed corpus.
//
//   cw_fuzz_sealed_record_corpus_gen fuzz/sealed_record_open/corpus
//
// Replaces the files named gen-* there with freshly generated ones, named gen-<first 8 bytes of BLAKE2b of
// the content, hex>; other files (inputs kept from fuzzing runs) are left alone. Everything comes from fixed
// keys and SeededRandom, so two runs write identical files.
#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/session/records.h"
#include "fuzz/sealed_record_open/records.h"
#include "storage/sealed_store_internal.h"
#include "storage/transcript_records.h"

namespace {

namespace fs = std::filesystem;
using namespace cw;
using namespace cw::fuzz::sealed_record_open;
namespace si = cw::storage::internal;

Bytes Seed(Mode mode, std::span<const uint8_t> body) {
  Bytes out(1 + body.size());
  out[0] = static_cast<uint8_t>(mode);
  std::copy(body.begin(), body.end(), out.begin() + 1);
  return out;
}

storage::TranscriptMessage Message(SeededRandom& random, const std::string& body,
                                   std::vector<std::string> attachments) {
  storage::TranscriptMessage m;
  random.Fill(m.message_id.data(), m.message_id.size());
  m.direction = storage::Direction::kIncoming;
  m.sender = "patient.bob";
  m.sender_device = 2;
  m.sent_at_ms = 1'700'000'000'000;
  m.received_at_ms = 1'700'000'000'500;
  m.body = SecretBytes(AsBytes(body));
  for (const auto& a : attachments) m.attachments.push_back(SecretBytes(AsBytes(a)));
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || sodium_init() < 0) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 1;
  }
  const fs::path dir = argv[1];
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().starts_with("gen-")) fs::remove(e.path());
  }
  SeededRandom random(20240601);
  std::vector<Bytes> seeds;

  const std::string row_key = si::RowKey(kConversationId, kSequence);
  seeds.push_back(Seed(kSealedRecord, AsBytes(si::SealRecordWithKey(kSealKey, random, kCf, kStoredKey,
                                                                    row_key, AsBytes("a sealed value")))));
  seeds.push_back(
      Seed(kSealedRecord, AsBytes(si::SealRecordWithKey(kSealKey, random, kCf, kStoredKey, "", {}))));

  si::ConversationRecord c;
  c.key = SecretBytes(kConversationKey);
  c.disappearing_ms = 86'400'000;
  c.created_at_ms = 1'700'000'000'000;
  seeds.push_back(Seed(kConversation, si::EncodeConversation(c).reveal()));
  c.next_sequence = 42;  // newest rows swept: the next one is numbered from here
  seeds.push_back(Seed(kConversation, si::EncodeConversation(c).reveal()));

  for (const auto& m : {Message(random, "my chest hurts", {"att:1;key=00ff"}), Message(random, "", {}),
                        Message(random, std::string(300, 'x'), {"a", "b", "c"})}) {
    auto inner = si::EncodeInner(m);
    if (!inner) return 1;
    seeds.push_back(Seed(kInner, inner->reveal()));
    const Bytes blob = si::SealBlob(kConversationKey, kConversationId, kSequence, inner->reveal(), random);
    seeds.push_back(Seed(kBlob, blob));
    si::RowRecord row;
    row.status = storage::MessageStatus::kDelivered;
    row.expires_at_ms = 1'700'086'400'000;
    row.blob = blob;
    seeds.push_back(Seed(kRow, si::EncodeRow(row).reveal()));
  }

  storage::OutboxEntry e;
  e.recipients = {{"patient.bob", 1}, {"nurse.carol", 3}};
  e.message.type = session::MessageType::kSenderKey;
  e.message.group_id = "ward-7";
  e.message.body = ToBytes("group ciphertext bytes");
  auto outbox = si::EncodeOutbox(e);
  if (!outbox) return 1;
  seeds.push_back(Seed(kOutbox, outbox->reveal()));

  session::internal::ContactRecord contact;
  contact.state = session::TrustState::kChanged;
  contact.identity_key.fill(5);
  contact.pending_identity_key.emplace();
  contact.pending_identity_key->fill(5);
  (*contact.pending_identity_key)[1] = 6;
  for (uint8_t k : {7, 8}) {
    contact.rejected_identity_keys.push_back(contact.identity_key);
    contact.rejected_identity_keys.back()[1] = k;
  }
  contact.verified_before_change = true;
  seeds.push_back(Seed(kContact, session::internal::EncodeContact(contact).reveal()));
  session::internal::GroupRecord group;
  group.admin = "dr.alice";
  group.epoch = 3;
  group.members = {"dr.alice", "nurse.carol", "patient.bob"};
  seeds.push_back(Seed(kGroup, session::internal::EncodeGroup(group).reveal()));
  // A roster listing identity keys (the 5-field record), one member without a listed key.
  group.epoch = 4;
  group.keys.resize(group.members.size());
  group.keys[0].emplace().fill(9);
  group.keys[2].emplace().fill(10);
  seeds.push_back(Seed(kGroup, session::internal::EncodeGroup(group).reveal()));
  seeds.push_back(Seed(kRowKey, AsBytes(row_key)));

  for (const auto& s : seeds) {
    uint8_t h[8];
    crypto_generichash(h, sizeof h, s.data(), s.size(), nullptr, 0);
    std::ofstream out(dir / ("gen-" + ToHex(h)), std::ios::binary);
    out.write(reinterpret_cast<const char*>(s.data()), static_cast<std::streamsize>(s.size()));
  }
  std::printf("%zu seeds\n", seeds.size());
  return 0;
}
