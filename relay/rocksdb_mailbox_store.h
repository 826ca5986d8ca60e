// RocksDbMailboxStore: the relay's embedded default store, durable across restarts.
//
// One RocksDB database in `path`, and attachment bodies as plain files in `path`/attachments (see
// attachment_files.h). Every change is made durable before the call returns (see MailboxStore),
// through a group committer: one thread takes everything callers have recorded since its last write and
// writes it as one WriteBatch with sync=true, so concurrent deposits from many connections share one fsync.
// A deposit removed (acknowledged, purged) before that write leaves the batch with its removal: neither is
// written. Its depositor is then answered as soon as the removal is made, without waiting for a write
// (nothing of the message is left to make durable); the acknowledgement, as every change, once everything
// recorded before it is synced or settled.
// Destroying the store lets the committer finish the writes already recorded (a graceful shutdown loses
// no acknowledged deposit) and closes the database.
//
// Thread rules: every method is safe from any thread. rocksdb:: stays out of this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "relay/mailbox_store.h"

namespace cw::relay {

struct RocksDbStoreOptions {
  // false only for benchmarks that measure everything but the fsync; never in a deployed relay.
  bool sync = true;
  // Table files RocksDB keeps open at once (its default keeps every one open, so a large store would hold
  // ever more descriptors); the relay binary sizes it to the descriptors its connections leave.
  int max_open_files = 512;
};

class RocksDbMailboxStore : public virtual MailboxStore {
 public:
  // Opens or creates the database and loads its index. kUnavailable if RocksDB refuses (a lock held by
  // another process, an unreadable directory); kTampered for a record that does not parse.
  static Result<std::unique_ptr<RocksDbMailboxStore>> Open(const std::string& path,
                                                           const RocksDbStoreOptions& options = {});

  // Synced writes so far: with group commit, fewer than the changes made.
  virtual uint64_t SyncCount() const = 0;
  // Deposits so far that were removed before their batch was written, so never written at all.
  virtual uint64_t UnwrittenDepositCount() const = 0;

  // Tests only: while paused the committer writes nothing, so callers pile up in one batch; resuming writes
  // it. WaitingWritersForTesting counts changes waiting to be durable: callers blocked in a call, and
  // callbacks (of InsertAsync, AckManyAsync, AppendAttachmentAsync, WhenAllDurable) not yet run, except those
  // of a batch the committer is writing.
  virtual void PauseCommitsForTesting(bool paused) = 0;
  virtual size_t WaitingWritersForTesting() const = 0;
  // Tests only: the committer's next write (of a batch that writes anything) fails with `failure`, as a write
  // to a full or failing disk does:
  // nothing of that batch reaches the database, its callers get the failure, and Health() reports it.
  virtual void FailNextWriteForTesting(Status failure) = 0;
};

}  // namespace cw::relay
