// GroupRuntime: the client runtime's care-team groups (issue 5) over the engine's sender-key groups
// (core/session/engine.h, "Care-team groups").
//
// What it adds to the engine: every engine output (the membership and sender keys of CreateGroup,
// AddGroupMember and RemoveGroupMember, and the Received::replies of a membership update) becomes one outbox
// entry per member, staged through the engine's hook so that it commits with the ratchet step that built it;
// a group text is one GroupEncrypt whose single ciphertext goes into one outbox entry listing every other
// member (the client deposits one envelope per member); received group texts are consent-gated and audited
// through ComplianceRuntime like 1:1 texts, and land in the group's transcript conversation
// (storage::Transcripts::GroupConversationId).
//
// Ordering: membership and sender keys travel in each member's control conversation ("ctl:" + name), whose
// outbox entries sort before every "group:" entry, so a member's mailbox gets a sender key before the group
// text that needs it. A sender key or group text that still arrives too early (a member's key that overtook
// the admin's membership update, from another device) is left at the relay (Hold): not acknowledged, so a
// restart fetches it again; meanwhile the client keeps the copy it got and hands it back to the receive path
// once a membership update or sender key has been stored (Deps::retry_held). Past the byte cap on those
// copies a message is still left at the relay, without a copy: the retry fetches it again.
//
// Order is kept per conversation only: a failed deposit holds back its own conversation (client.cc,
// FlushOutbox), so a text can still overtake a member's sender key when only the key's deposit failed; Hold
// and the retry are what make that harmless.
//
// Records: "runtime.group.<group id>" in the engine's kMeta table: the label (on the creating device only),
// the admin, and whether we are still a member. The engine keeps the membership itself.
//
// Thread rules: the engine's owner thread only (the client's loop thread), like ComplianceRuntime.
// StageIncoming runs inside the engine's decrypt hook and only adds writes to the batch; everything else
// calls the engine and must not. Ownership: every pointer in Deps is borrowed and must outlive this object.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/runtime/client.h"
#include "core/runtime/compliance_runtime.h"
#include "core/session/engine.h"
#include "storage/transcript.h"

namespace cw::runtime {

inline constexpr std::string_view kGroupRecordPrefix = "runtime.group.";
inline constexpr size_t kMaxGroupLabelSize = 128;
// Undecryptable group traffic left at the relay for a later attempt: at most this many messages between two
// retries (past that they are dropped like any other message that cannot be decrypted, so a hostile sender
// cannot make every fetch hand out the same junk), and copies of at most this many envelope bytes (past that a
// message stays at the relay without a copy, and the retry fetches it).
inline constexpr size_t kMaxHeldMessages = 256;
// And at most this many from one sender: found in review, one contact's junk (group messages that can never
// be read) could fill the whole hold for the relay's 30 days, so that another member's real early message was
// then dropped.
inline constexpr size_t kMaxHeldPerSender = 64;
inline constexpr size_t kMaxHeldBytes = 2 * 1024 * 1024;

class GroupRuntime {
 public:
  struct Deps {
    session::ProtocolStore* store = nullptr;
    session::Engine* engine = nullptr;
    storage::Transcripts* transcripts = nullptr;
    ComplianceRuntime* compliance = nullptr;
    std::string local_name;
    // True when `contact` is a contact whose mailbox we know.
    std::function<bool(const std::string& contact)> reachable;
    // An outbox entry was committed (by the store's last commit): deliver it once that commit is durable.
    std::function<void(const std::string& conversation_id, uint64_t sequence)> queued;
    // Try the held messages again, from the copies the client kept (Hold: kKeepCopy), and with `refetch`
    // fetch again too, for those left at the relay without one (kLeaveAtRelay). Called from AfterCommit,
    // that is from inside the receive path: the client must not re-enter it from this call.
    std::function<void(bool refetch)> retry_held;
    // Background problems. No plaintext, no member name.
    std::function<void(const Status&)> report;
  };

  // What StageIncoming prepared, for AfterCommit and the client's callbacks.
  struct Incoming {
    bool shown = false;    // a group text stored in the transcript (sequence, text set)
    bool refused = false;  // a group text refused for lack of consent
    uint64_t sequence = 0;
    SecretBytes text;
    bool keys_changed = false;  // a membership update or sender key was stored
    std::string group_id;
    size_t missing_sessions = 0;
    size_t untrusted_members = 0;
    size_t unvouched_members = 0;
    std::vector<std::pair<std::string, uint64_t>> queued;  // outbox entries staged (conversation, sequence)
  };

  explicit GroupRuntime(Deps deps);

  // --- Client API (see client.h) ---
  Result<GroupChange> Create(const std::string& label, const std::vector<std::string>& members);
  Result<GroupChange> Add(const std::string& group_id, const std::string& member);
  Result<GroupChange> Remove(const std::string& group_id, const std::string& member);
  Result<uint64_t> SendText(const std::string& group_id, const std::string& text, const std::string& purpose);
  Result<std::vector<std::string>> Members(const std::string& group_id);
  Result<std::vector<GroupInfo>> List();
  Result<std::vector<storage::TranscriptMessage>> History(const std::string& group_id, size_t n);
  // Engine::CatchUpGroups for `contact`, whose key the user vouched for (the client decides when): our
  // sender key for every group we share, and the membership of those we administer, queued like a
  // membership change's messages.
  Status CatchUp(const std::string& contact);

  // --- The receive path ---
  // Inside the decrypt hook of a group kind (kGroupMessage, kGroupMembers, kSenderKey): stages the dedup key
  // and, for a text, its row and audit entry (ComplianceRuntime::StageIncoming); for a membership update, the
  // group record and one outbox entry per reply. kMalformed for a group message that is not a text.
  Status StageIncoming(const session::Received& rec, const std::string& relay_id,
                       const storage::IncomingDetails& details, session::WriteBatch* batch, Incoming* out);
  // After the hook's batch committed (or did not): delivers the staged replies, reports members that could
  // not be reached, and has the held messages tried again when keys changed.
  void AfterCommit(bool committed, const Incoming& in);
  // A message from the relay failed to decrypt with `code`. Group traffic that may have arrived before the
  // membership or sender key it needs is left at the relay (not acknowledged) and the client keeps its copy,
  // `envelope_size` bytes, for retry_held (kKeepCopy), or past the byte cap keeps none (kLeaveAtRelay);
  // anything else, or past the message caps (all senders', and `sender`'s own), is dropped (kDrop:
  // acknowledged). A message already held is held again the same way.
  enum class HoldResult { kDrop, kKeepCopy, kLeaveAtRelay };
  HoldResult Hold(const session::Ciphertext& message, StatusCode code, const std::string& sender,
                  const std::string& relay_id, size_t envelope_size);

 private:
  struct Record {
    std::string label;
    std::string admin;
    bool active = true;
  };
  Result<std::optional<Record>> ReadRecord(const std::string& group_id);
  static session::Write RecordWrite(const std::string& group_id, const Record& r);
  // Stages one engine output as an outbox entry of the recipient's control conversation.
  Status StageControl(const session::Outgoing& o, session::WriteBatch* batch,
                      std::vector<std::pair<std::string, uint64_t>>* queued);
  Status CheckMember(const std::string& member);
  Result<GroupChange> Apply(const std::string& group_id,
                            const std::function<Result<session::GroupDelivery>(const session::Engine::GroupHook&)>& change,
                            const std::optional<Record>& record);

  Deps deps_;
  std::map<std::string, size_t> held_;  // relay id -> envelope size (0: no copy), held since the last retry
  std::map<std::string, size_t> held_per_sender_;  // sender -> how many of held_ are theirs
  size_t held_bytes_ = 0;
  bool held_without_copy_ = false;
};

}  // namespace cw::runtime
