// ReceiptBook: the client runtime's records for delivery and read receipts (wire format: core/wire/receipt.h).
//
// A receipt names messages by the relay message id the sender deposited them under (the runtime derives it
// from the ciphertext and the recipient, so both devices know it). Each side keeps a small record per shown
// (text or file) message, in the engine's kMeta table (key names hold only that id; values are sealed under
// the master key like every record):
//   runtime.receipt.out.<relay id hex>  contact NUL BE64(sequence): a message we sent, until its read receipt
//   runtime.receipt.in.<relay id hex>   contact NUL BE64(sequence): a message we received, until MarkRead
// Both are staged inside the engine hook, so they commit with the transcript row or not at all.
//
// Rules: only shown messages are receipted (never a receipt or another control message); a receipt from a
// contact moves only rows of that contact's conversation, and only forward (sent -> delivered -> read).
//
// Thread rules: the engine's owner thread only (the client's loop thread). Ownership: the store and
// transcripts are borrowed and must outlive this object.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "core/session/store.h"
#include "core/wire/app_message.h"
#include "core/wire/receipt.h"
#include "storage/transcript.h"

namespace cw::runtime {

inline constexpr std::string_view kReceiptOutPrefix = "runtime.receipt.out.";
inline constexpr std::string_view kReceiptInPrefix = "runtime.receipt.in.";

// What a contact's receipt changed: the transcript row `sequence` of `contact`'s conversation is now
// delivered or read.
struct ReceiptEvent {
  std::string contact;
  uint64_t sequence = 0;
  wire::ReceiptType type = wire::ReceiptType::kDelivered;
  std::string message_ref;  // the relay message id, hex (what the audit trail names the message by)
};

class ReceiptBook {
 public:
  ReceiptBook(session::ProtocolStore* store, storage::Transcripts* transcripts)
      : store_(store), transcripts_(transcripts) {}

  // Inside the decrypt hook of a shown message from `contact`, stored as row `sequence`.
  // kInvalidArgument when `relay_id_hex` is not a relay message id.
  Status StageReceived(const std::string& contact, uint64_t sequence, const std::string& relay_id_hex,
                       session::WriteBatch* batch);
  // Inside the encrypt hook of a shown message to `contact`, row `sequence`.
  Status StageSent(const std::string& contact, uint64_t sequence, const std::string& relay_id_hex,
                   session::WriteBatch* batch);

  // The received messages of `contact` up to row `up_to_sequence` not yet marked read, oldest first.
  struct Unread {
    std::string key;  // the record, for Forget
    uint64_t sequence = 0;
    wire::ReceiptRef ref{};
  };
  // Records of messages that are gone (disappeared) are dropped here: nobody read those.
  Result<std::vector<Unread>> UnreadUpTo(const std::string& contact, uint64_t up_to_sequence);
  Status Forget(const std::vector<Unread>& read);
  // Adds to `batch` the deletion of every record naming `contact`: its conversation is being erased, and
  // nothing of it may be left (the erasure's own batch, so they commit with it).
  Status StageForgetContact(const std::string& contact, session::WriteBatch* batch);

  // The kReceipt AppMessages that carry `refs` (several when there are more than kMaxReceiptRefs).
  static Result<std::vector<wire::AppMessage>> Messages(wire::ReceiptType type, const std::vector<wire::ReceiptRef>& refs);

  // Applies a receipt from `sender`: moves its rows forward and returns what changed. References this device
  // does not know, or that name another contact's messages, are ignored (a replayed or stale receipt is
  // harmless). kMalformed when `payload` is not a receipt.
  Result<std::vector<ReceiptEvent>> Apply(const std::string& sender, ByteView payload);

 private:
  session::ProtocolStore* store_;
  storage::Transcripts* transcripts_;
};

// A relay message id as hex (what the runtime keeps) to a receipt reference; false when it is not one.
bool ReceiptRefFromHex(const std::string& hex, wire::ReceiptRef* out);

}  // namespace cw::runtime
