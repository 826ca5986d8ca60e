// The client runtime. Everything below Impl's public entry points runs on the transport's loop thread, the
// engine's owner thread; the entry points post there (RunSync) or start an asynchronous chain there and
// wait for its completion (Await).
#include "core/runtime/client.h"

#include <sodium.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/runtime/client_groups.h"
#include "core/runtime/codec.h"
#include "core/runtime/compliance_runtime.h"
#include "core/runtime/direct_links.h"
#include "core/runtime/file_message.h"
#include "core/runtime/receipts.h"
#include "core/runtime/relay_blob_channel.h"
#include "core/wire/app_message.h"
#include "core/wire/content.h"
#include "relay/protocol.h"
#include "storage/export.h"
#include "storage/sealed_store.h"
#include "transport/tcp_transport.h"

namespace cw::runtime {

namespace {

using session::Table;
using json = nlohmann::json;

// The runtime's records live in the engine's kMeta table under fixed names (stored plain: they name nobody;
// the values are sealed under the master key like every other record).
constexpr std::string_view kStateKey = "runtime.state";
constexpr std::string_view kLinkKeyKey = "runtime.link_key";
constexpr std::string_view kBoxKeyKey = "runtime.box_key";
constexpr uint32_t kPreKeyLowWater = 10;  // refill below this many one-time pre-keys at the relay
constexpr int kMaxRefillRounds = 3;
// Commands held in the client while the relay link's send queue is full: a 16-piece upload window and the
// outbox fit several times over.
constexpr size_t kMaxUnsentBytes = 4 * 1024 * 1024;

struct ContactRecord {
  std::optional<ContactCard> card;   // where to reach them; unknown until their first message
  std::optional<DepositToken> my_token;  // the token of our mailbox we gave them
  // The user accepted their new identity key: once a message under it decrypts, the groups we share catch
  // their new device up (GroupRuntime::CatchUp).
  bool catch_up_due = false;
  // The token of our invite for new contacts that this contact's first message came with, until its
  // kInviteAnswer makes it my_token: its messages may come with it meanwhile (WhyNotTheSendersToken).
  std::optional<DepositToken> answered_with;
  // Whether a message of theirs reached us. False only for a contact made by accepting its invite, until it
  // writes: such a contact may be one whose invite was refused at its end (AcceptInvite takes a code for our
  // new device from it).
  bool heard_from = true;
};

// An invite of ours that no contact has answered yet. Its token lapses at the relay unless a first deposit
// claims it before expires_ms.
struct OpenInvite {
  DepositToken token{};
  int64_t created_ms = 0;
  int64_t expires_ms = 0;  // 0: never
  // Empty: for a new contact, answered under a name that is no contact of ours yet. Otherwise for this
  // contact's new device, answered under this name only (CreateInviteForNewDevice).
  std::string for_contact;
};

// A token of ours that no longer admits new writers, revoked at the relay at the next link up: a contact's
// replaced token, a cancelled or lapsed invite's, a revoked or removed contact's device invite's. Until the
// relay confirms, a message deposited with it may still arrive. A replaced token's is believed under its
// contact's name (what the contact sent before it switched), and so is a withdrawn invite's under the contact
// it made if that contact's answer is still on its way; the others admit nobody, as cancelling promises.
// Found in review: a retired token admitted any name, so a leaked code, cancelled while the inviter was away,
// still raised a forged identity change of any contact.
struct RetiredToken {
  DepositToken token{};
  std::string admits;     // the one contact it admits; empty: nobody
  bool any_name = false;  // retired by a version that did not record this: admits any name, as it did
};

struct State {
  std::string name;
  std::string relay;
  std::optional<MailboxId> mailbox;
  std::map<std::string, ContactRecord> contacts;
  std::vector<OpenInvite> invites;           // our invites that no contact has answered yet
  std::vector<RetiredToken> retired_tokens;  // revoked at the next link up
};

// How long an expired invite is remembered: past the relay's message TTL (30 days), so an answer made in
// time and waiting in the mailbox still binds when this device fetches it.
constexpr int64_t kLapsedInviteKeptMs = 31LL * 24 * 3600 * 1000;

// Each identity is one device (session::EngineOptions::device_id's default): the only one messages go to and
// come from.
constexpr uint32_t kContactDevice = 1;

// Decodes straight into `out`: no copy of a token or key is left behind. On false the caller drops `out`.
template <size_t N>
bool ArrayFromHex(const std::string& hex, std::array<uint8_t, N>* out) {
  return FromHexInto(hex, *out);
}

json CardToJson(const ContactCard& c) {
  return json{{"relay", c.relay}, {"mailbox", ToHex(c.mailbox)}, {"token", ToHex(c.token)}, {"box", ToHex(c.box_key)}};
}

bool CardFromJson(const json& j, ContactCard* c) {
  c->relay = j.at("relay").get<std::string>();
  return ArrayFromHex(j.at("mailbox").get<std::string>(), &c->mailbox) &&
         ArrayFromHex(j.at("token").get<std::string>(), &c->token) &&
         ArrayFromHex(j.at("box").get<std::string>(), &c->box_key);
}

SecretBytes EncodeState(const State& s) {
  json j;
  j["v"] = 1;
  j["name"] = s.name;
  j["relay"] = s.relay;
  j["mailbox"] = s.mailbox ? ToHex(*s.mailbox) : "";
  json contacts = json::object();
  for (const auto& [name, c] : s.contacts) {
    contacts[name] = json{{"card", c.card ? CardToJson(*c.card) : json()},
                          {"my_token", c.my_token ? ToHex(*c.my_token) : ""}};
    if (c.catch_up_due) contacts[name]["catch_up_due"] = true;
    if (c.answered_with) contacts[name]["answered_with"] = ToHex(*c.answered_with);
    if (!c.heard_from) contacts[name]["heard_from"] = false;
  }
  j["contacts"] = contacts;
  json invites = json::array();
  json tokens = json::array();  // the tokens alone too, for a library from before invites expired
  for (const auto& i : s.invites) {
    invites.push_back(
        json{{"token", ToHex(i.token)}, {"created_ms", i.created_ms}, {"expires_ms", i.expires_ms}});
    if (!i.for_contact.empty()) invites.back()["for"] = i.for_contact;
    tokens.push_back(ToHex(i.token));
  }
  j["invites"] = invites;
  j["invite_tokens"] = tokens;
  json retired = json::array();
  json retired_tokens = json::array();  // the tokens alone too, for a library from before "retired"
  for (const auto& t : s.retired_tokens) {
    retired.push_back(json{{"token", ToHex(t.token)}, {"admits", t.admits}});
    if (t.any_name) retired.back()["any_name"] = true;
    retired_tokens.push_back(ToHex(t.token));
  }
  j["retired"] = retired;
  j["retired_tokens"] = retired_tokens;
  std::string text = j.dump();
  SecretBytes out(AsBytes(text));
  sodium_memzero(text.data(), text.size());
  return out;
}

Result<State> DecodeState(const SecretBytes& bytes) {
  const auto bad = [] { return Error(StatusCode::kMalformed, "runtime state record is malformed"); };
  json j = json::parse(bytes.reveal().begin(), bytes.reveal().end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.value("v", 0) != 1) return bad();
  try {
    State s;
    s.name = j.at("name").get<std::string>();
    s.relay = j.at("relay").get<std::string>();
    const std::string mb = j.at("mailbox").get<std::string>();
    if (!mb.empty()) {
      MailboxId m;
      if (!ArrayFromHex(mb, &m)) return bad();
      s.mailbox = m;
    }
    for (const auto& [name, c] : j.at("contacts").items()) {
      ContactRecord rec;
      if (!c.at("card").is_null()) {
        if (!CardFromJson(c.at("card"), &rec.card.emplace())) return bad();
      }
      const std::string mt = c.at("my_token").get<std::string>();
      if (!mt.empty()) {
        DepositToken t;
        if (!ArrayFromHex(mt, &t)) return bad();
        rec.my_token = t;
      }
      rec.catch_up_due = c.value("catch_up_due", false);  // absent in records from before it
      rec.heard_from = c.value("heard_from", true);       // absent: heard from, or from before it
      if (c.contains("answered_with")) {
        DepositToken t;
        if (!ArrayFromHex(c.at("answered_with").get<std::string>(), &t)) return bad();
        rec.answered_with = t;
      }
      s.contacts[name] = std::move(rec);
    }
    if (j.contains("invites")) {
      for (const auto& i : j.at("invites")) {
        OpenInvite inv;
        if (!ArrayFromHex(i.at("token").get<std::string>(), &inv.token)) return bad();
        inv.created_ms = i.at("created_ms").get<int64_t>();
        inv.expires_ms = i.at("expires_ms").get<int64_t>();
        inv.for_contact = i.value("for", std::string());  // absent: a new contact's (and from before "for")
        s.invites.push_back(inv);
      }
    } else {
      // From before invites expired: their tokens never lapse at the relay, so neither do they here (creation
      // time unknown: 0). CancelInvite ends them.
      for (const auto& t : j.at("invite_tokens")) {
        OpenInvite inv;
        if (!ArrayFromHex(t.get<std::string>(), &inv.token)) return bad();
        s.invites.push_back(inv);
      }
    }
    if (j.contains("retired")) {
      for (const auto& t : j.at("retired")) {
        RetiredToken r;
        if (!ArrayFromHex(t.at("token").get<std::string>(), &r.token)) return bad();
        r.admits = t.at("admits").get<std::string>();
        r.any_name = t.value("any_name", false);
        s.retired_tokens.push_back(std::move(r));
      }
    } else {
      // From before retired tokens recorded whom they admit (or before there were any): any name, as they
      // did, until the relay confirms their revocation at the next link up.
      for (const auto& t : j.value("retired_tokens", json::array())) {
        RetiredToken r;
        if (!ArrayFromHex(t.get<std::string>(), &r.token)) return bad();
        r.any_name = true;
        s.retired_tokens.push_back(std::move(r));
      }
    }
    return s;
  } catch (...) {
    return bad();
  }
}

session::Write StateWrite(const State& s) { return session::Write{Table::kMeta, std::string(kStateKey), EncodeState(s)}; }

std::string KeyHex(const wire::PublicKey& k) { return ToHex(k); }

// Codes after which a received message can never be decrypted: it is acknowledged (dropped) at the relay.
// Anything else (an identity change awaiting acceptance, a storage failure) leaves it there for later.
bool IsPermanentFailure(StatusCode c) {
  switch (c) {
    case StatusCode::kUntrustedIdentity:
    case StatusCode::kUnavailable:
    case StatusCode::kInternal:
    case StatusCode::kResourceExhausted:
      return false;
    default:
      return true;
  }
}

Status FromRelay(const relay::Response& r) {
  using RC = relay::ResponseCode;
  std::string msg = "relay: " + std::string(relay::ResponseCodeName(r.code));
  switch (r.code) {
    case RC::kOk: return Status::Ok();
    case RC::kDepositRefused: return Status(StatusCode::kPermissionDenied, msg);
    case RC::kNotFound: return Status(StatusCode::kNotFound, msg);
    case RC::kMailboxFull:
    case RC::kRateLimited:
    case RC::kUnavailable: return Status(StatusCode::kUnavailable, msg);
    case RC::kPermissionDenied: return Status(StatusCode::kPermissionDenied, msg);
    case RC::kTooLarge:
    case RC::kLimitExceeded: return Status(StatusCode::kResourceExhausted, msg);
    default: return Status(StatusCode::kInternal, msg);
  }
}

template <typename T>
Result<T> BodyAs(const relay::Response& r) {
  if (const T* b = std::get_if<T>(&r.body)) return *b;
  return Error(StatusCode::kMalformed, "relay answered with an unexpected body");
}

relay::MessageId DepositId(const session::Ciphertext& c, const std::string& recipient) {
  // Deterministic, so a retried deposit carries the same id and the relay stores it once.
  relay::MessageId id{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, id.size());
  crypto_generichash_update(&st, c.body.data(), c.body.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(recipient.data()), recipient.size());
  crypto_generichash_final(&st, id.data(), id.size());
  return id;
}

}  // namespace

class Client::Impl {
 public:
  using ResponseFn = std::function<void(Result<relay::Response>)>;
  template <typename T>
  using Done = std::function<void(Result<T>)>;

  Impl(ClientOptions options, std::string home)
      : options_(std::move(options)),
        home_(std::move(home)),
        clock_(options_.clock ? options_.clock : &SystemClock::Default()),
        random_(options_.random ? options_.random : &SystemRandom::Default()) {}

  ~Impl() { Shutdown(); }

  // ---------------------------------------------------------------- set-up (caller's thread)
  Status Init(std::span<const uint8_t> passphrase, const std::optional<std::string>& create_name) {
    std::error_code ec;
    uint32_t failed_unlocks = 0;
    const std::string ks_path = home_ + "/keystore";
    storage::KeystoreOptions ks_opts = options_.keystore;
    ks_opts.clock = clock_;
    ks_opts.random = random_;
    if (create_name) {
      if (!wire::IsValidName(*create_name)) return Status(StatusCode::kInvalidArgument, "invalid name");
      if (std::filesystem::exists(ks_path, ec)) {
        return Status(StatusCode::kAlreadyExists, "an identity already exists in this directory");
      }
      std::filesystem::create_directories(home_, ec);
      if (ec) return Status(StatusCode::kUnavailable, "cannot create the data directory");
      ::chmod(home_.c_str(), 0700);
      CW_ASSIGN_OR_RETURN(keystore_, storage::Keystore::Create(ks_path, passphrase, ks_opts));
    } else {
      CW_ASSIGN_OR_RETURN(keystore_, storage::Keystore::Open(ks_path, ks_opts));
      failed_unlocks = keystore_->failed_attempts();  // recorded in the audit trail once unlocked
      CW_RETURN_IF_ERROR(keystore_->Unlock(passphrase));
    }
    storage::SealedStoreOptions st_opts;
    st_opts.create_if_missing = create_name.has_value();
    // Group commit: a received message is acknowledged to the relay, and an outbox entry deposited, only
    // once the commit holding it is synced (AfterSynced); many commits share one fsync.
    st_opts.sync = false;
    CW_ASSIGN_OR_RETURN(store_, storage::SealedStore::Open(home_ + "/store", keystore_.get(), st_opts));

    if (create_name) {
      auto link = transport::StaticKeyPair::Generate(*random_);
      SecretBytes box_sk(crypto_box_SECRETKEYBYTES);
      random_->Fill(box_sk.reveal_mutable().data(), box_sk.size());
      state_.name = *create_name;
      session::WriteBatch b;
      b.writes.push_back({Table::kMeta, std::string(kLinkKeyKey), link.private_key().Clone()});
      b.writes.push_back({Table::kMeta, std::string(kBoxKeyKey), std::move(box_sk)});
      b.writes.push_back(StateWrite(state_));
      CW_RETURN_IF_ERROR(store_->Commit(std::move(b)));
    }
    CW_ASSIGN_OR_RETURN(auto state_rec, store_->Get(Table::kMeta, kStateKey));
    CW_ASSIGN_OR_RETURN(auto link_rec, store_->Get(Table::kMeta, kLinkKeyKey));
    CW_RETURN_IF_ERROR(LoadBoxKey());
    if (!state_rec || !link_rec) return Status(StatusCode::kNotFound, "no client identity in this store");
    CW_ASSIGN_OR_RETURN(state_, DecodeState(*state_rec));
    CW_ASSIGN_OR_RETURN(auto link, transport::StaticKeyPair::FromPrivateKey(link_rec->reveal()));
    link_pub_ = link.public_key();
    name_ = state_.name;

    CW_ASSIGN_OR_RETURN(transport_, transport::TcpTransport::New(std::move(link), LinkOptions(), *clock_));
    post_target_ = std::make_shared<PostTarget>(transport_.get());
    direct_ = NewDirectLinks();
    const bool created = create_name.has_value();
    return transport::RunSync(*transport_, [this, failed_unlocks, created]() -> Status {
      CW_RETURN_IF_ERROR(OpenSession(failed_unlocks));
      // A new identity (link, box and identity keys) is durable before Create returns: the keystore already
      // is, and a crash that kept it without them would leave a directory that neither opens nor can be
      // created again.
      if (created) CW_RETURN_IF_ERROR(store_->SyncNow());
      Touch();
      return direct_->Start();
    });
  }

  Status LoadBoxKey() {
    CW_ASSIGN_OR_RETURN(auto box_rec, store_->Get(Table::kMeta, kBoxKeyKey));
    if (!box_rec || box_rec->size() != crypto_box_SECRETKEYBYTES) {
      return Status(StatusCode::kNotFound, "no client identity in this store");
    }
    box_sk_ = std::move(*box_rec);
    crypto_scalarmult_base(box_pk_.data(), box_sk_.reveal().data());
    return Status::Ok();
  }

  // The engine, transcripts and compliance records over the unlocked store (loop thread): at start and
  // after every Unlock.
  Status OpenSession(uint32_t failed_unlocks) {
    session::EngineOptions eo;
    eo.clock = clock_;
    eo.random = random_;
    eo.on_identity_change = [this](const session::IdentityChange& c) {
      // Inside an engine call: the audit entry (which may sign a checkpoint) is written right after it.
      if (compliance_) {
        compliance_->DeferIdentityChange(c.previous_key, c.new_key);
        (void)transport_->Post([this] {
          if (compliance_) compliance_->FlushDeferred();
        });
      }
      if (options_.callbacks.on_identity_change) {
        options_.callbacks.on_identity_change(
            IdentityChangeEvent{c.contact.name, KeyHex(c.previous_key), KeyHex(c.new_key)});
      }
    };
    CW_ASSIGN_OR_RETURN(engine_, session::Engine::Open(store_.get(), state_.name, std::move(eo)));
    storage::TranscriptOptions to;
    to.clock = clock_;
    to.random = random_;
    to.local_name = state_.name;
    to.purge_deleted = [this](Table t) { return store_->PurgeDeleted(t); };
    CW_ASSIGN_OR_RETURN(transcripts_, storage::Transcripts::New(store_.get(), std::move(to)));
    if (Status purged = transcripts_->FinishPendingPurge(); !purged.ok()) {
      Report(Status(purged.code(), "a deleted conversation's key is not yet purged from the store's files: " +
                                       purged.message()));
    }
    fingerprint_ = KeyHex(engine_->identity_key());
    ComplianceRuntime::Deps deps{
        store_.get(),
        engine_.get(),
        transcripts_.get(),
        clock_,
        random_,
        state_.name,
        [this](const std::string& contact, const wire::AppMessage& m) {
          return StatusOfSend(SendApp(contact, m, ControlConversationId(contact), {}, {}));
        },
        [this](const Status& s) { Report(s); },
        [this](const std::string& sender, ByteView payload) { return ApplyReceipt(sender, payload); },
        [this](const std::string& sender, ByteView payload) {
          return direct_->OnAnnouncement(sender, payload);
        },
        [this](const std::string& sender, ByteView payload, ByteView arrived_with) {
          return ApplyInviteAnswer(sender, payload, arrived_with);
        },
        [this] { return store_->SyncNow(); }};
    receipts_ = std::make_unique<ReceiptBook>(store_.get(), transcripts_.get());
    CW_ASSIGN_OR_RETURN(compliance_, ComplianceRuntime::Open(std::move(deps), failed_unlocks));
    compliance_->ResumeInbox();
    groups_ = std::make_unique<GroupRuntime>(
        GroupRuntime::Deps{store_.get(), engine_.get(), transcripts_.get(), compliance_.get(), state_.name,
                           [this](const std::string& contact) {
                             auto it = state_.contacts.find(contact);
                             return it != state_.contacts.end() && it->second.card.has_value();
                           },
                           [this](const std::string& conv, uint64_t seq) { DeliverWhenDurable(conv, seq); },
                           [this](bool refetch) { RetryHeld(refetch); }, [this](const Status& s) { Report(s); }});
    ArmSweepTimer();
    return Status::Ok();
  }

  // ---------------------------------------------------------------- lock (HIPAA 164.312(a)(2)(iii))
  // Loop thread. Everything that holds key material goes: the link to the relay (its pushes could not be
  // decrypted anyway; they wait at the relay), the engine with the identity and session keys, the
  // transcripts, the compliance signer, the sealed-sender secret key, and then the keystore's master key,
  // whose lock listener wipes the store's subkeys and cached records. Left in memory: the Noise link key,
  // inside the transport (it authenticates this device to its relay and protects no message), and the
  // contact list with its relay cards.
  //
  // `defer_teardown`: called from inside a client callback, whose caller up the stack (a delivery, a receipt,
  // the engine's decryption) still uses the engine, transcripts and compliance objects. The client is locked
  // at once (nothing new starts, every caller's call is refused) and those objects go as soon as the loop
  // is back from that callback, before anything else it runs.
  Status LockNow(bool automatic, bool defer_teardown = false) {
    if (locked_ || shutting_down_) return Status::Ok();
    SendPendingDeliveryReceipts();  // committed to the outbox now; deposited after Unlock
    SendAcksBeforeClosing();
    // Locked before anything below runs callbacks (FailAll): one that sends again (an outbox flush) is then
    // refused instead of opening a new link for a client whose engine is about to go.
    locked_ = true;
    ++generation_;  // in-flight connects and frames of the closed link are ignored
    resume_background_ = background_;
    background_ = false;
    for (auto* t : {&reconnect_timer_, &retry_timer_, &idle_timer_, &sweep_timer_}) {
      if (*t) transport_->CancelTimer(**t);
      t->reset();
    }
    prepared_.clear();
    const bool was_up = link_ == LinkState::kUp;
    if (conn_) conn_->Close(Status(StatusCode::kAborted, "client locked"));
    conn_.reset();
    link_ = LinkState::kDown;
    fetching_ = false;
    DropHeldPushes();
    FailAll(Locked());
    direct_->Stop();  // a locked client processes nothing: contacts fall back to the relay at once
    held_.clear();    // still at the relay, fetched after Unlock
    if (defer_teardown) {
      teardown_pending_ = true;
      // Posted now, so it runs before an Unlock, which reaches the loop later. A transport that no longer
      // takes posts is shutting down, and Shutdown drops all of it anyway.
      (void)transport_->Post([this, automatic, was_up] { TearDownForLock(automatic, was_up); });
      return Status::Ok();
    }
    TearDownForLock(automatic, was_up);
    return Status::Ok();
  }

  void TearDownForLock(bool automatic, bool was_up) {
    teardown_pending_ = false;
    // A delivery handled while a callback locked queued its receipt after LockNow committed the others.
    SendPendingDeliveryReceipts(/*while_locking=*/true);
    if (compliance_) {
      compliance_->OnLocked(automatic);
      compliance_->CheckpointIfNeeded();  // a signed head covering everything recorded
    }
    groups_.reset();
    compliance_.reset();
    receipts_.reset();
    transcripts_.reset();
    engine_.reset();
    box_sk_ = SecretBytes();  // wipes
    keystore_->Lock();
    if (was_up && options_.callbacks.on_connection) options_.callbacks.on_connection(false);
    if (automatic && options_.callbacks.on_lock) options_.callbacks.on_lock();
  }

  // Caller's thread: Argon2id takes a moment and must not stall the loop.
  Status Unlock(std::span<const uint8_t> passphrase) {
    if (transport_->IsLoopThread()) {
      return Status(StatusCode::kPermissionDenied, "Unlock from a client callback");
    }
    auto locked = transport::RunSync(*transport_, [this]() -> Result<bool> { return locked_; });
    if (!locked) return locked.error();
    if (!*locked) return Status::Ok();
    // Failures since the last successful unlock (this one's included when it fails) go into the audit trail
    // with the next success.
    const uint32_t failed = keystore_->failed_attempts();
    CW_RETURN_IF_ERROR(keystore_->Unlock(passphrase));
    return transport::RunSync(*transport_, [this, failed]() -> Status {
      if (shutting_down_) return Closing();
      if (!locked_) return Status::Ok();
      if (Status s = LoadBoxKey(); !s.ok()) {
        keystore_->Lock();
        return s;
      }
      if (Status s = OpenSession(failed); !s.ok()) {
        groups_.reset();
        if (sweep_timer_) transport_->CancelTimer(*sweep_timer_);
        sweep_timer_.reset();
        compliance_.reset();
        receipts_.reset();
        transcripts_.reset();
        engine_.reset();
        box_sk_ = SecretBytes();
        keystore_->Lock();
        return s;
      }
      locked_ = false;
      Touch();
      ArmSweepTimer();  // OpenSession ran while still locked, so it could not
      if (Status d = direct_->Start(); !d.ok()) Report(d);
      if (resume_background_) {
        background_ = true;
        EnsureConnecting();
      }
      return Status::Ok();
    });
  }

  // A caller's call: postpones the automatic lock (loop thread).
  void Touch() {
    last_activity_ms_ = clock_->NowMillis();
    ArmIdleTimer();
  }

  void ArmIdleTimer() {
    if (options_.auto_lock_after_ms <= 0 || locked_ || shutting_down_ || idle_timer_) return;
    const int64_t due = last_activity_ms_ + options_.auto_lock_after_ms - clock_->NowMillis();
    idle_timer_ = transport_->ScheduleAfter(std::max<int64_t>(due, 1), [this] {
      idle_timer_.reset();
      if (locked_ || shutting_down_) return;
      if (clock_->NowMillis() - last_activity_ms_ >= options_.auto_lock_after_ms) {
        (void)LockNow(/*automatic=*/true);
        return;
      }
      ArmIdleTimer();
    });
  }

  // Why a call is refused while locked or once closing, as a Status or a Result of any type.
  static Status Locked() { return Status(StatusCode::kPermissionDenied, "the client is locked"); }
  static Status Closing() { return Status(StatusCode::kAborted, "client closing"); }
  template <typename R>
  static R Refused(Status why) {
    if constexpr (std::is_same_v<R, Status>) {
      return why;
    } else {
      return Error(std::move(why));
    }
  }

  void Shutdown() {
    if (!transport_) return;
    Stop();
    // Only now: until here a sync the store finishes still reaches the loop, which fails what waits for it
    // with kAborted (a Sync in another thread would otherwise wait out its timeout).
    post_target_->Close();
    (void)transport_->Shutdown();
    transport_.reset();
    store_.reset();
    keystore_.reset();
  }

  // Everything of Shutdown that runs on the loop: what waits fails with kAborted and what comes later is
  // refused (see Call, Await, Request). The loop, transport and store stay until Shutdown. From a callback
  // (the loop thread) it is refused: the caller up the stack still uses what it would release.
  void Stop() {
    if (!transport_ || transport_->IsLoopThread()) return;
    (void)transport::RunSync(*transport_, [this]() -> Status {
      if (shutting_down_) return Status::Ok();
      SendAcksBeforeClosing();
      // Callbacks still in flight (a connect finishing, a frame) check the generation: bump it so none of
      // them touches the engine we are about to release.
      ++generation_;
      shutting_down_ = true;
      background_ = false;
      if (reconnect_timer_) transport_->CancelTimer(*reconnect_timer_);
      if (retry_timer_) transport_->CancelTimer(*retry_timer_);
      if (idle_timer_) transport_->CancelTimer(*idle_timer_);
      if (sweep_timer_) transport_->CancelTimer(*sweep_timer_);
      if (conn_) conn_->Close(Closing());
      DropHeldPushes();
      SendAcks();  // any left are refused now (closing), which answers what waits for them
      FailAll(Closing());
      // Work held behind work still on its way from the store (see AfterSynced) is refused now: that work may
      // never arrive, once Shutdown closes the way.
      for (auto& held : std::exchange(after_synced_held_, {})) {
        if (*held.drop) (*held.drop)(Closing());
      }
      if (direct_) direct_->Stop();
      SendPendingDeliveryReceipts();  // committed to the outbox; deposited when the client next runs
      if (compliance_) compliance_->CheckpointIfNeeded();  // a signed head covering everything recorded
      groups_.reset();
      compliance_.reset();
      receipts_.reset();
      transcripts_.reset();
      engine_.reset();
      return Status::Ok();
    });
  }

  // ---------------------------------------------------------------- bridging to the loop thread
  template <typename Fn>
  auto Call_Unguarded(Fn fn) -> std::invoke_result_t<Fn> {
    if (transport_->IsLoopThread()) return fn();
    return transport::RunSync(*transport_, std::move(fn));
  }

  // Runs a caller's call on the loop thread; refused while locked, and postpones the automatic lock.
  template <typename Fn>
  auto Call(Fn fn) -> std::invoke_result_t<Fn> {
    using R = std::invoke_result_t<Fn>;
    auto guarded = [this, &fn]() -> R {
      if (shutting_down_) return Refused<R>(Closing());
      if (locked_) return Refused<R>(Locked());
      Touch();
      return fn();
    };
    if (transport_->IsLoopThread()) return guarded();
    return transport::RunSync(*transport_, std::move(guarded));
  }

  template <typename T>
  Result<T> Await(int64_t timeout_ms, std::function<void(Done<T>)> start) {
    if (transport_->IsLoopThread()) {
      return Error(StatusCode::kPermissionDenied, "a blocking client call from a client callback");
    }
    auto promise = std::make_shared<std::promise<Result<T>>>();
    auto fired = std::make_shared<std::atomic<bool>>(false);
    auto future = promise->get_future();
    Done<T> done = [promise, fired](Result<T> r) {
      if (!fired->exchange(true)) promise->set_value(std::move(r));
    };
    Status posted = transport_->Post([this, start = std::move(start), done]() mutable {
      if (shutting_down_) return done(Refused<Result<T>>(Closing()));
      if (locked_) return done(Refused<Result<T>>(Locked()));
      Touch();
      start(done);
    });
    if (!posted.ok()) return Error(posted);
    if (future.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready) {
      done(Error(StatusCode::kUnavailable, "timed out waiting for the relay"));
    }
    return future.get();
  }

  transport::TransportOptions LinkOptions() const {
    transport::TransportOptions t;
    t.send_high_water = options_.link_send_high_water;
    t.send_low_water = options_.link_send_low_water;
    return t;
  }

  // ---------------------------------------------------------------- relay link (loop thread)
  // Sends a command, connecting first when the link is down. With `peek`, the delivery frames answering it
  // are collected for the response callback (Peek) instead of being processed.
  void Request(relay::CommandBody body, ResponseFn fn, bool peek = false) {
    if (shutting_down_) return fn(Error(Closing()));
    if (locked_) return fn(Error(Locked()));
    if (link_ == LinkState::kUp && conn_) {
      SendNow(std::move(body), std::move(fn), peek);
      return;
    }
    queued_.push_back(Queued{std::move(body), std::move(fn), peek});
    EnsureConnecting();
  }

  void SendNow(relay::CommandBody body, ResponseFn fn, bool peek = false) {
    const uint32_t id = next_request_id_++;
    if (next_request_id_ == 0) next_request_id_ = 1;
    if (peek) {
      peeks_[id];
      fn = [this, id, fn = std::move(fn)](Result<relay::Response> r) {
        peeked_ = std::move(peeks_[id]);
        peeks_.erase(id);
        fn(std::move(r));
      };
    }
    Bytes frame = relay::EncodeCommand(relay::Command{id, std::move(body)});
    if (unsent_.empty()) {
      Status s = conn_->Send(frame);
      if (s.ok()) {
        pending_[id] = std::move(fn);
        return;
      }
      if (s.code() != StatusCode::kResourceExhausted) {
        fn(Error(LinkFailure(s)));
        return;
      }
    }
    // The send queue is above its high-water mark (a transfer keeps many pieces in flight, on a slow link):
    // the command waits here, behind those refused before it, until the transport drains. Bounded, because a
    // caller that timed out and retried leaves its first attempt queued: past the bound, kUnavailable sends
    // the caller into its own backoff instead.
    if (unsent_bytes_ + frame.size() > kMaxUnsentBytes) {
      fn(Error(StatusCode::kUnavailable, "relay link: too much waiting to be sent"));
      return;
    }
    unsent_bytes_ += frame.size();
    unsent_.push_back(Unsent{id, std::move(frame)});
    pending_[id] = std::move(fn);
  }

  // on_writable: sends what waited, in order, until the queue refuses again.
  void SendUnsent() {
    while (conn_ && !unsent_.empty()) {
      Unsent& next = unsent_.front();
      Status s = conn_->Send(next.frame);
      if (s.code() == StatusCode::kResourceExhausted) return;  // on_writable fires again
      if (s.code() == StatusCode::kUnavailable) return;  // closing: on_closed fails every pending command
      const uint32_t id = next.id;
      unsent_bytes_ -= next.frame.size();
      unsent_.pop_front();
      if (s.ok()) continue;
      // A frame the transport will never take: that command fails, the ones behind it go on.
      if (auto it = pending_.find(id); it != pending_.end()) {
        ResponseFn fn = std::move(it->second);
        pending_.erase(it);
        fn(Error(LinkFailure(s)));
      }
    }
  }

  // What a command learns when the link would not take it: unavailable, so transfers and the outbox retry.
  static Status LinkFailure(const Status& s) {
    return Status(StatusCode::kUnavailable, "relay link: " + s.message());
  }

  void EnsureConnecting() {
    if (link_ != LinkState::kDown || locked_) return;
    if (shutting_down_) {
      FailAll(Closing());
      return;
    }
    if (state_.relay.empty()) {
      FailAll(Status(StatusCode::kInvalidArgument, "not registered with a relay"));
      return;
    }
    auto ep = transport::Endpoint::Parse(state_.relay);
    if (!ep) {
      FailAll(ep.error());
      return;
    }
    const uint64_t gen = ++generation_;
    transport::ConnectionCallbacks cbs;
    cbs.on_frame = [this, gen](ByteView f) {
      if (gen == generation_) OnFrame(f);
    };
    cbs.on_closed = [this, gen](Status why) {
      if (gen == generation_) OnLinkDown(why);
    };
    cbs.on_writable = [this, gen]() {
      if (gen == generation_) SendUnsent();
    };
    link_ = LinkState::kConnecting;
    Status s = transport_->Connect(*ep, std::move(cbs), [this, gen](Result<std::shared_ptr<transport::Connection>> c) {
      if (gen != generation_) return;
      if (!c) {
        OnLinkDown(c.error());
        return;
      }
      conn_ = *c;
      link_ = LinkState::kUp;
      backoff_ms_ = 0;
      auto queued = std::move(queued_);
      queued_.clear();
      for (auto& q : queued) SendNow(std::move(q.body), std::move(q.fn), q.peek);
      if (options_.callbacks.on_connection) options_.callbacks.on_connection(true);
      if (state_.mailbox) OnRegisteredLinkUp();
    });
    if (!s.ok()) {
      link_ = LinkState::kDown;
      FailAll(s);
    }
  }

  void OnLinkDown(const Status& why) {
    const bool was_up = link_ == LinkState::kUp;
    ++generation_;
    link_ = LinkState::kDown;
    conn_.reset();
    fetching_ = false;
    DropHeldPushes();  // still at the relay: the next fetch brings them
    FailAll(Status(StatusCode::kUnavailable, "relay unreachable: " + why.message()));
    if (was_up && options_.callbacks.on_connection) options_.callbacks.on_connection(false);
    ScheduleReconnect();
  }

  void ScheduleReconnect() {
    if (!background_ || shutting_down_ || reconnect_timer_) return;
    backoff_ms_ = backoff_ms_ == 0 ? options_.reconnect_min_ms : std::min(backoff_ms_ * 2, options_.reconnect_max_ms);
    reconnect_timer_ = transport_->ScheduleAfter(backoff_ms_, [this] {
      reconnect_timer_.reset();
      EnsureConnecting();
    });
  }

  void FailAll(const Status& s) {
    unsent_.clear();
    unsent_bytes_ = 0;
    auto pending = std::move(pending_);
    pending_.clear();
    auto queued = std::move(queued_);
    queued_.clear();
    for (auto& [id, fn] : pending) fn(Error(s));
    for (auto& q : queued) q.fn(Error(s));
  }

  void OnFrame(ByteView frame) {
    auto decoded = relay::DecodeServerFrame(frame);
    if (!decoded) {
      Report(Status(StatusCode::kMalformed, "relay sent a malformed frame"));
      return;
    }
    if (auto* r = std::get_if<relay::Response>(&*decoded)) {
      auto it = pending_.find(r->request_id);
      if (it == pending_.end()) return;
      ResponseFn fn = std::move(it->second);
      pending_.erase(it);
      fn(std::move(*r));
    } else if (auto* d = std::get_if<relay::Delivery>(&*decoded)) {
      if (peeks_.count(d->request_id)) {
        peeks_[d->request_id].push_back(std::move(*d));
      } else if (d->request_id == 0 && fetching_) {
        HoldPush(std::move(*d));
      } else {
        HandleDelivery(*d);
      }
    } else if (std::get_if<relay::PreKeysLow>(&*decoded)) {
      UploadPreKeys(true, 0, [](Result<uint32_t>) {});
    }
  }

  void Report(const Status& s) {
    if (options_.callbacks.on_error) options_.callbacks.on_error(s);
  }

  // The link is up and we own a mailbox: rotate the signed pre-key if due, fetch what waits, send the outbox.
  void OnRegisteredLinkUp() {
    if (std::exchange(peek_only_, false)) return;
    auto rotated = engine_->RotateSignedPreKeyIfDue();
    if (rotated && *rotated) UploadPreKeys(false, 0, [](Result<uint32_t>) {});
    FetchAll([](Result<size_t>) {});
    FlushOutbox([](Result<size_t>) {});
    RevokeRetired();
  }

  // ---------------------------------------------------------------- registration and pre-keys
  void Register(const std::string& relay_addr, Done<bool> done) {
    if (state_.mailbox) {
      if (state_.relay == relay_addr) return done(true);
      return done(Error(StatusCode::kAlreadyExists, "already registered with another relay"));
    }
    auto ep = transport::Endpoint::Parse(relay_addr);
    if (!ep) return done(Error(ep.error()));
    if (!ep->static_key) return done(Error(StatusCode::kInvalidArgument, "the relay address needs its key (cw://<key>@host:port)"));
    state_.relay = relay_addr;
    Request(relay::CreateMailbox{}, [this, done](Result<relay::Response> r) {
      if (!r) {
        if (!state_.mailbox) state_.relay.clear();
        return done(Error(r.error()));
      }
      if (Status s = FromRelay(*r); !s.ok()) return done(Error(s));
      auto created = BodyAs<relay::MailboxCreated>(*r);
      if (!created) return done(Error(created.error()));
      State next = state_;
      next.mailbox = created->mailbox;
      if (Status s = SaveState(next); !s.ok()) return done(Error(s));
      UploadPreKeys(true, 0, [this, done](Result<uint32_t> u) {
        if (!u) return done(Error(u.error()));
        FetchAll([](Result<size_t>) {});
        done(true);
      });
    });
  }

  Status SaveState(State next) {
    session::WriteBatch b;
    b.writes.push_back(StateWrite(next));
    CW_RETURN_IF_ERROR(store_->Commit(std::move(b)));
    state_ = std::move(next);
    return Status::Ok();
  }

  // Uploads the current signed pre-key and, when `with_one_time`, a new batch of one-time pre-keys; repeats
  // (a few rounds at most) while the relay reports fewer than the low-water mark.
  void UploadPreKeys(bool with_one_time, int round, Done<uint32_t> done) {
    if (!state_.mailbox) return done(Error(StatusCode::kInvalidArgument, "not registered"));
    if (with_one_time && round == 0) {
      if (refilling_) return done(0u);
      refilling_ = true;
    }
    auto spk = engine_->CurrentSignedPreKey();
    if (!spk) return Finish(with_one_time, done, Error(spk.error()));
    relay::UploadPreKeys up;
    up.mailbox = *state_.mailbox;
    up.registration_id = engine_->registration_id();
    up.device_id = engine_->device_id();
    up.identity_key = engine_->identity_key();
    up.signed_pre_key = *spk;
    if (with_one_time) {
      auto otks = engine_->GenerateOneTimePreKeys();
      if (!otks) return Finish(with_one_time, done, Error(otks.error()));
      up.one_time_pre_keys = std::move(*otks);
      if (up.one_time_pre_keys.size() > relay::kMaxOneTimePreKeysPerUpload) {
        up.one_time_pre_keys.resize(relay::kMaxOneTimePreKeysPerUpload);
      }
    }
    // The private halves must be durable before the public ones are handed out: a crash that lost them
    // would leave the relay serving pre-keys nobody can use.
    AfterSynced(
        store_->LastCommitSequence(),
        [this, up = std::move(up), with_one_time, round, done]() mutable {
          SendPreKeys(std::move(up), with_one_time, round, done);
        },
        // Locked or closing meanwhile: the caller hears why, and a later refill is not shut out.
        [this, with_one_time, done](Status why) { Finish(with_one_time, done, Error(std::move(why))); });
  }
  void SendPreKeys(relay::UploadPreKeys up, bool with_one_time, int round, Done<uint32_t> done) {
    Request(std::move(up), [this, with_one_time, round, done](Result<relay::Response> r) {
      if (!r) return Finish(with_one_time, done, Error(r.error()));
      if (Status s = FromRelay(*r); !s.ok()) return Finish(with_one_time, done, Error(s));
      auto stored = BodyAs<relay::PreKeysStored>(*r);
      if (!stored) return Finish(with_one_time, done, Error(stored.error()));
      if (with_one_time && stored->one_time_remaining < kPreKeyLowWater && round + 1 < kMaxRefillRounds) {
        return UploadPreKeys(true, round + 1, done);
      }
      Finish(with_one_time, done, stored->one_time_remaining);
    });
  }
  void Finish(bool with_one_time, const Done<uint32_t>& done, Result<uint32_t> r) {
    if (with_one_time) refilling_ = false;
    done(std::move(r));
  }

  // ---------------------------------------------------------------- receiving
  void FetchAll(Done<size_t> done) {
    if (!state_.mailbox) return done(Error(StatusCode::kInvalidArgument, "not registered"));
    fetch_waiters_.push_back(std::move(done));
    if (fetching_) return;
    fetching_ = true;
    FetchFrom(0, received_total_);
  }

  void FetchFrom(uint64_t after, size_t start_count) {
    relay::FetchMessages f;
    f.mailbox = *state_.mailbox;
    f.after_seq = after;
    Request(f, [this, start_count](Result<relay::Response> r) {
      std::optional<Status> failed;
      if (!r) {
        failed = r.error();
      } else if (Status s = FromRelay(*r); !s.ok()) {
        failed = s;
      } else if (auto done = BodyAs<relay::FetchDone>(*r); !done) {
        failed = done.error();
      } else if (done->more) {
        return FetchFrom(done->last_seq, start_count);
      }
      fetching_ = false;
      HandlePushedWhileFetching();
      Result<size_t> outcome = received_total_ - start_count;
      if (failed) outcome = Error(std::move(*failed));
      auto waiters = std::move(fetch_waiters_);
      fetch_waiters_.clear();
      for (auto& w : waiters) w(outcome);
    });
  }

  // The relay pushes a mailbox's messages in seq order, and a fetch hands them out in seq order up to the
  // first one not yet durable; but a message pushed while a fetch is under way can come before earlier ones
  // the fetch has still to hand out (a reconnect in the middle of a burst). Such pushes wait for the fetch to
  // end: each is then either a copy of a fetched message (dropped by its id) or later than all of them. A
  // fetch the relay does not answer holds them at most kPushHoldMs (or kMaxPushesHeld of them): read late,
  // not never.
  void HoldPush(relay::Delivery d) {
    pushed_while_fetching_.push_back(std::move(d));
    if (pushed_while_fetching_.size() >= kMaxPushesHeld) return HandlePushedWhileFetching();
    if (push_hold_timer_) return;
    push_hold_timer_ = transport_->ScheduleAfter(kPushHoldMs, [this] {
      push_hold_timer_.reset();
      HandlePushedWhileFetching();
    });
  }
  void HandlePushedWhileFetching() {
    auto pushed = DropHeldPushes();
    if (shutting_down_ || locked_) return;  // still at the relay: the next fetch brings them
    std::stable_sort(pushed.begin(), pushed.end(),
                     [](const auto& a, const auto& b) { return a.seq < b.seq; });
    for (const auto& d : pushed) HandleDelivery(d);
  }
  std::vector<relay::Delivery> DropHeldPushes() {
    if (push_hold_timer_) transport_->CancelTimer(*push_hold_timer_);
    push_hold_timer_.reset();
    return std::exchange(pushed_while_fetching_, {});
  }

  // Acknowledgements made in one turn of the loop go to the relay together, up to kMaxAcksPerCommand ids
  // per command. Those of a fetched page come in one burst (each once the store has synced its message): a
  // device catching up on a thousand messages then sends about sixteen commands, not a thousand, and stays
  // far below the relay's cap on commands in flight, which would otherwise close its link while the relay
  // is slow to answer.
  void Ack(const relay::MessageId& id) {
    if (direct_ack_ && direct_ack_id_ == id) return std::exchange(direct_ack_, nullptr)();  // HandleDirect's
    if (!state_.mailbox) return;
    acks_to_send_.push_back(id);
    if (acks_to_send_.size() >= relay::kMaxAcksPerCommand) return SendAcks();
    if (acks_send_posted_) return;
    acks_send_posted_ = true;
    post_target_->Post([this] {
      acks_send_posted_ = false;
      SendAcks();
    });
  }

  void SendAcks() {
    if (acks_to_send_.empty()) return;
    relay::Ack a;
    a.mailbox = *state_.mailbox;
    a.message_ids = std::exchange(acks_to_send_, {});
    ++acks_in_flight_;
    Request(std::move(a), [this](Result<relay::Response>) {
      --acks_in_flight_;
      RunAckWaitersIfDone();
    });
  }

  // Before the link closes (lock, stop): acknowledgements still queued go out on it while it is up, as they
  // would have one by one; otherwise the relay delivers those messages again, and they are dropped by id.
  void SendAcksBeforeClosing() {
    if (link_ == LinkState::kUp && conn_) SendAcks();
  }

  void RunAckWaitersIfDone() {
    if (acks_in_flight_ != 0 || !acks_to_send_.empty()) return;
    auto waiters = std::move(ack_waiters_);
    ack_waiters_.clear();
    for (auto& w : waiters) w();
  }

  // Runs `fn` once every acknowledgement made so far was sent and answered (or failed with its link).
  void WhenAcksAnswered(std::function<void()> fn) {
    if (acks_in_flight_ == 0 && acks_to_send_.empty()) return fn();
    ack_waiters_.push_back(std::move(fn));
  }

  void AckWhenDurable(const relay::MessageId& id) {
    std::function<void()> direct;  // a message HandleDirect is handling is acked on its direct link
    if (direct_ack_ && direct_ack_id_ == id) direct = std::exchange(direct_ack_, nullptr);
    AfterSynced(store_->LastCommitSequence(), [this, id, direct] { direct ? direct() : Ack(id); });
  }

  // Runs `fn` on the loop thread once commit `sequence` is durable, in the order asked among work for
  // commits up to `sequence`: at once when it already is durable and no work for an equal or earlier commit
  // is still on its way; otherwise once the store's sync thread has posted it and that earlier work has run.
  // The store marks a commit synced before it posts the work waiting for it, and it may sync on two threads
  // (its sync thread, and a caller's SyncNow), so work that is already durable, or that arrives first, could
  // otherwise overtake earlier work: Sync, asked after the acknowledgements of what it fetched, could then
  // find none queued and return before they were sent (found in review). When the sync fails, or the client
  // is locked or closing by the time work runs later, `dropped` runs instead (if given) with the reason, and
  // `fn` never does: the relay delivers again what was not acknowledged, and the outbox is flushed again
  // after unlocking.
  void AfterSynced(uint64_t sequence, std::function<void()> fn,
                   std::function<void(Status)> dropped = nullptr) {
    auto drop = std::make_shared<std::function<void(Status)>>(std::move(dropped));
    if (store_->SyncedThrough() >= sequence) {
      if (after_synced_held_.empty() && !AfterSyncedOnItsWay(sequence)) return fn();
      after_synced_held_.push_back(HeldAfterSynced{sequence, Status::Ok(), std::move(fn), std::move(drop)});
      return;
    }
    after_synced_on_its_way_.insert(sequence);
    auto target = post_target_;
    Status s = store_->WhenSynced(
        sequence, [this, target, sequence, fn = std::move(fn), drop](const Status& synced) mutable {
          target->Post([this, sequence, fn = std::move(fn), drop, synced]() mutable {
            after_synced_on_its_way_.erase(after_synced_on_its_way_.find(sequence));
            after_synced_held_.push_back(HeldAfterSynced{sequence, synced, std::move(fn), std::move(drop)});
            RunHeldAfterSynced();
          });
        });
    if (!s.ok()) {
      after_synced_on_its_way_.erase(after_synced_on_its_way_.find(sequence));
      Report(s);
      if (*drop) (*drop)(s);
      RunHeldAfterSynced();
    }
  }

  bool AfterSyncedOnItsWay(uint64_t up_to) const {
    return !after_synced_on_its_way_.empty() && *after_synced_on_its_way_.begin() <= up_to;
  }

  // Held work whose earlier work has run, in the order it was asked (or arrived).
  void RunHeldAfterSynced() {
    while (!after_synced_held_.empty() && !AfterSyncedOnItsWay(after_synced_held_.front().sequence)) {
      HeldAfterSynced held = std::move(after_synced_held_.front());
      after_synced_held_.pop_front();
      Status why = held.synced;
      if (shutting_down_) why = Closing();
      if (locked_) why = Locked();
      if (why.ok()) {
        held.fn();
        continue;
      }
      if (!held.synced.ok()) Report(Status(held.synced.code(), "a commit could not be synced"));
      if (*held.drop) (*held.drop)(why);
    }
  }

  void HandleDelivery(const relay::Delivery& d) {
    if (locked_) return;  // it stays at the relay until after Unlock
    const std::string relay_id = ToHex(d.message_id);
    auto dup = transcripts_->IsDuplicate(relay_id);
    if (!dup) return Report(dup.error());  // storage trouble: leave it at the relay
    // Already stored, but perhaps not yet synced: the acknowledgement waits for everything committed so far.
    if (*dup) return AckWhenDurable(d.message_id);
    auto env = OpenEnvelope(d.envelope, box_pk_, box_sk_);
    if (!env && env.error().code() == StatusCode::kUnsupportedVersion) {
      // Sealed to us by a client of another version: left at the relay (until its expiry) for a version of
      // ours that reads it, rather than deleted unread (found in review).
      return Report(
          Status(StatusCode::kUnsupportedVersion,
                 "a message from a client of another version waits at the relay: update Cipherward"));
    }
    if (!env) {
      Report(Status(env.error().code(), "dropped an envelope that does not open"));
      return Ack(d.message_id);
    }
    if (direct_sender_ && env->sender != *direct_sender_) {
      // Not acked: the link's owner sent it, and only the relay (with its tokens) may bring it.
      return Report(
          Status(StatusCode::kPermissionDenied, "a direct link carried a message from someone else"));
    }
    // One device per identity: everything is sent to device 1, and a sender naming others (which the sealed
    // envelope lets it do) would start a session per number, each caught up on our groups (found in review).
    if (env->sender_device != kContactDevice) {
      Report(Status(StatusCode::kInvalidArgument,
                    "dropped a message from a device number this version does not serve"));
      return Ack(d.message_id);
    }
    if (const std::string why = WhyNotTheSendersToken(*env); !why.empty()) {
      Report(Status(StatusCode::kPermissionDenied, "dropped a message: " + why));
      return Ack(d.message_id);
    }
    const session::Address sender{env->sender, env->sender_device};
    std::optional<State> next;
    uint64_t sequence = 0;
    SecretBytes text;  // the text a 1:1 message carried, for on_message
    std::optional<wire::AppMessage> control;         // a consent, audit-head or erasure message
    std::optional<wire::AttachmentDescriptor> file;  // what a kFile message carried, for on_file
    bool refused = false;                            // a message whose purpose lacked consent
    bool new_contact = false;
    GroupRuntime::Incoming group;  // what a group kind staged (client_groups.h)
    compliance_->BeforeDecrypt(sender.name);
    auto received = engine_->Decrypt(sender, env->message, [&](const session::Received& rec, session::WriteBatch* b) -> Status {
      storage::IncomingDetails details;
      details.sent_at_ms = env->sent_at_ms;
      if (rec.kind == session::Received::Kind::kMessage) {
        // A 1:1 body is an AppMessage (core/wire/app_message.h); the transcript keeps the text, not the
        // encoding. One that does not parse fails the hook, so nothing is stored and the relay copy is dropped.
        CW_RETURN_IF_ERROR(compliance_->StageIncoming(rec, relay_id, env->token, details, b, &sequence, &text,
                                                      &file, &control, &refused));
        if (!control && !refused) CW_RETURN_IF_ERROR(receipts_->StageReceived(sender.name, sequence, relay_id, b));
      } else {
        CW_RETURN_IF_ERROR(groups_->StageIncoming(rec, relay_id, details, b, &group));
      }
      // A reply card is believed only from a first (pre-key) message that just decrypted: the session
      // authenticates whoever holds the contact's identity key.
      const auto it = state_.contacts.find(sender.name);
      const bool known = it != state_.contacts.end();
      if (env->card && env->message.type == session::MessageType::kPreKey &&
          (!known || !it->second.card || !(*it->second.card == *env->card))) {
        next = state_;
        next->contacts[sender.name].card = *env->card;
      } else if (!known) {
        next = state_;
        next->contacts[sender.name];
      }
      if (known && !it->second.heard_from) {
        if (!next) next = state_;
        next->contacts[sender.name].heard_from = true;
      }
      if (const OpenInvite* invite = FindOpenInvite(env->token);
          !known && invite && invite->for_contact.empty()) {
        next->contacts[sender.name].answered_with = env->token;
      }
      new_contact = !known;
      if (next) b->writes.push_back(StateWrite(*next));
      return Status::Ok();
    });
    compliance_->AfterCommit(received.has_value());
    groups_->AfterCommit(received.has_value(), group);
    if (!received) {
      const StatusCode c = received.error().code();
      if (c == StatusCode::kDuplicate) return AckWhenDurable(d.message_id);
      Report(Status(c, "a received message could not be decrypted: " + received.error().message()));
      // Group traffic that overtook the key it needs stays at the relay until that key is stored, and our
      // copy is tried again then (RetryHeld).
      if (!IsPermanentFailure(c)) return;
      const GroupRuntime::HoldResult hold =
          groups_->Hold(env->message, c, sender.name, relay_id, d.envelope.size());
      if (hold == GroupRuntime::HoldResult::kDrop) return Ack(d.message_id);
      if (hold == GroupRuntime::HoldResult::kLeaveAtRelay) return;  // past the copies' byte cap: refetched
      const bool kept = std::any_of(held_.begin(), held_.end(),
                                    [&](const relay::Delivery& h) { return h.message_id == d.message_id; });
      if (!kept) held_.push_back(d);
      return;
    }
    // The batch is committed; the relay may forget the message once it is synced.
    if (next) state_ = std::move(*next);
    AckWhenDurable(d.message_id);
    if (new_contact) compliance_->OnSessionEstablished(sender.name);
    if (new_contact) direct_->OnNewContact(sender.name);
    if (const auto it = state_.contacts.find(sender.name);
        new_contact || (it != state_.contacts.end() && it->second.catch_up_due)) {
      CatchUpGroups(sender.name);
    }
    if (refused || group.refused) {
      return Report(Status(StatusCode::kPermissionDenied, "no valid consent for purpose (incoming message refused)"));
    }
    if (group.shown) {
      ++received_total_;
      if (options_.callbacks.on_message) {
        IncomingMessage m;
        m.contact = sender.name;
        m.group_id = received->group_id;
        m.sequence = group.sequence;
        m.sent_at_ms = env->sent_at_ms;
        m.received_at_ms = clock_->NowMillis();
        m.text = std::move(group.text);
        options_.callbacks.on_message(m);
      }
      return;
    }
    if (control) {
      compliance_->HandleControl(sender.name, relay_id, std::move(*control), env->token);
      return;
    }
    if (received->kind == session::Received::Kind::kMessage) {
      ++received_total_;
      if (file) compliance_->OnAttachment(*file);
      // The user hears of the message before its delivery receipt is encrypted and committed.
      if (file && options_.callbacks.on_file) {
        options_.callbacks.on_file(
            IncomingFile{sender.name, sequence, env->sent_at_ms, clock_->NowMillis(), std::move(*file)});
      } else if (!file && options_.callbacks.on_message) {
        IncomingMessage m;
        m.contact = sender.name;
        m.sequence = sequence;
        m.sent_at_ms = env->sent_at_ms;
        m.received_at_ms = clock_->NowMillis();
        m.text = std::move(text);
        options_.callbacks.on_message(m);
      }
      if (options_.send_delivery_receipts) QueueDeliveryReceipt(sender.name, relay_id);
    }
  }

  // ---------------------------------------------------------------- sending
  Result<uint64_t> SendText(const std::string& contact, std::string_view text, const std::string& purpose) {
    CW_RETURN_IF_ERROR(compliance_->CheckOutgoing(contact, purpose));
    wire::AppMessage app;
    app.kind = wire::AppKind::kText;
    app.purpose = purpose;
    app.payload = SecretBytes(AsBytes(text));
    return SendApp(contact, app, storage::Transcripts::DirectConversationId(contact), app.payload.reveal(), {});
  }

  static Status StatusOfSend(const Result<uint64_t>& r) { return r ? Status::Ok() : r.error(); }

  // Encrypts `app` for `contact` and queues it in the outbox of `conv`. A shown message (text or file) gets a
  // transcript row with `body` and `attachments`, and its kMessageSent audit entry commits in the same batch;
  // a control message's row holds only its kind's name (its records live in the compliance tables).
  Result<uint64_t> SendApp(const std::string& contact, const wire::AppMessage& app, const std::string& conv,
                           ByteView body, const std::vector<SecretBytes>& attachments) {
    auto it = state_.contacts.find(contact);
    if (it == state_.contacts.end()) return Error(StatusCode::kNotFound, "no such contact");
    if (!it->second.card) return Error(StatusCode::kNoSession, "this contact has not written to us yet");
    const session::Address to{contact, kContactDevice};
    uint64_t seq = 0;
    const bool shown = app.kind == wire::AppKind::kText || app.kind == wire::AppKind::kFile;
    const std::string label = shown ? std::string() : "[cipherward control " + std::to_string(static_cast<int>(app.kind)) + "]";
    CW_ASSIGN_OR_RETURN(SecretBytes plaintext, wire::EncodeAppMessage(app));
    std::optional<session::Ciphertext> sent;
    static const std::vector<SecretBytes> kNoAttachments;
    auto c = engine_->Encrypt(to, plaintext.reveal(), [&](const session::Ciphertext& ct, session::WriteBatch* b) -> Status {
      sent = ct;
      CW_RETURN_IF_ERROR(transcripts_->StageOutgoing(conv, shown ? body : AsBytes(label),
                                                     shown ? attachments : kNoAttachments, {to}, ct, b, &seq));
      if (!shown) return Status::Ok();
      const std::string ref = ToHex(DepositId(ct, contact));
      CW_RETURN_IF_ERROR(receipts_->StageSent(contact, seq, ref, b));
      return compliance_->StageSent(conv, ref, b);
    });
    compliance_->AfterCommit(c.has_value());
    if (!c) return Error(c.error());
    DeliverWhenDurable(conv, seq, contact);
    // Sealed while the sync runs (when it has not already run and flushed the entry).
    if (sent && link_ == LinkState::kUp && store_->SyncedThrough() < store_->LastCommitSequence()) {
      PrepareDeposit(conv, seq, contact, *sent);
    }
    return seq;
  }

  // Delivers the outbox entry written by the store's last commit (SendApp's, or the groups runtime's). The
  // sync of that commit starts now rather than when a flush under way (waiting for the relay's answer to the
  // previous entry) ends: by then the entry is usually durable and goes at once, so a message waits for one
  // fsync, not for the relay's and then its own.
  // `contact` names the one recipient of a 1:1 entry, which may go over a direct link (groups: empty).
  void DeliverWhenDurable(const std::string& conv, uint64_t seq, const std::string& contact = {}) {
    const uint64_t commit = store_->LastCommitSequence();
    outbox_commits_[conv + '\0' + std::to_string(seq)] = commit;
    const auto can_send = [this, contact] {
      return link_ == LinkState::kUp || (!contact.empty() && direct_->IsUp(contact));
    };
    if (can_send()) {
      AfterSynced(commit, [this, can_send] {
        if (can_send()) FlushOutbox([](Result<size_t>) {});
      });
    } else if (background_) {
      EnsureConnecting();
    }
  }

  // Tries the messages GroupRuntime::Hold left at the relay again, from our copies and in the order they
  // came. Not by fetching them again: the relay pushes a message before it is durable and a fetch hands out
  // only durable ones, so a fetch right after the key arrived could pass over a held message that came by
  // push, and nothing would fetch again until the next Sync or reconnect. Posted, because the groups runtime
  // asks from inside HandleDelivery; a copy that still cannot be read is held again. With `refetch`, some were
  // left at the relay without a copy (past the copies' byte cap): a fetch brings them back.
  void RetryHeld(bool refetch) {
    post_target_->Post([this, refetch] {
      if (shutting_down_ || locked_) return;
      auto held = std::move(held_);
      held_.clear();
      for (const auto& d : held) HandleDelivery(d);
      if (refetch && state_.mailbox && link_ == LinkState::kUp) FetchAll([](Result<size_t>) {});
    });
  }

  // One pass of FlushOutbox over the outbox: what is left to deposit, what went, and what could not go.
  struct FlushRun {
    std::deque<storage::OutboxEntry> queue;
    size_t sent = 0;
    // Conversations with an entry that cannot go in this pass (its commit is not synced yet, or its deposit
    // failed for now): their later entries stay too, so messages never overtake each other within a
    // conversation (a group text counts for its group's conversation).
    std::set<std::string> held;
    std::optional<Status> failure;  // the first transient failure: what the waiters hear
    bool relay_failed = false;      // a deposit found the relay unreachable in this pass
  };

  // Deposits the outbox one entry at a time (the relay's workers could reorder pipelined deposits), marking
  // each sent when the relay, or the contact over a direct link, acknowledged it. Order is kept per
  // conversation only: an entry that cannot go now holds back the later entries of its own conversation and
  // no others, so a group text waiting for a relay that is down does not stop a 1:1 text to a contact with a
  // direct link. Done with the number sent, or with the pass's first failure (the entries that went anyway are
  // counted in sent_total_, which the next Sync reports).
  void FlushOutbox(Done<size_t> done) {
    flush_waiters_.push_back(std::move(done));
    if (flushing_) {
      flush_again_ = true;
      return;
    }
    flushing_ = true;
    flush_again_ = false;
    auto pending = transcripts_->PendingOutbox();
    if (!pending) return EndFlush(Error(pending.error()));
    auto run = std::make_shared<FlushRun>();
    // An entry leaves the device only once its commit, which holds the session state that encrypted it, is
    // durable: a crash that lost that state after the message left would make the next message reuse its
    // message key. The outbox lists entries by conversation id, in sequence order within one (not in the
    // order they were written), so an entry whose commit is not synced yet holds back the rest of its
    // conversation only; they go with the flush that follows their sync.
    const uint64_t synced = store_->SyncedThrough();
    uint64_t wait_for = 0;
    for (auto& e : *pending) {
      const std::string key = OutboxKey(e);
      if (refused_.count(key) || run->held.count(e.conversation_id)) continue;
      if (auto it = outbox_commits_.find(key); it != outbox_commits_.end()) {
        if (it->second > synced) {
          wait_for = std::max(wait_for, it->second);
          run->held.insert(e.conversation_id);
          continue;
        }
        outbox_commits_.erase(it);
      }
      run->queue.push_back(std::move(e));
    }
    durable_wait_ = wait_for;
    // A relay that failed and is being reconnected (after its backoff) is not tried again by the pass: its
    // entries wait for the flush the link coming up makes. Otherwise every pass would open a connection of
    // its own, and a relay that accepts and never answers would hold the direct entries after its first entry
    // for the whole handshake timeout.
    if (link_ != LinkState::kUp && backoff_ms_ > 0) run->relay_failed = true;
    DepositNext(std::move(run));
  }

  static std::string OutboxKey(const storage::OutboxEntry& e) {
    return e.conversation_id + '\0' + std::to_string(e.sequence);
  }

  // Whether `e` can only go through the relay (groups always; a 1:1 entry when no direct link is up).
  bool NeedsRelay(const storage::OutboxEntry& e) const {
    return e.recipients.size() != 1 || !direct_->IsUp(e.recipients[0].name);
  }

  // `entry` could not go, for `why`: it and the later entries of its conversation wait for the next flush (the
  // retry, or the relay link coming up), and the pass goes on with the other conversations.
  void HoldBack(std::shared_ptr<FlushRun> run, const storage::OutboxEntry& entry, const Status& why) {
    run->held.insert(entry.conversation_id);
    if (!run->failure) run->failure = why;
    DepositNext(std::move(run));
  }

  void DepositNext(std::shared_ptr<FlushRun> run) {
    // A lock or close in the middle of a pass ends it (the store and engine are gone or going); the outbox
    // keeps what did not go.
    if (locked_) return EndFlush(Error(Locked()));
    if (shutting_down_) return EndFlush(Error(Closing()));
    while (!run->queue.empty()) {
      const storage::OutboxEntry& e = run->queue.front();
      if (run->held.count(e.conversation_id)) {
        run->queue.pop_front();
      } else if (run->relay_failed && NeedsRelay(e)) {
        // The relay was unreachable a moment ago: waiting for another connection attempt per conversation
        // would only delay the entries that can go over direct links.
        run->held.insert(e.conversation_id);
        if (!run->failure) run->failure = Status(StatusCode::kUnavailable, "the relay is unreachable");
        run->queue.pop_front();
      } else {
        break;
      }
    }
    if (run->queue.empty()) return FinishFlush(std::move(run));
    auto entry = std::make_shared<storage::OutboxEntry>(std::move(run->queue.front()));
    run->queue.pop_front();
    DepositTo(std::move(run), std::move(entry), 0);
  }

  // The pass is over. Entries whose commits were not synced get a pass once they are, and entries queued
  // during this one (flush_again_) get one now; the waiters then hear the total, or this pass's failure.
  void FinishFlush(std::shared_ptr<FlushRun> run) {
    const uint64_t wait = std::exchange(durable_wait_, 0);
    const size_t sent = run->sent;
    const std::optional<Status> failure = run->failure;
    const auto result = [failure, sent](const Result<size_t>& next) -> Result<size_t> {
      if (failure) return Error(*failure);
      return next ? Result<size_t>(*next + sent) : next;
    };
    if (!failure && wait != 0) {
      flushing_ = false;
      auto waiters = std::move(flush_waiters_);
      flush_waiters_.clear();
      AfterSynced(
          wait,
          [this, waiters, result] {
            FlushOutbox([waiters, result](Result<size_t> r) {
              for (auto& w : waiters) w(result(r));
            });
          },
          [waiters](Status why) {
            for (auto& w : waiters) w(Error(why));
          });
      return;
    }
    // After a failure the waiters hear of it now, and the entries whose commits were not synced get a pass of
    // their own once they are: a flush for them may not be coming otherwise (DeliverWhenDurable asks for one
    // only for an entry that could go when it was written).
    if (wait != 0) {
      AfterSynced(wait, [this] {
        if (!locked_ && !shutting_down_) FlushOutbox([](Result<size_t>) {});
      });
    }
    if (flush_again_) {
      flushing_ = false;
      auto waiters = std::move(flush_waiters_);
      flush_waiters_.clear();
      FlushOutbox([waiters, result](Result<size_t> r) {
        for (auto& w : waiters) w(result(r));
      });
      return;
    }
    EndFlush(result(Result<size_t>(size_t{0})));
  }

  // Deposits `entry` to its recipients from `index` on, one envelope each (a group text lists every other
  // member; its single ciphertext is sealed to each one's mailbox), then marks it sent. A recipient that
  // cannot be written to is reported and skipped; an entry for one recipient only is then left unsent
  // (refused_) as before, while a group entry still goes to the others.
  void DepositTo(std::shared_ptr<FlushRun> run, std::shared_ptr<storage::OutboxEntry> entry, size_t index) {
    const bool single = entry->recipients.size() == 1;
    if (index >= entry->recipients.size()) {
      if (Status m = transcripts_->MarkSent(entry->conversation_id, entry->sequence); !m.ok()) return EndFlush(Error(m));
      ++sent_total_;
      ++run->sent;
      if (single && options_.callbacks.on_sent && !IsControlConversation(entry->conversation_id)) {
        options_.callbacks.on_sent(entry->recipients[0].name, entry->sequence);
      }
      return DepositNext(std::move(run));
    }
    const auto skip = [&](const Status& why) {
      Report(why);
      if (single) {
        refused_.insert(OutboxKey(*entry));
        return DepositNext(run);
      }
      DepositTo(run, entry, index + 1);
    };
    const std::string recipient = entry->recipients[index].name;
    auto it = state_.contacts.find(recipient);
    if (it == state_.contacts.end() || !it->second.card) {
      return skip(Status(StatusCode::kNotFound, "an outbox entry's contact has no mailbox"));
    }
    const ContactCard card = *it->second.card;
    if (card.relay != state_.relay) {
      return skip(Status(StatusCode::kInvalidArgument, "contacts on another relay are not supported yet"));
    }
    auto dep = TakePreparedDeposit(*entry, recipient, card);
    if (!dep) return skip(dep.error());
    const std::string to = single ? recipient : std::string();  // group entries stay relay-only
    SendDeposit(to, std::move(*dep), [this, run, entry, index, single](Result<relay::Response> r) mutable {
      if (!r) {
        // Locking or closing ends the pass; any other failure here is the relay's link (a direct link that
        // fails falls back to the relay), which holds back this conversation only. The relay link coming
        // up flushes again.
        const StatusCode code = r.error().code();
        if (code == StatusCode::kAborted || code == StatusCode::kPermissionDenied)
          return EndFlush(Error(r.error()));
        run->relay_failed = true;
        return HoldBack(std::move(run), *entry, r.error());
      }
      Status s = FromRelay(*r);
      if (r->code == relay::ResponseCode::kDepositRefused) {
        // The contact revoked our token (or the mailbox is gone): retrying cannot help.
        Report(s);
        if (!single) return DepositTo(std::move(run), entry, index + 1);
        refused_.insert(OutboxKey(*entry));
        (void)transcripts_->SetStatus(entry->conversation_id, entry->sequence,
                                      storage::MessageStatus::kFailed);
        return DepositNext(std::move(run));
      }
      if (!s.ok()) {
        ScheduleRetry();
        return HoldBack(std::move(run), *entry, s);
      }
      DepositTo(std::move(run), entry, index + 1);
    });
  }

  // The deposit of `entry` for `recipient`, whose card is `card`: the sealed-sender envelope (sender, device,
  // send time, and for a first message our own card) sealed to the contact's box key.
  Result<relay::Deposit> BuildDeposit(const storage::OutboxEntry& entry, const std::string& recipient,
                                      const ContactCard& card) {
    EnvelopeContent ec;
    ec.message = entry.message;
    ec.sender = state_.name;
    ec.sender_device = engine_->device_id();
    ec.token = card.token;
    if (auto row = transcripts_->GetMessage(entry.conversation_id, entry.sequence)) ec.sent_at_ms = row->sent_at_ms;
    const auto it = state_.contacts.find(recipient);
    if (entry.message.type == session::MessageType::kPreKey && state_.mailbox && it != state_.contacts.end() &&
        it->second.my_token) {
      ec.card = ContactCard{state_.relay, *state_.mailbox, *it->second.my_token, box_pk_};
    }
    CW_ASSIGN_OR_RETURN(Bytes sealed, SealEnvelope(ec, card.box_key));
    relay::Deposit dep;
    dep.mailbox = card.mailbox;
    dep.token = card.token;
    dep.message_id = DepositId(entry.message, recipient);
    dep.envelope = std::move(sealed);
    return dep;
  }

  // Sealing an envelope (crypto_box_seal: two X25519) costs about as much as the rest of sending. A 1:1
  // message's is done while its commit is being synced (PrepareDeposit), so the deposit can leave the moment
  // the sync ends; DepositTo takes it if the contact's card is still the one it was sealed for.
  struct PreparedDeposit {
    ContactCard card;
    relay::Deposit deposit;
  };
  static std::string PreparedKey(const std::string& conv, uint64_t seq, const std::string& recipient) {
    return conv + '\0' + std::to_string(seq) + '\0' + recipient;
  }
  void PrepareDeposit(const std::string& conv, uint64_t seq, const std::string& recipient,
                      const session::Ciphertext& message) {
    // First messages carry our card (built from state that may change before they go): sealed when they go.
    if (message.type == session::MessageType::kPreKey || prepared_.size() >= kMaxPreparedDeposits) return;
    const auto it = state_.contacts.find(recipient);
    if (it == state_.contacts.end() || !it->second.card || it->second.card->relay != state_.relay) return;
    storage::OutboxEntry entry;
    entry.conversation_id = conv;
    entry.sequence = seq;
    entry.message = message;
    auto dep = BuildDeposit(entry, recipient, *it->second.card);
    if (!dep) return;  // DepositTo tries again, and reports what fails
    prepared_[PreparedKey(conv, seq, recipient)] = PreparedDeposit{*it->second.card, std::move(*dep)};
  }
  Result<relay::Deposit> TakePreparedDeposit(const storage::OutboxEntry& entry, const std::string& recipient,
                                             const ContactCard& card) {
    if (auto p = prepared_.find(PreparedKey(entry.conversation_id, entry.sequence, recipient)); p != prepared_.end()) {
      PreparedDeposit prepared = std::move(p->second);
      prepared_.erase(p);
      if (prepared.card == card) return std::move(prepared.deposit);
    }
    return BuildDeposit(entry, recipient, card);
  }

  void EndFlush(Result<size_t> r) {
    flushing_ = false;
    auto waiters = std::move(flush_waiters_);
    flush_waiters_.clear();
    for (auto& w : waiters) w(r);
  }

  void ScheduleRetry() {
    if (!background_ || shutting_down_ || retry_timer_) return;
    retry_backoff_ms_ =
        retry_backoff_ms_ == 0 ? options_.reconnect_min_ms : std::min(retry_backoff_ms_ * 2, options_.reconnect_max_ms);
    retry_timer_ = transport_->ScheduleAfter(retry_backoff_ms_, [this] {
      retry_timer_.reset();
      if (link_ == LinkState::kUp) FlushOutbox([this](Result<size_t> r) {
        if (r) retry_backoff_ms_ = 0;
      });
    });
  }

  // ---------------------------------------------------------------- receipts (core/runtime/receipts.h)
  // Queues receipts for `relay_ids` (hex) to `contact` in its control conversation, like any control message.
  void SendReceipts(const std::string& contact, wire::ReceiptType type, const std::vector<std::string>& relay_ids) {
    std::vector<wire::ReceiptRef> refs;
    for (const auto& id : relay_ids) {
      wire::ReceiptRef r;
      if (ReceiptRefFromHex(id, &r)) refs.push_back(r);
    }
    if (refs.empty()) return;
    auto messages = ReceiptBook::Messages(type, refs);
    if (!messages) return Report(messages.error());
    for (const auto& m : *messages) {
      // A receipt that cannot be queued (no mailbox known yet) is not worth failing the message over.
      if (auto sent = SendApp(contact, m, ControlConversationId(contact), {}, {}); !sent) {
        Report(Status(sent.error().code(), "a receipt could not be queued: " + sent.error().message()));
      }
    }
  }

  // Delivery receipts wait up to options_.delivery_receipt_delay_ms for company (see client.h).
  void QueueDeliveryReceipt(const std::string& contact, const std::string& relay_id) {
    if (options_.delivery_receipt_delay_ms <= 0) return SendReceipts(contact, wire::ReceiptType::kDelivered, {relay_id});
    pending_delivery_receipts_[contact].push_back(relay_id);
    if (receipt_timer_) return;
    receipt_timer_ = transport_->ScheduleAfter(options_.delivery_receipt_delay_ms, [this] {
      receipt_timer_.reset();
      SendPendingDeliveryReceipts();
    });
  }

  // `while_locking`: from the lock's teardown, which commits what a callback that locked left queued.
  void SendPendingDeliveryReceipts(bool while_locking = false) {
    if (receipt_timer_) transport_->CancelTimer(*receipt_timer_);
    receipt_timer_.reset();
    auto pending = std::exchange(pending_delivery_receipts_, {});
    if ((locked_ && !while_locking) || !receipts_) return;
    for (const auto& [contact, ids] : pending) SendReceipts(contact, wire::ReceiptType::kDelivered, ids);
  }

  Status ApplyReceipt(const std::string& sender, ByteView payload) {
    CW_ASSIGN_OR_RETURN(auto events, receipts_->Apply(sender, payload));
    for (const auto& e : events) {
      if (e.type == wire::ReceiptType::kRead) {
        CW_RETURN_IF_ERROR(compliance_->RecordMessageRead(sender, e.message_ref, /*by_contact=*/true));
      }
      if (options_.callbacks.on_receipt) options_.callbacks.on_receipt(e);
    }
    return Status::Ok();
  }

  Result<size_t> MarkRead(const std::string& contact, uint64_t up_to_sequence) {
    if (!state_.contacts.count(contact)) return Error(StatusCode::kNotFound, "no such contact");
    CW_ASSIGN_OR_RETURN(auto unread, receipts_->UnreadUpTo(contact, up_to_sequence));
    if (unread.empty()) return size_t{0};
    std::vector<std::string> ids;
    for (const auto& u : unread) {
      ids.push_back(ToHex(u.ref));
      CW_RETURN_IF_ERROR(compliance_->RecordMessageRead(contact, ids.back(), /*by_contact=*/false));
    }
    // Forgotten first: a crash between the two loses a read receipt rather than sending one twice.
    CW_RETURN_IF_ERROR(receipts_->Forget(unread));
    if (options_.send_read_receipts) SendReceipts(contact, wire::ReceiptType::kRead, ids);
    return unread.size();
  }

  // The disappearing-message sweeper: deletes expired rows every sweep_interval_ms while unlocked.
  void ArmSweepTimer() {
    if (options_.sweep_interval_ms <= 0 || locked_ || shutting_down_ || sweep_timer_) return;
    sweep_timer_ = transport_->ScheduleAfter(options_.sweep_interval_ms, [this] {
      sweep_timer_.reset();
      if (locked_ || shutting_down_ || !transcripts_) return;
      auto swept = transcripts_->SweepExpired();
      if (!swept) {
        Report(swept.error());
      } else if (swept->messages > 0 && options_.callbacks.on_disappeared) {
        options_.callbacks.on_disappeared(swept->messages);
      }
      ForgetLapsedInvites();
      RevokeRetired();  // retired tokens a failed request left behind while the link stayed up
      ArmSweepTimer();
    });
  }

  // ---------------------------------------------------------------- contacts
  // Revokes our token for `contact` at the relay; with `remove`, forgets the contact afterwards.
  void RevokeContact(const std::string& contact, bool remove, Done<bool> done) {
    auto it = state_.contacts.find(contact);
    if (it == state_.contacts.end()) return done(Error(StatusCode::kNotFound, "no such contact"));
    if (!state_.mailbox) return done(Error(StatusCode::kInvalidArgument, "not registered with a relay"));
    if (!it->second.my_token) {
      if (!remove) return done(Error(StatusCode::kNotFound, "no deposit token of ours is known for this contact"));
      // Nothing of ours to revoke (already revoked, or a contact that never said which invite it answered).
      State next = state_;
      next.contacts.erase(contact);
      RetireDeviceInvites(&next, contact);
      ForgetRetiredAdmits(&next, contact);
      if (Status s = SaveState(next); !s.ok()) return done(Error(s));
      ForgetDirect(contact);
      RevokeRetired();
      return done(true);
    }
    relay::RevokeDepositToken rv;
    rv.mailbox = *state_.mailbox;
    rv.token = *it->second.my_token;
    Request(rv, [this, contact, remove, token = rv.token, done](Result<relay::Response> r) {
      if (!r) return done(Error(r.error()));
      // A token the relay no longer knows is as good as revoked.
      if (Status s = FromRelay(*r); !s.ok() && !(remove && s.code() == StatusCode::kNotFound)) return done(Error(s));
      State next = state_;
      auto c = next.contacts.find(contact);
      if (c != next.contacts.end() && c->second.my_token == token) {
        if (remove) {
          next.contacts.erase(c);
        } else {
          c->second.my_token.reset();
        }
      }
      // Its device invites too: one made before the revocation would let the revoked key back in, unasked
      // (found in review). The lost-phone flow revokes first, then makes the new phone's code.
      RetireDeviceInvites(&next, contact);
      if (remove) ForgetRetiredAdmits(&next, contact);
      if (Status s = SaveState(next); !s.ok()) return done(Error(s));
      ForgetDirect(contact);
      RevokeRetired();
      done(true);
    });
  }

  // A removed contact's retired tokens admit nobody any more: under its name, a message would raise an
  // identity change of a contact that is gone (found in review).
  static void ForgetRetiredAdmits(State* next, const std::string& contact) {
    for (RetiredToken& r : next->retired_tokens) {
      if (r.admits == contact) r.admits.clear();
    }
  }

  // A revoked or removed contact's invites for a new device go too (found in review: one outlived its contact
  // and raised an identity change of a contact that was gone): their tokens are retired, revoked at the
  // relay.
  static void RetireDeviceInvites(State* next, const std::string& contact) {
    std::erase_if(next->invites, [&](const OpenInvite& i) {
      if (i.for_contact != contact) return false;
      next->retired_tokens.push_back(RetiredToken{i.token, ""});
      return true;
    });
  }

  // A revoked or removed contact's direct link would otherwise still carry its messages to us, which the
  // relay now refuses. The revocation itself is done: a failure here is reported, not returned.
  void ForgetDirect(const std::string& contact) {
    if (Status s = direct_->ForgetContact(contact); !s.ok()) {
      Report(Status(s.code(), "a revoked contact's direct link record was not updated: " + s.message()));
    }
  }

  // ---------------------------------------------------------------- invitations
  // A kInviteAnswer from `sender`: the token of our invite it accepted. Believed only for an open invite of
  // ours (one no contact has answered): tokens are secret, so a contact can only name one it was given, and
  // naming one that another contact already answered changes nothing. The token leaves the open invites and
  // becomes the contact's; a token the contact held before (an earlier invite, a reinstalled device) is
  // retired and revoked at the relay, since this contact now deposits with the new one. The answer must come
  // with the token it names (its envelope says which), so a contact holding two of our invites cannot name
  // the other one. `arrived_with` is that token, kept with the message until it is handled (even across a
  // restart, ResumeInbox); empty only for a message stored by an older version, which is taken as before.
  Status ApplyInviteAnswer(const std::string& sender, ByteView payload, ByteView arrived_with) {
    static_assert(sizeof(DepositToken) == kInboxTokenSize);
    if (payload.size() != sizeof(DepositToken)) return Status(StatusCode::kMalformed, "invite answer of the wrong size");
    DepositToken token;
    std::copy(payload.begin(), payload.end(), token.begin());
    auto contact = state_.contacts.find(sender);
    if (contact == state_.contacts.end()) return Status::Ok();  // removed meanwhile
    if (contact->second.my_token && ConstantTimeEquals(*contact->second.my_token, token)) return Status::Ok();
    // An expired invite still binds: the relay admits an invite's token after its expiry only if a deposit
    // claimed it in time, so an answer naming it came from whoever answered in time (read late, perhaps).
    // Only with the token it names (found in review: an answer to a stale code, queued on the contact's
    // device and deposited later with a fresh code's token, bound the stale one, which the relay never took).
    if (!arrived_with.empty() && !ConstantTimeEquals(arrived_with, token)) {
      return Status(StatusCode::kPermissionDenied,
                    "an invite answer came with another deposit token than it names");
    }
    const OpenInvite* open = FindOpenInvite(token);
    if (open == nullptr) {
      return Status(StatusCode::kInvalidArgument, "a contact named a deposit token that is no open invite of ours");
    }
    // A code for another contact's new device, held by this one, is not this contact's to take (found in
    // review: taking it retired the real new phone's way in).
    if (!open->for_contact.empty() && open->for_contact != sender) {
      return Status(StatusCode::kPermissionDenied, "a contact named an invite made for another contact");
    }
    State next = state_;
    next.invites.erase(next.invites.begin() + (open - state_.invites.data()));
    ContactRecord& rec = next.contacts[sender];
    if (rec.my_token) next.retired_tokens.push_back(RetiredToken{*rec.my_token, sender});
    rec.my_token = token;
    rec.answered_with.reset();
    CW_RETURN_IF_ERROR(SaveState(next));
    RevokeRetired();
    return Status::Ok();
  }

  // Revokes the retired tokens at the relay, one at a time, while the link is up; what remains is tried at
  // the next link up. A token the relay no longer knows is as good as revoked.
  void RevokeRetired() {
    if (revoking_retired_ || state_.retired_tokens.empty() || !state_.mailbox || link_ != LinkState::kUp) return;
    revoking_retired_ = true;
    relay::RevokeDepositToken rv;
    rv.mailbox = *state_.mailbox;
    rv.token = state_.retired_tokens.front().token;
    Request(rv, [this, token = rv.token](Result<relay::Response> r) {
      revoking_retired_ = false;
      if (!r || (r->code != relay::ResponseCode::kOk && r->code != relay::ResponseCode::kNotFound)) {
        if (r) Report(FromRelay(*r));
        return;  // the next link up tries again
      }
      if (Status s = ForgetRetired(token); !s.ok()) return Report(s);
      RevokeRetired();
    });
  }

  // The relay no longer takes `token` (revoked now, or NOT_FOUND: revoked or lapsed earlier).
  Status ForgetRetired(const DepositToken& token) {
    State next = state_;
    std::erase_if(next.retired_tokens, [&](const RetiredToken& t) { return t.token == token; });
    return SaveState(std::move(next));
  }

  // An invite withdrawn (cancelled, lapsed) admits nobody, except the contact it made whose answer binding it
  // is still on its way (found in review: cancelling such an invite dropped that contact's messages).
  RetiredToken Retire(const OpenInvite& invite) const {
    for (const auto& [name, c] : state_.contacts) {
      if (c.answered_with && ConstantTimeEquals(*c.answered_with, invite.token))
        return RetiredToken{invite.token, name};
    }
    return RetiredToken{invite.token, ""};
  }

  bool Expired(const OpenInvite& invite) const {
    return invite.expires_ms != 0 && clock_->NowMillis() >= invite.expires_ms;
  }

  // The relay enforces an invite's expiry itself (its token admits a first deposit only until then, and
  // lapses if nobody made one), so nothing is revoked at the expiry. An expired invite is still remembered for
  // a while, since an answer made in time may wait in the mailbox (up to the relay's 30-day TTL) until this
  // device fetches it. After that its token is retired: revoked, in case a deposit claimed it in time and no
  // answer ever bound it (the relay says NOT_FOUND for one that lapsed, which is as good). Runs with each sweep.
  void ForgetLapsedInvites() {
    const int64_t now = clock_->NowMillis();
    const auto lapsed = [&](const OpenInvite& i) { return i.expires_ms != 0 && now >= i.expires_ms + kLapsedInviteKeptMs; };
    if (std::none_of(state_.invites.begin(), state_.invites.end(), lapsed)) return;
    State next = state_;
    std::erase_if(next.invites, [&](const OpenInvite& i) {
      if (!lapsed(i)) return false;
      next.retired_tokens.push_back(Retire(i));
      return true;
    });
    if (Status s = SaveState(next); !s.ok()) Report(s);
  }

  std::vector<InviteInfo> OpenInvites() const {
    std::vector<InviteInfo> out;
    for (const auto& i : state_.invites) {
      if (!Expired(i))
        out.push_back(InviteInfo{InviteIdOf(i.token), i.created_ms, i.expires_ms, i.for_contact});
    }
    return out;
  }

  // Cancels an invite: it leaves the remembered invites at once (so an answer to it can no longer bind) and
  // its token joins the retired ones, revoked at the relay now; when the relay cannot be reached, the
  // cancellation stands and the revocation goes out at the next link up (the error says so).
  void CancelInvite(const std::string& id, Done<bool> done) {
    // Expired ones too: the relay's clock may still admit it, or a stranger may have claimed it in time.
    const auto it = std::find_if(state_.invites.begin(), state_.invites.end(),
                                 [&](const OpenInvite& i) { return InviteIdOf(i.token) == id; });
    if (it == state_.invites.end()) return done(Error(StatusCode::kNotFound, "no open invite with this id"));
    if (!state_.mailbox) return done(Error(StatusCode::kInvalidArgument, "not registered with a relay"));
    State next = state_;
    next.retired_tokens.push_back(Retire(*it));
    next.invites.erase(next.invites.begin() + (it - state_.invites.begin()));
    if (Status s = SaveState(next); !s.ok()) return done(Error(s));
    relay::RevokeDepositToken rv;
    rv.mailbox = *state_.mailbox;
    rv.token = next.retired_tokens.back().token;
    Request(rv, [this, token = rv.token, done](Result<relay::Response> r) {
      const auto later = [](const Status& s) {
        return Error(s.code(), "cancelled here; the relay is told at the next connection: " + s.message());
      };
      if (!r) return done(later(r.error()));
      if (Status s = FromRelay(*r); !s.ok() && s.code() != StatusCode::kNotFound) return done(later(s));
      if (Status s = ForgetRetired(token); !s.ok()) return done(Error(s));
      done(true);
    });
  }

  void CreateInvite(int64_t valid_for_ms, const std::string& for_contact, Done<std::string> done) {
    if (!state_.mailbox) return done(Error(StatusCode::kInvalidArgument, "not registered with a relay"));
    // A removed contact's name is known too: its new code is how it comes back.
    if (!for_contact.empty() && state_.contacts.count(for_contact) == 0 && !EngineKnows(for_contact)) {
      return done(Error(StatusCode::kNotFound, "an invite for a new device is for a contact's"));
    }
    if (valid_for_ms < 0) return done(Error(StatusCode::kInvalidArgument, "an invite's validity cannot be negative"));
    if (static_cast<uint64_t>(valid_for_ms) > relay::kMaxClaimWithinMillis) {
      return done(Error(StatusCode::kInvalidArgument, "an invite is valid for at most a year"));
    }
    IssueToken(
        static_cast<uint64_t>(valid_for_ms), [this, valid_for_ms, for_contact, done](Result<DepositToken> t) {
          if (!t) return done(Error(t.error()));
          Invite inv;
          inv.card = ContactCard{state_.relay, *state_.mailbox, *t, box_pk_};
          inv.identity_key = engine_->identity_key();
          inv.name = state_.name;
          inv.for_device_of = for_contact;
          // Recorded before it is signed: a token live at the relay is always one OpenInvites lists and
          // CancelInvite revokes, even when what follows fails.
          State next = state_;
          const int64_t now = clock_->NowMillis();
          next.invites.push_back(OpenInvite{*t, now, valid_for_ms > 0 ? now + valid_for_ms : 0, for_contact});
          if (Status s = SaveState(next); !s.ok()) return done(Error(s));
          auto signature = engine_->SignWithIdentityKey(InviteSignedBytes(inv).reveal());
          if (!signature) return done(Error(signature.error()));
          if (signature->size() != inv.signature.size()) {
            return done(Error(StatusCode::kInternal, "the identity key's signature has an unexpected size"));
          }
          std::copy(signature->begin(), signature->end(), inv.signature.begin());
          done(EncodeInvite(inv));
        });
  }

  // A fresh deposit token of our mailbox; with `claim_within_ms`, an invite's (see relay::IssueDepositToken).
  void IssueToken(uint64_t claim_within_ms, Done<DepositToken> done) {
    relay::IssueDepositToken it;
    it.mailbox = *state_.mailbox;
    it.claim_within_millis = claim_within_ms;
    Request(it, [done, claim_within_ms](Result<relay::Response> r) {
      if (!r) return done(Error(r.error()));
      if (r->code == relay::ResponseCode::kMalformed && claim_within_ms > 0) {
        // A relay from before invites expired reads only the 1-field form.
        return done(Error(StatusCode::kUnsupportedVersion,
                          "the relay is too old to enforce an invite's expiry: update it, or make an invite that "
                          "never expires"));
      }
      if (Status s = FromRelay(*r); !s.ok()) return done(Error(s));
      auto tok = BodyAs<relay::TokenIssued>(*r);
      if (!tok) return done(Error(tok.error()));
      done(tok->token);
    });
  }

  // `first`, the first message's text, is shared by the steps below rather than copied into each: one copy,
  // wiped when the last step lets go of it.
  void AcceptInvite(Invite inv, std::shared_ptr<const SecretBytes> first, Done<std::string> done) {
    if (Status s = VerifyInvite(inv); !s.ok()) return done(Error(s));
    if (ConstantTimeEquals(inv.identity_key, engine_->identity_key())) {
      return done(Error(StatusCode::kInvalidArgument, "this is our own invite"));
    }
    // Contacts are known by the name they chose, in one namespace with ours: a second person of the same
    // name cannot be told apart yet, so say so rather than mistake them for the first.
    if (inv.name == state_.name) {
      return done(Error(StatusCode::kAlreadyExists,
                        "the invite comes from someone else who is also named \"" + inv.name +
                            "\": a contact with your own name is not supported yet"));
    }
    // The engine remembers a name's key even after the contact is removed: a stranger's invite under that
    // name must not turn into a pending identity change of it.
    if (auto known = engine_->GetContact(inv.name);
        known && known->state != session::TrustState::kUnknown &&
        !ConstantTimeEquals(known->identity_key, inv.identity_key)) {
      if (known->pending_identity_key && ConstantTimeEquals(*known->pending_identity_key, inv.identity_key)) {
        return done(Error(StatusCode::kAlreadyExists,
                          "\"" + inv.name +
                              "\" has a new identity key waiting to be accepted: compare safety "
                              "numbers, then accept the change"));
      }
      return done(Error(StatusCode::kAlreadyExists,
                        "someone named \"" + inv.name +
                            "\" is already known under another identity key: an invite cannot replace them "
                            "(two people of one name cannot be told apart yet)"));
    }
    // A code for a contact's new device admits that contact's name only, at the inviter's end.
    if (!inv.for_device_of.empty() && inv.for_device_of != state_.name) {
      return done(Error(StatusCode::kPermissionDenied, "this invite code is for the new device of \"" +
                                                           inv.for_device_of + "\", not for \"" +
                                                           state_.name + "\""));
    }
    // A second code of a contact for new contacts is refused, not taken as a new way to reach them: answered
    // under our name, it would be refused at the other end and cut us off (found in review). One for our new
    // device is this device's way in (a new phone that answered a code for new contacts first, refused by the
    // inviter, who knows our name): it replaces the first.
    // (Only from a contact that never wrote to us: one that did reaches us already, and an old code of it,
    // answered or cancelled, would cut us off.)
    auto existing = state_.contacts.find(inv.name);
    if (existing != state_.contacts.end() && existing->second.card &&
        (inv.for_device_of.empty() || existing->second.heard_from)) {
      return done(Error(StatusCode::kAlreadyExists, "already a contact"));
    }
    auto proceed = [this, inv, first, done](Result<bool> reg) {
      if (!reg) return done(Error(reg.error()));
      if (inv.card.relay != state_.relay) {
        return done(Error(StatusCode::kInvalidArgument, "contacts on another relay are not supported yet"));
      }
      relay::FetchBundle fb;
      fb.mailbox = inv.card.mailbox;
      Request(fb, [this, inv, first, done](Result<relay::Response> r) {
        if (!r) return done(Error(r.error()));
        if (Status s = FromRelay(*r); !s.ok()) return done(Error(s));
        auto found = BodyAs<relay::BundleFound>(*r);
        if (!found) return done(Error(found.error()));
        auto bundle = wire::DecodeBundle(found->bundle);
        if (!bundle) return done(Error(bundle.error()));
        if (!ConstantTimeEquals(bundle->identity_key, inv.identity_key)) {
          return done(Error(StatusCode::kBadSignature, "the relay served keys of another identity than the invite's"));
        }
        if (bundle->device_id != kContactDevice) {
          return done(Error(StatusCode::kInvalidArgument,
                            "the relay served keys of a device this version does not serve"));
        }
        if (Status s = engine_->ProcessBundle(session::Address{inv.name, kContactDevice}, *bundle); !s.ok()) {
          return done(Error(s));
        }
        compliance_->OnSessionEstablished(inv.name);
        // Answering a code for our new device as a contact already (AcceptInvite's check above): our token
        // for the inviter stays (the first message carries it again; should this code prove stale, the
        // inviter may hold it already, and can still write to us). A stale code's card is refused by the
        // relay, visibly, and a fresh code can still be taken.
        const auto existing = state_.contacts.find(inv.name);
        if (existing != state_.contacts.end() && existing->second.my_token) {
          return Answer(inv, first, *existing->second.my_token, done);
        }
        IssueToken(0, [this, inv, first, done](Result<DepositToken> t) {
          if (!t) return done(Error(t.error()));
          Answer(inv, first, *t, done);
        });
      });
    };
    if (state_.mailbox) return proceed(true);
    Register(inv.card.relay, proceed);
  }

  // AcceptInvite's end: records the contact with `token` as ours for it, and queues the first message and the
  // invite answer.
  void Answer(const Invite& inv, const std::shared_ptr<const SecretBytes>& first, const DepositToken& token,
              Done<std::string> done) {
    State next = state_;
    const bool new_contact = next.contacts.count(inv.name) == 0;
    ContactRecord& rec = next.contacts[inv.name];
    if (new_contact) rec.heard_from = false;
    rec.card = inv.card;
    rec.my_token = token;
    if (Status s = SaveState(next); !s.ok()) return done(Error(s));
    auto seq = SendText(inv.name, AsText(first->reveal()), std::string(kDefaultPurpose));
    if (!seq) return done(Error(seq.error()));
    // Tells the inviter which of its invites this contact answered, so it can revoke this contact alone.
    wire::AppMessage answer;
    answer.kind = wire::AppKind::kInviteAnswer;
    answer.payload = SecretBytes(inv.card.token);
    if (Status s = StatusOfSend(SendApp(inv.name, answer, ControlConversationId(inv.name), {}, {}));
        !s.ok()) {
      Report(s);  // the contact stands; the inviter just cannot revoke it by itself
    }
    direct_->OnNewContact(inv.name);
    CatchUpGroups(inv.name);
    FlushOutbox([done, name = inv.name](Result<size_t>) { done(name); });
  }

  // The user's decision on `contact`'s pending identity change, after comparing the new safety number.
  Status DecideIdentityChange(const std::string& contact, bool accept) {
    CW_ASSIGN_OR_RETURN(auto c, engine_->GetContact(contact));
    if (c.state != session::TrustState::kChanged || !c.pending_identity_key) {
      return Status(StatusCode::kInvalidArgument, "no identity change awaits a decision");
    }
    if (accept) {
      CW_RETURN_IF_ERROR(engine_->AcceptIdentityChange(contact, c.pending_identity_key));
    } else {
      CW_RETURN_IF_ERROR(engine_->RejectIdentityChange(contact, *c.pending_identity_key));
    }
    compliance_->OnIdentityDecision(c.identity_key, *c.pending_identity_key,
                                    accept ? ComplianceRuntime::IdentityDecision::kAccepted
                                           : ComplianceRuntime::IdentityDecision::kRejected);
    if (accept && state_.contacts.count(contact) != 0) {
      State next = state_;
      next.contacts[contact].catch_up_due = true;
      // The change stands either way; unrecorded, the new device is caught up only when next verified.
      if (Status s = SaveState(next); !s.ok()) Report(s);
    }
    // What waited at the relay: an accepted key's messages are read now; after a rejection, the contact's
    // own are, and the rejected key's are dropped.
    if (link_ == LinkState::kUp) FetchAll([](Result<size_t>) {});
    return Status::Ok();
  }

  // What `contact` missed of the groups we share (GroupRuntime::CatchUp): run on a new contact, when the user
  // verifies one, and after an accepted identity change (catch_up_due, then on the first message under the
  // new key). The engine sends only over a session under the key the group's admin lists for the member: on
  // a device that never met one, whoever writes first under a member's name would otherwise get our sender
  // key (found in review). A failure costs the contact only our group messages until the next membership
  // change, so it is reported and tried again with the next message.
  void CatchUpGroups(const std::string& contact) {
    if (Status s = groups_->CatchUp(contact); !s.ok()) {
      return Report(Status(
          s.code(), "a contact could not be caught up on the groups it shares with us: " + s.message()));
    }
    const auto it = state_.contacts.find(contact);
    if (it == state_.contacts.end() || !it->second.catch_up_due) return;
    // Kept until the new key's session exists: a group text from the old device, read by its sender key,
    // must not use up the catch-up (found in review).
    if (!engine_->HasSession(session::Address{contact, kContactDevice})) return;
    State next = state_;
    next.contacts[contact].catch_up_due = false;
    if (Status s = SaveState(next); !s.ok()) Report(s);  // caught up again with the next message: harmless
  }

  // Fetches without processing or acknowledging: what the relay holds for our mailbox, as it holds it.
  void Peek(Done<std::vector<relay::Delivery>> done) {
    if (!state_.mailbox) return done(Error(StatusCode::kInvalidArgument, "not registered"));
    relay::FetchMessages f;
    f.mailbox = *state_.mailbox;
    if (link_ == LinkState::kDown) peek_only_ = true;  // a link made for the peek fetches nothing else
    Request(f, [this, done](Result<relay::Response> r) {
      auto got = std::move(peeked_);
      peeked_.clear();
      if (!r) return done(Error(r.error()));
      if (Status s = FromRelay(*r); !s.ok()) return done(Error(s));
      done(std::move(got));
    }, /*peek=*/true);
  }

  // ---------------------------------------------------------------- direct P2P (core/runtime/direct_links.h)
  std::unique_ptr<DirectLinks> NewDirectLinks() {
    DirectLinks::Deps deps;
    deps.transport = transport_.get();
    deps.store = store_.get();
    deps.send = [this](const std::string& contact, const wire::AppMessage& m) {
      return StatusOfSend(SendApp(contact, m, ControlConversationId(contact), {}, {}));
    };
    deps.contacts = [this] {
      std::vector<std::string> out;
      for (const auto& [name, rec] : state_.contacts) {
        if (rec.card) out.push_back(name);
      }
      return out;
    };
    deps.deliver = [this](const std::string& contact, const relay::MessageId& id, Bytes envelope,
                          DirectLinks::AckFn ack) {
      HandleDirect(contact, id, std::move(envelope), std::move(ack));
    };
    deps.link_up = [this](const std::string&) {
      if (!locked_ && !shutting_down_) FlushOutbox([](Result<size_t>) {});
    };
    deps.report = [this](const Status& s) { Report(s); };
    DirectLinks::Options o;
    o.listen = options_.direct_listen;
    o.ack_timeout_ms = options_.direct_ack_timeout_ms;
    o.reconnect_min_ms = options_.reconnect_min_ms;
    o.reconnect_max_ms = std::max(options_.reconnect_max_ms, kDirectReconnectMaxMs);
    return std::make_unique<DirectLinks>(std::move(deps), std::move(o));
  }

  // Whether the engine knows `name` (a contact's, a removed contact's): a store error counts as known, so
  // what asks is refused rather than let through.
  bool EngineKnows(const std::string& name) const {
    auto known = engine_->GetContact(name);
    return !known || known->state != session::TrustState::kUnknown;
  }

  // The open invite whose token is `token`, or null.
  const OpenInvite* FindOpenInvite(const DepositToken& token) const {
    const auto it = std::find_if(state_.invites.begin(), state_.invites.end(),
                                 [&](const OpenInvite& i) { return ConstantTimeEquals(i.token, token); });
    return it == state_.invites.end() ? nullptr : &*it;
  }

  // Whether the envelope's sender name goes with the deposit token it came with: the token we gave that
  // contact; an open invite's, answered under a name it admits (for a new contact's invite, a name nobody
  // here knows, or the contact this invite made while its answer is on its way; for a new device's, only the
  // named contact's); or the token that contact replaced, which the relay may still admit (RetiredToken).
  // Sealed sender lets anyone holding a token write any name: found in review, a contact could write as
  // another, and then any invite code of ours in the wrong hands could raise a forged identity change of any
  // contact. Empty when it goes, else why not.
  std::string WhyNotTheSendersToken(const EnvelopeContent& env) const {
    const auto same = [&](const DepositToken& t) { return ConstantTimeEquals(t, env.token); };
    const auto it = state_.contacts.find(env.sender);
    const bool contact = it != state_.contacts.end();
    if (contact && it->second.my_token && same(*it->second.my_token)) return "";
    if (const OpenInvite* invite = FindOpenInvite(env.token)) {
      if (invite->for_contact.empty()) {
        // A name we never knew (a removed contact's is still known to the engine: found in review), or the
        // contact this very invite made, whose answer binding it is still on its way.
        if (contact ? (it->second.answered_with && same(*it->second.answered_with))
                    : !EngineKnows(env.sender)) {
          return "";
        }
        return "an invite for a new contact was answered under the name of an existing contact";
      }
      if (invite->for_contact == env.sender) return "";
      return "an invite for a contact's new device was answered under another name";
    }
    for (const RetiredToken& r : state_.retired_tokens) {
      if (!same(r.token)) continue;
      if (r.any_name || (!r.admits.empty() && r.admits == env.sender)) return "";
      return r.admits.empty() ? "the deposit token it came with was withdrawn (a cancelled or lapsed invite, "
                                "a revoked or removed contact's)"
                              : "the sender's name does not go with the deposit token it came with";
    }
    return "the sender's name does not go with the deposit token it came with";
  }

  // A message from a contact's direct link takes the relay push's path (dedup, decrypt, commit); the ack that
  // HandleDelivery would send the relay goes back on the direct link instead, after the same durability wait.
  // It must come from that contact, who must still be one: a link carries no one else's messages, and makes
  // no new contact (the relay's deposit tokens decide who may write to us).
  void HandleDirect(const std::string& contact, const relay::MessageId& id, Bytes envelope,
                    std::function<void()> ack) {
    if (state_.contacts.count(contact) == 0) return;  // removed while its link was up: never acked
    relay::Delivery d;
    d.message_id = id;
    d.envelope = std::move(envelope);
    direct_ack_id_ = id;
    direct_ack_ = std::move(ack);
    direct_sender_ = contact;
    HandleDelivery(d);
    direct_ack_id_.reset();
    direct_ack_ = nullptr;  // not acked (left for later, as at the relay): the sender falls back to the relay
    direct_sender_.reset();
  }

  // Deposits at the relay, or first over the direct link to `direct_to` when one is up (groups pass "": they
  // stay relay-only). A direct ack answers `fn` like the relay's kOk; anything else falls back to the relay,
  // except a stop for locking or closing, which ends the flush (the outbox keeps the entry).
  void SendDeposit(const std::string& direct_to, relay::Deposit dep, ResponseFn fn) {
    if (direct_to.empty() || !direct_->IsUp(direct_to)) return Request(std::move(dep), std::move(fn));
    auto held = std::make_shared<relay::Deposit>(std::move(dep));
    direct_->Send(direct_to, held->message_id, held->envelope, [this, held, fn = std::move(fn)](Status s) mutable {
      if (s.ok()) {
        relay::Response ok;
        ok.code = relay::ResponseCode::kOk;
        return fn(std::move(ok));
      }
      if (s.code() == StatusCode::kAborted) return fn(Error(std::move(s)));
      Request(std::move(*held), std::move(fn));
    });
  }

  // ---------------------------------------------------------------- state
  ClientOptions options_;
  const std::string home_;
  Clock* clock_;
  Random* random_;
  std::unique_ptr<storage::Keystore> keystore_;
  std::unique_ptr<storage::SealedStore> store_;
  std::unique_ptr<transport::TcpTransport> transport_;
  transport::PublicKey link_pub_{};
  BoxPublicKey box_pk_{};
  SecretBytes box_sk_;
  std::string name_;
  std::string fingerprint_;

  // Loop thread only.
  std::unique_ptr<session::Engine> engine_;
  std::unique_ptr<storage::Transcripts> transcripts_;
  std::unique_ptr<ComplianceRuntime> compliance_;
  std::unique_ptr<GroupRuntime> groups_;
  std::unique_ptr<ReceiptBook> receipts_;
  State state_;
  enum class LinkState { kDown, kConnecting, kUp };
  LinkState link_ = LinkState::kDown;
  std::shared_ptr<transport::Connection> conn_;
  uint64_t generation_ = 0;
  uint32_t next_request_id_ = 1;
  std::map<uint32_t, ResponseFn> pending_;
  // Commands (in pending_) the send queue refused, in order, and their bytes.
  struct Unsent {
    uint32_t id;
    Bytes frame;
  };
  std::deque<Unsent> unsent_;
  size_t unsent_bytes_ = 0;
  struct Queued {
    relay::CommandBody body;
    ResponseFn fn;
    bool peek = false;
  };
  std::vector<Queued> queued_;
  std::vector<relay::Delivery> peeked_;
  // Copies of the messages GroupRuntime::Hold left at the relay, in arrival order (at most kMaxHeldMessages,
  // kMaxHeldBytes): sealed envelopes, as the relay has them.
  std::vector<relay::Delivery> held_;
  std::map<uint32_t, std::vector<relay::Delivery>> peeks_;
  bool background_ = false;
  bool shutting_down_ = false;
  bool refilling_ = false;
  bool peek_only_ = false;
  bool fetching_ = false;
  std::vector<relay::Delivery> pushed_while_fetching_;  // HoldPush's
  std::optional<transport::Transport::TimerId> push_hold_timer_;
  static constexpr size_t kMaxPushesHeld = 1000;  // a mailbox's default quota
  static constexpr int64_t kPushHoldMs = 5000;
  bool revoking_retired_ = false;  // a RevokeRetired request is out
  bool flushing_ = false;
  bool flush_again_ = false;
  std::vector<Done<size_t>> fetch_waiters_;
  std::vector<Done<size_t>> flush_waiters_;
  std::set<std::string> refused_;
  size_t received_total_ = 0;
  size_t received_reported_ = 0;
  size_t sent_total_ = 0;
  size_t sent_reported_ = 0;
  size_t acks_in_flight_ = 0;
  std::vector<relay::MessageId> acks_to_send_;  // made this turn of the loop: see Ack
  bool acks_send_posted_ = false;
  std::vector<std::function<void()>> ack_waiters_;
  int64_t backoff_ms_ = 0;
  int64_t retry_backoff_ms_ = 0;
  std::optional<transport::Transport::TimerId> reconnect_timer_;
  std::optional<transport::Transport::TimerId> retry_timer_;
  std::optional<transport::Transport::TimerId> idle_timer_;
  std::optional<transport::Transport::TimerId> sweep_timer_;
  std::optional<transport::Transport::TimerId> receipt_timer_;
  static constexpr size_t kMaxPreparedDeposits = 64;
  std::map<std::string, PreparedDeposit> prepared_;  // PreparedKey -> sealed deposit (PrepareDeposit)
  std::map<std::string, std::vector<std::string>> pending_delivery_receipts_;  // contact -> relay ids (hex)
  bool locked_ = false;
  bool teardown_pending_ = false;   // locked from a callback: TearDownForLock is posted, not yet run
  bool resume_background_ = false;  // background_ as it was when locked
  // Group commit: the commit sequence of each outbox entry written by this process and perhaps not yet
  // synced (entries from earlier runs are durable: opening the store syncs), by OutboxKey.
  std::map<std::string, uint64_t> outbox_commits_;
  uint64_t durable_wait_ = 0;  // a flush left entries behind until this commit is synced
  // Where the store's sync thread posts AfterSynced work; closed before the transport goes.
  class PostTarget {
   public:
    explicit PostTarget(transport::Transport* t) : t_(t) {}
    void Post(std::function<void()> fn) {
      std::lock_guard<std::mutex> lock(mu_);
      if (t_ != nullptr) (void)t_->Post(std::move(fn));
    }
    void Close() {
      std::lock_guard<std::mutex> lock(mu_);
      t_ = nullptr;
    }

   private:
    std::mutex mu_;
    transport::Transport* t_;
  };
  std::shared_ptr<PostTarget> post_target_;
  // AfterSynced (loop thread): the commits of work handed to the store and not yet run here, and work held
  // behind them.
  std::multiset<uint64_t> after_synced_on_its_way_;
  struct HeldAfterSynced {
    uint64_t sequence;
    Status synced;  // the store's word on the commit
    std::function<void()> fn;
    std::shared_ptr<std::function<void(Status)>> drop;
  };
  std::deque<HeldAfterSynced> after_synced_held_;
  int64_t last_activity_ms_ = 0;
  // Direct P2P links; lives as long as the transport (its callbacks check its own epoch after Stop).
  std::unique_ptr<DirectLinks> direct_;
  // While HandleDirect runs: the message it handles and the ack for its direct link.
  std::optional<relay::MessageId> direct_ack_id_;
  std::function<void()> direct_ack_;
  std::optional<std::string>
      direct_sender_;  // the contact whose direct link brought the message HandleDelivery is on

  friend class Client;
};

// ==================================================================== Client

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

void Client::Stop() { impl_->Stop(); }

bool Client::OnCallbackThread() const { return impl_->transport_ && impl_->transport_->IsLoopThread(); }

Result<std::unique_ptr<Client>> Client::Create(const std::string& home, const std::string& name,
                                               std::span<const uint8_t> passphrase, ClientOptions options) {
  if (sodium_init() < 0) return Error(StatusCode::kInternal, "libsodium init failed");
  auto impl = std::make_unique<Impl>(std::move(options), home);
  CW_RETURN_IF_ERROR(impl->Init(passphrase, name));
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Result<std::unique_ptr<Client>> Client::Open(const std::string& home, std::span<const uint8_t> passphrase,
                                             ClientOptions options) {
  if (sodium_init() < 0) return Error(StatusCode::kInternal, "libsodium init failed");
  auto impl = std::make_unique<Impl>(std::move(options), home);
  CW_RETURN_IF_ERROR(impl->Init(passphrase, std::nullopt));
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const std::string& Client::name() const { return impl_->name_; }
std::string Client::Fingerprint() const { return impl_->fingerprint_; }
std::string Client::LinkKeyHex() const { return transport::KeyToHex(impl_->link_pub_); }
std::string Client::RelayAddress() {
  return impl_->Call([this]() -> Result<std::string> { return impl_->state_.relay; }).value_or("");
}

Status Client::Register(const std::string& relay, int64_t timeout_ms) {
  auto r = impl_->Await<bool>(timeout_ms, [this, relay](Impl::Done<bool> done) { impl_->Register(relay, done); });
  return r ? Status::Ok() : r.error();
}

Status Client::StartBackground() {
  return impl_->Call([this]() -> Status {
    if (impl_->state_.relay.empty()) return Status(StatusCode::kInvalidArgument, "not registered with a relay");
    impl_->background_ = true;
    impl_->EnsureConnecting();
    return Status::Ok();
  });
}

bool Client::connected() {
  auto r = impl_->Call([this]() -> Result<bool> { return impl_->link_ == Impl::LinkState::kUp; });
  return r && *r;
}

Result<SyncReport> Client::Sync(int64_t timeout_ms) {
  return impl_->Await<SyncReport>(timeout_ms, [this](Impl::Done<SyncReport> done) {
    impl_->FetchAll([this, done](Result<size_t> got) {
      if (!got) return done(Error(got.error()));
      // What was fetched is acknowledged once synced; the flush waits for the relay's answers to those
      // acknowledgements, so a Sync that returns has left nothing it stored at the relay.
      impl_->AfterSynced(
          impl_->store_->LastCommitSequence(),
          [this, done] {
            impl_->SendPendingDeliveryReceipts();  // what Sync received is receipted before it returns
            impl_->WhenAcksAnswered([this, done] {
              impl_->FlushOutbox([this, done](Result<size_t> sent) {
                if (!sent) return done(Error(sent.error()));
                SyncReport rep;
                // Counted from the previous Sync: messages pushed while linked count as well as fetched ones.
                rep.received = impl_->received_total_ - impl_->received_reported_;
                impl_->received_reported_ = impl_->received_total_;
                // Likewise for sends: a flush the link coming up started may have delivered them already.
                rep.sent = impl_->sent_total_ - impl_->sent_reported_;
                impl_->sent_reported_ = impl_->sent_total_;
                auto pending = impl_->transcripts_->PendingOutbox();
                rep.pending = pending ? pending->size() : 0;
                done(rep);
              });
            });
          },
          [done](Status why) { done(Error(std::move(why))); });
    });
  });
}

Result<std::string> Client::CreateInvite(int64_t timeout_ms) {
  return CreateInviteValidFor(impl_->options_.invite_valid_for_ms, timeout_ms);
}
Result<std::string> Client::CreateInviteValidFor(int64_t valid_for_ms, int64_t timeout_ms) {
  return impl_->Await<std::string>(timeout_ms, [this, valid_for_ms](Impl::Done<std::string> done) {
    impl_->CreateInvite(valid_for_ms, "", done);
  });
}
Result<std::string> Client::CreateInviteForNewDevice(const std::string& contact, int64_t valid_for_ms,
                                                     int64_t timeout_ms) {
  if (contact.empty())
    return Error(StatusCode::kInvalidArgument, "an invite for a new device names the contact");
  return impl_->Await<std::string>(timeout_ms, [this, valid_for_ms, contact](Impl::Done<std::string> done) {
    impl_->CreateInvite(valid_for_ms < 0 ? impl_->options_.invite_valid_for_ms : valid_for_ms, contact, done);
  });
}
Result<std::vector<InviteInfo>> Client::OpenInvites() {
  return impl_->Call([&]() -> Result<std::vector<InviteInfo>> { return impl_->OpenInvites(); });
}
Status Client::CancelInvite(const std::string& id, int64_t timeout_ms) {
  auto r = impl_->Await<bool>(timeout_ms, [this, id](Impl::Done<bool> done) { impl_->CancelInvite(id, done); });
  return r ? Status::Ok() : r.error();
}

Result<std::string> Client::AcceptInvite(const std::string& code, const std::string& first_message,
                                         int64_t timeout_ms) {
  CW_ASSIGN_OR_RETURN(Invite inv, DecodeInvite(code));
  auto first = std::make_shared<const SecretBytes>(AsBytes(first_message));
  return impl_->Await<std::string>(timeout_ms, [this, inv, first](Impl::Done<std::string> done) {
    impl_->AcceptInvite(inv, first, done);
  });
}

Result<uint64_t> Client::SendText(const std::string& contact, const std::string& text) {
  return SendText(contact, text, std::string(kDefaultPurpose));
}

Result<uint64_t> Client::SendText(const std::string& contact, const std::string& text, const std::string& purpose) {
  return impl_->Call([&]() { return impl_->SendText(contact, text, purpose); });
}

std::unique_ptr<BlobChannel> Client::RelayBlobs(int64_t timeout_ms) {
  if (impl_->transport_->IsLoopThread()) return nullptr;  // a transfer would block the loop it waits for
  return std::make_unique<RelayBlobChannel>(
      [this](relay::CommandBody body, RelayBlobChannel::Done done) {
        // The channel sends its next commands from the answers' callbacks, on the loop thread.
        if (impl_->transport_->IsLoopThread()) return impl_->Request(std::move(body), std::move(done));
        Status posted = impl_->transport_->Post(
            [this, body = std::move(body), done]() mutable { impl_->Request(std::move(body), std::move(done)); });
        if (!posted.ok()) done(Error(posted));
      },
      timeout_ms);
}

Status Client::CheckOutgoingPurpose(const std::string& contact, const std::string& purpose) {
  return impl_->Call([&]() { return impl_->compliance_->CheckOutgoing(contact, purpose); });
}

Result<uint64_t> Client::SendFileMessage(const std::string& contact, wire::AttachmentDescriptor attachment,
                                         const std::string& purpose) {
  CW_ASSIGN_OR_RETURN(FileRow row, FileRowFromDescriptor(std::move(attachment)));
  wire::AppMessage app;
  app.kind = wire::AppKind::kFile;
  app.purpose = purpose;
  CW_ASSIGN_OR_RETURN(app.payload, wire::EncodeAttachment(row.descriptor));
  return impl_->Call([&]() -> Result<uint64_t> {
    CW_RETURN_IF_ERROR(impl_->compliance_->CheckOutgoing(contact, app.purpose));
    CW_ASSIGN_OR_RETURN(uint64_t seq, impl_->SendApp(contact, app, storage::Transcripts::DirectConversationId(contact),
                                                     row.body.reveal(), row.attachments));
    impl_->compliance_->OnAttachment(row.descriptor);
    return seq;
  });
}

Result<std::vector<storage::TranscriptMessage>> Client::History(const std::string& contact, size_t n) {
  return impl_->Call([&]() { return impl_->transcripts_->Latest(storage::Transcripts::DirectConversationId(contact), n); });
}

Result<SecretBytes> Client::ExportJson() {
  return impl_->Call([&]() {
    return storage::ExportJson(*impl_->transcripts_, std::nullopt, impl_->name_, impl_->clock_->NowMillis());
  });
}

Result<size_t> Client::PendingOutboxCount() {
  return impl_->Call([&]() -> Result<size_t> {
    CW_ASSIGN_OR_RETURN(auto p, impl_->transcripts_->PendingOutbox());
    return p.size();
  });
}

Result<std::vector<ContactInfo>> Client::Contacts() {
  return impl_->Call([&]() -> Result<std::vector<ContactInfo>> {
    std::vector<ContactInfo> out;
    for (const auto& [name, rec] : impl_->state_.contacts) {
      ContactInfo info;
      info.name = name;
      info.reachable = rec.card.has_value();
      info.direct = impl_->direct_->IsUp(name);
      auto c = impl_->engine_->GetContact(name);
      if (c) {
        info.trust = c->state;
        if (c->state != session::TrustState::kUnknown) info.fingerprint = KeyHex(c->identity_key);
      }
      out.push_back(std::move(info));
    }
    return out;
  });
}

Result<session::SafetyNumber> Client::GetSafetyNumber(const std::string& contact) {
  return impl_->Call([&]() { return impl_->engine_->GetSafetyNumber(contact); });
}

Status Client::SetVerified(const std::string& contact, bool verified) {
  return impl_->Call([&]() -> Status {
    CW_RETURN_IF_ERROR(impl_->engine_->SetVerified(contact, verified));
    impl_->compliance_->OnVerification(contact, verified);
    // Verified, the contact's key is vouched for: the groups we share catch it up (a member we met only
    // after the group was made has not had our key yet).
    if (verified && impl_->engine_->HasSession(session::Address{contact, kContactDevice})) {
      impl_->CatchUpGroups(contact);
    }
    return Status::Ok();
  });
}

Status Client::AcceptIdentityChange(const std::string& contact) {
  return impl_->Call([&]() -> Status { return impl_->DecideIdentityChange(contact, /*accept=*/true); });
}

Status Client::RejectIdentityChange(const std::string& contact) {
  return impl_->Call([&]() -> Status { return impl_->DecideIdentityChange(contact, /*accept=*/false); });
}

Result<session::SafetyNumber> Client::ReconsiderIdentityChange(const std::string& contact) {
  return impl_->Call([&]() -> Result<session::SafetyNumber> {
    CW_ASSIGN_OR_RETURN(auto before, impl_->engine_->GetContact(contact));
    CW_ASSIGN_OR_RETURN(wire::PublicKey key, impl_->engine_->ReconsiderIdentityChange(contact));
    impl_->compliance_->OnIdentityDecision(before.identity_key, key,
                                           ComplianceRuntime::IdentityDecision::kRejectionTakenBack);
    return impl_->engine_->GetSafetyNumber(contact);
  });
}

std::string Client::DirectEndpoint() {
  return impl_->Call([this]() -> Result<std::string> { return impl_->direct_->endpoint(); }).value_or("");
}

Result<DirectStats> Client::GetDirectStats() {
  return impl_->Call([this]() -> Result<DirectStats> {
    const DirectLinkStats s = impl_->direct_->stats();
    return DirectStats{s.delivered, s.received, s.refused};
  });
}

Status Client::Lock() {
  // On the loop thread, this is a client callback calling: see LockNow's defer_teardown.
  if (impl_->transport_->IsLoopThread()) return impl_->LockNow(/*automatic=*/false, /*defer_teardown=*/true);
  return impl_->Call_Unguarded([this]() { return impl_->LockNow(/*automatic=*/false); });
}

Status Client::Unlock(std::span<const uint8_t> passphrase) { return impl_->Unlock(passphrase); }

bool Client::locked() {
  auto r = impl_->Call_Unguarded([this]() -> Result<bool> { return impl_->locked_; });
  return !r || *r;
}

// ---- compliance: each runs on the loop thread (see compliance_runtime.h)

Result<std::string> Client::GrantConsent(const std::string& contact, const ConsentGrant& grant) {
  return impl_->Call([&]() { return impl_->compliance_->GrantConsent(contact, grant); });
}
Status Client::WithdrawConsent(const std::string& receipt_id, const std::vector<std::string>& purposes) {
  return impl_->Call([&]() { return impl_->compliance_->WithdrawConsent(receipt_id, purposes); });
}
Result<std::vector<ConsentRecord>> Client::ConsentReceipts() {
  return impl_->Call([&]() { return impl_->compliance_->ConsentReceipts(); });
}
Status Client::SetCompliancePolicy(const CompliancePolicy& policy) {
  return impl_->Call([&]() { return impl_->compliance_->SetPolicy(policy); });
}
Result<CompliancePolicy> Client::GetCompliancePolicy() {
  return impl_->Call([&]() -> Result<CompliancePolicy> { return impl_->compliance_->policy(); });
}
Result<AuditStatus> Client::VerifyAudit() {
  return impl_->Call([&]() { return impl_->compliance_->VerifyAudit(); });
}
Result<std::vector<compliance::AuditEntry>> Client::AuditTrail() {
  return impl_->Call([&]() { return impl_->compliance_->AuditTrail(); });
}
Status Client::SendAuditHead(const std::string& contact) {
  return impl_->Call([&]() { return impl_->compliance_->SendAuditHead(contact); });
}
Result<Bytes> Client::ExportSigned() {
  return impl_->Call([&]() { return impl_->compliance_->ExportSigned(impl_->name_); });
}
Result<std::string> Client::EraseConversation(const std::string& contact) {
  return impl_->Call([&]() -> Result<std::string> {
    // The erased conversation's receipt records go too (they name the contact and its rows), in the same
    // batch: numbering starts again at 1, and a record left behind would point at a new message.
    session::WriteBatch also;
    CW_RETURN_IF_ERROR(impl_->receipts_->StageForgetContact(contact, &also));
    return impl_->compliance_->Erase(contact, std::move(also));
  });
}
Result<int64_t> Client::SetDisappearingTimer(const std::string& contact, int64_t ms) {
  return impl_->Call([&]() { return impl_->compliance_->SetDisappearingTimer(contact, ms); });
}
Result<size_t> Client::MarkRead(const std::string& contact, uint64_t up_to_sequence) {
  return impl_->Call([&]() { return impl_->MarkRead(contact, up_to_sequence); });
}
Result<size_t> Client::SweepNow() {
  return impl_->Call([&]() -> Result<size_t> {
    CW_ASSIGN_OR_RETURN(auto swept, impl_->transcripts_->SweepExpired());
    return swept.messages;
  });
}
Status Client::RevokeContact(const std::string& contact, int64_t timeout_ms) {
  auto r = impl_->Await<bool>(timeout_ms, [this, contact](Impl::Done<bool> done) {
    impl_->RevokeContact(contact, /*remove=*/false, done);
  });
  return r ? Status::Ok() : r.error();
}
Status Client::RemoveContact(const std::string& contact, int64_t timeout_ms) {
  auto r = impl_->Await<bool>(timeout_ms, [this, contact](Impl::Done<bool> done) {
    impl_->RevokeContact(contact, /*remove=*/true, done);
  });
  return r ? Status::Ok() : r.error();
}
Result<uint64_t> Client::SendAppMessageForTesting(const std::string& contact, const wire::AppMessage& message) {
  return impl_->Call([&]() {
    return impl_->SendApp(contact, message, storage::Transcripts::DirectConversationId(contact),
                          message.payload.reveal(), {});
  });
}

// ---- care-team groups: each runs on the loop thread (see client_groups.h)

Result<GroupChange> Client::CreateGroup(const std::string& label, const std::vector<std::string>& members) {
  return impl_->Call([&]() { return impl_->groups_->Create(label, members); });
}
Result<GroupChange> Client::AddGroupMember(const std::string& group_id, const std::string& member) {
  return impl_->Call([&]() { return impl_->groups_->Add(group_id, member); });
}
Result<GroupChange> Client::RemoveGroupMember(const std::string& group_id, const std::string& member) {
  return impl_->Call([&]() { return impl_->groups_->Remove(group_id, member); });
}
Result<uint64_t> Client::SendGroupText(const std::string& group_id, const std::string& text,
                                       const std::string& purpose) {
  return impl_->Call([&]() { return impl_->groups_->SendText(group_id, text, purpose); });
}
Result<std::vector<std::string>> Client::GroupMembers(const std::string& group_id) {
  return impl_->Call([&]() { return impl_->groups_->Members(group_id); });
}
Result<std::vector<GroupInfo>> Client::Groups() {
  return impl_->Call([&]() { return impl_->groups_->List(); });
}
Result<std::vector<storage::TranscriptMessage>> Client::GroupHistory(const std::string& group_id, size_t n) {
  return impl_->Call([&]() { return impl_->groups_->History(group_id, n); });
}

Result<std::vector<PeekedEnvelope>> Client::PeekRelay(int64_t timeout_ms) {
  auto got = impl_->Await<std::vector<relay::Delivery>>(
      timeout_ms, [this](Impl::Done<std::vector<relay::Delivery>> done) { impl_->Peek(done); });
  if (!got) return Error(got.error());
  std::vector<PeekedEnvelope> out;
  for (auto& d : *got) out.push_back(PeekedEnvelope{d.seq, ToHex(d.message_id), std::move(d.envelope)});
  return out;
}

}  // namespace cw::runtime
