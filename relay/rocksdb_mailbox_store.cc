#include "relay/rocksdb_mailbox_store.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/write_batch.h>
#include <sys/statvfs.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "relay/attachment_files.h"
#include "relay/store_core.h"

namespace cw::relay {
namespace {

using internal::AttachmentState;
using internal::MailboxState;
using internal::MessageEntry;
using internal::PreKeyState;

// Key layout: one default column family, one tag byte per record kind. Big-endian numbers keep sequence
// numbers, pre-key ids and chunk offsets in order.
//   'B' mailbox                -> owner(32) seq_limit(8)  (above every seq handed out; see kSeqReserve)
//   'T' mailbox token_hash     -> ""
//   'E' mailbox seq            -> message_id(16) expiry(8) envelope      (one record per message)
//   'P' mailbox                -> registration(4) device(4) identity(33) spk_id(4) spk(33) signature(64)
//   'O' mailbox key_id         -> one-time public key(33)
//   'A' attachment             -> uploader(32) total(8) written(8) expiry(8)
// Attachment bodies are files beside the database (AttachmentFiles, in <path>/attachments). Stores written
// before kept them here as 'C' attachment offset -> chunk; Open moves those into files first
// (MigrateChunkRecords).
// A message is one record: a deposit adds one key to the memtable, not two (inserting into the memtable's
// skiplist is the committer's largest CPU cost per deposit; cw_relay_bench --no-sync). The price is paid at
// open, which reads each stored envelope once to load the index. Stores written before kept the index ('X'
// mailbox seq -> message_id expiry size) apart from the envelope ('M' mailbox seq -> envelope); Open
// rewrites those pairs as 'E' records first (MigrateSplitMessages).
constexpr char kMailboxTag = 'B';
constexpr char kTokenTag = 'T';
constexpr char kMessageTag = 'E';
constexpr char kLegacyIndexTag = 'X';
constexpr char kLegacyEnvelopeTag = 'M';
constexpr char kPreKeyTag = 'P';
constexpr char kOneTimeTag = 'O';
constexpr char kAttachmentTag = 'A';
constexpr char kChunkTag = 'C';

void PutBe(std::string* s, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) s->push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetBe(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
template <size_t N>
void Append(std::string* s, const std::array<uint8_t, N>& a) {
  s->append(reinterpret_cast<const char*>(a.data()), N);
}
template <size_t N>
void Copy(const char* p, std::array<uint8_t, N>* a) {
  std::memcpy(a->data(), p, N);
}
template <size_t N>
std::string Key(char tag, const std::array<uint8_t, N>& id) {
  std::string k(1, tag);
  Append(&k, id);
  return k;
}
// A message record's key: kMessageTag, mailbox, seq (big-endian, so a mailbox's records sort in deposit
// order). Fixed-size, without a heap allocation: every deposit, removal and envelope read builds one.
using MessageKey = std::array<char, 1 + kMailboxIdSize + 8>;
MessageKey MessageKeyOf(const MailboxId& id, uint64_t seq) {
  MessageKey k;
  k[0] = kMessageTag;
  std::memcpy(k.data() + 1, id.data(), kMailboxIdSize);
  for (int i = 0; i < 8; ++i) k[1 + kMailboxIdSize + i] = static_cast<char>(seq >> (8 * (7 - i)));
  return k;
}
rocksdb::Slice ToSlice(const MessageKey& k) { return rocksdb::Slice(k.data(), k.size()); }
struct MessageKeyHash {
  size_t operator()(const MessageKey& k) const {
    return std::hash<std::string_view>()(std::string_view(k.data(), k.size()));
  }
};

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  return Status(StatusCode::kUnavailable, std::string(what) + ": " + s.ToString());
}

constexpr size_t kMailboxValue = kLinkKeySize + 8;
constexpr size_t kMessageHeader = kMessageIdSize + 8;  // before the envelope in an 'E' value
constexpr size_t kLegacyIndexValue = kMessageIdSize + 8 + 4;
constexpr size_t kPreKeyValue = 4 + 4 + wire::kPublicKeySize + 4 + wire::kPublicKeySize + wire::kSignatureSize;
constexpr size_t kAttachmentValue = kLinkKeySize + 8 + 8 + 8;

class RocksImpl final : public internal::StoreCore, public RocksDbMailboxStore {
 public:
  RocksImpl(std::unique_ptr<rocksdb::DB> db, std::unique_ptr<internal::AttachmentFiles> files, bool sync,
            std::string path)
      : db_(std::move(db)), files_(std::move(files)), sync_(sync), path_(std::move(path)) {}

  Result<uint64_t> FreeDiskBytes() override {
    struct statvfs st {};
    if (::statvfs(path_.c_str(), &st) != 0) {
      return Error(StatusCode::kUnavailable,
                   std::string("cannot tell the free disk space: ") + std::strerror(errno));
    }
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  }

  ~RocksImpl() override {
    {
      std::lock_guard<std::mutex> lock(cmu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    if (committer_.joinable()) committer_.join();
    db_->Close().PermitUncheckedError();
  }

  Status Load() {
    CW_RETURN_IF_ERROR(LoadPrefix(kMailboxTag, [&](std::string_view k, std::string_view v) {
      if (k.size() != 1 + kMailboxIdSize || v.size() != kMailboxValue) return false;
      MailboxId id;
      Copy(k.data() + 1, &id);
      MailboxState& box = mailboxes_for_load()[id];
      Copy(v.data(), &box.owner);
      // Stores written before seqs were reserved in ranges kept next_seq here: the same bound.
      box.seq_limit = GetBe(v.data() + kLinkKeySize, 8);
      box.next_seq = box.seq_limit;
      return box.seq_limit > 0;
    }));
    // The rest hang off a mailbox loaded above; a record for a missing one means the database was altered.
    auto box_of = [&](std::string_view k) -> MailboxState* {
      MailboxId id;
      Copy(k.data() + 1, &id);
      auto it = mailboxes_for_load().find(id);
      return it == mailboxes_for_load().end() ? nullptr : &it->second;
    };
    CW_RETURN_IF_ERROR(LoadPrefix(kTokenTag, [&](std::string_view k, std::string_view v) {
      // The value is empty for a claimed token, the claim_by time (8 bytes) for a claimable one.
      if (k.size() != 1 + kMailboxIdSize + kTokenHashSize || (!v.empty() && v.size() != 8)) return false;
      MailboxState* box = box_of(k);
      if (box == nullptr) return false;
      TokenHash t;
      Copy(k.data() + 1 + kMailboxIdSize, &t);
      const int64_t claim_by = v.empty() ? 0 : static_cast<int64_t>(GetBe(v.data(), 8));
      if (claim_by < 0 || (!v.empty() && claim_by == 0)) return false;
      box->tokens.emplace(t, claim_by);
      return true;
    }));
    CW_RETURN_IF_ERROR(MigrateSplitMessages());
    CW_RETURN_IF_ERROR(LoadPrefix(kMessageTag, [&](std::string_view k, std::string_view v) {
      if (k.size() != 1 + kMailboxIdSize + 8 || v.size() <= kMessageHeader ||
          v.size() - kMessageHeader > 0xffffffffu) {
        return false;
      }
      MailboxState* box = box_of(k);
      if (box == nullptr) return false;
      MessageEntry e;
      e.seq = GetBe(k.data() + 1 + kMailboxIdSize, 8);
      Copy(v.data(), &e.id);
      e.expires_at_millis = static_cast<int64_t>(GetBe(v.data() + kMessageIdSize, 8));
      e.size = static_cast<uint32_t>(v.size() - kMessageHeader);
      if (e.seq >= box->next_seq) return false;
      box->by_seq.emplace(e.seq, std::move(e));
      return true;
    }));
    CW_RETURN_IF_ERROR(LoadPrefix(kPreKeyTag, [&](std::string_view k, std::string_view v) {
      if (k.size() != 1 + kMailboxIdSize || v.size() != kPreKeyValue) return false;
      MailboxState* box = box_of(k);
      if (box == nullptr) return false;
      PreKeyState pk;
      const char* p = v.data();
      pk.registration_id = static_cast<uint32_t>(GetBe(p, 4));
      pk.device_id = static_cast<uint32_t>(GetBe(p + 4, 4));
      Copy(p + 8, &pk.identity_key);
      pk.signed_pre_key.id = static_cast<uint32_t>(GetBe(p + 8 + 33, 4));
      Copy(p + 8 + 33 + 4, &pk.signed_pre_key.public_key);
      Copy(p + 8 + 33 + 4 + 33, &pk.signed_pre_key.signature);
      box->pre_keys = std::move(pk);
      return true;
    }));
    CW_RETURN_IF_ERROR(LoadPrefix(kOneTimeTag, [&](std::string_view k, std::string_view v) {
      if (k.size() != 1 + kMailboxIdSize + 4 || v.size() != wire::kPublicKeySize) return false;
      MailboxState* box = box_of(k);
      if (box == nullptr || !box->pre_keys) return false;
      wire::PublicKey key;
      Copy(v.data(), &key);
      box->pre_keys->one_time[static_cast<uint32_t>(GetBe(k.data() + 1 + kMailboxIdSize, 4))] = key;
      return true;
    }));
    CW_RETURN_IF_ERROR(LoadPrefix(kAttachmentTag, [&](std::string_view k, std::string_view v) {
      if (k.size() != 1 + kAttachmentIdSize || v.size() != kAttachmentValue) return false;
      AttachmentId id;
      Copy(k.data() + 1, &id);
      AttachmentState& a = attachments_for_load()[id];
      Copy(v.data(), &a.uploader);
      a.total_size = GetBe(v.data() + kLinkKeySize, 8);
      a.written = GetBe(v.data() + kLinkKeySize + 8, 8);
      a.expires_at_millis = static_cast<int64_t>(GetBe(v.data() + kLinkKeySize + 16, 8));
      return a.written <= a.total_size;
    }));
    CW_RETURN_IF_ERROR(MigrateChunkRecords());
    // A record is made durable only after the bytes it counts (see AttachmentFiles), so a shorter file was
    // damaged or altered.
    for (const auto& [id, a] : attachments_for_load()) {
      CW_ASSIGN_OR_RETURN(const uint64_t size, files_->Size(id));
      if (size < a.written) {
        return Status(StatusCode::kTampered, "relay attachment file shorter than its record");
      }
    }
    CW_RETURN_IF_ERROR(
        files_->RemoveOrphans([&](const AttachmentId& id) { return attachments_for_load().count(id) != 0; }));
    RebuildDerived();
    committer_ = std::thread([this] { CommitLoop(); });
    return Status::Ok();
  }

  uint64_t SyncCount() const override { return syncs_.load(); }
  uint64_t UnwrittenDepositCount() const override { return unwritten_.load(); }

  void PauseCommitsForTesting(bool paused) override {
    {
      std::lock_guard<std::mutex> lock(cmu_);
      paused_ = paused;
    }
    work_cv_.notify_all();
  }
  void FailNextWriteForTesting(Status failure) override {
    std::lock_guard<std::mutex> lock(cmu_);
    fail_next_ = std::move(failure);
  }
  size_t WaitingWritersForTesting() const override {
    std::lock_guard<std::mutex> lock(cmu_);
    return waiting_ + callbacks_.size() + pending_messages_.CallbackCount() + settled_.size();
  }

 protected:
  bool KeepsBodies() const override { return false; }

  Status Health() const override {
    std::lock_guard<std::mutex> lock(cmu_);
    return failed_;
  }

  void RecordMailbox(const MailboxId& id, const MailboxState& box) override {
    std::string v;
    Append(&v, box.owner);
    PutBe(&v, box.seq_limit, 8);
    Put(Key(kMailboxTag, id), v);
  }
  void RecordToken(const MailboxId& id, const TokenHash& token, bool present, int64_t claim_by_millis) override {
    std::string k = Key(kTokenTag, id);
    Append(&k, token);
    if (present) {
      std::string v;
      if (claim_by_millis != 0) PutBe(&v, static_cast<uint64_t>(claim_by_millis), 8);
      Put(k, v);
    } else {
      Delete(k);
    }
  }
  void RecordMessage(const MailboxId& id, const MessageEntry& e, ByteView envelope) override {
    std::string header;
    Append(&header, e.id);
    PutBe(&header, static_cast<uint64_t>(e.expires_at_millis), 8);
    std::string value = std::move(header);
    value.append(reinterpret_cast<const char*>(envelope.data()), envelope.size());
    const MessageKey key = MessageKeyOf(id, e.seq);
    std::lock_guard<std::mutex> lock(cmu_);
    pending_messages_.Add(key, std::move(value));
    ++pending_records_;
  }
  void RecordMessageRemoved(const MailboxId& id, const MessageEntry& e) override {
    const MessageKey key = MessageKeyOf(id, e.seq);
    std::lock_guard<std::mutex> lock(cmu_);
    // Acknowledged (or purged) before its deposit was even written: neither goes to the disk, and its
    // depositor is answered by RunSettled. The batch is still owed a cycle (the deposit counted in
    // pending_records_), which settles the deposit's ticket for anyone else waiting on it (a retry).
    if (pending_messages_.Cancel(key, &settled_)) {
      unwritten_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    pending_.Delete(ToSlice(key)).PermitUncheckedError();
    ++pending_records_;
  }
  void RecordPreKeys(const MailboxId& id, const PreKeyState& pk,
                     std::span<const wire::OneTimePreKeyPublic> uploaded) override {
    std::string v;
    PutBe(&v, pk.registration_id, 4);
    PutBe(&v, pk.device_id, 4);
    Append(&v, pk.identity_key);
    PutBe(&v, pk.signed_pre_key.id, 4);
    Append(&v, pk.signed_pre_key.public_key);
    Append(&v, pk.signed_pre_key.signature);
    Put(Key(kPreKeyTag, id), v);
    for (const auto& one : uploaded) {
      std::string k = Key(kOneTimeTag, id);
      PutBe(&k, one.id, 4);
      Put(k, std::string(reinterpret_cast<const char*>(one.public_key.data()), one.public_key.size()));
    }
  }
  void RecordOneTimeRemoved(const MailboxId& id, uint32_t key_id) override {
    std::string k = Key(kOneTimeTag, id);
    PutBe(&k, key_id, 4);
    Delete(k);
  }
  void RecordAttachment(const AttachmentId& id, const AttachmentState& a) override {
    std::string v;
    Append(&v, a.uploader);
    PutBe(&v, a.total_size, 8);
    PutBe(&v, a.written, 8);
    PutBe(&v, static_cast<uint64_t>(a.expires_at_millis), 8);
    Put(Key(kAttachmentTag, id), v);
    if (a.written == a.total_size) files_->Completed(id);
  }
  Status RecordAttachmentChunk(const AttachmentId& id, uint64_t offset, ByteView chunk) override {
    // Into the file now; synced by the committer before the batch that records the new size (the caller's
    // RecordAttachment, next).
    return files_->Write(id, offset, chunk);
  }
  void RecordAttachmentRemoved(const AttachmentId& id, const AttachmentState&) override {
    files_->Forget(id);
    std::lock_guard<std::mutex> lock(cmu_);
    pending_.Delete(Key(kAttachmentTag, id)).PermitUncheckedError();
    ++pending_records_;
    remove_after_.push_back(id);
  }

  uint64_t Ticket() override {
    std::lock_guard<std::mutex> lock(cmu_);
    // Nothing new recorded: the caller's changes (if any) are in the batch being written or already synced.
    return pending_records_ > 0 ? filling_ : filling_ - 1;
  }

  Status WaitDurable(uint64_t ticket) override {
    std::unique_lock<std::mutex> lock(cmu_);
    if (synced_.load() >= ticket) return Status::Ok();
    if (!failed_.ok()) return failed_;
    ++waiting_;
    work_cv_.notify_one();
    done_cv_.wait(lock, [&] { return synced_.load() >= ticket || !failed_.ok(); });
    --waiting_;
    return synced_.load() >= ticket ? Status::Ok() : failed_;
  }

  void WhenDurable(uint64_t ticket, std::function<void(Status)> fn) override {
    Status now;
    {
      std::lock_guard<std::mutex> lock(cmu_);
      if (synced_.load() < ticket && failed_.ok()) {
        callbacks_.push_back({ticket, std::move(fn)});
        work_cv_.notify_one();
        return;
      }
      now = synced_.load() >= ticket ? Status::Ok() : failed_;
    }
    fn(std::move(now));
  }

  void WhenInsertDurable(const MailboxId& id, uint64_t seq, uint64_t ticket,
                         std::function<void(Status)> fn) override {
    {
      std::lock_guard<std::mutex> lock(cmu_);
      // Not yet taken by the committer: kept with the deposit, so that an acknowledgement that cancels it
      // answers the depositor at once rather than after the batch's sync.
      if (pending_messages_.Attach(MessageKeyOf(id, seq), &fn)) {
        work_cv_.notify_one();  // as WhenDurable: recording alone does not wake the committer
        return;
      }
    }
    WhenDurable(ticket, std::move(fn));
  }

  void RunSettled() override {
    std::vector<std::function<void(Status)>> settled;
    {
      std::lock_guard<std::mutex> lock(cmu_);
      if (settled_.empty()) return;
      settled.swap(settled_);
    }
    RunAll(&settled, Status::Ok());
  }

  bool Durable(uint64_t ticket) const override { return synced_.load() >= ticket; }

  Result<std::vector<Bytes>> ReadEnvelopes(const MailboxId& id, const std::vector<uint64_t>& seqs) override {
    std::vector<Bytes> out;
    out.reserve(seqs.size());
    rocksdb::PinnableSlice value;
    for (uint64_t seq : seqs) {
      value.Reset();
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), db_->DefaultColumnFamily(),
                                   ToSlice(MessageKeyOf(id, seq)), &value);
      if (s.IsNotFound()) {
        out.emplace_back();
        continue;
      }
      CW_RETURN_IF_ERROR(FromRocks(s, "read envelope"));
      if (value.size() <= kMessageHeader) return Error(StatusCode::kTampered, "relay store message record");
      const auto* p = reinterpret_cast<const uint8_t*>(value.data());
      out.emplace_back(p + kMessageHeader, p + value.size());
    }
    return out;
  }

  // Only complete (so durable) attachments are read; a purge that removed the file meanwhile reads short.
  Result<Bytes> ReadChunks(const AttachmentId& id, uint64_t offset, size_t len) override {
    return files_->Read(id, offset, len);
  }
  std::optional<Result<Bytes>> TryReadChunksWithoutBlocking(const AttachmentId& id, uint64_t offset,
                                                            size_t len) override {
    return files_->TryReadWithoutBlocking(id, offset, len);
  }

 private:
  struct Callback {
    uint64_t ticket;
    std::function<void(Status)> fn;
  };

  void Put(const std::string& k, const std::string& v) {
    std::lock_guard<std::mutex> lock(cmu_);
    pending_.Put(k, v).PermitUncheckedError();
    ++pending_records_;
  }
  void Delete(const std::string& k) {
    std::lock_guard<std::mutex> lock(cmu_);
    pending_.Delete(k).PermitUncheckedError();
    ++pending_records_;
  }

  // Rewrites each legacy index + envelope pair ('X' + 'M') as one 'E' record, in synced batches of about
  // kMigrationBatchBytes; each batch is atomic, so a crash midway leaves pairs and records that a reopen
  // finishes. A pair without its envelope means the file was altered.
  Status MigrateSplitMessages() {
    constexpr size_t kMigrationBatchBytes = 4 << 20;
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    const std::string prefix(1, kLegacyIndexTag);
    rocksdb::WriteBatch batch;
    rocksdb::WriteOptions wo;
    wo.sync = sync_;
    rocksdb::PinnableSlice envelope;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const rocksdb::Slice k = it->key(), v = it->value();
      if (k.size() != 1 + kMailboxIdSize + 8 || v.size() != kLegacyIndexValue) {
        return Status(StatusCode::kTampered, "relay store record does not parse (kind X)");
      }
      std::string body_key = k.ToString();
      body_key[0] = kLegacyEnvelopeTag;
      envelope.Reset();
      rocksdb::Status s = db_->Get(ro, db_->DefaultColumnFamily(), body_key, &envelope);
      if (s.IsNotFound() || (s.ok() && envelope.empty())) {
        return Status(StatusCode::kTampered, "relay store message without its envelope");
      }
      CW_RETURN_IF_ERROR(FromRocks(s, "migrate relay store"));
      std::string record_key = k.ToString();
      record_key[0] = kMessageTag;
      std::string value(v.data(), kMessageHeader);
      value.append(envelope.data(), envelope.size());
      batch.Put(record_key, value).PermitUncheckedError();
      batch.Delete(k).PermitUncheckedError();
      batch.Delete(body_key).PermitUncheckedError();
      if (batch.GetDataSize() >= kMigrationBatchBytes) {
        CW_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &batch), "migrate relay store"));
        batch.Clear();
      }
    }
    CW_RETURN_IF_ERROR(FromRocks(it->status(), "migrate relay store"));
    if (batch.Count() > 0) CW_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &batch), "migrate relay store"));
    return Status::Ok();
  }

  // Moves the 'C' chunk records of an older store into attachment files: every chunk written and synced,
  // then the records deleted in one synced write. A crash midway leaves the records, and the reopen writes
  // the same bytes again. A chunk of no attachment means the database was altered.
  Status MigrateChunkRecords() {
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    const std::string prefix(1, kChunkTag);
    std::vector<AttachmentId> group;  // written and not yet synced: at most kMaxDirty files (and fds)
    bool any = false;
    auto sync_group = [&]() -> Status {
      const internal::AttachmentFiles::Dirty dirty = files_->TakeDirty();
      if (sync_) CW_RETURN_IF_ERROR(files_->SyncDirty(dirty));
      for (const AttachmentId& id : group) files_->Completed(id);
      group.clear();
      return Status::Ok();
    };
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const rocksdb::Slice k = it->key(), v = it->value();
      AttachmentId id;
      if (k.size() != 1 + kAttachmentIdSize + 8) {
        return Status(StatusCode::kTampered, "relay store chunk key");
      }
      Copy(k.data() + 1, &id);
      if (attachments_for_load().count(id) == 0) {
        return Status(StatusCode::kTampered, "relay store chunk without its attachment");
      }
      if (group.empty() || group.back() != id) {
        // Chunks come sorted by attachment: a new one starts here.
        if (group.size() == internal::AttachmentFiles::kMaxDirty) CW_RETURN_IF_ERROR(sync_group());
        group.push_back(id);
      }
      const uint64_t offset = GetBe(k.data() + 1 + kAttachmentIdSize, 8);
      CW_RETURN_IF_ERROR(
          files_->Write(id, offset, ByteView(reinterpret_cast<const uint8_t*>(v.data()), v.size())));
      any = true;
    }
    CW_RETURN_IF_ERROR(FromRocks(it->status(), "migrate relay store"));
    if (!any) return Status::Ok();
    CW_RETURN_IF_ERROR(sync_group());
    rocksdb::WriteBatch batch;
    const std::string end(1, static_cast<char>(kChunkTag + 1));
    batch.DeleteRange(prefix, end).PermitUncheckedError();
    rocksdb::WriteOptions wo;
    wo.sync = sync_;
    return FromRocks(db_->Write(wo, &batch), "migrate relay store");
  }

  template <typename F>
  Status LoadPrefix(char tag, F&& f) {
    rocksdb::ReadOptions ro;
    ro.fill_cache = false;  // read once at open (every envelope, for 'E'): not worth caching
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    const std::string prefix(1, tag);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      if (!f(std::string_view(it->key().data(), it->key().size()),
             std::string_view(it->value().data(), it->value().size()))) {
        return Status(StatusCode::kTampered, std::string("relay store record does not parse (kind ") + tag + ")");
      }
    }
    return FromRocks(it->status(), "load relay store");
  }

  // The group committer. While one batch is being written and synced, callers keep recording into the
  // next; when the write returns, the whole next batch goes out in one synced write (or none, when its
  // deposits and their removals cancelled out: see PendingMessages). Then it runs the callbacks of the
  // changes that batch settled, outside cmu_, so a callback that posts its answer somewhere never holds up
  // the callers recording the next batch.
  void CommitLoop() {
    std::unique_lock<std::mutex> lock(cmu_);
    std::vector<std::function<void(Status)>> ready;  // of the batch's deposits, and of tickets it settled
    for (;;) {
      work_cv_.wait(lock, [&] { return stop_ || (pending_records_ > 0 && !paused_); });
      if (pending_records_ == 0) {
        if (stop_) break;
        continue;
      }
      rocksdb::WriteBatch batch;
      std::swap(batch, pending_);
      PendingMessages messages = std::exchange(pending_messages_, {});
      pending_records_ = 0;
      std::vector<AttachmentId> removed;
      std::swap(removed, remove_after_);
      // Taken with the batch: every attachment size recorded in it counts bytes written to these files.
      const internal::AttachmentFiles::Dirty dirty = files_->TakeDirty();
      const uint64_t number = filling_++;
      // Every deposit in it was acknowledged before it was written: nothing to write, and its tickets are
      // settled at once.
      const bool nothing =
          batch.Count() == 0 && messages.empty() && removed.empty() && dirty.fds.empty() && !dirty.directory;
      Status written = nothing ? Status::Ok() : std::exchange(fail_next_, Status::Ok());
      lock.unlock();
      if (!nothing) {
        // The batch's Deletes all name keys written in earlier batches (a Put still pending is cancelled
        // instead), so the pending Puts may follow them.
        messages.AppendTo(&batch);
        if (written.ok() && sync_) written = files_->SyncDirty(dirty);
        if (written.ok()) {
          rocksdb::WriteOptions options;
          options.sync = sync_;
          written = FromRocks(db_->Write(options, &batch), "synced write failed; reopen the store");
        }
        // The records are gone for good: their files may go. A crash before this leaves orphans for Open.
        if (written.ok()) files_->Remove(removed);
      }
      // The deposits' own callbacks settle with the batch; those of cancelled ones that RecordMessageRemoved
      // could not hand over (out of memory) too.
      messages.TakeCallbacks(&ready);
      // Freed before cmu_ is taken again: the loop thread records every deposit under it.
      messages = PendingMessages();
      batch.Clear();
      lock.lock();
      // After a failure nothing more counts as durable, even a batch that wrote nothing or wrote fine:
      // synced_ means every batch up to it is.
      if (written.ok() && failed_.ok()) {
        synced_.store(number);
        if (!nothing) syncs_.fetch_add(1);
      } else if (failed_.ok()) {
        failed_ = written;
      }
      // Blocked callers only: with every deposit asynchronous there is usually nobody to wake.
      if (waiting_ > 0) done_cv_.notify_all();
      TakeReady(&ready);
      if (ready.empty()) continue;
      const Status result = failed_;
      lock.unlock();
      RunAll(&ready, result);
      lock.lock();
    }
    // Stopping: every recorded change has been written; whatever still waits can only be a failure's, or a
    // cancelled deposit's that no RunSettled has run yet.
    TakeReady(&ready);
    const Status result = failed_;
    std::vector<std::function<void(Status)>> cancelled;
    cancelled.swap(settled_);
    lock.unlock();
    RunAll(&ready, result);
    RunAll(&cancelled, Status::Ok());
  }

  // REQUIRES: cmu_ held. Moves out the callbacks whose ticket is synced (all of them after a failure).
  void TakeReady(std::vector<std::function<void(Status)>>* ready) {
    const uint64_t synced = synced_.load();
    auto keep = callbacks_.begin();
    for (auto it = callbacks_.begin(); it != callbacks_.end(); ++it) {
      if (it->ticket <= synced || !failed_.ok()) {
        ready->push_back(std::move(it->fn));
      } else {
        if (keep != it) *keep = std::move(*it);
        ++keep;
      }
    }
    callbacks_.erase(keep, callbacks_.end());
  }

  static void RunAll(std::vector<std::function<void(Status)>>* fns, const Status& result) {
    for (auto& fn : *fns) {
      try {
        fn(result);
      } catch (...) {
        // A callback's failure must not stop the committer: every other write still needs its answer.
      }
    }
    fns->clear();
  }

  std::unique_ptr<rocksdb::DB> db_;
  std::unique_ptr<internal::AttachmentFiles> files_;
  const bool sync_;
  const std::string path_;

  mutable std::mutex cmu_;  // after StoreCore's mutex when both are held
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  // Deposits recorded since the last write, in the order they came, apart from the batch: an acknowledgement
  // (or purge) recorded before the write takes its deposit out, and neither reaches the disk. An owner close
  // to the relay (the push goes out before the sync) often acknowledges within one commit cycle: its
  // delivered messages then never touch the disk, the cycle writes and syncs less, and the depositor is
  // answered when the acknowledgement comes (each record holds its deposit's callback for that, see
  // WhenInsertDurable), not one or two commit cycles later. An owner further away
  // than one cycle (a phone: tens of milliseconds) gains nothing, and each deposit costs one more copy of its
  // envelope (here, then into the batch). Invariant: a key is added once (seqs are never reused) and, while
  // it is here, no Delete for it is in pending_ (its removal cancels it instead).
  class PendingMessages {
   public:
    void Add(const MessageKey& key, std::string value) {
      records_.emplace_back(key, std::move(value));
      try {
        auto [it, added] = index_.try_emplace(key, records_.size() - 1);
        if (!added) {
          // Not expected (seqs are never reused); the later value wins, as it would in a batch.
          records_[it->second].value = std::move(records_.back().value);
          records_.pop_back();
        }
      } catch (...) {
        records_.pop_back();  // an unindexed record could not be cancelled, and would outlive its Delete
        throw;
      }
    }
    // Keeps the deposit's callback with it, when it is here (moved out of *fn only then).
    bool Attach(const MessageKey& key, std::function<void(Status)>* fn) {
      auto it = index_.find(key);
      if (it == index_.end()) return false;
      records_[it->second].settled = std::move(*fn);
      return true;
    }
    // True when `key` was added since the batch was taken: it is taken out, and its callback (if any) moved
    // to *settled. Left with the record if that push fails: the committer then runs it with the batch.
    bool Cancel(const MessageKey& key, std::vector<std::function<void(Status)>>* settled) {
      auto it = index_.find(key);
      if (it == index_.end()) return false;
      Record& r = records_[it->second];
      r.cancelled = true;
      std::string().swap(r.value);
      index_.erase(it);
      if (r.settled) {
        try {
          settled->push_back(std::move(r.settled));
          r.settled = nullptr;
        } catch (...) {
        }
      }
      return true;
    }
    size_t CallbackCount() const {
      size_t n = 0;
      for (const Record& r : records_) n += r.settled ? 1 : 0;
      return n;
    }
    // Moves out every callback still held, cancelled deposits' included.
    void TakeCallbacks(std::vector<std::function<void(Status)>>* out) {
      for (Record& r : records_) {
        if (r.settled) out->push_back(std::move(r.settled));
      }
    }
    bool empty() const { return index_.empty(); }
    void AppendTo(rocksdb::WriteBatch* batch) const {
      for (const Record& r : records_) {
        if (!r.cancelled) batch->Put(ToSlice(r.key), r.value).PermitUncheckedError();
      }
    }

   private:
    struct Record {
      Record(const MessageKey& k, std::string v) : key(k), value(std::move(v)) {}
      MessageKey key;
      std::string value;  // header + envelope
      std::function<void(Status)> settled;  // the deposit's callback, when WhenInsertDurable found it here
      bool cancelled = false;
    };
    std::vector<Record> records_;
    // key -> position in records_, for those not cancelled
    std::unordered_map<MessageKey, size_t, MessageKeyHash> index_;
  };

  rocksdb::WriteBatch pending_;
  PendingMessages pending_messages_;
  size_t pending_records_ = 0;  // changes recorded into pending_ or pending_messages_, cancelled ones too
  std::vector<AttachmentId> remove_after_;  // attachments whose removal pending_ records: their files
  std::vector<Callback> callbacks_;  // WhenDurable callbacks not yet synced
  // Callbacks of deposits that removals cancelled, for RunSettled.
  std::vector<std::function<void(Status)>> settled_;
  uint64_t filling_ = 1;             // number of the batch pending_ and pending_messages_ will become
  std::atomic<uint64_t> synced_{0};
  std::atomic<uint64_t> syncs_{0};
  std::atomic<uint64_t> unwritten_{0};
  Status failed_;
  Status fail_next_;  // FailNextWriteForTesting
  bool paused_ = false;
  bool stop_ = false;
  size_t waiting_ = 0;
  std::thread committer_;
};

}  // namespace

Result<std::unique_ptr<RocksDbMailboxStore>> RocksDbMailboxStore::Open(const std::string& path,
                                                                      const RocksDbStoreOptions& options) {
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  // One thread (the committer) writes: concurrent memtable writes buy nothing, and turning them off lets the
  // memtable use insert hints. Every deposit adds a key right after the last one of its mailbox ('E' +
  // mailbox + rising seq), so a hint per tag + mailbox prefix skips much of the skiplist search that
  // otherwise dominates the committer's CPU. The cost is memory: about 250 B per tag + mailbox prefix written
  // since the last memtable flush (one or two per mailbox that received a deposit), freed with the memtable.
  db_options.allow_concurrent_memtable_write = false;
  db_options.memtable_insert_with_hint_prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(1 + kMailboxIdSize));
  // Nearly everything stored is ciphertext (sealed envelopes, attachment chunks), which does not compress:
  // snappy would only spend CPU on every flush and compaction. Files written with it stay readable.
  db_options.compression = rocksdb::kNoCompression;
  db_options.max_open_files = options.max_open_files;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, path, &raw);
  if (!s.ok()) return Error(FromRocks(s, "open relay store"));
  std::unique_ptr<rocksdb::DB> db(raw);
  CW_ASSIGN_OR_RETURN(auto files, internal::AttachmentFiles::Open(path + "/attachments"));
  auto impl = std::make_unique<RocksImpl>(std::move(db), std::move(files), options.sync, path);
  CW_RETURN_IF_ERROR(impl->Load());
  return std::unique_ptr<RocksDbMailboxStore>(std::move(impl));
}

}  // namespace cw::relay
