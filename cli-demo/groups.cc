// The `group` commands (see groups.h).
#include "cli-demo/groups.h"

#include "core/runtime/compliance_types.h"

namespace cw::cli {

namespace {

using json = nlohmann::json;

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// Sends what the command queued; says whether it left the device.
json SyncNote(runtime::Client& c, const CliIo& io, std::string* human) {
  auto sync = c.Sync(io.timeout_ms);
  const bool sent = sync && sync->pending == 0;
  if (!sent) {
    *human += "\nQueued: the relay is unreachable (" + (sync ? std::string("messages pending") : sync.error().message()) +
              "); it goes out with the next command that reaches the relay.";
  }
  return json{{"status", sent ? "sent" : "queued"}, {"error", sync ? "" : sync.error().message()}};
}

int ChangeResult(runtime::Client& c, const CliIo& io, const runtime::GroupChange& change, const std::string& what) {
  std::string human = what + " (group " + change.group_id + ").";
  if (!change.missing_sessions.empty()) {
    human += "\nNo 1:1 session with " + Join(change.missing_sessions) +
             ": they got nothing yet, and are caught up once they are contacts under the key the group's "
             "admin lists.";
  }
  if (!change.unvouched_members.empty()) {
    human += "\nNot the key the group's admin lists for " + Join(change.unvouched_members) +
             ": they got nothing; compare safety numbers with them (`verify`).";
  }
  if (!change.untrusted_members.empty()) {
    human += "\nIdentity change awaiting acceptance for " + Join(change.untrusted_members) +
             ": the change went to the key you trust; check it with them (`verify`).";
  }
  json j = SyncNote(c, io, &human);
  j["group"] = change.group_id;
  j["missing_sessions"] = change.missing_sessions;
  j["untrusted_members"] = change.untrusted_members;
  j["unvouched_members"] = change.unvouched_members;
  auto members = c.GroupMembers(change.group_id);
  j["members"] = members ? *members : std::vector<std::string>{};
  io.print(j, human);
  return 0;
}

}  // namespace

GroupCommands::GroupCommands(CLI::App& app) {
  purpose_ = std::string(runtime::kDefaultPurpose);
  group_ = app.add_subcommand("group", "care-team groups: create, add, remove, send, list, history");
  group_->require_subcommand(1);
  create_ = group_->add_subcommand("create", "create a group you administer, with contacts as members");
  create_->add_option("label", label_, "a name for the group (kept on this device)")->required();
  create_->add_option("members", members_, "contacts to add")->required();
  add_ = group_->add_subcommand("add", "add a contact to a group you administer");
  add_->add_option("group", group_id_)->required();
  add_->add_option("member", member_)->required();
  remove_ = group_->add_subcommand("remove", "remove a member from a group you administer (rotates the group's keys)");
  remove_->add_option("group", group_id_)->required();
  remove_->add_option("member", member_)->required();
  send_ = group_->add_subcommand("send", "send a message to every member of a group");
  send_->add_option("group", group_id_)->required();
  send_->add_option("text", text_)->required();
  send_->add_option("--purpose", purpose_, "purpose label, checked against each member's consent")->capture_default_str();
  list_ = group_->add_subcommand("list", "the groups this device is or was in (fetches new messages first)");
  list_->add_flag("--offline", offline_, "do not contact the relay");
  history_ = group_->add_subcommand("history", "a group's conversation (fetches new messages first)");
  history_->add_option("group", group_id_)->required();
  history_->add_option("-n", n_, "how many messages")->capture_default_str();
  history_->add_flag("--offline", offline_, "do not contact the relay");
}

bool GroupCommands::parsed() const { return group_ && group_->parsed(); }

int GroupCommands::Run(const CliIo& io) {
  auto c = io.open();
  if (!c) return io.fail(c.error(), "open");
  runtime::Client& client = **c;
  if (create_->parsed()) {
    auto change = client.CreateGroup(label_, members_);
    if (!change) return io.fail(change.error(), "group create");
    return ChangeResult(client, io, *change, "Created \"" + label_ + "\" with " + Join(members_));
  }
  if (add_->parsed() || remove_->parsed()) {
    const bool adding = add_->parsed();
    auto change = adding ? client.AddGroupMember(group_id_, member_) : client.RemoveGroupMember(group_id_, member_);
    if (!change) return io.fail(change.error(), adding ? "group add" : "group remove");
    return ChangeResult(client, io, *change,
                        adding ? "Added " + member_ : "Removed " + member_ + "; the group's keys were rotated");
  }
  if (send_->parsed()) {
    auto seq = client.SendGroupText(group_id_, text_, purpose_);
    if (!seq) return io.fail(seq.error(), "group send");
    std::string queued;
    json j = SyncNote(client, io, &queued);
    const std::string human = j["status"] == "sent" ? "Sent to the group." : queued.substr(1);
    j["group"] = group_id_;
    j["sequence"] = *seq;
    io.print(j, human);
    return 0;
  }
  std::string note;
  if (!offline_) {
    auto sync = client.Sync(io.timeout_ms);
    if (!sync) note = "(relay unreachable: showing what is stored on this device)\n";
  }
  if (list_->parsed()) {
    auto groups = client.Groups();
    if (!groups) return io.fail(groups.error(), "group list");
    json arr = json::array();
    std::string human = note;
    for (const auto& gi : *groups) {
      arr.push_back(json{{"group", gi.id}, {"label", gi.label}, {"admin", gi.admin}, {"members", gi.members},
                         {"active", gi.active}});
      human += gi.id + "  " + (gi.label.empty() ? std::string("(no label)") : gi.label) + "  admin " + gi.admin +
               (gi.active ? "  members: " + Join(gi.members) : std::string("  (you were removed)")) + "\n";
    }
    if (groups->empty()) human += "No groups.";
    io.print(json{{"groups", arr}}, human);
    return 0;
  }
  auto h = client.GroupHistory(group_id_, n_);
  if (!h) return io.fail(h.error(), "group history");
  json arr = json::array();
  std::string human = note;
  for (const auto& m : *h) {
    arr.push_back(io.message_json(m));
    human += io.message_line(m) + "\n";
  }
  if (h->empty()) human += "No messages in this group.";
  io.print(json{{"group", group_id_}, {"messages", arr}}, human);
  return 0;
}

}  // namespace cw::cli
