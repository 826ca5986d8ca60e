// Care-team groups in the client runtime (see client_groups.h for the design).
#include "core/runtime/client_groups.h"

#include <sodium.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/wire/app_message.h"
#include "core/wire/content.h"

namespace cw::runtime {

namespace {

using json = nlohmann::json;
using session::Table;

// What a control conversation's row shows for a membership or sender-key message: never the key itself.
constexpr std::string_view kGroupControlLabel = "[cipherward group control]";

std::vector<std::string> Names(const std::vector<session::Address>& addresses) {
  std::vector<std::string> out;
  for (const auto& a : addresses) out.push_back(a.name);
  return out;
}

// 64 hex digits, the form Engine::NewGroupId makes (32 for a group made before ids were bound to their
// admin); anything else names no group of ours and is refused before it reaches a store key.
bool LooksLikeGroupId(const std::string& id) {
  return (id.size() == 64 || id.size() == 32) && std::all_of(id.begin(), id.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// The audit reference of a sent group text: a hash of its ciphertext (the 1:1 path uses the deposit id,
// which here differs per member).
std::string MessageRef(const session::Ciphertext& c) {
  std::array<uint8_t, 16> h{};
  crypto_generichash(h.data(), h.size(), c.body.data(), c.body.size(), nullptr, 0);
  return ToHex(h);
}

}  // namespace

GroupRuntime::GroupRuntime(Deps deps) : deps_(std::move(deps)) {}

Result<std::optional<GroupRuntime::Record>> GroupRuntime::ReadRecord(const std::string& group_id) {
  CW_ASSIGN_OR_RETURN(auto v, deps_.store->Get(Table::kMeta, std::string(kGroupRecordPrefix) + group_id));
  if (!v) return std::optional<Record>();
  json j = json::parse(v->reveal().begin(), v->reveal().end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.value("v", 0) != 1 || !j.contains("label") || !j["label"].is_string() ||
      !j.contains("admin") || !j["admin"].is_string() || !j.contains("active") || !j["active"].is_boolean()) {
    return Error(StatusCode::kMalformed, "group record is malformed");
  }
  return std::optional<Record>(Record{j["label"].get<std::string>(), j["admin"].get<std::string>(), j["active"].get<bool>()});
}

session::Write GroupRuntime::RecordWrite(const std::string& group_id, const Record& r) {
  std::string text = json{{"v", 1}, {"label", r.label}, {"admin", r.admin}, {"active", r.active}}.dump();
  SecretBytes value(AsBytes(text));
  sodium_memzero(text.data(), text.size());
  return session::Write{Table::kMeta, std::string(kGroupRecordPrefix) + group_id, std::move(value)};
}

Status GroupRuntime::StageControl(const session::Outgoing& o, session::WriteBatch* batch,
                                  std::vector<std::pair<std::string, uint64_t>>* queued) {
  const std::string conv = ControlConversationId(o.to.name);
  uint64_t seq = 0;
  CW_RETURN_IF_ERROR(
      deps_.transcripts->StageOutgoing(conv, AsBytes(kGroupControlLabel), {}, {o.to}, o.message, batch, &seq));
  queued->emplace_back(conv, seq);
  return Status::Ok();
}

Status GroupRuntime::CheckMember(const std::string& member) {
  if (!wire::IsValidName(member)) return Status(StatusCode::kInvalidArgument, "invalid member name");
  if (member == deps_.local_name) return Status(StatusCode::kInvalidArgument, "the creator is a member already");
  if (!deps_.reachable(member)) return Status(StatusCode::kNotFound, "a member is not a reachable contact");
  if (!deps_.engine->HasSession(session::Address{member, 1})) {
    return Status(StatusCode::kNoSession, "a member has no 1:1 session with this device yet");
  }
  return Status::Ok();
}

// Runs a membership change with a hook that stages its outputs and, when given, the group record, so all of
// it commits with the engine's state; then hands the outbox entries to the client.
Result<GroupChange> GroupRuntime::Apply(
    const std::string& group_id,
    const std::function<Result<session::GroupDelivery>(const session::Engine::GroupHook&)>& change,
    const std::optional<Record>& record) {
  std::vector<std::pair<std::string, uint64_t>> queued;
  auto delivery = change([&](const session::GroupDelivery& d, session::WriteBatch* b) -> Status {
    for (const auto& o : d.messages) CW_RETURN_IF_ERROR(StageControl(o, b, &queued));
    if (record) b->writes.push_back(RecordWrite(group_id, *record));
    return Status::Ok();
  });
  if (!delivery) return Error(delivery.error());
  for (const auto& [conv, seq] : queued) deps_.queued(conv, seq);
  return GroupChange{group_id, Names(delivery->missing_sessions), Names(delivery->untrusted_members),
                     Names(delivery->unvouched_members)};
}

Result<GroupChange> GroupRuntime::Create(const std::string& label, const std::vector<std::string>& members) {
  if (label.empty() || label.size() > kMaxGroupLabelSize || label.find('\0') != std::string::npos) {
    return Error(StatusCode::kInvalidArgument, "a group label is 1 to 128 bytes with no NUL");
  }
  if (members.empty()) return Error(StatusCode::kInvalidArgument, "a group needs at least one other member");
  for (const auto& m : members) CW_RETURN_IF_ERROR(CheckMember(m));
  const std::string id = deps_.engine->NewGroupId();
  return Apply(
      id, [&](const session::Engine::GroupHook& hook) { return deps_.engine->CreateGroup(id, members, hook); },
      Record{label, deps_.local_name, true});
}

Result<GroupChange> GroupRuntime::Add(const std::string& group_id, const std::string& member) {
  if (!LooksLikeGroupId(group_id)) return Error(StatusCode::kNotFound, "no such group");
  CW_RETURN_IF_ERROR(CheckMember(member));
  return Apply(
      group_id,
      [&](const session::Engine::GroupHook& hook) { return deps_.engine->AddGroupMember(group_id, member, hook); },
      std::nullopt);
}

Result<GroupChange> GroupRuntime::Remove(const std::string& group_id, const std::string& member) {
  if (!LooksLikeGroupId(group_id)) return Error(StatusCode::kNotFound, "no such group");
  // No reachability check: a removal must take effect even for a member we can no longer write to.
  return Apply(
      group_id,
      [&](const session::Engine::GroupHook& hook) { return deps_.engine->RemoveGroupMember(group_id, member, hook); },
      std::nullopt);
}

Status GroupRuntime::CatchUp(const std::string& contact) {
  auto caught_up = Apply(
      "", [&](const session::Engine::GroupHook& hook) { return deps_.engine->CatchUpGroups(contact, hook); },
      std::nullopt);
  if (!caught_up) return caught_up.error();
  if (!caught_up->unvouched_members.empty() && deps_.report) {
    deps_.report(
        Status(StatusCode::kUntrustedIdentity,
               "a contact's identity key is not the one a group's admin lists for that member: it was "
               "sent nothing of the group (compare safety numbers)"));
  }
  return Status::Ok();
}

Result<uint64_t> GroupRuntime::SendText(const std::string& group_id, const std::string& text,
                                        const std::string& purpose) {
  if (!LooksLikeGroupId(group_id)) return Error(StatusCode::kNotFound, "no such group");
  CW_ASSIGN_OR_RETURN(std::vector<std::string> members, deps_.engine->GroupMembers(group_id));
  // One member without consent stops the message for everyone: a group text is one ciphertext, and sending it
  // to some members only would show each a different conversation.
  std::vector<session::Address> recipients;
  for (const auto& m : members) {
    if (m == deps_.local_name) continue;
    CW_RETURN_IF_ERROR(deps_.compliance->CheckOutgoing(m, purpose));
    // A member who is not our contact cannot be written to, and has not got our sender key either.
    if (deps_.reachable(m)) recipients.push_back(session::Address{m, 1});
  }
  wire::AppMessage app;
  app.kind = wire::AppKind::kText;
  app.purpose = purpose;
  app.payload = SecretBytes(AsBytes(text));
  CW_ASSIGN_OR_RETURN(SecretBytes plaintext, wire::EncodeAppMessage(app));
  const std::string conv = storage::Transcripts::GroupConversationId(group_id);
  uint64_t seq = 0;
  auto c = deps_.engine->GroupEncrypt(group_id, plaintext.reveal(),
                                      [&](const session::Ciphertext& ct, session::WriteBatch* b) -> Status {
                                        CW_RETURN_IF_ERROR(deps_.transcripts->StageOutgoing(
                                            conv, app.payload.reveal(), {}, recipients, ct, b, &seq));
                                        return deps_.compliance->StageSent(conv, MessageRef(ct), b);
                                      });
  deps_.compliance->AfterCommit(c.has_value());
  if (!c) return Error(c.error());
  deps_.queued(conv, seq);
  return seq;
}

Result<std::vector<std::string>> GroupRuntime::Members(const std::string& group_id) {
  if (!LooksLikeGroupId(group_id)) return Error(StatusCode::kNotFound, "no such group");
  return deps_.engine->GroupMembers(group_id);
}

Result<std::vector<GroupInfo>> GroupRuntime::List() {
  CW_ASSIGN_OR_RETURN(auto keys, deps_.store->ListKeys(Table::kMeta, kGroupRecordPrefix));
  std::vector<GroupInfo> out;
  for (const auto& k : keys) {
    GroupInfo info;
    info.id = k.substr(kGroupRecordPrefix.size());
    CW_ASSIGN_OR_RETURN(auto rec, ReadRecord(info.id));
    if (!rec) continue;
    info.label = rec->label;
    info.admin = rec->admin;
    info.active = rec->active;
    if (rec->active) {
      auto members = deps_.engine->GroupMembers(info.id);
      if (members) {
        info.members = std::move(*members);
      } else if (members.error().code() == StatusCode::kNotFound) {
        info.active = false;
      } else {
        return Error(members.error());
      }
    }
    out.push_back(std::move(info));
  }
  return out;
}

Result<std::vector<storage::TranscriptMessage>> GroupRuntime::History(const std::string& group_id, size_t n) {
  if (!LooksLikeGroupId(group_id)) return Error(StatusCode::kNotFound, "no such group");
  CW_ASSIGN_OR_RETURN(auto rec, ReadRecord(group_id));
  if (!rec) return Error(StatusCode::kNotFound, "no such group");
  return deps_.transcripts->Latest(storage::Transcripts::GroupConversationId(group_id), n);
}

Status GroupRuntime::StageIncoming(const session::Received& rec, const std::string& relay_id,
                                   const storage::IncomingDetails& details, session::WriteBatch* batch,
                                   Incoming* out) {
  out->group_id = rec.group_id;
  if (rec.kind == session::Received::Kind::kGroupMessage) {
    // Consent, withdrawal, audit heads and erasure concern one contact: they travel 1:1, never to a group.
    CW_ASSIGN_OR_RETURN(wire::AppMessage app, wire::DecodeAppMessage(rec.body.reveal()));
    if (app.kind != wire::AppKind::kText) {
      return Status(StatusCode::kMalformed, "a group message of a kind groups do not carry");
    }
    std::optional<wire::AttachmentDescriptor> file;
    std::optional<wire::AppMessage> control;
    storage::IncomingDetails in_group = details.Clone();
    in_group.conversation_id = storage::Transcripts::GroupConversationId(rec.group_id);
    // A text stages no inbox record, so no deposit token is needed.
    CW_RETURN_IF_ERROR(deps_.compliance->StageIncoming(rec, relay_id, {}, in_group, batch, &out->sequence,
                                                       &out->text, &file, &control, &out->refused));
    out->shown = !out->refused;
    return Status::Ok();
  }
  // A membership update or a sender key: only the dedup key in the transcripts.
  CW_RETURN_IF_ERROR(deps_.transcripts->StageIncoming(rec, relay_id, batch, details));
  out->keys_changed = true;
  if (rec.kind == session::Received::Kind::kGroupMembers) {
    const bool member = std::find(rec.members.begin(), rec.members.end(), deps_.local_name) != rec.members.end();
    CW_ASSIGN_OR_RETURN(auto known, ReadRecord(rec.group_id));
    // The engine accepted the update, so its sender is the group's admin.
    Record next = known.value_or(Record{"", rec.sender.name, member});
    if (!known || next.active != member) {
      next.active = member;
      batch->writes.push_back(RecordWrite(rec.group_id, next));
    }
  }
  for (const auto& o : rec.replies) CW_RETURN_IF_ERROR(StageControl(o, batch, &out->queued));
  out->missing_sessions = rec.missing_sessions.size();
  out->untrusted_members = rec.untrusted_members.size();
  out->unvouched_members = rec.unvouched_members.size();
  return Status::Ok();
}

void GroupRuntime::AfterCommit(bool committed, const Incoming& in) {
  if (!committed) return;
  for (const auto& [conv, seq] : in.queued) deps_.queued(conv, seq);
  if (in.missing_sessions > 0) {
    deps_.report(Status(StatusCode::kNoSession, "group " + in.group_id + ": " + std::to_string(in.missing_sessions) +
                                                    " member(s) have no 1:1 session with this device and cannot "
                                                    "read what it sends to the group until they are contacts"));
  }
  if (in.unvouched_members > 0) {
    deps_.report(
        Status(StatusCode::kUntrustedIdentity,
               "group " + in.group_id + ": " + std::to_string(in.unvouched_members) +
                   " member(s) write to this device under another identity key than the group's admin "
                   "lists for them, and were sent nothing"));
  }
  if (in.untrusted_members > 0) {
    deps_.report(Status(StatusCode::kUntrustedIdentity,
                        "group " + in.group_id + ": " + std::to_string(in.untrusted_members) +
                            " member(s) await acceptance of a changed identity; the group's keys went to the "
                            "identity still trusted"));
  }
  if (in.keys_changed && !held_.empty()) {
    // Each is tried again and held again if it still cannot be read.
    const bool refetch = std::exchange(held_without_copy_, false);
    held_.clear();
    held_per_sender_.clear();
    held_bytes_ = 0;
    deps_.retry_held(refetch);
  }
}

GroupRuntime::HoldResult GroupRuntime::Hold(const session::Ciphertext& message, StatusCode code,
                                            const std::string& sender, const std::string& relay_id,
                                            size_t envelope_size) {
  // A group text before its sender's key (kNoSession) or before the membership naming its sender
  // (kPermissionDenied); a sender key or membership update inside a 1:1 message before the admin's update that
  // makes its sender a member (kPermissionDenied). Anything else that fails is not a matter of order.
  const bool group_text = message.type == session::MessageType::kSenderKey &&
                          (code == StatusCode::kNoSession || code == StatusCode::kPermissionDenied);
  const bool pairwise = (message.type == session::MessageType::kSignal || message.type == session::MessageType::kPreKey) &&
                        code == StatusCode::kPermissionDenied;
  if (!group_text && !pairwise) return HoldResult::kDrop;
  if (auto it = held_.find(relay_id); it != held_.end()) {
    return it->second > 0 ? HoldResult::kKeepCopy : HoldResult::kLeaveAtRelay;
  }
  size_t& from_sender = held_per_sender_[sender];
  if (held_.size() >= kMaxHeldMessages || from_sender >= kMaxHeldPerSender) {
    if (deps_.report) {
      deps_.report(Status(code,
                          "a group message that may have come before its key was dropped: too many were "
                          "waiting for keys"));
    }
    return HoldResult::kDrop;
  }
  ++from_sender;
  if (envelope_size == 0 || envelope_size > kMaxHeldBytes - held_bytes_) {
    held_.emplace(relay_id, 0);
    held_without_copy_ = true;
    return HoldResult::kLeaveAtRelay;
  }
  held_.emplace(relay_id, envelope_size);
  held_bytes_ += envelope_size;
  return HoldResult::kKeepCopy;
}

}  // namespace cw::runtime
