#include "core/session/engine.h"

#include <signal/curve.h>
#include <signal/fingerprint.h>
#include <signal/group_cipher.h>
#include <signal/group_session_builder.h>
#include <signal/key_helper.h>
#include <signal/protocol.h>
#include <signal/ratchet.h>
#include <signal/sender_key_record.h>
#include <signal/session_builder.h>
#include <signal/session_cipher.h>
#include <signal/session_pre_key.h>
#include <signal/signal_protocol.h>
#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "core/crypto/crypto.h"
#include "core/session/records.h"
#include "core/session/signal_util.h"
#include "core/wire/content.h"
#include "core/wire/padding.h"

namespace cw::session {

using internal::Buffer;
using internal::FromSignal;
using internal::SignalRef;

namespace {

constexpr uint32_t kMaxPreKeyId = 0xFFFFFF;  // pre-key ids are 24-bit in the Signal protocol
constexpr int kFingerprintIterations = 5200;
constexpr int kScannableVersion = 1;

// A group id is 16 random bytes then a 16-byte tag that binds them to the admin's identity key, in hex. Every
// member knows the id, so without the binding any of them could stake a claim to it on another device (a
// newcomer's, or a removed member's) before the real admin's invitation arrives, and be taken as its admin
// there. With it, an invitation to a group this device does not know is accepted only from the identity key
// the id is bound to.
constexpr std::string_view kGroupIdContext = "cipherward group id v1";
constexpr size_t kGroupIdPartSize = 16;

std::string BoundGroupId(const wire::PublicKey& admin_identity, ByteView nonce) {
  std::array<uint8_t, kGroupIdPartSize> tag{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, tag.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(kGroupIdContext.data()),
                            kGroupIdContext.size());
  crypto_generichash_update(&st, admin_identity.data(), admin_identity.size());
  crypto_generichash_update(&st, nonce.data(), nonce.size());
  crypto_generichash_final(&st, tag.data(), tag.size());
  return ToHex(nonce) + ToHex(tag);
}

bool GroupIdIsBoundTo(std::string_view group_id, const wire::PublicKey& identity) {
  Bytes raw;
  if (group_id.size() != 4 * kGroupIdPartSize || !FromHex(group_id, &raw)) return false;
  return BoundGroupId(identity, ByteView(raw.data(), kGroupIdPartSize)) == group_id;
}

constexpr std::string_view kMetaIdentity = "identity_key_pair";
constexpr std::string_view kMetaRegistrationId = "registration_id";
constexpr std::string_view kMetaNextPreKeyId = "next_pre_key_id";
constexpr std::string_view kMetaHandedOutPreKeyId = "handed_out_pre_key_id";
constexpr std::string_view kMetaCurrentSignedPreKey = "signed_pre_key_current";
constexpr std::string_view kMetaNextSignedPreKeyId = "next_signed_pre_key_id";
// + group id: the epoch of the update that removed us from that group (8 bytes, big-endian).
constexpr std::string_view kMetaRemovedFromGroup = "removed_from_group.";

using SessionBuilderPtr =
    std::unique_ptr<session_builder, internal::FreeWith<session_builder, session_builder_free>>;
using SessionCipherPtr = std::unique_ptr<session_cipher, internal::FreeWith<session_cipher, session_cipher_free>>;
using GroupBuilderPtr = std::unique_ptr<group_session_builder,
                                        internal::FreeWith<group_session_builder, group_session_builder_free>>;
using GroupCipherPtr = std::unique_ptr<group_cipher, internal::FreeWith<group_cipher, group_cipher_free>>;
using FingerprintGeneratorPtr = std::unique_ptr<fingerprint_generator,
                                                internal::FreeWith<fingerprint_generator, fingerprint_generator_free>>;
using StoreContextPtr =
    std::unique_ptr<signal_protocol_store_context,
                    internal::FreeWith<signal_protocol_store_context, signal_protocol_store_context_destroy>>;

// An address libsignal can point at for as long as the cipher that holds it lives: the name is owned here.
struct OwnedAddress {
  explicit OwnedAddress(const Address& a) : name(a.name) {
    address.name = name.c_str();
    address.name_len = name.size();
    address.device_id = static_cast<int32_t>(a.device_id);
  }
  OwnedAddress(const OwnedAddress&) = delete;
  OwnedAddress& operator=(const OwnedAddress&) = delete;
  std::string name;
  signal_protocol_address address{};
};

struct OwnedSenderKeyName {
  OwnedSenderKeyName(std::string_view group, const Address& sender) : group_id(group), name(sender.name) {
    skn.group_id = group_id.c_str();
    skn.group_id_len = group_id.size();
    skn.sender.name = name.c_str();
    skn.sender.name_len = name.size();
    skn.sender.device_id = static_cast<int32_t>(sender.device_id);
  }
  OwnedSenderKeyName(const OwnedSenderKeyName&) = delete;
  OwnedSenderKeyName& operator=(const OwnedSenderKeyName&) = delete;
  std::string group_id;
  std::string name;
  signal_protocol_sender_key_name skn{};
};

Address FromSignalAddress(const signal_protocol_address* a) {
  return Address{std::string(a->name, a->name_len), static_cast<uint32_t>(a->device_id)};
}

Result<wire::PublicKey> SerializePublic(const ec_public_key* key) {
  signal_buffer* raw = nullptr;
  if (ec_public_key_serialize(&raw, key) != 0) return Error(StatusCode::kInternal, "public key serialize failed");
  Buffer b(raw);
  wire::PublicKey out{};
  if (signal_buffer_len(b.get()) != out.size()) return Error(StatusCode::kInternal, "unexpected public key size");
  std::memcpy(out.data(), signal_buffer_data(b.get()), out.size());
  return out;
}

Result<SignalRef<ec_public_key>> DecodePublic(std::span<const uint8_t> bytes, signal_context* ctx) {
  ec_public_key* key = nullptr;
  int rc = curve_decode_point(&key, bytes.data(), bytes.size(), ctx);
  if (rc != 0) return Error(FromSignal(rc, "public key"));
  return SignalRef<ec_public_key>(key);
}

// Every Signal message we speak starts with a version byte whose high nibble is 3 (CIPHERTEXT_CURRENT_VERSION).
// libsignal itself accepts 2 for some types and calls 4+ merely "invalid"; we give both their own error.
Status CheckVersionByte(ByteView body) {
  if (body.empty()) return Status(StatusCode::kMalformed, "empty message");
  if ((body[0] >> 4) != CIPHERTEXT_CURRENT_VERSION) {
    return Status(StatusCode::kUnsupportedVersion, "unsupported message version");
  }
  return Status::Ok();
}

SecretBytes ToSecret(signal_buffer* b) { return SecretBytes(signal_buffer_data(b), signal_buffer_len(b)); }

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

class Engine::Impl {
 public:
  Impl(ProtocolStore* store, std::string local_name, EngineOptions options)
      : store_(store),
        local_name_(std::move(local_name)),
        options_(std::move(options)),
        clock_(options_.clock ? options_.clock : &SystemClock::Default()),
        random_(options_.random ? options_.random : &SystemRandom::Default()),
        owner_(std::this_thread::get_id()),
        signal_(random_) {}

  Status Init();

  // --- Staged writes: every operation commits once, or not at all. ---
  template <typename F>
  auto Transact(F&& body) -> decltype(body()) {
    if (std::this_thread::get_id() != owner_) {
      return Error(StatusCode::kPermissionDenied, "engine called from a thread other than its owner");
    }
    // A hook or callback that calls back into the engine would discard the outer operation's staged
    // ratchet step, and the next encrypt would reuse its message key.
    if (in_transaction_) return Error(StatusCode::kPermissionDenied, "engine called re-entrantly");
    in_transaction_ = true;
    staged_.clear();
    callback_error_ = Status::Ok();
    pending_change_.reset();
    rejected_identity_ = false;
    signal_.ClearProblem();
    decltype(body()) result = Error(StatusCode::kInternal, "operation did not complete");
    try {
      result = body();
      if (result) {
        Status flushed = Flush();
        if (!flushed.ok()) result = Error(std::move(flushed));
      }
    } catch (...) {
      // Only a caller's hook or store can throw (our code returns errors); nothing staged is kept.
      result = Error(StatusCode::kInternal, "operation failed with an exception");
    }
    staged_.clear();
    in_transaction_ = false;
    return result;
  }

  Result<std::optional<SecretBytes>> Read(Table table, std::string_view key) {
    auto it = staged_.find(StagedKey(table, key));
    if (it != staged_.end()) {
      if (!it->second) return std::optional<SecretBytes>();
      return std::optional<SecretBytes>(it->second->Clone());
    }
    return store_->Get(table, key);
  }

  void Stage(Table table, std::string key, std::optional<SecretBytes> value) {
    staged_.insert_or_assign(std::make_pair(table, std::move(key)), std::move(value));
  }

  Result<std::vector<std::string>> List(Table table, std::string_view prefix) {
    CW_ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->ListKeys(table, prefix));
    std::set<std::string> merged(keys.begin(), keys.end());
    for (const auto& [k, v] : staged_) {
      if (k.first != table || !k.second.starts_with(prefix)) continue;
      if (v) {
        merged.insert(k.second);
      } else {
        merged.erase(k.second);
      }
    }
    return std::vector<std::string>(merged.begin(), merged.end());
  }

  // Folds a hook's writes into the staged batch.
  template <typename Hook, typename Value>
  Status RunHook(const Hook& hook, const Value& value) {
    if (!hook) return Status::Ok();
    WriteBatch extra;
    CW_RETURN_IF_ERROR(hook(value, &extra));
    for (auto& w : extra.writes) Stage(w.table, std::move(w.key), std::move(w.value));
    return Status::Ok();
  }

  Status Flush() {
    if (staged_.empty()) return Status::Ok();
    WriteBatch batch;
    batch.writes.reserve(staged_.size());
    for (auto& [k, v] : staged_) batch.writes.push_back(Write{k.first, k.second, std::move(v)});
    staged_.clear();
    return store_->Commit(std::move(batch));
  }

  // Turns a libsignal result into a Status, preferring the store error a callback recorded.
  Status Check(int rc, const char* what) {
    if (rc >= 0) return Status::Ok();
    if (!callback_error_.ok()) return callback_error_;
    if (rc == SG_ERR_INVALID_MESSAGE) {
      // libsignal gives one code for every kind of invalid message; its log says which one it was.
      switch (signal_.last_problem()) {
        case internal::SignalContext::Problem::kTooFarAhead:
          return Status(StatusCode::kTooFarAhead, std::string(what) + ": more than 2000 skipped messages");
        case internal::SignalContext::Problem::kUnknownVersion:
          return Status(StatusCode::kUnsupportedVersion, std::string(what) + ": unsupported message version");
        case internal::SignalContext::Problem::kBadMac:
          return Status(StatusCode::kTampered, std::string(what) + ": message authentication failed");
        case internal::SignalContext::Problem::kNone:
          break;
      }
    }
    return FromSignal(rc, what);
  }

  int StoreFailed(Status s) {
    callback_error_ = std::move(s);
    return internal::kStoreError;
  }

  Status CheckPeer(const Address& a) const {
    if (!wire::IsValidName(a.name) || a.device_id == 0 || a.device_id > INT32_MAX) {
      return Status(StatusCode::kInvalidArgument, "invalid address");
    }
    return Status::Ok();
  }

  // --- Meta helpers ---
  Result<std::optional<uint32_t>> ReadU32(std::string_view key) {
    CW_ASSIGN_OR_RETURN(auto v, Read(Table::kMeta, key));
    if (!v) return std::optional<uint32_t>();
    if (v->size() != 4) return Error(StatusCode::kMalformed, "meta counter is malformed");
    return std::optional<uint32_t>(internal::ReadBigEndian32(v->reveal()));
  }
  void StageU32(std::string_view key, uint32_t v) {
    std::string b = internal::BigEndian32(v);
    Stage(Table::kMeta, std::string(key), SecretBytes(reinterpret_cast<const uint8_t*>(b.data()), 4));
  }

  // --- Contacts and identity policy ---
  Result<std::optional<internal::ContactRecord>> ReadContact(std::string_view name) {
    CW_ASSIGN_OR_RETURN(auto v, Read(Table::kContact, name));
    if (!v) return std::optional<internal::ContactRecord>();
    CW_ASSIGN_OR_RETURN(auto c, internal::DecodeContact(v->reveal()));
    return std::optional<internal::ContactRecord>(std::move(c));
  }
  void StageContact(std::string_view name, const internal::ContactRecord& c) {
    Stage(Table::kContact, std::string(name), internal::EncodeContact(c));
  }

  // Persists a detected identity change on its own, outside the failed operation that found it, and tells
  // the caller. The failed operation itself still writes nothing.
  Status RecordIdentityChange() {
    if (!pending_change_) return Status::Ok();
    IdentityChange change = *pending_change_;
    pending_change_.reset();
    staged_.clear();
    auto contact = ReadContact(change.contact.name);
    if (!contact) return contact.error();
    if (!*contact) return Status::Ok();
    internal::ContactRecord c = **contact;
    c.verified_before_change = c.state == TrustState::kVerified;
    c.state = TrustState::kChanged;
    c.pending_identity_key = change.new_key;
    StageContact(change.contact.name, c);
    CW_RETURN_IF_ERROR(Flush());
    if (options_.on_identity_change) {
      try {
        options_.on_identity_change(change);
      } catch (...) {
        // The change is recorded; a throwing listener must not unwind through the engine.
      }
    }
    return Status::Ok();
  }

  // --- Pre-keys ---
  Status GenerateSignedPreKey();
  Result<std::vector<wire::OneTimePreKeyPublic>> GenerateOneTimePreKeysLocked();
  Result<wire::SignedPreKeyPublic> CurrentSignedPreKeyLocked();

  // --- Messages ---
  // `despite_pending_change`: also for a contact whose identity change awaits the user, over the session with
  // the key still trusted (group upkeep only; see FanOut).
  Result<Ciphertext> EncryptContent(const Address& peer, const wire::Content& content,
                                    bool despite_pending_change = false);
  Result<Received> DecryptPairwise(const Address& sender, const Ciphertext& message);
  Result<Received> DecryptGroup(const Address& sender, const Ciphertext& message);
  Result<Received> HandleContent(const Address& sender, wire::Content content);
  Status ProcessSenderKey(const Address& sender, const std::string& group_id, const SecretBytes& skdm);
  Result<std::optional<internal::GroupRecord>> ReadGroup(std::string_view group_id);
  Result<internal::GroupRecord> ReadKnownGroup(std::string_view group_id);
  Result<SecretBytes> OwnSenderKeyDistribution(const std::string& group_id, bool rotate);
  Status ForgetSenderKeys(const std::string& group_id, const std::string& member);
  // Sends `content` over the 1:1 session of each of `to` but us whose session runs under the key `group`
  // lists (Vouched); members without a session, or not vouched for, are listed in `out` instead, and so are
  // members with an identity change awaiting acceptance (sent to all the same).
  Status FanOut(const internal::GroupRecord& group, const std::vector<std::string>& to,
                const wire::Content& content, GroupDelivery* out);
  // The identity key this device trusts for each of `members` (ours for us; none for a name that is no
  // contact): what an admin lists.
  Result<std::vector<std::optional<wire::PublicKey>>> TrustedKeys(const std::vector<std::string>& members);
  // On the admin: lists the key it trusts for each member listed with none (a record from before keys), and
  // forgets the sender keys it holds from them (they came under the old rule; see HandleContent). Returns
  // whether it listed any: the caller then rotates its own key.
  Result<bool> ListTrustedKeys(const std::string& group_id, internal::GroupRecord* group);
  // Whether our session with `member`, whose contact record is `contact`, runs under the key `group` lists
  // for them, or, where the admin listed none, under a key the user verified.
  static bool Vouched(const internal::GroupRecord& group, const std::string& member,
                      const std::optional<internal::ContactRecord>& contact);
  // The membership content of `group`, carrying `sender_key` (may be empty).
  static wire::Content Membership(const std::string& group_id, const internal::GroupRecord& group,
                                  SecretBytes sender_key);
  Result<bool> HasSessionLocked(const Address& peer);

  // --- libsignal store callbacks ---
  static int LoadSession(signal_buffer** record, signal_buffer** user_record, const signal_protocol_address* address,
                         void* user_data);
  static int GetSubDeviceSessions(signal_int_list** sessions, const char* name, size_t name_len, void* user_data);
  static int StoreSession(const signal_protocol_address* address, uint8_t* record, size_t record_len, uint8_t*,
                          size_t, void* user_data);
  static int ContainsSession(const signal_protocol_address* address, void* user_data);
  static int DeleteSession(const signal_protocol_address* address, void* user_data);
  static int DeleteAllSessions(const char* name, size_t name_len, void* user_data);
  static int LoadPreKey(signal_buffer** record, uint32_t id, void* user_data);
  static int StorePreKey(uint32_t id, uint8_t* record, size_t record_len, void* user_data);
  static int ContainsPreKey(uint32_t id, void* user_data);
  static int RemovePreKey(uint32_t id, void* user_data);
  static int LoadSignedPreKey(signal_buffer** record, uint32_t id, void* user_data);
  static int StoreSignedPreKey(uint32_t id, uint8_t* record, size_t record_len, void* user_data);
  static int ContainsSignedPreKey(uint32_t id, void* user_data);
  static int RemoveSignedPreKey(uint32_t id, void* user_data);
  static int GetIdentityKeyPair(signal_buffer** public_data, signal_buffer** private_data, void* user_data);
  static int GetLocalRegistrationId(void* user_data, uint32_t* registration_id);
  static int SaveIdentity(const signal_protocol_address* address, uint8_t* key_data, size_t key_len,
                          void* user_data);
  static int IsTrustedIdentity(const signal_protocol_address* address, uint8_t* key_data, size_t key_len,
                               void* user_data);
  static int StoreSenderKey(const signal_protocol_sender_key_name* name, uint8_t* record, size_t record_len,
                            uint8_t*, size_t, void* user_data);
  static int LoadSenderKey(signal_buffer** record, signal_buffer** user_record,
                           const signal_protocol_sender_key_name* name, void* user_data);

  int LoadInto(Table table, const std::string& key, signal_buffer** record, int found, int missing) {
    auto v = Read(table, key);
    if (!v) return StoreFailed(v.error());
    if (!*v) return missing;
    *record = signal_buffer_create((*v)->reveal().data(), (*v)->size());
    return *record ? found : SG_ERR_NOMEM;
  }
  int StoreFrom(Table table, std::string key, const uint8_t* record, size_t len) {
    Stage(table, std::move(key), SecretBytes(record, len));
    return 0;
  }

  using StagedMapKey = std::pair<Table, std::string>;
  static StagedMapKey StagedKey(Table t, std::string_view k) { return {t, std::string(k)}; }

  ProtocolStore* store_;
  std::string local_name_;
  EngineOptions options_;
  Clock* clock_;
  Random* random_;
  std::thread::id owner_;
  internal::SignalContext signal_;
  StoreContextPtr store_ctx_;
  SignalRef<ratchet_identity_key_pair> identity_;
  wire::PublicKey identity_public_{};
  uint32_t registration_id_ = 0;

  std::map<StagedMapKey, std::optional<SecretBytes>> staged_;
  Status callback_error_;
  std::optional<IdentityChange> pending_change_;
  bool rejected_identity_ = false;  // IsTrustedIdentity met a key the user rejected (this operation)
  std::optional<wire::PublicKey> probe_trusted_key_;
  bool in_transaction_ = false;
};

// ---------------------------------------------------------------------------------------------------------
// Store callbacks. libsignal calls these under its lock, on the owner thread, during one of our operations;
// every write lands in the staged batch. They catch everything: no exception may unwind through C.

#define CW_CALLBACK_BEGIN try {
#define CW_CALLBACK_END \
  }                     \
  catch (...) {         \
    return SG_ERR_NOMEM; \
  }

int Engine::Impl::LoadSession(signal_buffer** record, signal_buffer** user_record,
                              const signal_protocol_address* address, void* user_data) {
  CW_CALLBACK_BEGIN
  auto* self = static_cast<Impl*>(user_data);
  if (user_record) *user_record = nullptr;
  return self->LoadInto(Table::kSession, internal::SessionKey({address->name, address->name_len},
                                                              static_cast<uint32_t>(address->device_id)),
                        record, 1, 0);
  CW_CALLBACK_END
}

int Engine::Impl::GetSubDeviceSessions(signal_int_list** sessions, const char* name, size_t name_len,
                                       void* user_data) {
  CW_CALLBACK_BEGIN
  auto* self = static_cast<Impl*>(user_data);
  std::string prefix(name, name_len);
  prefix.push_back('\0');
  auto keys = self->List(Table::kSession, prefix);
  if (!keys) return self->StoreFailed(keys.error());
  signal_int_list* list = signal_int_list_alloc();
  if (!list) return SG_ERR_NOMEM;
  int count = 0;
  for (const auto& k : *keys) {
    if (k.size() != prefix.size() + 4) continue;
    uint32_t device = internal::ReadBigEndian32(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(k.data()) + prefix.size(), 4));
    if (device == 1) continue;  // "sub-devices" are the others, as in the Java reference
    signal_int_list_push_back(list, static_cast<int>(device));
    ++count;
  }
  *sessions = list;
  return count;
  CW_CALLBACK_END
}

int Engine::Impl::StoreSession(const signal_protocol_address* address, uint8_t* record, size_t record_len, uint8_t*,
                               size_t, void* user_data) {
  CW_CALLBACK_BEGIN
  return static_cast<Impl*>(user_data)->StoreFrom(
      Table::kSession, internal::SessionKey({address->name, address->name_len}, address->device_id), record,
      record_len);
  CW_CALLBACK_END
}

int Engine::Impl::ContainsSession(const signal_protocol_address* address, void* user_data) {
  CW_CALLBACK_BEGIN
  auto* self = static_cast<Impl*>(user_data);
  auto v = self->Read(Table::kSession, internal::SessionKey({address->name, address->name_len}, address->device_id));
  if (!v) return self->StoreFailed(v.error());
  return v->has_value() ? 1 : 0;
  CW_CALLBACK_END
}

int Engine::Impl::DeleteSession(const signal_protocol_address* address, void* user_data) {
  CW_CALLBACK_BEGIN
  static_cast<Impl*>(user_data)->Stage(
      Table::kSession, internal::SessionKey({address->name, address->name_len}, address->device_id), std::nullopt);
  return 0;
  CW_CALLBACK_END
}

int Engine::Impl::DeleteAllSessions(const char* name, size_t name_len, void* user_data) {
  CW_CALLBACK_BEGIN
  auto* self = static_cast<Impl*>(user_data);
  std::string prefix(name, name_len);
  prefix.push_back('\0');
  auto keys = self->List(Table::kSession, prefix);
  if (!keys) return self->StoreFailed(keys.error());
  for (auto& k : *keys) self->Stage(Table::kSession, std::move(k), std::nullopt);
  return static_cast<int>(keys->size());
  CW_CALLBACK_END
}

int Engine::Impl::LoadPreKey(signal_buffer** record, uint32_t id, void* user_data) {
  CW_CALLBACK_BEGIN
  return static_cast<Impl*>(user_data)->LoadInto(Table::kPreKey, internal::BigEndian32(id), record, SG_SUCCESS,
                                                 SG_ERR_INVALID_KEY_ID);
  CW_CALLBACK_END
}

int Engine::Impl::StorePreKey(uint32_t id, uint8_t* record, size_t record_len, void* user_data) {
  CW_CALLBACK_BEGIN
  return static_cast<Impl*>(user_data)->StoreFrom(Table::kPreKey, internal::BigEndian32(id), record, record_len);
  CW_CALLBACK_END
}

int Engine::Impl::ContainsPreKey(uint32_t id, void* user_data) {
  CW_CALLBACK_BEGIN
  auto* self = static_cast<Impl*>(user_data);
  auto v = self->Read(Table::kPreKey, internal::BigEndian32(id));
  if (!v) return self->StoreFailed(v.error());
  return v->has_value() ? 1 : 0;
  CW_CALLBACK_END
}

int Engine::Impl::RemovePreKey(uint32_t id, void* user_data) {
  CW_CALLBACK_BEGIN
  static_cast<Impl*>(user_data)->Stage(Table::kPreKey, internal::BigEndian32(id), std::nullopt);
  return 0;
  CW_CALLBACK_END
}

int Engine::Impl::LoadSignedPreKey(signal_buffer** record, uint32_t id, void* user_data) {
  CW_CALLBACK_BEGIN
  return static_cast<Impl*>(user_data)->LoadInto(Table::kSignedPreKey, internal::BigEndian32(id), record,
                                                 SG_SUCCESS, SG_ERR_INVALID_KEY_ID);
  CW_CALLBACK_END
}

int Engine::Impl::StoreSignedPreKey(uint32_t id, uint8_t* record, size_t record_len, void* user_data) {
  CW_CALLBACK_BEGIN
  return static_cast<Impl*>(user_data)->StoreFrom(Table::kSignedPreKey, internal::BigEndian32(id), record,
                                                  record_len);
  CW_CALLBACK_END
}

int Engine::Impl::ContainsSignedPreKey(uint32_t id, void* user_data) {
  CW_CALLBACK_BEGIN
  auto* self = static_cast<Impl*>(user_data);
  auto v = self->Read(Table::kSignedPreKey, internal::BigEndian32(id));
  if (!v) return self->StoreFailed(v.error());
  return v->has_value() ? 1 : 0;
  CW_CALLBACK_END
}

int Engine::Impl::RemoveSignedPreKey(uint32_t id, void* user_data) {
  CW_CALLBACK_BEGIN
  static_cast<Impl*>(user_data)->Stage(Table::kSignedPreKey, internal::BigEndian32(id), std::nullopt);
  return 0;
  CW_CALLBACK_END
}

int Engine::Impl::GetIdentityKeyPair(signal_buffer** public_data, signal_buffer** private_data, void* user_data) {
  CW_CALLBACK_BEGIN
  auto* self = static_cast<Impl*>(user_data);
  int rc = ec_public_key_serialize(public_data, ratchet_identity_key_pair_get_public(self->identity_.get()));
  if (rc != 0) return rc;
  rc = ec_private_key_serialize(private_data, ratchet_identity_key_pair_get_private(self->identity_.get()));
  if (rc != 0) {
    signal_buffer_free(*public_data);
    *public_data = nullptr;
  }
  return rc;
  CW_CALLBACK_END
}

int Engine::Impl::GetLocalRegistrationId(void* user_data, uint32_t* registration_id) {
  *registration_id = static_cast<Impl*>(user_data)->registration_id_;
  return 0;
}

int Engine::Impl::SaveIdentity(const signal_protocol_address* address, uint8_t* key_data, size_t key_len,
                               void* user_data) {
  CW_CALLBACK_BEGIN
  auto* self = static_cast<Impl*>(user_data);
  std::string name(address->name, address->name_len);
  if (!key_data) {
    self->Stage(Table::kContact, name, std::nullopt);
    return 0;
  }
  if (key_len != wire::kPublicKeySize) return SG_ERR_INVALID_KEY;
  auto existing = self->ReadContact(name);
  if (!existing) return self->StoreFailed(existing.error());
  internal::ContactRecord c;
  if (*existing) c = **existing;
  wire::PublicKey key{};
  std::memcpy(key.data(), key_data, key.size());
  if (*existing && c.identity_key == key) return 0;
  // Only reached for a key is_trusted_identity accepted: the first one (trust on first use) or one the user
  // accepted, which AcceptIdentityChange already recorded.
  c.state = TrustState::kTrusted;
  c.identity_key = key;
  c.pending_identity_key.reset();
  self->StageContact(name, c);
  return 0;
  CW_CALLBACK_END
}

int Engine::Impl::IsTrustedIdentity(const signal_protocol_address* address, uint8_t* key_data, size_t key_len,
                                    void* user_data) {
  CW_CALLBACK_BEGIN
  auto* self = static_cast<Impl*>(user_data);
  if (key_len != wire::kPublicKeySize) return 0;
  std::string name(address->name, address->name_len);
  auto existing = self->ReadContact(name);
  if (!existing) return self->StoreFailed(existing.error());
  if (!*existing) return 1;  // trust on first use
  wire::PublicKey key{};
  std::memcpy(key.data(), key_data, key.size());
  const internal::ContactRecord& c = **existing;
  if (c.identity_key == key) return c.state == TrustState::kChanged ? 0 : 1;
  if (self->probe_trusted_key_ && *self->probe_trusted_key_ == key) return 1;  // see Engine::Decrypt
  // A rejected key the user took back (ReconsiderIdentityChange) awaits the decision like any pending key.
  if (c.pending_identity_key && *c.pending_identity_key == key) return 0;
  if (std::find(c.rejected_identity_keys.begin(), c.rejected_identity_keys.end(), key) !=
      c.rejected_identity_keys.end()) {
    self->rejected_identity_ = true;  // refused for good: the user said this key is not the contact's
    return 0;
  }
  // While one change awaits the user, another key never replaces it: whoever can claim the contact's name
  // could otherwise swap the key the user is about to compare and accept.
  if (c.pending_identity_key) return 0;
  self->pending_change_ = IdentityChange{FromSignalAddress(address), c.identity_key, key};
  return 0;
  CW_CALLBACK_END
}

int Engine::Impl::StoreSenderKey(const signal_protocol_sender_key_name* name, uint8_t* record, size_t record_len,
                                 uint8_t*, size_t, void* user_data) {
  CW_CALLBACK_BEGIN
  return static_cast<Impl*>(user_data)->StoreFrom(
      Table::kSenderKey,
      internal::SenderKeyKey({name->group_id, name->group_id_len}, {name->sender.name, name->sender.name_len},
                             name->sender.device_id),
      record, record_len);
  CW_CALLBACK_END
}

int Engine::Impl::LoadSenderKey(signal_buffer** record, signal_buffer** user_record,
                                const signal_protocol_sender_key_name* name, void* user_data) {
  CW_CALLBACK_BEGIN
  if (user_record) *user_record = nullptr;
  return static_cast<Impl*>(user_data)->LoadInto(
      Table::kSenderKey,
      internal::SenderKeyKey({name->group_id, name->group_id_len}, {name->sender.name, name->sender.name_len},
                             name->sender.device_id),
      record, 1, 0);
  CW_CALLBACK_END
}

#undef CW_CALLBACK_BEGIN
#undef CW_CALLBACK_END

// ---------------------------------------------------------------------------------------------------------

Status Engine::Impl::Init() {
  if (!wire::IsValidName(local_name_)) return Status(StatusCode::kInvalidArgument, "invalid local name");
  if (options_.device_id == 0 || options_.device_id > INT32_MAX) {
    return Status(StatusCode::kInvalidArgument, "invalid device id");
  }
  CW_RETURN_IF_ERROR(signal_.Init());
  signal_protocol_store_context* sc = nullptr;
  if (signal_protocol_store_context_create(&sc, signal_.ctx()) != 0) {
    return Status(StatusCode::kInternal, "store context create failed");
  }
  store_ctx_.reset(sc);

  signal_protocol_session_store sessions = {LoadSession, GetSubDeviceSessions, StoreSession, ContainsSession,
                                            DeleteSession, DeleteAllSessions, nullptr, this};
  signal_protocol_pre_key_store pre_keys = {LoadPreKey, StorePreKey, ContainsPreKey, RemovePreKey, nullptr, this};
  signal_protocol_signed_pre_key_store signed_pre_keys = {LoadSignedPreKey, StoreSignedPreKey, ContainsSignedPreKey,
                                                          RemoveSignedPreKey, nullptr, this};
  signal_protocol_identity_key_store identities = {GetIdentityKeyPair, GetLocalRegistrationId, SaveIdentity,
                                                   IsTrustedIdentity, nullptr, this};
  signal_protocol_sender_key_store sender_keys = {StoreSenderKey, LoadSenderKey, nullptr, this};
  if (signal_protocol_store_context_set_session_store(sc, &sessions) != 0 ||
      signal_protocol_store_context_set_pre_key_store(sc, &pre_keys) != 0 ||
      signal_protocol_store_context_set_signed_pre_key_store(sc, &signed_pre_keys) != 0 ||
      signal_protocol_store_context_set_identity_key_store(sc, &identities) != 0 ||
      signal_protocol_store_context_set_sender_key_store(sc, &sender_keys) != 0) {
    return Status(StatusCode::kInternal, "store context setup failed");
  }

  auto opened = Transact([&]() -> Result<bool> {
    CW_ASSIGN_OR_RETURN(auto stored, Read(Table::kMeta, kMetaIdentity));
    if (stored) {
      ratchet_identity_key_pair* pair = nullptr;
      int rc = ratchet_identity_key_pair_deserialize(&pair, stored->reveal().data(), stored->size(), signal_.ctx());
      if (rc != 0) return Error(StatusCode::kMalformed, "stored identity key pair is malformed");
      identity_.reset(pair);
      CW_ASSIGN_OR_RETURN(auto reg, ReadU32(kMetaRegistrationId));
      if (!reg) return Error(StatusCode::kMalformed, "stored registration id is missing");
      registration_id_ = *reg;
    } else {
      ratchet_identity_key_pair* pair = nullptr;
      CW_RETURN_IF_ERROR(
          Check(signal_protocol_key_helper_generate_identity_key_pair(&pair, signal_.ctx()), "identity key"));
      identity_.reset(pair);
      signal_buffer* raw = nullptr;
      CW_RETURN_IF_ERROR(Check(ratchet_identity_key_pair_serialize(&raw, pair), "identity key"));
      Buffer serialized(raw);
      Stage(Table::kMeta, std::string(kMetaIdentity), ToSecret(serialized.get()));
      CW_RETURN_IF_ERROR(Check(
          signal_protocol_key_helper_generate_registration_id(&registration_id_, 0, signal_.ctx()), "registration"));
      StageU32(kMetaRegistrationId, registration_id_);
      CW_RETURN_IF_ERROR(GenerateSignedPreKey());
      CW_ASSIGN_OR_RETURN(auto batch, GenerateOneTimePreKeysLocked());
      (void)batch;
    }
    CW_ASSIGN_OR_RETURN(identity_public_, SerializePublic(ratchet_identity_key_pair_get_public(identity_.get())));
    return true;
  });
  if (!opened) return opened.error();
  return Status::Ok();
}

Status Engine::Impl::GenerateSignedPreKey() {
  CW_ASSIGN_OR_RETURN(auto next, ReadU32(kMetaNextSignedPreKeyId));
  uint32_t id = next.value_or(1);
  session_signed_pre_key* raw = nullptr;
  CW_RETURN_IF_ERROR(Check(signal_protocol_key_helper_generate_signed_pre_key(
                               &raw, identity_.get(), id, static_cast<uint64_t>(clock_->NowMillis()), signal_.ctx()),
                           "signed pre-key"));
  SignalRef<session_signed_pre_key> spk(raw);
  CW_RETURN_IF_ERROR(Check(signal_protocol_signed_pre_key_store_key(store_ctx_.get(), spk.get()), "signed pre-key"));
  StageU32(kMetaCurrentSignedPreKey, id);
  StageU32(kMetaNextSignedPreKeyId, id % kMaxPreKeyId + 1);
  return Status::Ok();
}

Result<std::vector<wire::OneTimePreKeyPublic>> Engine::Impl::GenerateOneTimePreKeysLocked() {
  CW_ASSIGN_OR_RETURN(auto next, ReadU32(kMetaNextPreKeyId));
  uint32_t start = next.value_or(1);
  signal_protocol_key_helper_pre_key_list_node* head = nullptr;
  CW_RETURN_IF_ERROR(Check(signal_protocol_key_helper_generate_pre_keys(&head, start,
                                                                        options_.one_time_pre_key_batch, signal_.ctx()),
                           "one-time pre-keys"));
  std::unique_ptr<signal_protocol_key_helper_pre_key_list_node,
                  internal::FreeWith<signal_protocol_key_helper_pre_key_list_node,
                                     signal_protocol_key_helper_key_list_free>>
      list(head);
  std::vector<wire::OneTimePreKeyPublic> out;
  uint32_t last = start;
  for (auto* node = head; node; node = signal_protocol_key_helper_key_list_next(node)) {
    session_pre_key* pk = signal_protocol_key_helper_key_list_element(node);
    CW_RETURN_IF_ERROR(Check(signal_protocol_pre_key_store_key(store_ctx_.get(), pk), "one-time pre-key"));
    wire::OneTimePreKeyPublic pub;
    pub.id = session_pre_key_get_id(pk);
    CW_ASSIGN_OR_RETURN(pub.public_key, SerializePublic(ec_key_pair_get_public(session_pre_key_get_key_pair(pk))));
    last = pub.id;
    out.push_back(pub);
  }
  StageU32(kMetaNextPreKeyId, last % kMaxPreKeyId + 1);
  return out;
}

Result<wire::SignedPreKeyPublic> Engine::Impl::CurrentSignedPreKeyLocked() {
  CW_ASSIGN_OR_RETURN(auto current, ReadU32(kMetaCurrentSignedPreKey));
  if (!current) return Error(StatusCode::kNotFound, "no signed pre-key");
  session_signed_pre_key* raw = nullptr;
  CW_RETURN_IF_ERROR(
      Check(signal_protocol_signed_pre_key_load_key(store_ctx_.get(), &raw, *current), "signed pre-key"));
  SignalRef<session_signed_pre_key> spk(raw);
  wire::SignedPreKeyPublic out;
  out.id = *current;
  CW_ASSIGN_OR_RETURN(out.public_key, SerializePublic(ec_key_pair_get_public(session_signed_pre_key_get_key_pair(raw))));
  if (session_signed_pre_key_get_signature_len(raw) != wire::kSignatureSize) {
    return Error(StatusCode::kInternal, "unexpected signature size");
  }
  std::memcpy(out.signature.data(), session_signed_pre_key_get_signature(raw), wire::kSignatureSize);
  return out;
}

Result<bool> Engine::Impl::HasSessionLocked(const Address& peer) {
  // Records are stored only by a completed X3DH or a successful decrypt, so existence means a usable session;
  // no need to parse the record here (this runs before every encrypt).
  OwnedAddress addr(peer);
  int rc = signal_protocol_session_contains_session(store_ctx_.get(), &addr.address);
  CW_RETURN_IF_ERROR(Check(rc, "session lookup"));
  return rc == 1;
}

Result<Ciphertext> Engine::Impl::EncryptContent(const Address& peer, const wire::Content& content,
                                                bool despite_pending_change) {
  CW_RETURN_IF_ERROR(CheckPeer(peer));
  if (peer.name == local_name_) return Error(StatusCode::kInvalidArgument, "a session with oneself");
  CW_ASSIGN_OR_RETURN(auto contact, ReadContact(peer.name));
  if (contact && contact->state == TrustState::kChanged && !despite_pending_change) {
    return Error(StatusCode::kUntrustedIdentity, "contact's identity key changed; accept it before sending");
  }
  CW_ASSIGN_OR_RETURN(bool has, HasSessionLocked(peer));
  if (!has) return Error(StatusCode::kNoSession, "encrypt: no session");
  CW_ASSIGN_OR_RETURN(SecretBytes encoded, wire::EncodeContent(content));
  CW_ASSIGN_OR_RETURN(SecretBytes padded, wire::Pad(encoded.reveal()));
  OwnedAddress addr(peer);
  session_cipher* raw = nullptr;
  CW_RETURN_IF_ERROR(Check(session_cipher_create(&raw, store_ctx_.get(), &addr.address, signal_.ctx()), "encrypt"));
  SessionCipherPtr cipher(raw);
  ciphertext_message* msg = nullptr;
  CW_RETURN_IF_ERROR(
      Check(session_cipher_encrypt(cipher.get(), padded.reveal().data(), padded.size(), &msg), "encrypt"));
  SignalRef<ciphertext_message> owned(msg);
  signal_buffer* serialized = ciphertext_message_get_serialized(msg);
  Ciphertext out;
  out.type = ciphertext_message_get_type(msg) == CIPHERTEXT_PREKEY_TYPE ? MessageType::kPreKey : MessageType::kSignal;
  out.body.assign(signal_buffer_data(serialized), signal_buffer_data(serialized) + signal_buffer_len(serialized));
  return out;
}

Result<Received> Engine::Impl::DecryptPairwise(const Address& sender, const Ciphertext& message) {
  OwnedAddress addr(sender);
  session_cipher* raw = nullptr;
  CW_RETURN_IF_ERROR(Check(session_cipher_create(&raw, store_ctx_.get(), &addr.address, signal_.ctx()), "decrypt"));
  SessionCipherPtr cipher(raw);
  signal_buffer* plain_raw = nullptr;
  if (message.type == MessageType::kPreKey) {
    pre_key_signal_message* msg = nullptr;
    CW_RETURN_IF_ERROR(Check(
        pre_key_signal_message_deserialize(&msg, message.body.data(), message.body.size(), signal_.ctx()), "decrypt"));
    SignalRef<pre_key_signal_message> owned(msg);
    int rc = session_cipher_decrypt_pre_key_signal_message(cipher.get(), msg, nullptr, &plain_raw);
    CW_RETURN_IF_ERROR(Check(rc, "decrypt"));
  } else {
    signal_message* msg = nullptr;
    CW_RETURN_IF_ERROR(
        Check(signal_message_deserialize(&msg, message.body.data(), message.body.size(), signal_.ctx()), "decrypt"));
    SignalRef<signal_message> owned(msg);
    CW_RETURN_IF_ERROR(Check(session_cipher_decrypt_signal_message(cipher.get(), msg, nullptr, &plain_raw), "decrypt"));
  }
  Buffer plain(plain_raw);
  CW_ASSIGN_OR_RETURN(SecretBytes unpadded,
                      wire::Unpad({signal_buffer_data(plain.get()), signal_buffer_len(plain.get())}));
  CW_ASSIGN_OR_RETURN(wire::Content content, wire::DecodeContent(unpadded.reveal()));
  return HandleContent(sender, std::move(content));
}

Result<std::optional<internal::GroupRecord>> Engine::Impl::ReadGroup(std::string_view group_id) {
  CW_ASSIGN_OR_RETURN(auto v, Read(Table::kGroup, group_id));
  if (!v) return std::optional<internal::GroupRecord>();
  CW_ASSIGN_OR_RETURN(auto g, internal::DecodeGroup(v->reveal()));
  return std::optional<internal::GroupRecord>(std::move(g));
}

Result<internal::GroupRecord> Engine::Impl::ReadKnownGroup(std::string_view group_id) {
  CW_ASSIGN_OR_RETURN(auto g, ReadGroup(group_id));
  if (!g) return Error(StatusCode::kNotFound, "unknown group");
  return std::move(*g);
}

Result<SecretBytes> Engine::Impl::OwnSenderKeyDistribution(const std::string& group_id, bool rotate) {
  OwnedSenderKeyName name(group_id, Address{local_name_, options_.device_id});
  if (rotate) {
    // A fresh sender key: the old chain (and every key derivable from it) is never used again, so a removed
    // member's copy of it opens nothing new.
    Stage(Table::kSenderKey, internal::SenderKeyKey(group_id, local_name_, options_.device_id), std::nullopt);
  }
  group_session_builder* raw = nullptr;
  CW_RETURN_IF_ERROR(Check(group_session_builder_create(&raw, store_ctx_.get(), signal_.ctx()), "sender key"));
  GroupBuilderPtr builder(raw);
  sender_key_distribution_message* skdm = nullptr;
  CW_RETURN_IF_ERROR(Check(group_session_builder_create_session(builder.get(), &skdm, &name.skn), "sender key"));
  SignalRef<sender_key_distribution_message> owned(skdm);
  signal_buffer* serialized = ciphertext_message_get_serialized(reinterpret_cast<ciphertext_message*>(skdm));
  return ToSecret(serialized);
}

Status Engine::Impl::FanOut(const internal::GroupRecord& group, const std::vector<std::string>& to,
                            const wire::Content& content, GroupDelivery* out) {
  auto note = [](std::vector<Address>* list, const Address& a) {
    if (std::find(list->begin(), list->end(), a) == list->end()) list->push_back(a);
  };
  for (const auto& m : to) {
    if (m == local_name_) continue;
    Address peer{m, 1};
    CW_ASSIGN_OR_RETURN(bool has, HasSessionLocked(peer));
    if (!has) {
      note(&out->missing_sessions, peer);
      continue;
    }
    // The session must run under the key the admin lists for this member: on a device that never met a
    // member, whoever wrote first under that name holds the session (found in review: such a contact was
    // sent the group's keys at the next membership change).
    CW_ASSIGN_OR_RETURN(auto contact, ReadContact(m));
    if (!Vouched(group, m, contact)) {
      note(&out->unvouched_members, peer);
      continue;
    }
    // A member whose identity change awaits the user still gets the group's upkeep (membership, sender keys),
    // over the session with the key we still trust: only that key's holder can read it, so nothing goes to
    // the new key. Skipping them (as this once did) left them out of every later change: found in review,
    // a forged first message under a member's name, which anyone can send, made the admin skip that member
    // at a removal, who then never learned of it and kept writing under a key the removed member held.
    // They are still reported, so the user hears of the change.
    const bool pending_change = contact && contact->state == TrustState::kChanged;
    if (pending_change) note(&out->untrusted_members, peer);
    CW_ASSIGN_OR_RETURN(Ciphertext c, EncryptContent(peer, content, pending_change));
    out->messages.push_back(Outgoing{std::move(peer), std::move(c)});
  }
  return Status::Ok();
}

Result<std::vector<std::optional<wire::PublicKey>>> Engine::Impl::TrustedKeys(
    const std::vector<std::string>& members) {
  std::vector<std::optional<wire::PublicKey>> keys;
  keys.reserve(members.size());
  for (const auto& m : members) {
    if (m == local_name_) {
      keys.emplace_back(identity_public_);
      continue;
    }
    CW_ASSIGN_OR_RETURN(auto contact, ReadContact(m));
    keys.push_back(contact ? std::optional<wire::PublicKey>(contact->identity_key) : std::nullopt);
  }
  return keys;
}

Result<bool> Engine::Impl::ListTrustedKeys(const std::string& group_id, internal::GroupRecord* group) {
  group->keys.resize(group->members.size());
  bool listed = false;
  for (size_t i = 0; i < group->members.size(); ++i) {
    if (group->keys[i]) continue;
    CW_ASSIGN_OR_RETURN(auto key, TrustedKeys({group->members[i]}));
    if (!key[0]) continue;
    group->keys[i] = key[0];
    listed = true;
    if (group->members[i] != local_name_) CW_RETURN_IF_ERROR(ForgetSenderKeys(group_id, group->members[i]));
  }
  return listed;
}

bool Engine::Impl::Vouched(const internal::GroupRecord& group, const std::string& member,
                           const std::optional<internal::ContactRecord>& contact) {
  if (!contact) return false;
  // While a change awaits the user, identity_key is still the key trusted before it, which the session runs
  // under.
  if (const auto listed = group.KeyOf(member)) return *listed == contact->identity_key;
  return contact->state == TrustState::kVerified;
}

wire::Content Engine::Impl::Membership(const std::string& group_id, const internal::GroupRecord& group,
                                       SecretBytes sender_key) {
  wire::Content c{
      wire::ContentKind::kGroupMembers, group_id, std::move(sender_key), group.members, group.epoch, {}};
  c.member_keys = group.keys;
  c.member_keys.resize(group.members.size());
  return c;
}

Status Engine::Impl::ProcessSenderKey(const Address& sender, const std::string& group_id, const SecretBytes& skdm) {
  sender_key_distribution_message* raw = nullptr;
  CW_RETURN_IF_ERROR(Check(
      sender_key_distribution_message_deserialize(&raw, skdm.reveal().data(), skdm.size(), signal_.ctx()), "sender key"));
  SignalRef<sender_key_distribution_message> msg(raw);
  OwnedSenderKeyName name(group_id, sender);
  // A key already held is not taken again (a catch-up, or a repeat, of a key we have): libsignal would add a
  // second state of the same id at the distribution's place in the chain and decrypt with that one, so the
  // sender's messages still in flight would fail as duplicates and the ones already read would be accepted
  // again (found in review).
  sender_key_record* raw_record = nullptr;
  CW_RETURN_IF_ERROR(
      Check(signal_protocol_sender_key_load_key(store_ctx_.get(), &raw_record, &name.skn), "sender key"));
  SignalRef<sender_key_record> record(raw_record);
  sender_key_state* held = nullptr;  // borrowed from the record
  if (sender_key_record_get_sender_key_state_by_id(record.get(), &held,
                                                   sender_key_distribution_message_get_id(msg.get())) == 0) {
    return Status::Ok();
  }
  group_session_builder* b = nullptr;
  CW_RETURN_IF_ERROR(Check(group_session_builder_create(&b, store_ctx_.get(), signal_.ctx()), "sender key"));
  GroupBuilderPtr builder(b);
  return Check(group_session_builder_process_session(builder.get(), &name.skn, msg.get()), "sender key");
}

Status Engine::Impl::ForgetSenderKeys(const std::string& group_id, const std::string& member) {
  std::string prefix = internal::SenderKeyKey(group_id, member, 0);
  prefix.resize(prefix.size() - 4);  // every device of the member
  CW_ASSIGN_OR_RETURN(auto keys, List(Table::kSenderKey, prefix));
  for (auto& k : keys) Stage(Table::kSenderKey, std::move(k), std::nullopt);
  return Status::Ok();
}

Result<Received> Engine::Impl::HandleContent(const Address& sender, wire::Content content) {
  Received r;
  r.sender = sender;
  r.group_id = content.group_id;
  switch (content.kind) {
    case wire::ContentKind::kMessage:
      if (!content.group_id.empty()) return Error(StatusCode::kMalformed, "message content with a group id");
      r.kind = Received::Kind::kMessage;
      r.body = std::move(content.body);
      return r;

    case wire::ContentKind::kSenderKey: {
      // Accepted only inside an authenticated 1:1 session (we are here) from a current member of the group.
      if (!internal::IsValidGroupId(content.group_id)) return Error(StatusCode::kMalformed, "invalid group id");
      CW_ASSIGN_OR_RETURN(auto group, ReadGroup(content.group_id));
      if (!group || !Contains(group->members, sender.name)) {
        return Error(StatusCode::kPermissionDenied, "sender key from someone who is not a group member");
      }
      // And over a session under the key the admin lists for that member: otherwise whoever wrote to us first
      // under a member's name could write in the group as that member.
      CW_ASSIGN_OR_RETURN(auto contact, ReadContact(sender.name));
      if (!Vouched(*group, sender.name, contact)) {
        return Error(StatusCode::kPermissionDenied,
                     "sender key under another identity key than the group lists for that member");
      }
      CW_RETURN_IF_ERROR(ProcessSenderKey(sender, content.group_id, content.body));
      r.kind = Received::Kind::kSenderKey;
      return r;
    }

    case wire::ContentKind::kGroupMembers: {
      if (!internal::IsValidGroupId(content.group_id)) return Error(StatusCode::kMalformed, "invalid group id");
      // Members sorted by name, each with the key the admin lists (none from an admin of before keys).
      internal::GroupRecord listed;
      {
        std::vector<size_t> order(content.members.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::sort(order.begin(), order.end(),
                  [&](size_t a, size_t b) { return content.members[a] < content.members[b]; });
        for (size_t i : order) {
          listed.members.push_back(content.members[i]);
          listed.keys.push_back(content.member_keys.empty() ? std::nullopt : content.member_keys[i]);
        }
      }
      const std::vector<std::string>& updated = listed.members;
      if (std::adjacent_find(updated.begin(), updated.end()) != updated.end()) {
        return Error(StatusCode::kMalformed, "group member list has duplicates");
      }
      CW_ASSIGN_OR_RETURN(auto known, ReadGroup(content.group_id));
      r.kind = Received::Kind::kGroupMembers;
      // Only the group's admin (its creator) changes membership, and each change carries a higher epoch, so
      // a member cannot rewrite the group and a relay cannot replay or reorder changes.
      if (known) {
        if (sender.name != known->admin) {
          return Error(StatusCode::kPermissionDenied, "group update from someone who is not the group's admin");
        }
        // Under the admin's key too, the one the group id is bound to: a new key the user accepted under the
        // admin's name (an impostor's, or a new phone that knows no group) must not rewrite the group (found
        // in review).
        CW_ASSIGN_OR_RETURN(auto admin, ReadContact(sender.name));
        const auto admin_listed = known->KeyOf(known->admin);
        const bool bound_form = content.group_id.size() == 4 * kGroupIdPartSize;
        if (!admin || (bound_form && !GroupIdIsBoundTo(content.group_id, admin->identity_key)) ||
            (!bound_form && admin_listed && *admin_listed != admin->identity_key)) {
          return Error(StatusCode::kPermissionDenied,
                       "group update under another key than the group's admin's");
        }
        if (content.epoch <= known->epoch) {
          r.members = known->members;  // stale: the ratchet advances, the group does not change
          // The current epoch again is the admin catching us up (CatchUpGroups), after a new session with
          // it: its sender key is news, the membership is not.
          if (content.epoch == known->epoch && !content.body.empty()) {
            CW_RETURN_IF_ERROR(ProcessSenderKey(sender, content.group_id, content.body));
          }
          return r;
        }
      } else {
        if (!Contains(updated, sender.name) || !Contains(updated, local_name_) || content.epoch == 0) {
          return Error(StatusCode::kPermissionDenied,
                       "group invitation that does not list its sender and us");
        }
        // Forgetting a group we were removed from forgot its epoch too, so an older membership (a catch-up
        // or update the relay held back past our removal) would read as an invitation (found in review).
        CW_ASSIGN_OR_RETURN(auto removed_at,
                            Read(Table::kMeta, std::string(kMetaRemovedFromGroup) + content.group_id));
        if (removed_at && removed_at->size() == 8 &&
            content.epoch <= internal::ReadBigEndian64(removed_at->reveal())) {
          return Error(StatusCode::kPermissionDenied, "group update from before our removal from the group");
        }
        // The sender's trusted identity key: the session this came over was checked against it.
        CW_ASSIGN_OR_RETURN(auto contact, ReadContact(sender.name));
        if (!contact || !GroupIdIsBoundTo(content.group_id, contact->identity_key)) {
          return Error(StatusCode::kPermissionDenied,
                       "group invitation for a group id its sender did not make");
        }
      }
      r.members = updated;
      const std::vector<std::string> current = known ? known->members : std::vector<std::string>();
      if (!Contains(updated, local_name_)) {
        // We were removed: forget the group and every sender key we held for it, but not when it happened.
        Stage(Table::kGroup, content.group_id, std::nullopt);
        const std::string epoch = internal::BigEndian64(content.epoch);
        Stage(Table::kMeta, std::string(kMetaRemovedFromGroup) + content.group_id,
              SecretBytes(reinterpret_cast<const uint8_t*>(epoch.data()), epoch.size()));
        std::string prefix = content.group_id + std::string(1, '\0');
        CW_ASSIGN_OR_RETURN(auto keys, List(Table::kSenderKey, prefix));
        for (auto& k : keys) Stage(Table::kSenderKey, std::move(k), std::nullopt);
        return r;
      }
      if (!Contains(updated, sender.name)) return Error(StatusCode::kMalformed, "admin left out of its own group");
      // Removed members, and members now listed under another key (a new device the admin accepted): the
      // holder of the old key is out like a removed member.
      std::vector<std::string> removed, added;
      for (const auto& m : current) {
        if (!Contains(updated, m)) {
          removed.push_back(m);
          continue;
        }
        const auto was = known->KeyOf(m), now = listed.KeyOf(m);
        if (m == local_name_ || !now) continue;
        if (was) {
          if (*was != *now) removed.push_back(m);
          continue;
        }
        // Listed for the first time (our record is from before keys): what we hold from, or gave to, a
        // session under this name came under the old rule (any session under the name), perhaps from an
        // impostor, or from a device whose key was since replaced, even where the key we trust now is the
        // listed one (found in review, twice). So it goes as at a removal; the member's key comes again.
        removed.push_back(m);
      }
      for (const auto& m : updated) {
        if (!Contains(current, m) && m != local_name_) added.push_back(m);
      }
      for (const auto& m : removed) CW_RETURN_IF_ERROR(ForgetSenderKeys(content.group_id, m));
      listed.admin = known ? known->admin : sender.name;
      listed.epoch = content.epoch;
      Stage(Table::kGroup, content.group_id, internal::EncodeGroup(listed));
      // The admin's own sender key rides along with the membership, so the two cannot arrive out of order.
      if (!content.body.empty()) CW_RETURN_IF_ERROR(ProcessSenderKey(sender, content.group_id, content.body));
      const bool rotate = !removed.empty();
      if (!known || rotate || !added.empty()) {
        CW_ASSIGN_OR_RETURN(SecretBytes skdm, OwnSenderKeyDistribution(content.group_id, rotate));
        wire::Content share{wire::ContentKind::kSenderKey, content.group_id, std::move(skdm), {}, 0, {}};
        // A new or rotated key goes to everyone; otherwise only the newcomers need ours.
        const std::vector<std::string>& to = (!known || rotate) ? updated : added;
        GroupDelivery delivery;
        CW_RETURN_IF_ERROR(FanOut(listed, to, share, &delivery));
        r.replies = std::move(delivery.messages);
        r.missing_sessions = std::move(delivery.missing_sessions);
        r.untrusted_members = std::move(delivery.untrusted_members);
        r.unvouched_members = std::move(delivery.unvouched_members);
      }
      return r;
    }
  }
  return Error(StatusCode::kMalformed, "unknown content kind");
}

Result<Received> Engine::Impl::DecryptGroup(const Address& sender, const Ciphertext& message) {
  if (!internal::IsValidGroupId(message.group_id)) return Error(StatusCode::kMalformed, "invalid group id");
  CW_ASSIGN_OR_RETURN(auto group, ReadGroup(message.group_id));
  if (!group || !Contains(group->members, sender.name)) {
    return Error(StatusCode::kPermissionDenied, "group message from someone who is not a group member");
  }
  // A second layer over the sender keys themselves (taken only from the listed key, and forgotten when the
  // listed key changes): the member's key must still be the listed one.
  if (const auto listed = group->KeyOf(sender.name)) {
    CW_ASSIGN_OR_RETURN(auto contact, ReadContact(sender.name));
    if (!contact || contact->identity_key != *listed) {
      return Error(StatusCode::kPermissionDenied,
                   "group message under another identity key than the group lists");
    }
  }
  sender_key_message* raw = nullptr;
  CW_RETURN_IF_ERROR(Check(
      sender_key_message_deserialize(&raw, message.body.data(), message.body.size(), signal_.ctx()), "group decrypt"));
  SignalRef<sender_key_message> msg(raw);
  OwnedSenderKeyName name(message.group_id, sender);
  group_cipher* c = nullptr;
  CW_RETURN_IF_ERROR(Check(group_cipher_create(&c, store_ctx_.get(), &name.skn, signal_.ctx()), "group decrypt"));
  GroupCipherPtr cipher(c);
  signal_buffer* plain_raw = nullptr;
  CW_RETURN_IF_ERROR(Check(group_cipher_decrypt(cipher.get(), msg.get(), nullptr, &plain_raw), "group decrypt"));
  Buffer plain(plain_raw);
  CW_ASSIGN_OR_RETURN(SecretBytes body, wire::Unpad({signal_buffer_data(plain.get()), signal_buffer_len(plain.get())}));
  Received r;
  r.kind = Received::Kind::kGroupMessage;
  r.sender = sender;
  r.group_id = message.group_id;
  r.body = std::move(body);
  return r;
}

// ---------------------------------------------------------------------------------------------------------

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::Open(ProtocolStore* store, std::string local_name, EngineOptions options) {
  if (!store) return Error(StatusCode::kInvalidArgument, "no store");
  auto impl = std::make_unique<Impl>(store, std::move(local_name), std::move(options));
  CW_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const std::string& Engine::local_name() const { return impl_->local_name_; }
uint32_t Engine::registration_id() const { return impl_->registration_id_; }
uint32_t Engine::device_id() const { return impl_->options_.device_id; }
const wire::PublicKey& Engine::identity_key() const { return impl_->identity_public_; }

Result<wire::PreKeyBundle> Engine::MakeBundle(bool with_one_time_pre_key) {
  return impl_->Transact([&]() -> Result<wire::PreKeyBundle> {
    wire::PreKeyBundle b;
    b.registration_id = impl_->registration_id_;
    b.device_id = impl_->options_.device_id;
    b.identity_key = impl_->identity_public_;
    CW_ASSIGN_OR_RETURN(b.signed_pre_key, impl_->CurrentSignedPreKeyLocked());
    if (!with_one_time_pre_key) return b;
    CW_ASSIGN_OR_RETURN(auto handed, impl_->ReadU32(kMetaHandedOutPreKeyId));
    CW_ASSIGN_OR_RETURN(auto keys, impl_->List(Table::kPreKey, ""));
    for (const auto& k : keys) {
      uint32_t id = internal::ReadBigEndian32(std::span(reinterpret_cast<const uint8_t*>(k.data()), 4));
      if (handed && id <= *handed) continue;
      session_pre_key* raw = nullptr;
      CW_RETURN_IF_ERROR(impl_->Check(signal_protocol_pre_key_load_key(impl_->store_ctx_.get(), &raw, id), "pre-key"));
      SignalRef<session_pre_key> pk(raw);
      wire::OneTimePreKeyPublic otpk;
      otpk.id = id;
      CW_ASSIGN_OR_RETURN(otpk.public_key, SerializePublic(ec_key_pair_get_public(session_pre_key_get_key_pair(raw))));
      b.one_time_pre_key = otpk;
      impl_->StageU32(kMetaHandedOutPreKeyId, id);
      break;
    }
    return b;
  });
}

Result<wire::SignedPreKeyPublic> Engine::CurrentSignedPreKey() {
  return impl_->Transact([&] { return impl_->CurrentSignedPreKeyLocked(); });
}

Result<Bytes> Engine::SignWithIdentityKey(ByteView message) {
  return impl_->Transact([&]() -> Result<Bytes> {
    // XEdDSA, as libsignal signs pre-keys: the nonce comes from the context's random callback (our Random
    // seam), so a seeded Random gives reproducible signatures in tests. The private key never leaves
    // libsignal's object.
    signal_buffer* raw = nullptr;
    CW_RETURN_IF_ERROR(impl_->Check(
        curve_calculate_signature(impl_->signal_.ctx(), &raw,
                                  ratchet_identity_key_pair_get_private(impl_->identity_.get()), message.data(),
                                  message.size()),
        "identity signature"));
    Buffer sig(raw);
    if (sig == nullptr) return Error(StatusCode::kInternal, "identity signature missing");
    return Bytes(signal_buffer_data(sig.get()), signal_buffer_data(sig.get()) + signal_buffer_len(sig.get()));
  });
}

Result<std::vector<wire::OneTimePreKeyPublic>> Engine::GenerateOneTimePreKeys() {
  return impl_->Transact([&] { return impl_->GenerateOneTimePreKeysLocked(); });
}

Result<size_t> Engine::OneTimePreKeyCount() {
  return impl_->Transact([&]() -> Result<size_t> {
    CW_ASSIGN_OR_RETURN(auto keys, impl_->List(Table::kPreKey, ""));
    return keys.size();
  });
}

Result<bool> Engine::NeedsOneTimePreKeyRefill() {
  CW_ASSIGN_OR_RETURN(size_t n, OneTimePreKeyCount());
  return n < impl_->options_.one_time_pre_key_refill_below;
}

Result<bool> Engine::RotateSignedPreKeyIfDue() {
  return impl_->Transact([&]() -> Result<bool> {
    const int64_t now = impl_->clock_->NowMillis();
    CW_ASSIGN_OR_RETURN(auto current, impl_->ReadU32(kMetaCurrentSignedPreKey));
    // Creation times of every stored signed pre-key, oldest first.
    CW_ASSIGN_OR_RETURN(auto keys, impl_->List(Table::kSignedPreKey, ""));
    std::vector<std::pair<int64_t, uint32_t>> created;
    for (const auto& k : keys) {
      uint32_t id = internal::ReadBigEndian32(std::span(reinterpret_cast<const uint8_t*>(k.data()), 4));
      session_signed_pre_key* raw = nullptr;
      CW_RETURN_IF_ERROR(
          impl_->Check(signal_protocol_signed_pre_key_load_key(impl_->store_ctx_.get(), &raw, id), "signed pre-key"));
      SignalRef<session_signed_pre_key> spk(raw);
      created.emplace_back(static_cast<int64_t>(session_signed_pre_key_get_timestamp(raw)), id);
    }
    std::sort(created.begin(), created.end());
    int64_t current_created = 0;
    for (const auto& [ts, id] : created) {
      if (current && id == *current) current_created = ts;
    }
    bool rotated = false;
    if (!current || now - current_created >= impl_->options_.signed_pre_key_rotation_ms) {
      CW_RETURN_IF_ERROR(impl_->GenerateSignedPreKey());
      created.emplace_back(now, 0);  // stands for the new key when judging its predecessor's retention
      rotated = true;
    }
    // A replaced key is kept until `retention` has passed since its successor took over.
    for (size_t i = 0; i + 1 < created.size(); ++i) {
      if (created[i].second == 0) continue;
      if (now - created[i + 1].first > impl_->options_.signed_pre_key_retention_ms) {
        impl_->Stage(Table::kSignedPreKey, internal::BigEndian32(created[i].second), std::nullopt);
      }
    }
    return rotated;
  });
}

Status Engine::ProcessBundle(const Address& peer, const wire::PreKeyBundle& bundle) {
  auto r = impl_->Transact([&]() -> Result<bool> {
    CW_RETURN_IF_ERROR(impl_->CheckPeer(peer));
    if (peer.name == impl_->local_name_) return Error(StatusCode::kInvalidArgument, "a session with oneself");
    signal_context* ctx = impl_->signal_.ctx();
    CW_ASSIGN_OR_RETURN(auto identity, DecodePublic(bundle.identity_key, ctx));
    CW_ASSIGN_OR_RETURN(auto spk, DecodePublic(bundle.signed_pre_key.public_key, ctx));
    // Verify the signature ourselves first, so a forged bundle gets its own error rather than "invalid key".
    int verified = curve_verify_signature(identity.get(), bundle.signed_pre_key.public_key.data(),
                                          bundle.signed_pre_key.public_key.size(),
                                          bundle.signed_pre_key.signature.data(), bundle.signed_pre_key.signature.size());
    if (verified != 1) return Error(StatusCode::kBadSignature, "pre-key bundle signature does not verify");
    SignalRef<ec_public_key> otpk;
    uint32_t otpk_id = 0;
    if (bundle.one_time_pre_key) {
      CW_ASSIGN_OR_RETURN(otpk, DecodePublic(bundle.one_time_pre_key->public_key, ctx));
      otpk_id = bundle.one_time_pre_key->id;
    }
    session_pre_key_bundle* raw = nullptr;
    CW_RETURN_IF_ERROR(impl_->Check(
        session_pre_key_bundle_create(&raw, bundle.registration_id, static_cast<int>(bundle.device_id), otpk_id,
                                      otpk.get(), bundle.signed_pre_key.id, spk.get(),
                                      bundle.signed_pre_key.signature.data(), bundle.signed_pre_key.signature.size(),
                                      identity.get()),
        "pre-key bundle"));
    SignalRef<session_pre_key_bundle> owned(raw);
    OwnedAddress addr(peer);
    session_builder* b = nullptr;
    CW_RETURN_IF_ERROR(
        impl_->Check(session_builder_create(&b, impl_->store_ctx_.get(), &addr.address, ctx), "pre-key bundle"));
    SessionBuilderPtr builder(b);
    CW_RETURN_IF_ERROR(impl_->Check(session_builder_process_pre_key_bundle(builder.get(), raw), "pre-key bundle"));
    return true;
  });
  if (!r) {
    if (r.error().code() == StatusCode::kUntrustedIdentity) CW_RETURN_IF_ERROR(impl_->RecordIdentityChange());
    return r.error();
  }
  return Status::Ok();
}

bool Engine::HasSession(const Address& peer) {
  auto r = impl_->Transact([&] { return impl_->HasSessionLocked(peer); });
  return r && *r;
}

Result<Ciphertext> Engine::Encrypt(const Address& peer, std::span<const uint8_t> plaintext,
                                  const EncryptHook& also_write) {
  return impl_->Transact([&]() -> Result<Ciphertext> {
    wire::Content content;
    content.kind = wire::ContentKind::kMessage;
    content.body = SecretBytes(plaintext);
    CW_ASSIGN_OR_RETURN(Ciphertext c, impl_->EncryptContent(peer, content));
    CW_RETURN_IF_ERROR(impl_->RunHook(also_write, c));
    return c;
  });
}

Result<Received> Engine::Decrypt(const Address& sender, const Ciphertext& message, const DecryptHook& also_write) {
  auto r = impl_->Transact([&]() -> Result<Received> {
    CW_RETURN_IF_ERROR(impl_->CheckPeer(sender));
    // The relay says who sent a message. Our own name would pass every membership check and is never
    // pinned to an identity key, so nothing may arrive under it.
    if (sender.name == impl_->local_name_) {
      return Error(StatusCode::kPermissionDenied, "message claims to come from this identity");
    }
    CW_RETURN_IF_ERROR(CheckVersionByte(message.body));
    Result<Received> received = Error(StatusCode::kMalformed, "unknown message type");
    switch (message.type) {
      case MessageType::kPreKey:
      case MessageType::kSignal:
        received = impl_->DecryptPairwise(sender, message);
        break;
      case MessageType::kSenderKey:
        received = impl_->DecryptGroup(sender, message);
        break;
      case MessageType::kSenderKeyDistribution:
        return Error(StatusCode::kPermissionDenied, "sender keys are accepted only inside a 1:1 session");
    }
    if (received) CW_RETURN_IF_ERROR(impl_->RunHook(also_write, *received));
    return received;
  });
  if (!r && r.error().code() == StatusCode::kUntrustedIdentity && impl_->rejected_identity_) {
    return Error(StatusCode::kRejected, "a message from an identity key the user rejected");
  }
  if (!r && r.error().code() == StatusCode::kUntrustedIdentity && impl_->pending_change_) {
    // libsignal asks about trust before it checks the MAC, so this message may be forged. Decrypt it once
    // more with the new key trusted, keep nothing, and record the change only if it is authentic: only
    // the holder of the new identity key can produce a message whose MAC verifies (X3DH mixes DH(IK_A, SPK_B)).
    IdentityChange change = *impl_->pending_change_;
    auto probe = impl_->Transact([&]() -> Result<bool> {
      impl_->probe_trusted_key_ = change.new_key;
      auto probed = impl_->DecryptPairwise(sender, message);
      impl_->probe_trusted_key_.reset();
      if (!probed) return Error(probed.error());
      return Error(StatusCode::kAborted, "probe only");  // never commit what the probe staged
    });
    if (probe.error().code() != StatusCode::kAborted) return Error(probe.error());
    impl_->pending_change_ = change;
    CW_RETURN_IF_ERROR(impl_->RecordIdentityChange());
  }
  return r;
}

Result<Contact> Engine::GetContact(const std::string& name) {
  return impl_->Transact([&]() -> Result<Contact> {
    CW_ASSIGN_OR_RETURN(auto c, impl_->ReadContact(name));
    Contact out;
    if (!c) return out;
    out.state = c->state;
    out.identity_key = c->identity_key;
    out.pending_identity_key = c->pending_identity_key;
    return out;
  });
}

Status Engine::AcceptIdentityChange(const std::string& name, const std::optional<wire::PublicKey>& expected_key) {
  auto r = impl_->Transact([&]() -> Result<bool> {
    CW_ASSIGN_OR_RETURN(auto c, impl_->ReadContact(name));
    if (!c || c->state != TrustState::kChanged) return Error(StatusCode::kNotFound, "no identity change to accept");
    if (expected_key && !ConstantTimeEquals(*expected_key, *c->pending_identity_key)) {
      return Error(StatusCode::kInvalidArgument, "the pending identity key is not the one the user compared");
    }
    c->identity_key = *c->pending_identity_key;
    std::erase(c->rejected_identity_keys, c->identity_key);  // one the user took back (Reconsider)
    c->pending_identity_key.reset();
    c->state = TrustState::kTrusted;  // verification was of the old key
    c->verified_before_change = false;
    impl_->StageContact(name, *c);
    // Sessions with the old key are over: the next message comes from (or goes to) a new X3DH.
    std::string prefix = name;
    prefix.push_back('\0');
    CW_ASSIGN_OR_RETURN(auto sessions, impl_->List(Table::kSession, prefix));
    for (auto& k : sessions) impl_->Stage(Table::kSession, std::move(k), std::nullopt);
    return true;
  });
  return r ? Status::Ok() : r.error();
}

Status Engine::RejectIdentityChange(const std::string& name, const wire::PublicKey& rejected_key) {
  auto r = impl_->Transact([&]() -> Result<bool> {
    CW_ASSIGN_OR_RETURN(auto c, impl_->ReadContact(name));
    if (!c || c->state != TrustState::kChanged)
      return Error(StatusCode::kNotFound, "no identity change to reject");
    if (!ConstantTimeEquals(rejected_key, *c->pending_identity_key)) {
      return Error(StatusCode::kInvalidArgument, "the pending identity key is not the one the user compared");
    }
    auto& rejected = c->rejected_identity_keys;
    if (std::find(rejected.begin(), rejected.end(), rejected_key) != rejected.end()) {
      // Taken back and rejected again: it goes first, so the next ReconsiderIdentityChange offers the one
      // rejected before it, and the user can go through them all (found in review: an impostor's key
      // rejected after the real one hid the real one for good).
      std::erase(rejected, rejected_key);
      rejected.insert(rejected.begin(), rejected_key);
    } else {
      rejected.push_back(rejected_key);
      if (rejected.size() > internal::kMaxRejectedKeys) rejected.erase(rejected.begin());
    }
    c->pending_identity_key.reset();
    c->state = c->verified_before_change ? TrustState::kVerified : TrustState::kTrusted;
    c->verified_before_change = false;
    impl_->StageContact(name, *c);
    return true;
  });
  return r ? Status::Ok() : r.error();
}

Result<wire::PublicKey> Engine::ReconsiderIdentityChange(const std::string& name) {
  return impl_->Transact([&]() -> Result<wire::PublicKey> {
    CW_ASSIGN_OR_RETURN(auto c, impl_->ReadContact(name));
    if (c && c->state == TrustState::kChanged) {
      return Error(StatusCode::kInvalidArgument, "another identity change awaits a decision");
    }
    if (!c || c->rejected_identity_keys.empty())
      return Error(StatusCode::kNotFound, "no rejected identity key");
    // Still listed while it awaits: rejected again, it goes first (RejectIdentityChange); accepted, it
    // leaves.
    const wire::PublicKey key = c->rejected_identity_keys.back();
    c->verified_before_change = c->state == TrustState::kVerified;
    c->state = TrustState::kChanged;
    c->pending_identity_key = key;
    impl_->StageContact(name, *c);
    return key;
  });
}

Status Engine::SetVerified(const std::string& name, bool verified) {
  auto r = impl_->Transact([&]() -> Result<bool> {
    CW_ASSIGN_OR_RETURN(auto c, impl_->ReadContact(name));
    if (!c) return Error(StatusCode::kNotFound, "unknown contact");
    if (c->state == TrustState::kChanged) {
      return Error(StatusCode::kUntrustedIdentity, "accept the changed identity key before verifying");
    }
    c->state = verified ? TrustState::kVerified : TrustState::kTrusted;
    impl_->StageContact(name, *c);
    return true;
  });
  return r ? Status::Ok() : r.error();
}

Result<SafetyNumber> Engine::GetSafetyNumber(const std::string& name) {
  return impl_->Transact([&]() -> Result<SafetyNumber> {
    CW_ASSIGN_OR_RETURN(auto c, impl_->ReadContact(name));
    if (!c) return Error(StatusCode::kNotFound, "unknown contact");
    signal_context* ctx = impl_->signal_.ctx();
    // While a change awaits the user, the number to compare is the one for the key they are asked to accept.
    CW_ASSIGN_OR_RETURN(auto remote, DecodePublic(c->pending_identity_key.value_or(c->identity_key), ctx));
    fingerprint_generator* g = nullptr;
    CW_RETURN_IF_ERROR(
        impl_->Check(fingerprint_generator_create(&g, kFingerprintIterations, kScannableVersion, ctx), "safety number"));
    FingerprintGeneratorPtr generator(g);
    fingerprint* fp = nullptr;
    CW_RETURN_IF_ERROR(impl_->Check(
        fingerprint_generator_create_for(g, impl_->local_name_.c_str(),
                                         ratchet_identity_key_pair_get_public(impl_->identity_.get()), name.c_str(),
                                         remote.get(), &fp),
        "safety number"));
    SignalRef<fingerprint> owned(fp);
    SafetyNumber out;
    out.digits = displayable_fingerprint_text(fingerprint_get_displayable(fp));
    signal_buffer* raw = nullptr;
    CW_RETURN_IF_ERROR(
        impl_->Check(scannable_fingerprint_serialize(&raw, fingerprint_get_scannable(fp)), "safety number"));
    Buffer scannable(raw);
    out.scannable.assign(signal_buffer_data(raw), signal_buffer_data(raw) + signal_buffer_len(raw));
    return out;
  });
}

Result<bool> Engine::CompareScannedSafetyNumber(const std::string& name, ByteView scanned) {
  CW_ASSIGN_OR_RETURN(SafetyNumber ours, GetSafetyNumber(name));
  return impl_->Transact([&]() -> Result<bool> {
    signal_context* ctx = impl_->signal_.ctx();
    scannable_fingerprint* theirs = nullptr;
    int rc = scannable_fingerprint_deserialize(&theirs, scanned.data(), scanned.size(), ctx);
    if (rc != 0) return Error(StatusCode::kMalformed, "scanned safety number is malformed");
    SignalRef<scannable_fingerprint> owned_theirs(theirs);
    scannable_fingerprint* mine = nullptr;
    rc = scannable_fingerprint_deserialize(&mine, ours.scannable.data(), ours.scannable.size(), ctx);
    if (rc != 0) return Error(StatusCode::kInternal, "own safety number did not parse");
    SignalRef<scannable_fingerprint> owned_mine(mine);
    rc = scannable_fingerprint_compare(mine, theirs);
    if (rc == 1) return true;
    if (rc == SG_ERR_FP_VERSION_MISMATCH) return Error(StatusCode::kUnsupportedVersion, "safety number version");
    return false;
  });
}

std::string Engine::NewGroupId() {
  std::array<uint8_t, kGroupIdPartSize> nonce{};
  impl_->random_->Fill(nonce.data(), nonce.size());
  return BoundGroupId(impl_->identity_public_, nonce);
}

Result<GroupDelivery> Engine::CreateGroup(const std::string& group_id, const std::vector<std::string>& members,
                                          const GroupHook& also_write) {
  return impl_->Transact([&]() -> Result<GroupDelivery> {
    if (!internal::IsValidGroupId(group_id)) return Error(StatusCode::kInvalidArgument, "invalid group id");
    CW_ASSIGN_OR_RETURN(auto existing, impl_->ReadGroup(group_id));
    if (existing) return Error(StatusCode::kAlreadyExists, "group exists");
    std::vector<std::string> all = members;
    all.push_back(impl_->local_name_);
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    if (all.size() > wire::kMaxGroupMembers) return Error(StatusCode::kInvalidArgument, "too many members");
    for (const auto& m : all) {
      if (!wire::IsValidName(m)) return Error(StatusCode::kInvalidArgument, "invalid member name");
    }
    internal::GroupRecord group{impl_->local_name_, 1, all, {}};
    CW_ASSIGN_OR_RETURN(group.keys, impl_->TrustedKeys(all));
    impl_->Stage(Table::kGroup, group_id, internal::EncodeGroup(group));
    CW_ASSIGN_OR_RETURN(SecretBytes skdm, impl_->OwnSenderKeyDistribution(group_id, false));
    GroupDelivery out;
    CW_RETURN_IF_ERROR(impl_->FanOut(group, all, Impl::Membership(group_id, group, std::move(skdm)), &out));
    CW_RETURN_IF_ERROR(impl_->RunHook(also_write, out));
    return out;
  });
}

Result<GroupDelivery> Engine::AddGroupMember(const std::string& group_id, const std::string& member,
                                             const GroupHook& also_write) {
  return impl_->Transact([&]() -> Result<GroupDelivery> {
    if (!wire::IsValidName(member)) return Error(StatusCode::kInvalidArgument, "invalid member name");
    CW_ASSIGN_OR_RETURN(auto group, impl_->ReadKnownGroup(group_id));
    if (group.admin != impl_->local_name_) return Error(StatusCode::kPermissionDenied, "only the admin adds members");
    if (Contains(group.members, member)) return Error(StatusCode::kAlreadyExists, "already a member");
    if (group.members.size() >= wire::kMaxGroupMembers) return Error(StatusCode::kResourceExhausted, "group is full");
    CW_ASSIGN_OR_RETURN(auto key, impl_->TrustedKeys({member}));
    const auto at =
        std::lower_bound(group.members.begin(), group.members.end(), member) - group.members.begin();
    group.keys.resize(group.members.size());
    group.members.insert(group.members.begin() + at, member);
    group.keys.insert(group.keys.begin() + at, key[0]);
    // A record from before keys lists them now (the members take it as their first list).
    CW_ASSIGN_OR_RETURN(bool relisted, impl_->ListTrustedKeys(group_id, &group));
    ++group.epoch;
    impl_->Stage(Table::kGroup, group_id, internal::EncodeGroup(group));
    GroupDelivery out;
    CW_ASSIGN_OR_RETURN(SecretBytes skdm, impl_->OwnSenderKeyDistribution(group_id, relisted));
    CW_RETURN_IF_ERROR(
        impl_->FanOut(group, group.members, Impl::Membership(group_id, group, std::move(skdm)), &out));
    CW_RETURN_IF_ERROR(impl_->RunHook(also_write, out));
    return out;
  });
}

Result<GroupDelivery> Engine::RemoveGroupMember(const std::string& group_id, const std::string& member,
                                                const GroupHook& also_write) {
  return impl_->Transact([&]() -> Result<GroupDelivery> {
    CW_ASSIGN_OR_RETURN(auto group, impl_->ReadKnownGroup(group_id));
    if (group.admin != impl_->local_name_) return Error(StatusCode::kPermissionDenied, "only the admin removes members");
    if (!Contains(group.members, member)) return Error(StatusCode::kNotFound, "not a member");
    if (member == impl_->local_name_) return Error(StatusCode::kInvalidArgument, "the admin cannot remove itself");
    const internal::GroupRecord before = group;
    const auto at = std::find(group.members.begin(), group.members.end(), member) - group.members.begin();
    group.keys.resize(group.members.size());
    group.members.erase(group.members.begin() + at);
    group.keys.erase(group.keys.begin() + at);
    // A record from before keys lists them now (the members take it as their first list); a removal rotates
    // our key anyway.
    CW_ASSIGN_OR_RETURN(bool relisted, impl_->ListTrustedKeys(group_id, &group));
    (void)relisted;
    ++group.epoch;
    impl_->Stage(Table::kGroup, group_id, internal::EncodeGroup(group));
    CW_RETURN_IF_ERROR(impl_->ForgetSenderKeys(group_id, member));
    GroupDelivery out;
    CW_ASSIGN_OR_RETURN(SecretBytes skdm, impl_->OwnSenderKeyDistribution(group_id, /*rotate=*/true));
    CW_RETURN_IF_ERROR(
        impl_->FanOut(group, group.members, Impl::Membership(group_id, group, std::move(skdm)), &out));
    // The removed member hears of its removal too (without the new key), so its client stops showing the
    // group as live: under the key listed for it until now.
    CW_RETURN_IF_ERROR(impl_->FanOut(before, {member}, Impl::Membership(group_id, group, {}), &out));
    CW_RETURN_IF_ERROR(impl_->RunHook(also_write, out));
    return out;
  });
}

Result<std::vector<std::string>> Engine::GroupMembers(const std::string& group_id) {
  return impl_->Transact([&]() -> Result<std::vector<std::string>> {
    CW_ASSIGN_OR_RETURN(auto group, impl_->ReadKnownGroup(group_id));
    return group.members;
  });
}

Result<GroupDelivery> Engine::CatchUpGroups(const std::string& member, const GroupHook& also_write) {
  return impl_->Transact([&]() -> Result<GroupDelivery> {
    GroupDelivery out;
    if (member == impl_->local_name_) return out;
    CW_ASSIGN_OR_RETURN(auto contact, impl_->ReadContact(member));
    CW_ASSIGN_OR_RETURN(auto ids, impl_->List(Table::kGroup, ""));
    for (const auto& id : ids) {
      CW_ASSIGN_OR_RETURN(auto group, impl_->ReadKnownGroup(id));
      if (!Contains(group.members, member)) continue;
      if (group.admin != impl_->local_name_) {
        CW_ASSIGN_OR_RETURN(SecretBytes skdm, impl_->OwnSenderKeyDistribution(id, false));
        CW_RETURN_IF_ERROR(impl_->FanOut(
            group, {member}, wire::Content{wire::ContentKind::kSenderKey, id, std::move(skdm), {}, 0, {}},
            &out));
        continue;
      }
      // The admin lists the key it now trusts for the member when that is another than the listed one (the
      // accepted new key of a member's new device), and for every member listed with none (a record from
      // before keys). Everyone hears of it at a new epoch, and whoever held an old key, or a session under a
      // member's name that the new list does not vouch for, is out as at a removal: our key rotates, and the
      // members drop what they hold under that name and rotate theirs on receipt.
      CW_ASSIGN_OR_RETURN(bool relisted, impl_->ListTrustedKeys(id, &group));
      const auto listed = group.KeyOf(member);
      const bool replaced =
          contact && contact->state != TrustState::kChanged && listed && *listed != contact->identity_key;
      if (replaced || relisted) {
        if (replaced) {
          const auto at =
              std::find(group.members.begin(), group.members.end(), member) - group.members.begin();
          group.keys[at] = contact->identity_key;
          CW_RETURN_IF_ERROR(impl_->ForgetSenderKeys(id, member));
        }
        ++group.epoch;
        impl_->Stage(Table::kGroup, id, internal::EncodeGroup(group));
        CW_ASSIGN_OR_RETURN(SecretBytes skdm, impl_->OwnSenderKeyDistribution(id, /*rotate=*/true));
        CW_RETURN_IF_ERROR(
            impl_->FanOut(group, group.members, Impl::Membership(id, group, std::move(skdm)), &out));
        continue;
      }
      // Otherwise the membership itself, at its current epoch: a new device knows no group, and takes this as
      // its invitation; a device that knows the group takes only the key from it.
      CW_ASSIGN_OR_RETURN(SecretBytes skdm, impl_->OwnSenderKeyDistribution(id, false));
      CW_RETURN_IF_ERROR(impl_->FanOut(group, {member}, Impl::Membership(id, group, std::move(skdm)), &out));
    }
    CW_RETURN_IF_ERROR(impl_->RunHook(also_write, out));
    return out;
  });
}

Result<Ciphertext> Engine::GroupEncrypt(const std::string& group_id, std::span<const uint8_t> plaintext,
                                       const EncryptHook& also_write) {
  return impl_->Transact([&]() -> Result<Ciphertext> {
    CW_ASSIGN_OR_RETURN(auto group, impl_->ReadKnownGroup(group_id));
    CW_ASSIGN_OR_RETURN(SecretBytes padded, wire::Pad(plaintext));
    OwnedSenderKeyName name(group_id, Address{impl_->local_name_, impl_->options_.device_id});
    group_cipher* c = nullptr;
    CW_RETURN_IF_ERROR(impl_->Check(
        group_cipher_create(&c, impl_->store_ctx_.get(), &name.skn, impl_->signal_.ctx()), "group encrypt"));
    GroupCipherPtr cipher(c);
    ciphertext_message* msg = nullptr;
    CW_RETURN_IF_ERROR(impl_->Check(group_cipher_encrypt(cipher.get(), padded.reveal().data(), padded.size(), &msg),
                                    "group encrypt"));
    SignalRef<ciphertext_message> owned(msg);
    signal_buffer* serialized = ciphertext_message_get_serialized(msg);
    Ciphertext out;
    out.type = MessageType::kSenderKey;
    out.group_id = group_id;
    out.body.assign(signal_buffer_data(serialized), signal_buffer_data(serialized) + signal_buffer_len(serialized));
    CW_RETURN_IF_ERROR(impl_->RunHook(also_write, out));
    return out;
  });
}

// ---------------------------------------------------------------------------------------------------------

namespace {
// One context for ParseSignalMessage: parsing needs a context only for key decoding, and keeps no state.
struct ParseContext {
  ParseContext() : random(), signal(&random) { ok = signal.Init().ok(); }
  SystemRandom random;
  internal::SignalContext signal;
  bool ok = false;
};
}  // namespace

Status ParseSignalMessage(MessageType type, ByteView bytes) {
  thread_local ParseContext parse;  // libsignal objects are never shared across threads
  if (!parse.ok) return Status(StatusCode::kInternal, "parse context unavailable");
  signal_context* ctx = parse.signal.ctx();
  CW_RETURN_IF_ERROR(CheckVersionByte(bytes));
  int rc = SG_ERR_INVALID_MESSAGE;
  switch (type) {
    case MessageType::kSignal: {
      signal_message* m = nullptr;
      rc = signal_message_deserialize(&m, bytes.data(), bytes.size(), ctx);
      SignalRef<signal_message> owned(m);
      break;
    }
    case MessageType::kPreKey: {
      pre_key_signal_message* m = nullptr;
      rc = pre_key_signal_message_deserialize(&m, bytes.data(), bytes.size(), ctx);
      SignalRef<pre_key_signal_message> owned(m);
      break;
    }
    case MessageType::kSenderKey: {
      sender_key_message* m = nullptr;
      rc = sender_key_message_deserialize(&m, bytes.data(), bytes.size(), ctx);
      SignalRef<sender_key_message> owned(m);
      break;
    }
    case MessageType::kSenderKeyDistribution: {
      sender_key_distribution_message* m = nullptr;
      rc = sender_key_distribution_message_deserialize(&m, bytes.data(), bytes.size(), ctx);
      SignalRef<sender_key_distribution_message> owned(m);
      break;
    }
    default:
      return Status(StatusCode::kMalformed, "unknown Signal message type");
  }
  if (rc < 0) return FromSignal(rc, "parse");
  return Status::Ok();
}

}  // namespace cw::session
