// Fuzz target: opening sealed store records and decoding the records stored in them (transcript layer:
// conversation, row, row inner fields, outbox entry, row keys; engine: contact, group) from arbitrary
// bytes. Someone who can write the device's files controls all of these bytes.
// Asserts, for input mode || x:
//   - nothing crashes, and a failure is kTampered (sealed record, blob), kMalformed or kUnsupportedVersion;
//   - whatever opens or decodes re-encodes (re-seals) to something that opens or decodes to the same thing.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/base/random.h"
#include "core/session/records.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/sealed_record_open/records.h"
#include "storage/sealed_store_internal.h"
#include "storage/transcript_records.h"

namespace {

using namespace cw;
using namespace cw::fuzz::sealed_record_open;
namespace si = cw::storage::internal;

bool DecodeError(const Status& s) {
  return s.code() == StatusCode::kMalformed || s.code() == StatusCode::kUnsupportedVersion;
}

bool SameInner(const storage::TranscriptMessage& a, const storage::TranscriptMessage& b) {
  return a.message_id == b.message_id && a.direction == b.direction && a.sender == b.sender &&
         a.sender_device == b.sender_device && a.sent_at_ms == b.sent_at_ms &&
         a.received_at_ms == b.received_at_ms && a.body.Equals(b.body) &&
         std::equal(a.attachments.begin(), a.attachments.end(), b.attachments.begin(), b.attachments.end(),
                    [](const SecretBytes& x, const SecretBytes& y) { return x.Equals(y); });
}

void Inner(std::span<const uint8_t> in) {
  storage::TranscriptMessage m;
  Status s = si::DecodeInner(in, &m);
  if (!s.ok()) {
    CW_FUZZ_CONTRACT_CHECK(DecodeError(s), s);
    return;
  }
  auto again = si::EncodeInner(m);
  CW_FUZZ_CHECK(again.has_value());
  storage::TranscriptMessage m2;
  CW_FUZZ_CHECK(si::DecodeInner(again->reveal(), &m2).ok());
  CW_FUZZ_CHECK(SameInner(m, m2));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Mode mode = static_cast<Mode>(data[0] % kModeCount);
  const std::span<const uint8_t> in(data + 1, size - 1);
  const std::string_view text(reinterpret_cast<const char*>(in.data()), in.size());
  SeededRandom random(1);

  switch (mode) {
    case kSealedRecord: {
      auto opened = si::OpenRecordWithKey(kSealKey, kCf, kStoredKey, text);
      if (!opened) {
        CW_FUZZ_CONTRACT_CHECK(opened.error().code() == StatusCode::kTampered, opened.error());
        break;
      }
      const std::string resealed =
          si::SealRecordWithKey(kSealKey, random, kCf, kStoredKey, opened->plain_key, opened->value.reveal());
      auto again = si::OpenRecordWithKey(kSealKey, kCf, kStoredKey, resealed);
      CW_FUZZ_CHECK(again.has_value());
      CW_FUZZ_CHECK(again->plain_key == opened->plain_key && again->value.Equals(opened->value));
      // Bound to its place: the same bytes under another stored key or column family do not open.
      CW_FUZZ_CHECK(!si::OpenRecordWithKey(kSealKey, kCf, "another key", text).has_value());
      CW_FUZZ_CHECK(!si::OpenRecordWithKey(kSealKey, "outbox", kStoredKey, text).has_value());
      break;
    }
    case kConversation: {
      auto c = si::DecodeConversation(in);
      if (!c) {
        CW_FUZZ_CONTRACT_CHECK(DecodeError(c.error()), c.error());
        break;
      }
      auto c2 = si::DecodeConversation(si::EncodeConversation(*c).reveal());
      CW_FUZZ_CHECK(c2.has_value());
      CW_FUZZ_CHECK(c2->key.Equals(c->key) && c2->disappearing_ms == c->disappearing_ms &&
                    c2->created_at_ms == c->created_at_ms && c2->next_sequence == c->next_sequence);
      break;
    }
    case kRow: {
      auto r = si::DecodeRow(in);
      if (!r) {
        CW_FUZZ_CONTRACT_CHECK(DecodeError(r.error()), r.error());
        break;
      }
      auto r2 = si::DecodeRow(si::EncodeRow(*r).reveal());
      CW_FUZZ_CHECK(r2.has_value());
      CW_FUZZ_CHECK(r2->status == r->status && r2->expires_at_ms == r->expires_at_ms && r2->blob == r->blob);
      break;
    }
    case kInner:
      Inner(in);
      break;
    case kOutbox: {
      storage::OutboxEntry e;
      Status s = si::DecodeOutbox(in, &e);
      if (!s.ok()) {
        CW_FUZZ_CONTRACT_CHECK(DecodeError(s), s);
        break;
      }
      auto again = si::EncodeOutbox(e);
      CW_FUZZ_CHECK(again.has_value());
      storage::OutboxEntry e2;
      CW_FUZZ_CHECK(si::DecodeOutbox(again->reveal(), &e2).ok());
      CW_FUZZ_CHECK(e2.recipients == e.recipients && e2.message.type == e.message.type &&
                    e2.message.group_id == e.message.group_id && e2.message.body == e.message.body);
      break;
    }
    case kContact: {
      auto c = session::internal::DecodeContact(in);
      if (!c) {
        CW_FUZZ_CONTRACT_CHECK(DecodeError(c.error()), c.error());
        break;
      }
      auto c2 = session::internal::DecodeContact(session::internal::EncodeContact(*c).reveal());
      CW_FUZZ_CHECK(c2.has_value());
      CW_FUZZ_CHECK(c2->state == c->state && c2->identity_key == c->identity_key &&
                    c2->pending_identity_key == c->pending_identity_key &&
                    c2->rejected_identity_keys == c->rejected_identity_keys &&
                    c2->verified_before_change == c->verified_before_change);
      break;
    }
    case kGroup: {
      auto g = session::internal::DecodeGroup(in);
      if (!g) {
        CW_FUZZ_CONTRACT_CHECK(DecodeError(g.error()), g.error());
        break;
      }
      auto g2 = session::internal::DecodeGroup(session::internal::EncodeGroup(*g).reveal());
      CW_FUZZ_CHECK(g2.has_value() && g2->admin == g->admin && g2->epoch == g->epoch &&
                    g2->members == g->members);
      break;
    }
    case kBlob: {
      auto inner = si::OpenBlob(kConversationKey, kConversationId, kSequence, in);
      if (!inner) {
        CW_FUZZ_CONTRACT_CHECK(inner.error().code() == StatusCode::kTampered, inner.error());
        break;
      }
      CW_FUZZ_CHECK(!si::OpenBlob(kConversationKey, kConversationId, kSequence + 1, in).has_value());
      Inner(inner->reveal());
      break;
    }
    case kRowKey: {
      std::string conv;
      uint64_t seq = 0;
      if (si::ParseRowKey(text, &conv, &seq)) CW_FUZZ_CHECK(si::RowKey(conv, seq) == text);
      break;
    }
    case kModeCount:
      break;
  }
  return 0;
}
