// AttachmentFiles: the bodies of the RocksDB store's attachments, one plain file per attachment in a
// directory of their own, named by the attachment id in hex. Internal to RocksDbMailboxStore.
//
// Why files and not RocksDB values: an attachment is written once, read a few times and deleted whole, up
// to 100 MiB of it. As RocksDB values every byte went through the write-ahead log (with a CRC32C that
// Debian's portable librocksdb computes in software), the memtable, a flush and compactions, on the same
// committer thread that makes deposits durable; as a file it is written once and synced. The store's
// records stay the truth: an attachment's 'A' record says how many bytes are written, and is made durable
// only after those bytes are synced (TakeDirty, then SyncDirty, then the batch holding the record), so a
// file may run past its record (an append cut short by a crash, overwritten by the next one) but never
// fall short of it. A file is deleted only after the deletion of its record is durable, so a crash
// between the two leaves an orphan, which the next open removes.
//
// The bodies are ciphertext the relay cannot read; their integrity rests on the end-to-end authentication
// (secretstream chunks and the digest in the message), so the files carry no checksum of their own.
//
// Thread rules: every method is safe from any thread. Write, Completed and Forget of one attachment come in
// order (the store calls them under its own mutex); SyncDirty runs on the committer, outside every lock.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/status.h"
#include "relay/types.h"

namespace cw::relay::internal {

class AttachmentFiles {
 public:
  // Files written and not yet synced, at most (see Write).
  static constexpr size_t kMaxDirty = 16;

  // Files written since the last TakeDirty, and whether a new one was created (its directory entry must
  // be synced too).
  struct Dirty {
    std::vector<std::shared_ptr<const int>> fds;
    bool directory = false;
  };

  // Creates the directory (mode 0700) if needed and opens it. kUnavailable when that fails.
  static Result<std::unique_ptr<AttachmentFiles>> Open(const std::string& dir);
  ~AttachmentFiles();
  AttachmentFiles(const AttachmentFiles&) = delete;
  AttachmentFiles& operator=(const AttachmentFiles&) = delete;

  // Writes `data` at `offset` of the attachment's file (created mode 0600 on first write) and marks it
  // dirty. kUnavailable when the write fails (a full disk), or when kMaxDirty other files already wait for
  // the next sync (each costs the committer an fdatasync ahead of every deposit in the batch; the uploader
  // retries): nothing the store's records say changes.
  Status Write(const AttachmentId& id, uint64_t offset, ByteView data);
  // The upload is complete: its file is closed (a later Write would reopen it).
  void Completed(const AttachmentId& id);
  // Closes the file; Remove deletes it once the removal of its record is durable.
  void Forget(const AttachmentId& id);
  void Remove(const std::vector<AttachmentId>& ids) const;

  Dirty TakeDirty();
  // fdatasync of every dirty file, then fsync of the directory when a file was created.
  Status SyncDirty(const Dirty& dirty) const;

  // Up to `len` bytes at `offset`: fewer when the file is shorter, none when it is missing. Keeps the file
  // open for the reads after it (downloads read a file piece by piece): at most kMaxOpen files, past that
  // one of them is closed.
  Result<Bytes> Read(const AttachmentId& id, uint64_t offset, size_t len) const;
  // Read, for an event loop: only from a file an earlier Read left open and only what the page cache holds
  // (preadv2 with RWF_NOWAIT), so it never waits for the disk. nullopt when it would have to: call Read
  // where blocking is allowed. Even a cached read may be refused (the kernel may say it would block).
  std::optional<Result<Bytes>> TryReadWithoutBlocking(const AttachmentId& id, uint64_t offset,
                                                      size_t len) const;

  // At open: the size of an attachment's file (0 when missing), and the removal of the files of
  // attachments that are not `known` (names that are not attachment ids are left alone).
  Result<uint64_t> Size(const AttachmentId& id) const;
  Status RemoveOrphans(const std::function<bool(const AttachmentId&)>& known) const;

 private:
  std::string PathOf(const AttachmentId& id) const;

  AttachmentFiles(std::string dir, int dir_fd) : dir_(std::move(dir)), dir_fd_(dir_fd) {}

  const std::string dir_;
  const int dir_fd_;
  mutable std::mutex mu_;  // guards what follows
  // Open for writing: uploads under way, at most kMaxOpen of them (past that, one is closed and reopened
  // when next written).
  std::map<AttachmentId, std::shared_ptr<const int>> open_;
  std::map<AttachmentId, std::shared_ptr<const int>> dirty_;
  bool dir_dirty_ = false;
  // Open for reading: attachments being downloaded, at most kMaxOpen. Closed when their attachment goes
  // (Forget, Remove), so a removed file's space is freed; `removals_` counts those, so that a read that
  // opened a file while its attachment went does not put it back.
  mutable std::map<AttachmentId, std::shared_ptr<const int>> reading_;
  mutable uint64_t removals_ = 0;
};

}  // namespace cw::relay::internal
