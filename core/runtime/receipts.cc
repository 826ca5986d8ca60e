#include "core/runtime/receipts.h"

#include <algorithm>

namespace cw::runtime {

namespace {

using session::Table;

Bytes Record(const std::string& contact, uint64_t sequence) {
  Bytes out(contact.begin(), contact.end());
  out.push_back(0);
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(sequence >> shift));
  return out;
}

bool ParseRecord(ByteView stored, std::string* contact, uint64_t* sequence) {
  const auto nul = std::find(stored.begin(), stored.end(), uint8_t{0});
  if (nul == stored.end() || stored.end() - nul != 9) return false;
  contact->assign(stored.begin(), nul);
  uint64_t s = 0;
  for (auto it = nul + 1; it != stored.end(); ++it) s = (s << 8) | *it;
  *sequence = s;
  return true;
}

Status Stage(std::string_view prefix, const std::string& contact, uint64_t sequence, const std::string& relay_id_hex,
             session::WriteBatch* batch) {
  wire::ReceiptRef ref;
  if (!ReceiptRefFromHex(relay_id_hex, &ref)) return Status(StatusCode::kInvalidArgument, "not a relay message id");
  batch->writes.push_back({Table::kMeta, std::string(prefix) + relay_id_hex, SecretBytes(Record(contact, sequence))});
  return Status::Ok();
}

}  // namespace

bool ReceiptRefFromHex(const std::string& hex, wire::ReceiptRef* out) {
  Bytes b;
  if (!FromHex(hex, &b) || b.size() != out->size()) return false;
  std::copy(b.begin(), b.end(), out->begin());
  return true;
}

Status ReceiptBook::StageReceived(const std::string& contact, uint64_t sequence, const std::string& relay_id_hex,
                                  session::WriteBatch* batch) {
  return Stage(kReceiptInPrefix, contact, sequence, relay_id_hex, batch);
}

Status ReceiptBook::StageSent(const std::string& contact, uint64_t sequence, const std::string& relay_id_hex,
                              session::WriteBatch* batch) {
  return Stage(kReceiptOutPrefix, contact, sequence, relay_id_hex, batch);
}

Result<std::vector<ReceiptBook::Unread>> ReceiptBook::UnreadUpTo(const std::string& contact,
                                                                 uint64_t up_to_sequence) {
  CW_ASSIGN_OR_RETURN(auto keys, store_->ListKeys(Table::kMeta, kReceiptInPrefix));
  const std::string conv = storage::Transcripts::DirectConversationId(contact);
  std::vector<Unread> out;
  std::vector<Unread> gone;
  for (auto& key : keys) {
    CW_ASSIGN_OR_RETURN(auto stored, store_->Get(Table::kMeta, key));
    if (!stored) continue;
    Unread u;
    std::string who;
    if (!ParseRecord(stored->reveal(), &who, &u.sequence) ||
        !ReceiptRefFromHex(key.substr(kReceiptInPrefix.size()), &u.ref)) {
      return Error(StatusCode::kMalformed, "a receipt record is malformed");
    }
    if (who != contact || u.sequence > up_to_sequence) continue;
    u.key = std::move(key);
    auto row = transcripts_->GetMessage(conv, u.sequence);
    if (!row && row.error().code() != StatusCode::kNotFound) return Error(row.error());
    (row ? out : gone).push_back(std::move(u));
  }
  CW_RETURN_IF_ERROR(Forget(gone));
  std::sort(out.begin(), out.end(), [](const Unread& a, const Unread& b) { return a.sequence < b.sequence; });
  return out;
}

Status ReceiptBook::Forget(const std::vector<Unread>& read) {
  if (read.empty()) return Status::Ok();
  session::WriteBatch b;
  for (const auto& u : read) b.writes.push_back({Table::kMeta, u.key, std::nullopt});
  return store_->Commit(std::move(b));
}

Status ReceiptBook::StageForgetContact(const std::string& contact, session::WriteBatch* batch) {
  session::WriteBatch& b = *batch;
  for (std::string_view prefix : {kReceiptInPrefix, kReceiptOutPrefix}) {
    CW_ASSIGN_OR_RETURN(auto keys, store_->ListKeys(Table::kMeta, prefix));
    for (auto& key : keys) {
      CW_ASSIGN_OR_RETURN(auto stored, store_->Get(Table::kMeta, key));
      std::string who;
      uint64_t sequence = 0;
      // A record that does not parse names nobody we can tell; it goes too rather than lingering.
      if (stored && ParseRecord(stored->reveal(), &who, &sequence) && who != contact) continue;
      b.writes.push_back({Table::kMeta, std::move(key), std::nullopt});
    }
  }
  return Status::Ok();
}

Result<std::vector<wire::AppMessage>> ReceiptBook::Messages(wire::ReceiptType type,
                                                            const std::vector<wire::ReceiptRef>& refs) {
  std::vector<wire::AppMessage> out;
  for (size_t at = 0; at < refs.size(); at += wire::kMaxReceiptRefs) {
    wire::Receipt r;
    r.type = type;
    r.refs.assign(refs.begin() + static_cast<ptrdiff_t>(at),
                  refs.begin() + static_cast<ptrdiff_t>(std::min(refs.size(), at + wire::kMaxReceiptRefs)));
    CW_ASSIGN_OR_RETURN(Bytes payload, wire::EncodeReceipt(r));
    wire::AppMessage m;
    m.kind = wire::AppKind::kReceipt;
    m.payload = SecretBytes(payload);
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::vector<ReceiptEvent>> ReceiptBook::Apply(const std::string& sender, ByteView payload) {
  CW_ASSIGN_OR_RETURN(wire::Receipt receipt, wire::DecodeReceipt(payload));
  const std::string conv = storage::Transcripts::DirectConversationId(sender);
  std::vector<ReceiptEvent> events;
  session::WriteBatch forget;
  for (const auto& ref : receipt.refs) {
    const std::string key = std::string(kReceiptOutPrefix) + ToHex(ref);
    CW_ASSIGN_OR_RETURN(auto stored, store_->Get(Table::kMeta, key));
    if (!stored) continue;
    std::string to;
    uint64_t sequence = 0;
    if (!ParseRecord(stored->reveal(), &to, &sequence)) return Error(StatusCode::kMalformed, "a receipt record is malformed");
    // A contact speaks only for the messages it was sent.
    if (to != sender) continue;
    auto row = transcripts_->GetMessage(conv, sequence);
    if (!row) {
      // Gone (disappeared or erased): nothing left to mark, and nothing more will be.
      if (row.error().code() == StatusCode::kNotFound) forget.writes.push_back({Table::kMeta, key, std::nullopt});
      continue;
    }
    const storage::MessageStatus target =
        receipt.type == wire::ReceiptType::kRead ? storage::MessageStatus::kRead : storage::MessageStatus::kDelivered;
    if (receipt.type == wire::ReceiptType::kRead) forget.writes.push_back({Table::kMeta, key, std::nullopt});
    if (row->status == target || row->status == storage::MessageStatus::kRead ||
        row->status == storage::MessageStatus::kFailed) {
      continue;  // never backwards; a delivered receipt after the read one changes nothing
    }
    CW_RETURN_IF_ERROR(transcripts_->SetStatus(conv, sequence, target));
    events.push_back(ReceiptEvent{sender, sequence, receipt.type, ToHex(ref)});
  }
  if (!forget.writes.empty()) CW_RETURN_IF_ERROR(store_->Commit(std::move(forget)));
  return events;
}

}  // namespace cw::runtime
