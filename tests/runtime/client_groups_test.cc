// Care-team groups end to end over a real relay (core/runtime/client_groups.h): a group of four where
// everyone sends and everyone receives each message exactly once, a removal after which the removed member
// gets nothing while the others rotate and keep talking, a member that restarts and loses nothing, texts
// that overtake the keys they need and are read once the keys arrive, and the errors for bad input.
#include "core/runtime/client_groups.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/runtime/client.h"
#include "tests/runtime/runtime_test_util.h"

namespace cw::runtime {
namespace {

using testing::TempDir;
using testing::TestRelay;

using testing::kPass;

using testing::Text;


// What one client's callbacks saw: group texts by sender, in arrival order.
struct Inbox {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<std::string, std::string>> group_texts;  // (group id, "sender: text")
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu);
    return group_texts.size();
  }
};

class GroupE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    relay_ = std::make_unique<TestRelay>(dir_.Sub("relay"));
    ASSERT_OK(relay_->Start());
  }

  ClientOptions Options(const std::string& name) {
    ClientOptions o;
    o.keystore = storage::KeystoreOptions::MinimumCostForTesting();
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 200;
    Inbox* inbox = &inboxes_[name];
    o.callbacks.on_message = [inbox](const IncomingMessage& m) {
      if (m.group_id.empty()) return;
      std::lock_guard<std::mutex> lock(inbox->mu);
      inbox->group_texts.emplace_back(m.group_id, m.contact + ": " + Text(m.text));
      inbox->cv.notify_all();
    };
    return o;
  }

  Client* Add(const std::string& name) {
    auto c = Client::Create(dir_.Sub(name), name, kPass, Options(name));
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    if (!c) return nullptr;
    EXPECT_TRUE((*c)->Register(relay_->address()).ok());
    clients_[name] = std::move(*c);
    return clients_[name].get();
  }
  void Restart(const std::string& name) {
    clients_[name].reset();
    auto c = Client::Open(dir_.Sub(name), kPass, Options(name));
    ASSERT_HAS(c);
    clients_[name] = std::move(*c);
  }
  Client& C(const std::string& name) { return *clients_.at(name); }

  // `a` invites `b`; once `a` has b's first message, each can write to the other.
  void Befriend(const std::string& a, const std::string& b) {
    auto code = C(a).CreateInvite();
    ASSERT_HAS(code);
    ASSERT_HAS(C(b).AcceptInvite(*code, "hi " + a));
    ASSERT_HAS(C(a).Sync());
  }

  // Everyone syncs, a few rounds: what one round's fetch queues (sender keys answering a membership) goes
  // out in that round's flush and is read in the next.
  void SyncAll(int rounds = 3) {
    for (int i = 0; i < rounds; ++i) {
      for (auto& [name, c] : clients_) {
        if (c) ASSERT_HAS(c->Sync());
      }
    }
  }

  // `name`'s phone is replaced by a new one: a new identity under the same name, registered, no contacts.
  void NewPhone(const std::string& name) {
    clients_[name].reset();
    auto phone = Client::Create(dir_.Sub(name + "-phone2"), name, kPass, Options(name));
    ASSERT_HAS(phone);
    ASSERT_OK((*phone)->Register(relay_->address()));
    clients_[name] = std::move(*phone);
  }

  // Four clients that are all contacts of each other, and a group of them created by "lead".
  std::string MakeWard() {
    for (const auto* n : {"lead", "ana", "ben", "cyd"}) {
      if (!Add(n)) return "";
    }
    const std::vector<std::string> names{"lead", "ana", "ben", "cyd"};
    for (size_t i = 0; i < names.size(); ++i) {
      for (size_t j = i + 1; j < names.size(); ++j) Befriend(names[i], names[j]);
    }
    auto g = C("lead").CreateGroup("ward 7", {"ana", "ben", "cyd"});
    EXPECT_TRUE(g.has_value()) << g.error().ToString();
    if (!g) return "";
    EXPECT_TRUE(g->missing_sessions.empty());
    EXPECT_TRUE(g->untrusted_members.empty());
    return g->group_id;
  }

  std::vector<std::string> GroupBodies(const std::string& name, const std::string& group) {
    auto h = C(name).GroupHistory(group);
    EXPECT_TRUE(h.has_value()) << h.error().ToString();
    std::vector<std::string> out;
    if (h) {
      for (const auto& m : *h) out.push_back(m.sender + ": " + Text(m.body));
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::vector<std::string> Received(const std::string& name) {
    Inbox& in = inboxes_[name];
    std::lock_guard<std::mutex> lock(in.mu);
    std::vector<std::string> out;
    for (const auto& [g, t] : in.group_texts) out.push_back(t);
    std::sort(out.begin(), out.end());
    return out;
  }

  TempDir dir_;
  std::unique_ptr<TestRelay> relay_;
  std::map<std::string, Inbox> inboxes_;  // before clients_: callbacks may run until a client is gone
  std::map<std::string, std::unique_ptr<Client>> clients_;
};

TEST_F(GroupE2E, GroupOfFourEveryoneSendsAndEveryoneReceivesEachMessageOnce) {
  const std::string g = MakeWard();
  ASSERT_FALSE(g.empty());
  // Pushed delivery, as in the app: every client keeps its link open.
  for (auto& [name, c] : clients_) ASSERT_OK(c->StartBackground());
  SyncAll(2);  // the membership and every member's sender key reach everyone
  const std::vector<std::string> names{"lead", "ana", "ben", "cyd"};
  for (const auto& n : names) ASSERT_HAS(C(n).SendGroupText(g, "from " + n));
  std::vector<std::string> all;
  for (const auto& n : names) all.push_back(n + ": from " + n);
  std::sort(all.begin(), all.end());
  for (const auto& n : names) {
    Inbox& in = inboxes_[n];
    EXPECT_TRUE(testing::WaitFor(in.mu, in.cv, [&] { return in.group_texts.size() >= 3; })) << n;
  }
  SyncAll(2);  // anything still in flight is stored now; nothing may arrive twice
  for (const auto& n : names) {
    std::vector<std::string> others;
    for (const auto& t : all) {
      if (t.rfind(n + ": ", 0) != 0) others.push_back(t);
    }
    EXPECT_EQ(Received(n), others) << n;  // each other member's message once, on_message with the group id
    EXPECT_EQ(GroupBodies(n, g), all) << n;
    for (const auto& [group, t] : inboxes_[n].group_texts) EXPECT_EQ(group, g);
    // Group texts are not 1:1 texts: the lead's conversation with ana holds only the invitation greeting.
    if (n != "lead") {
      auto dm = C(n).History("lead");
      ASSERT_HAS(dm);
      for (const auto& m : *dm) EXPECT_EQ(Text(m.body).rfind("hi ", 0), 0u) << n;
    }
    auto pending = C(n).PendingOutboxCount();
    ASSERT_HAS(pending);
    EXPECT_EQ(*pending, 0u) << n;
  }
  auto lead_groups = C("lead").Groups();
  ASSERT_HAS(lead_groups);
  ASSERT_EQ(lead_groups->size(), 1u);
  EXPECT_EQ((*lead_groups)[0].label, "ward 7");
  EXPECT_EQ((*lead_groups)[0].admin, "lead");
  EXPECT_EQ((*lead_groups)[0].members, (std::vector<std::string>{"ana", "ben", "cyd", "lead"}));
  auto ana_groups = C("ana").Groups();
  ASSERT_HAS(ana_groups);
  ASSERT_EQ(ana_groups->size(), 1u);
  EXPECT_EQ((*ana_groups)[0].id, g);
  EXPECT_EQ((*ana_groups)[0].admin, "lead");
  EXPECT_TRUE((*ana_groups)[0].active);
  EXPECT_EQ((*ana_groups)[0].members, (std::vector<std::string>{"ana", "ben", "cyd", "lead"}));
}

TEST_F(GroupE2E, MembersThatWriteAsSoonAsTheyJoinLoseNothing) {
  // Every client is linked and pushed to before the group exists and writes the moment it learns of it, so
  // the membership update, the members' sender keys and their first texts are all in flight at once. (Pushes
  // from different senders are not ordered, so a key or text often overtakes the update; it is held and read
  // once the update is stored: GroupRuntime::Hold, and GroupE2EWithheld below makes that order certain.)
  for (const auto* n : {"lead", "ana", "ben", "cyd"}) ASSERT_TRUE(Add(n));
  const std::vector<std::string> names{"lead", "ana", "ben", "cyd"};
  for (size_t i = 0; i < names.size(); ++i) {
    for (size_t j = i + 1; j < names.size(); ++j) Befriend(names[i], names[j]);
  }
  for (auto& [name, c] : clients_) ASSERT_OK(c->StartBackground());
  auto created = C("lead").CreateGroup("ward 7", {"ana", "ben", "cyd"});
  ASSERT_HAS(created);
  const std::string g = created->group_id;
  std::vector<std::thread> writers;
  for (const auto* n : {"ana", "ben", "cyd"}) {
    writers.emplace_back([this, n, g] {
      for (int i = 0; i < 30000; ++i) {  // bounded like WaitFor: a safety net, not a deadline
        auto groups = C(n).Groups();
        if (groups && !groups->empty()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      auto sent = C(n).SendGroupText(g, std::string("from ") + n);
      EXPECT_TRUE(sent.has_value()) << n << ": " << sent.error().ToString();
    });
  }
  ASSERT_HAS(C("lead").SendGroupText(g, "from lead"));
  for (auto& t : writers) t.join();
  for (const auto& n : names) {
    Inbox& in = inboxes_[n];
    EXPECT_TRUE(testing::WaitFor(in.mu, in.cv, [&] { return in.group_texts.size() >= 3; })) << n;
  }
  SyncAll(2);
  for (const auto& n : names) {
    std::vector<std::string> others;
    for (const auto& m : names) {
      if (m != n) others.push_back(m + ": from " + m);
    }
    std::sort(others.begin(), others.end());
    EXPECT_EQ(Received(n), others) << n;
  }
}

TEST_F(GroupE2E, RemovedMemberGetsNothingAfterRemovalAndTheOthersRotateAndGoOn) {
  const std::string g = MakeWard();
  ASSERT_FALSE(g.empty());
  SyncAll();
  ASSERT_HAS(C("ben").SendGroupText(g, "before"));
  SyncAll();
  EXPECT_EQ(Received("cyd"), (std::vector<std::string>{"ben: before"}));

  auto removed = C("lead").RemoveGroupMember(g, "cyd");
  ASSERT_HAS(removed);
  SyncAll();
  auto members = C("ana").GroupMembers(g);
  ASSERT_HAS(members);
  EXPECT_EQ(*members, (std::vector<std::string>{"ana", "ben", "lead"}));
  auto cyd_groups = C("cyd").Groups();
  ASSERT_HAS(cyd_groups);
  ASSERT_EQ(cyd_groups->size(), 1u);
  EXPECT_FALSE((*cyd_groups)[0].active);
  EXPECT_TRUE((*cyd_groups)[0].members.empty());
  // The removed member's device forgot the group: it cannot post to it either.
  EXPECT_EQ(C("cyd").SendGroupText(g, "still here?").error().code(), StatusCode::kNotFound);

  for (const auto* n : {"lead", "ana", "ben"}) ASSERT_HAS(C(n).SendGroupText(g, std::string("after from ") + n));
  SyncAll();
  // Every remaining member reads the others' messages, sent under rotated sender keys...
  EXPECT_EQ(Received("ana"), (std::vector<std::string>{"ben: after from ben", "ben: before", "lead: after from lead"}));
  EXPECT_EQ(Received("ben"), (std::vector<std::string>{"ana: after from ana", "lead: after from lead"}));
  EXPECT_EQ(Received("lead"), (std::vector<std::string>{"ana: after from ana", "ben: after from ben", "ben: before"}));
  // ...and the removed member got nothing: no callback, no row, and nothing waits for it at the relay.
  EXPECT_EQ(Received("cyd"), (std::vector<std::string>{"ben: before"}));
  EXPECT_EQ(GroupBodies("cyd", g), (std::vector<std::string>{"ben: before"}));
  auto peek = C("cyd").PeekRelay();
  ASSERT_HAS(peek);
  EXPECT_TRUE(peek->empty());
  // Only the admin changes membership.
  EXPECT_EQ(C("ana").RemoveGroupMember(g, "ben").error().code(), StatusCode::kPermissionDenied);
}

TEST_F(GroupE2E, MembersWhoMeetAfterTheGroupWasMadeReadEachOtherOnceTheyAreContacts) {
  // The lead knows both; ana and ben meet only in the group, so neither could send the other its key then.
  for (const auto* n : {"lead", "ana", "ben"}) ASSERT_TRUE(Add(n));
  Befriend("lead", "ana");
  Befriend("lead", "ben");
  auto g = C("lead").CreateGroup("ward 9", {"ana", "ben"});
  ASSERT_HAS(g);
  SyncAll();
  ASSERT_HAS(C("ana").SendGroupText(g->group_id, "before we met"));
  SyncAll();
  EXPECT_TRUE(Received("ben").empty());

  // Once contacts, each catches the other up: the identity key each now has for the other is the one the
  // lead's roster lists, which vouches for it. (What was sent before stays unread: a sender key opens only
  // what its holder sends from then on.)
  Befriend("ana", "ben");
  SyncAll();
  ASSERT_HAS(C("ana").SendGroupText(g->group_id, "hello ben"));
  ASSERT_HAS(C("ben").SendGroupText(g->group_id, "hello ana"));
  SyncAll();
  EXPECT_EQ(Received("ben"), (std::vector<std::string>{"ana: hello ben"}));
  EXPECT_EQ(Received("ana"), (std::vector<std::string>{"ben: hello ana"}));
  EXPECT_EQ(Received("lead"),
            (std::vector<std::string>{"ana: before we met", "ana: hello ben", "ben: hello ana"}));
  for (const auto* n : {"ana", "ben"}) {  // nothing unreadable is left waiting at the relay
    auto peek = C(n).PeekRelay();
    ASSERT_HAS(peek);
    EXPECT_TRUE(peek->empty()) << n;
  }
}

TEST_F(GroupE2E, ANewContactUnderAMembersNameIsNotSentOurSenderKey) {
  // Found in review: ben never met cyd; someone else answers ben's invite under the name "cyd", and ben's
  // client used to send that stranger its key for the ward at once.
  for (const auto* n : {"lead", "ana", "ben", "cyd"}) ASSERT_TRUE(Add(n));
  Befriend("lead", "ana");
  Befriend("lead", "ben");
  Befriend("lead", "cyd");
  Befriend("ana", "ben");
  auto g = C("lead").CreateGroup("ward 9", {"ana", "ben", "cyd"});
  ASSERT_HAS(g);
  SyncAll();

  std::mutex mu;
  std::vector<std::string> impostor_errors;
  ClientOptions o = Options("impostor");
  o.callbacks.on_error = [&](const Status& s) {
    std::lock_guard<std::mutex> lock(mu);
    impostor_errors.push_back(s.ToString());
  };
  auto impostor = Client::Create(dir_.Sub("impostor"), "cyd", kPass, o);
  ASSERT_HAS(impostor);
  ASSERT_OK((*impostor)->Register(relay_->address()));
  auto code = C("ben").CreateInvite();
  ASSERT_HAS(code);
  ASSERT_HAS((*impostor)->AcceptInvite(*code, "hi ben, it's cyd"));
  ASSERT_HAS(C("ben").Sync());
  ASSERT_HAS((*impostor)->Sync());
  // Nor at the next membership change, when ben's key rotates and goes to every member he can reach: the
  // lead's roster lists cyd's key, not the impostor's (found in review: it went to whoever held the name).
  ASSERT_HAS(C("lead").RemoveGroupMember(g->group_id, "ana"));
  SyncAll();
  ASSERT_HAS((*impostor)->Sync());
  auto peek = (*impostor)->PeekRelay();
  ASSERT_HAS(peek);
  std::lock_guard<std::mutex> lock(mu);
  // The impostor's stock client would refuse a sender key from a group it is not in, and say so.
  for (const auto& e : impostor_errors) EXPECT_EQ(e.find("sender key"), std::string::npos) << e;
  EXPECT_TRUE(peek->empty()) << peek->size() << " message(s) from ben wait for the impostor";
}

TEST_F(GroupE2E, AMembersNewDeviceRejoinsItsGroupsOnceTheChangeIsAccepted) {
  const std::string g = MakeWard();
  ASSERT_FALSE(g.empty());
  SyncAll();
  // Ana's phone is lost; her new one starts from nothing, under the same name.
  ASSERT_NO_FATAL_FAILURE(NewPhone("ana"));
  // The lead and ben each invite the new phone and, having compared safety numbers, accept the change; the
  // new phone, which never met ben, verifies him.
  for (const auto* n : {"lead", "ben"}) {
    auto code = C(n).CreateInviteForNewDevice("ana");
    ASSERT_HAS(code);
    ASSERT_HAS(C("ana").AcceptInvite(*code, std::string("new phone, ") + n));
    ASSERT_HAS(C(n).Sync());
    ASSERT_OK(C(n).AcceptIdentityChange("ana"));
    SyncAll();
  }
  ASSERT_OK(C("ana").SetVerified("ben", true));
  SyncAll();
  auto groups = C("ana").Groups();
  ASSERT_HAS(groups);
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ((*groups)[0].id, g);
  EXPECT_EQ((*groups)[0].admin, "lead");
  EXPECT_TRUE((*groups)[0].active);
  EXPECT_EQ((*groups)[0].members, (std::vector<std::string>{"ana", "ben", "cyd", "lead"}));

  for (const auto* n : {"ana", "lead", "ben"}) ASSERT_HAS(C(n).SendGroupText(g, std::string("from ") + n));
  SyncAll();
  EXPECT_EQ(Received("ana"), (std::vector<std::string>{"ben: from ben", "lead: from lead"}));
  for (const auto* n : {"lead", "ben"}) {
    auto r = Received(n);
    EXPECT_EQ(std::count(r.begin(), r.end(), "ana: from ana"), 1) << n;
  }
}

TEST_F(GroupE2E, ANewDeviceRejoinsWhenAMemberAcceptsItBeforeTheAdmin) {
  const std::string g = MakeWard();
  ASSERT_FALSE(g.empty());
  SyncAll();
  // Ana's phone is lost; her new one starts from nothing, under the same name.
  ASSERT_NO_FATAL_FAILURE(NewPhone("ana"));
  // The order reversed: ben accepts the new phone before the admin lists its key, and the new phone
  // verifies nobody.
  for (const auto* n : {"ben", "lead"}) {
    auto code = C(n).CreateInviteForNewDevice("ana");
    ASSERT_HAS(code);
    ASSERT_HAS(C("ana").AcceptInvite(*code, std::string("new phone, ") + n));
    ASSERT_HAS(C(n).Sync());
    ASSERT_OK(C(n).AcceptIdentityChange("ana"));
    SyncAll();
  }
  SyncAll();
  auto groups = C("ana").Groups();
  ASSERT_HAS(groups);
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ((*groups)[0].id, g);
  EXPECT_EQ((*groups)[0].admin, "lead");
  EXPECT_TRUE((*groups)[0].active);
  EXPECT_EQ((*groups)[0].members, (std::vector<std::string>{"ana", "ben", "cyd", "lead"}));

  for (const auto* n : {"ana", "lead", "ben"}) ASSERT_HAS(C(n).SendGroupText(g, std::string("from ") + n));
  SyncAll();
  EXPECT_EQ(Received("ana"), (std::vector<std::string>{"ben: from ben", "lead: from lead"}));
  for (const auto* n : {"lead", "ben"}) {
    auto r = Received(n);
    EXPECT_EQ(std::count(r.begin(), r.end(), "ana: from ana"), 1) << n;
  }
}

TEST_F(GroupE2E, AMemberThatRestartsLosesNothing) {
  const std::string g = MakeWard();
  ASSERT_FALSE(g.empty());
  SyncAll();
  clients_["ben"].reset();  // ben's device is off while the others talk
  for (const auto* n : {"lead", "ana", "cyd"}) {
    for (int i = 0; i < 3; ++i) ASSERT_HAS(C(n).SendGroupText(g, n + std::string(" #") + std::to_string(i)));
  }
  SyncAll(2);
  Restart("ben");
  auto got = C("ben").Sync();
  ASSERT_HAS(got);
  EXPECT_EQ(got->received, 9u);
  SyncAll(2);
  EXPECT_EQ(Received("ben").size(), 9u);
  EXPECT_EQ(GroupBodies("ben", g).size(), 9u);
  // Its sender key survived the restart too: what it sends now reads everywhere.
  ASSERT_HAS(C("ben").SendGroupText(g, "back"));
  SyncAll(2);
  for (const auto* n : {"lead", "ana", "cyd"}) {
    auto r = Received(n);
    EXPECT_EQ(std::count(r.begin(), r.end(), "ben: back"), 1) << n;
  }
}

TEST_F(GroupE2E, BadInputGetsClearErrorsAndConsentGatesEveryMember) {
  const std::string g = MakeWard();
  ASSERT_FALSE(g.empty());
  SyncAll();
  Add("stranger");
  auto& lead = C("lead");
  EXPECT_EQ(lead.CreateGroup("x", {"stranger"}).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(lead.CreateGroup("x", {}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(lead.CreateGroup("", {"ana"}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(lead.AddGroupMember(g, "stranger").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(lead.AddGroupMember(g, "ana").error().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(lead.SendGroupText("not-a-group", "x").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(lead.SendGroupText(std::string(32, 'a'), "x").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(lead.GroupHistory("../../etc").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(lead.RemoveGroupMember(g, "stranger").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(C("ana").AddGroupMember(g, "ben").error().code(), StatusCode::kPermissionDenied);

  // A clinic device needs each member's consent for a purpose that requires it: none has given any, so the
  // message is refused whole and nothing is stored or queued; an exempt purpose goes.
  CompliancePolicy clinic;
  clinic.clinic = true;
  ASSERT_OK(lead.SetCompliancePolicy(clinic));
  auto before = lead.GroupHistory(g);
  ASSERT_HAS(before);
  auto refused = lead.SendGroupText(g, "your bill", "billing");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kPermissionDenied);
  auto after = lead.GroupHistory(g);
  ASSERT_HAS(after);
  EXPECT_EQ(after->size(), before->size());
  auto pending = lead.PendingOutboxCount();
  ASSERT_HAS(pending);
  EXPECT_EQ(*pending, 0u);
  ASSERT_HAS(lead.SendGroupText(g, "rounds at 9", "treatment"));
  SyncAll();
  auto r = Received("ana");
  EXPECT_EQ(std::count(r.begin(), r.end(), "lead: rounds at 9"), 1);
  EXPECT_EQ(std::count(r.begin(), r.end(), "lead: your bill"), 0);
}

// A relay store that stands in for the relay's window between recording a message and making it durable, for
// one mailbox: while withholding, what is inserted there is neither pushed (the pushes wait for Release, in
// the order the test names) nor handed out by a fetch (which stops before it, as before an undurable
// message), until Unhide. Everything else goes straight to the RocksDB store. Thread-safe: the relay calls it
// from its loop thread, workers and committer, the test from its own thread.
class WithholdingStore final : public relay::MailboxStore {
 public:
  explicit WithholdingStore(relay::MailboxStore& inner) : inner_(inner) {}

  // The mailbox created last (the client registered last), withheld from now on.
  void WithholdLastCreated() {
    std::lock_guard<std::mutex> lock(mu_);
    target_ = created_.back();
    withholding_ = true;
  }
  // Waits (bounded: a safety net) until `n` pushes wait for Release.
  bool WaitCaptured(size_t n) {
    return testing::WaitFor(mu_, cv_, [&] { return captured_.size() >= n; });
  }
  // Pushes the captured messages, by their index in arrival order; they stay hidden from fetches.
  void Release(const std::vector<size_t>& order) {
    std::vector<Captured> go;
    relay::MailboxId box{};
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i : order) go.push_back(captured_.at(i));
      box = target_;
    }
    for (const auto& c : go) c.push(box, c.message);
  }
  // The withheld messages become fetchable and new ones are no longer withheld.
  void Unhide() {
    std::lock_guard<std::mutex> lock(mu_);
    withholding_ = false;
    hidden_.clear();
  }
  // While held, a fetch from the withheld mailbox waits in the store (on a relay worker) until ReleaseFetches.
  void HoldFetches() {
    std::lock_guard<std::mutex> lock(mu_);
    fetches_held_ = true;
  }
  bool WaitFetchHeld() {
    return testing::WaitFor(mu_, cv_, [&] { return fetches_waiting_ > 0; });
  }
  void ReleaseFetches() {
    std::lock_guard<std::mutex> lock(mu_);
    fetches_held_ = false;
    cv_.notify_all();
  }
  // Waits (bounded) until `n` messages were pushed to the withheld mailbox's owner (not captured ones).
  bool WaitPushed(size_t n) {
    return testing::WaitFor(mu_, cv_, [&] { return pushed_ >= n; });
  }

  Status CreateMailbox(const relay::MailboxId& id, const relay::LinkKey& owner) override {
    Status s = inner_.CreateMailbox(id, owner);
    std::lock_guard<std::mutex> lock(mu_);
    if (s.ok()) created_.push_back(id);
    return s;
  }
  Result<std::optional<relay::LinkKey>> MailboxOwner(const relay::MailboxId& id) override {
    return inner_.MailboxOwner(id);
  }
  Result<std::vector<relay::MailboxId>> MailboxesOwnedBy(const relay::LinkKey& owner) override {
    return inner_.MailboxesOwnedBy(owner);
  }
  Status AddDepositToken(const relay::MailboxId& id, const relay::TokenHash& token, size_t max_tokens,
                         int64_t claim_by_millis) override {
    return inner_.AddDepositToken(id, token, max_tokens, claim_by_millis);
  }
  Status RemoveDepositToken(const relay::MailboxId& id, const relay::TokenHash& token) override {
    return inner_.RemoveDepositToken(id, token);
  }
  Result<Admission> AdmitDeposit(const relay::MailboxId& id, const relay::TokenHash& token,
                                 int64_t now_millis) override {
    return inner_.AdmitDeposit(id, token, now_millis);
  }
  void WhenAllDurable(std::function<void(Status)> fn) override { inner_.WhenAllDurable(std::move(fn)); }
  Result<bool> HasDepositToken(const relay::MailboxId& id, const relay::TokenHash& token,
                               int64_t now_millis) override {
    return inner_.HasDepositToken(id, token, now_millis);
  }
  Result<relay::InsertOutcome> Insert(const relay::MailboxId& id, const relay::MessageId& message_id,
                                      ByteView envelope, int64_t expires_at_millis,
                                      const relay::MessageQuota& quota) override {
    Hide(id, message_id);
    return inner_.Insert(id, message_id, envelope, expires_at_millis, quota);
  }
  void InsertAsync(const relay::MailboxId& id, const relay::MessageId& message_id, ByteView envelope,
                   int64_t expires_at_millis, const relay::MessageQuota& quota, InsertDone done) override {
    Hide(id, message_id);
    inner_.InsertAsync(id, message_id, envelope, expires_at_millis, quota, std::move(done));
  }
  Result<std::vector<relay::StoredMessage>> FetchAfter(const relay::MailboxId& id, uint64_t after_seq,
                                                       size_t max_count, size_t max_bytes,
                                                       bool* more) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (id == target_ && fetches_held_) {
        ++fetches_waiting_;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !fetches_held_; });
        --fetches_waiting_;
      }
    }
    auto got = inner_.FetchAfter(id, after_seq, max_count, max_bytes, more);
    if (!got) return got;
    std::lock_guard<std::mutex> lock(mu_);
    if (id != target_) return got;
    auto first_hidden = std::find_if(got->begin(), got->end(),
                                     [&](const relay::StoredMessage& m) { return hidden_.count(m.id) != 0; });
    if (first_hidden != got->end()) {
      got->erase(first_hidden, got->end());
      if (more != nullptr) *more = false;
    }
    return got;
  }
  Result<bool> Ack(const relay::MailboxId& id, const relay::MessageId& message_id) override {
    return inner_.Ack(id, message_id);
  }
  void AckManyAsync(const relay::MailboxId& id, std::span<const relay::MessageId> message_ids,
                    AckDone done) override {
    inner_.AckManyAsync(id, message_ids, std::move(done));
  }
  Result<size_t> PurgeExpired(int64_t now_millis, int64_t unfinished_by_millis) override {
    return inner_.PurgeExpired(now_millis, unfinished_by_millis);
  }
  std::unique_ptr<Watch> WatchMailbox(const relay::MailboxId& id, WatchCallback callback) override {
    return inner_.WatchMailbox(
        id, [this, callback](const relay::MailboxId& box, const relay::StoredMessage& m) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            if (box == target_ && hidden_.count(m.id) != 0) {
              const bool again = std::any_of(captured_.begin(), captured_.end(),
                                             [&](const Captured& c) { return c.message.id == m.id; });
              if (!again) captured_.push_back(Captured{callback, m});
              cv_.notify_all();
              return;
            }
          }
          callback(box, m);
          std::lock_guard<std::mutex> lock(mu_);
          if (box == target_) ++pushed_;
          cv_.notify_all();
        });
  }
  Result<uint32_t> PutPreKeys(const relay::MailboxId& id, const relay::PreKeySet& keys,
                              size_t max_one_time) override {
    return inner_.PutPreKeys(id, keys, max_one_time);
  }
  Result<std::optional<relay::TakenBundle>> TakeBundle(const relay::MailboxId& id) override {
    return inner_.TakeBundle(id);
  }
  Result<std::optional<uint32_t>> CountOneTimePreKeys(const relay::MailboxId& id) override {
    return inner_.CountOneTimePreKeys(id);
  }
  Status CreateAttachment(const relay::AttachmentId& id, const relay::LinkKey& uploader, uint64_t total_size,
                          int64_t expires_at_millis) override {
    return inner_.CreateAttachment(id, uploader, total_size, expires_at_millis);
  }
  Result<uint64_t> AppendAttachment(const relay::AttachmentId& id, const relay::LinkKey& uploader,
                                    uint64_t offset, ByteView chunk) override {
    return inner_.AppendAttachment(id, uploader, offset, chunk);
  }
  void AppendAttachmentAsync(const relay::AttachmentId& id, const relay::LinkKey& uploader, uint64_t offset,
                             ByteView chunk, AppendDone done) override {
    inner_.AppendAttachmentAsync(id, uploader, offset, chunk, std::move(done));
  }
  Result<relay::AttachmentChunkRead> ReadAttachment(const relay::AttachmentId& id, uint64_t offset,
                                                    size_t max_len) override {
    return inner_.ReadAttachment(id, offset, max_len);
  }
  Result<relay::StoreStats> Stats() override { return inner_.Stats(); }

 private:
  struct Captured {
    WatchCallback push;
    relay::StoredMessage message;
  };
  void Hide(const relay::MailboxId& id, const relay::MessageId& message_id) {
    std::lock_guard<std::mutex> lock(mu_);
    if (withholding_ && id == target_) hidden_.insert(message_id);
  }

  relay::MailboxStore& inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<relay::MailboxId> created_;
  relay::MailboxId target_{};
  bool withholding_ = false;
  std::set<relay::MessageId> hidden_;
  std::vector<Captured> captured_;
  bool fetches_held_ = false;
  size_t fetches_waiting_ = 0;
  size_t pushed_ = 0;
};

class GroupE2EWithheld : public GroupE2E {
 protected:
  void SetUp() override {
    relay_ = std::make_unique<TestRelay>(dir_.Sub("relay"));
    relay_->WrapStore([this](relay::MailboxStore& inner) {
      auto w = std::make_unique<WithholdingStore>(inner);
      store_ = w.get();
      return w;
    });
    ASSERT_OK(relay_->Start());
  }
  WithholdingStore* store_ = nullptr;  // owned by relay_
};

// The relay pushes a message before it is durable and a fetch hands out only durable ones. A member that got
// a group text and a sender key before the membership update (pushes from different senders are not ordered)
// holds them; once the update is stored it must read them from what it already has: a fetch at that moment
// could pass over them, and nothing would fetch again. (The race that failed MembersThatWriteAsSoonAsTheyJoin
// about once in a hundred runs, made certain: zoe's mailbox withholds, and the text comes first.)
TEST_F(GroupE2EWithheld, MessagesThatOvertookTheirKeysAreReadOnceTheKeysArriveWithoutAFetch) {
  for (const auto* n : {"lead", "ben", "zoe"}) ASSERT_TRUE(Add(n));  // zoe's mailbox is created last
  Befriend("lead", "ben");
  Befriend("lead", "zoe");
  Befriend("ben", "zoe");
  for (auto& [name, c] : clients_) ASSERT_OK(c->StartBackground());
  SyncAll(2);  // the greetings and their delivery receipts are all read and acknowledged
  auto settled = C("zoe").PeekRelay();
  ASSERT_HAS(settled);
  ASSERT_TRUE(settled->empty());
  store_->WithholdLastCreated();

  auto created = C("lead").CreateGroup("ward 7", {"ben", "zoe"});
  ASSERT_HAS(created);
  const std::string g = created->group_id;
  // For zoe: the lead's membership update (with the lead's key) and ben's key, in either order.
  ASSERT_TRUE(store_->WaitCaptured(2));
  auto ben_groups = C("ben").Groups();
  ASSERT_HAS(ben_groups);
  ASSERT_EQ(ben_groups->size(), 1u);
  ASSERT_HAS(C("ben").SendGroupText(g, "from ben"));
  ASSERT_TRUE(store_->WaitCaptured(3));
  store_->Release({2, 0, 1});  // the text first: zoe knows no group yet

  Inbox& zoe = inboxes_["zoe"];
  EXPECT_TRUE(testing::WaitFor(zoe.mu, zoe.cv, [&] { return !zoe.group_texts.empty(); }));
  store_->Unhide();
  SyncAll(2);
  EXPECT_EQ(Received("zoe"), (std::vector<std::string>{"ben: from ben"}));  // once
  EXPECT_EQ(GroupBodies("zoe", g), (std::vector<std::string>{"ben: from ben"}));
  auto left = C("zoe").PeekRelay();
  ASSERT_HAS(left);
  EXPECT_TRUE(left->empty());  // each was acknowledged once read
}

// A message pushed while a fetch is under way can overtake the earlier ones that fetch still has to hand out
// (an owner reconnecting in the middle of a burst): the client reads it after the fetch, so a conversation is
// read in the order it was written. Made certain here: zoe's fetch waits at the relay until the third text,
// deposited meanwhile, has been pushed to her ahead of the fetch's answer.
TEST_F(GroupE2EWithheld, APushThatOvertakesAFetchIsReadAfterWhatTheFetchBrings) {
  for (const auto* n : {"lead", "zoe"}) ASSERT_TRUE(Add(n));  // zoe's mailbox is created last
  Befriend("lead", "zoe");
  auto created = C("lead").CreateGroup("ward 7", {"zoe"});
  ASSERT_HAS(created);
  const std::string g = created->group_id;
  for (auto& [name, c] : clients_) ASSERT_OK(c->StartBackground());
  SyncAll(2);  // zoe holds the lead's sender key

  // "one" and "two" reach the relay but are never pushed: zoe has to fetch them.
  store_->WithholdLastCreated();
  ASSERT_HAS(C("lead").SendGroupText(g, "one"));
  ASSERT_HAS(C("lead").SendGroupText(g, "two"));
  ASSERT_TRUE(store_->WaitCaptured(2));
  store_->Unhide();
  store_->HoldFetches();
  std::thread syncing([&] {
    auto synced = C("zoe").Sync();
    EXPECT_TRUE(synced.has_value()) << synced.error().ToString();
  });
  const bool held = store_->WaitFetchHeld();
  if (held) {
    auto sent = C("lead").SendGroupText(g, "three");
    EXPECT_TRUE(sent.has_value()) << sent.error().ToString();
    EXPECT_TRUE(store_->WaitPushed(1));  // on zoe's link ahead of the fetch's answer
  }
  store_->ReleaseFetches();
  syncing.join();
  ASSERT_TRUE(held);

  Inbox& zoe = inboxes_["zoe"];
  ASSERT_TRUE(testing::WaitFor(zoe.mu, zoe.cv, [&] { return zoe.group_texts.size() >= 3; }));
  std::lock_guard<std::mutex> lock(zoe.mu);
  std::vector<std::string> in_order;
  for (const auto& [group, text] : zoe.group_texts) in_order.push_back(text);
  EXPECT_EQ(in_order, (std::vector<std::string>{"lead: one", "lead: two", "lead: three"}));
}

// Which failures leave a message at the relay for a later attempt, and the caps on how many and how big.
TEST(GroupHold, HoldsOnlyGroupTrafficThatMayHaveOvertakenItsKeyAndAtMostTheCaps) {
  using R = GroupRuntime::HoldResult;
  GroupRuntime groups(GroupRuntime::Deps{});
  session::Ciphertext text;
  text.type = session::MessageType::kSenderKey;
  session::Ciphertext pairwise;
  pairwise.type = session::MessageType::kSignal;
  EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, "ana", "a", 100),
            R::kKeepCopy);  // before the sender's key
  EXPECT_EQ(groups.Hold(text, StatusCode::kPermissionDenied, "ana", "b", 100),
            R::kKeepCopy);  // before the membership
  EXPECT_EQ(groups.Hold(pairwise, StatusCode::kPermissionDenied, "ana", "c", 100),
            R::kKeepCopy);  // a key before it
  EXPECT_EQ(groups.Hold(text, StatusCode::kTampered, "ana", "d", 100), R::kDrop);
  EXPECT_EQ(groups.Hold(text, StatusCode::kMalformed, "ana", "e", 100), R::kDrop);
  EXPECT_EQ(groups.Hold(pairwise, StatusCode::kNoSession, "ana", "f", 100), R::kDrop);
  EXPECT_EQ(groups.Hold(pairwise, StatusCode::kTampered, "ana", "g", 100), R::kDrop);
  // One sender holds at most kMaxHeldPerSender (found in review: one contact's junk, which can never be read,
  // filled the whole hold, and a real early message from another member was then dropped).
  for (size_t i = 3; i < kMaxHeldPerSender; ++i) {
    EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, "ana", std::to_string(i), 100), R::kKeepCopy);
  }
  EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, "ana", "one too many from ana", 100), R::kDrop);
  EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, "ben", "ben's", 100), R::kKeepCopy);
  // All senders together hold at most kMaxHeldMessages.
  for (size_t i = kMaxHeldPerSender + 1; i < kMaxHeldMessages; ++i) {
    const std::string sender = "member " + std::to_string(i / kMaxHeldPerSender);
    EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, sender, std::to_string(i), 100), R::kKeepCopy) << i;
  }
  EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, "cyd", "one too many", 100), R::kDrop);
  EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, "ana", "a", 100),
            R::kKeepCopy);  // one already held stays held

  // Past the copies' byte cap a message is still left at the relay, without a copy; it counts as held.
  GroupRuntime by_size(GroupRuntime::Deps{});
  EXPECT_EQ(by_size.Hold(text, StatusCode::kNoSession, "ana", "big", kMaxHeldBytes - 10), R::kKeepCopy);
  EXPECT_EQ(by_size.Hold(text, StatusCode::kNoSession, "ana", "past the bytes", 11), R::kLeaveAtRelay);
  EXPECT_EQ(by_size.Hold(text, StatusCode::kNoSession, "ana", "past the bytes", 11), R::kLeaveAtRelay);
  EXPECT_EQ(by_size.Hold(text, StatusCode::kNoSession, "ana", "fits", 10), R::kKeepCopy);
}

// A stored sender key or membership update has the held messages tried again (the client retries its own
// copies: a fetch could miss one the relay pushed before it was durable; it fetches as well only when some were
// left without a copy), and they count anew afterwards.
TEST(GroupHold, StoredKeysHaveTheHeldMessagesTriedAgainOnce) {
  using R = GroupRuntime::HoldResult;
  std::vector<bool> retries;  // each retry's refetch flag
  GroupRuntime::Deps deps;
  deps.retry_held = [&](bool refetch) { retries.push_back(refetch); };
  GroupRuntime groups(std::move(deps));
  session::Ciphertext text;
  text.type = session::MessageType::kSenderKey;
  GroupRuntime::Incoming key;
  key.keys_changed = true;
  groups.AfterCommit(true, key);
  EXPECT_TRUE(retries.empty());  // nothing held, nothing to retry

  for (size_t i = 0; i < kMaxHeldMessages; ++i) {
    ASSERT_EQ(groups.Hold(text, StatusCode::kNoSession, "member " + std::to_string(i / kMaxHeldPerSender),
                          std::to_string(i), 100),
              R::kKeepCopy);
  }
  groups.AfterCommit(false, key);  // a key that did not commit changes nothing
  EXPECT_TRUE(retries.empty());
  groups.AfterCommit(true, GroupRuntime::Incoming{});  // a text, not a key
  EXPECT_TRUE(retries.empty());
  groups.AfterCommit(true, key);
  EXPECT_EQ(retries, std::vector<bool>{false});
  // Handed back for the retry: one still unreadable is held again, within fresh caps.
  EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, "member 0", "0", 100), R::kKeepCopy);
  EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, "member 0", "huge", kMaxHeldBytes), R::kLeaveAtRelay);
  groups.AfterCommit(true, key);
  EXPECT_EQ(retries, (std::vector<bool>{false, true}));  // "huge" has no copy: fetched again
  EXPECT_EQ(groups.Hold(text, StatusCode::kNoSession, "member 0", "new", 100), R::kKeepCopy);
  groups.AfterCommit(true, key);
  EXPECT_EQ(retries, (std::vector<bool>{false, true, false}));
}

}  // namespace
}  // namespace cw::runtime
