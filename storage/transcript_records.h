// Internal to cw_storage (and its tests and fuzz target): the msgpack encodings of the transcript layer's
// records and the sealing of a row's blob under a conversation key.
//
// Stored records come back from a sealed store, but they are still parsed with tight limits: whoever can
// write the files must not be able to crash the reader.
//
//   conversation (kConversation): [1, key (bin 32), disappearing_ms (int), created_at_ms (int)]
//   row (kTranscript):            [1, status (1..5), expires_at_ms (int), blob (bin)]
//   blob = nonce (24) || XChaCha20-Poly1305(conversation key, AD = "cw-row-1" || BLAKE2b-256(conversation
//          id) || BE64(sequence), inner)
//   inner:                        [message id (bin 16), direction (1..2), sender (str), sender device (uint),
//                                  sent_at_ms (int), received_at_ms (int), body (bin), [attachment (str)...]]
//   outbox (kOutbox):             [1, [[name (str), device (uint)]...], type (2..5), group id (str), body
//   (bin)] dedup (kInboundDedup):        BE64(expires_at_ms)
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/base/status.h"
#include "storage/transcript.h"

namespace cw::storage::internal {

inline constexpr uint8_t kRecordVersion = 1;

struct ConversationRecord {
  SecretBytes key;  // kConversationKeySize bytes
  int64_t disappearing_ms = 0;
  int64_t created_at_ms = 0;
  // The lowest sequence the next row may take, once the newest rows disappeared (0: one past the newest
  // row). Records written before it existed have 4 fields and read as 0.
  uint64_t next_sequence = 0;
};
SecretBytes EncodeConversation(const ConversationRecord& c);
Result<ConversationRecord> DecodeConversation(std::span<const uint8_t> bytes);

struct RowRecord {
  MessageStatus status = MessageStatus::kQueued;
  int64_t expires_at_ms = 0;
  Bytes blob;
};
SecretBytes EncodeRow(const RowRecord& r);
Result<RowRecord> DecodeRow(std::span<const uint8_t> bytes);

// The inner fields of `m` (everything but conversation id, sequence, status and expiry).
Result<SecretBytes> EncodeInner(const TranscriptMessage& m);
// Fills those fields of `m`.
Status DecodeInner(std::span<const uint8_t> bytes, TranscriptMessage* m);

Bytes SealBlob(std::span<const uint8_t> conversation_key, std::string_view conversation_id, uint64_t sequence,
               std::span<const uint8_t> inner, Random& random);
// kTampered when it does not open under that key, conversation and sequence.
Result<SecretBytes> OpenBlob(std::span<const uint8_t> conversation_key, std::string_view conversation_id,
                             uint64_t sequence, std::span<const uint8_t> blob);

Result<SecretBytes> EncodeOutbox(const OutboxEntry& e);
// Fills recipients and message of `e`.
Status DecodeOutbox(std::span<const uint8_t> bytes, OutboxEntry* e);

std::string RowKey(std::string_view conversation_id, uint64_t sequence);
// Splits a kTranscript/kOutbox key; false unless it is id '\0' BE64.
bool ParseRowKey(std::string_view key, std::string* conversation_id, uint64_t* sequence);

std::string BigEndian64(uint64_t v);
uint64_t ReadBigEndian64(std::span<const uint8_t> b);  // REQUIRES: b.size() == 8

}  // namespace cw::storage::internal
