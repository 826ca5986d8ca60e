// PowerCutFileSystem: a rocksdb::FileSystemWrapper that simulates losing power. It tracks, for every file
// opened for writing through it, how many bytes were written and how many of them a Sync/Fsync made
// durable. PowerCut() makes every later write, sync, rename and delete fail (the machine is off), and
// Restore() truncates every tracked file to its synced length, which is what the disk holds after the cut.
// (RangeSync is only a hint to start writeback, so it does not count as durable.)
//
// Thread rules: safe from RocksDB's background threads (one mutex). Test-only.
#pragma once

#include <rocksdb/file_system.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace cw::storage::testing {

class PowerCutFileSystem : public rocksdb::FileSystemWrapper {
 public:
  explicit PowerCutFileSystem(const std::shared_ptr<rocksdb::FileSystem>& base) : FileSystemWrapper(base) {}
  const char* Name() const override { return "PowerCutFileSystem"; }

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    if (Dead()) return Off();
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->NewWritableFile(fname, options, &file, dbg);
    if (!s.ok()) return s;
    {
      std::lock_guard<std::mutex> l(mu_);
      files_[fname] = Lengths{};
    }
    *result = std::make_unique<File>(this, fname, std::move(file));
    return s;
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    if (Dead()) return Off();
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->ReopenWritableFile(fname, options, &file, dbg);
    if (!s.ok()) return s;
    uint64_t size = 0;
    target()->GetFileSize(fname, rocksdb::IOOptions(), &size, dbg).PermitUncheckedError();
    {
      std::lock_guard<std::mutex> l(mu_);
      files_[fname] = Lengths{size, size};  // what was there before is on disk
    }
    *result = std::make_unique<File>(this, fname, std::move(file));
    return s;
  }
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
    if (Dead()) return Off();
    rocksdb::IOStatus s = target()->RenameFile(src, dst, options, dbg);
    std::lock_guard<std::mutex> l(mu_);
    auto it = files_.find(src);
    if (s.ok() && it != files_.end()) {
      files_[dst] = it->second;
      files_.erase(src);
    }
    return s;
  }
  rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
    if (Dead()) return Off();
    {
      std::lock_guard<std::mutex> l(mu_);
      files_.erase(fname);
    }
    return target()->DeleteFile(fname, options, dbg);
  }

  // The power goes off: nothing written from now on reaches the disk.
  void PowerCut() {
    std::lock_guard<std::mutex> l(mu_);
    dead_ = true;
  }
  // After the database is closed: every file back to what its last sync made durable. Returns the number
  // of bytes dropped.
  uint64_t Restore() {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t dropped = 0;
    for (const auto& [name, len] : files_) {
      if (len.written > len.synced) dropped += len.written - len.synced;
      if (::truncate(name.c_str(), static_cast<off_t>(len.synced)) != 0) continue;  // deleted meanwhile
    }
    files_.clear();
    return dropped;
  }

 private:
  struct Lengths {
    uint64_t written = 0;
    uint64_t synced = 0;
  };

  class File : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(PowerCutFileSystem* fs, std::string name, std::unique_ptr<rocksdb::FSWritableFile> base)
        : FSWritableFileOwnerWrapper(std::move(base)), fs_(fs), name_(std::move(name)) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
      if (fs_->Dead()) return Off();
      rocksdb::IOStatus s = target()->Append(data, options, dbg);
      if (s.ok()) fs_->Wrote(name_, data.size());
      return s;
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info,
                             rocksdb::IODebugContext* dbg) override {
      if (fs_->Dead()) return Off();
      rocksdb::IOStatus s = target()->Append(data, options, info, dbg);
      if (s.ok()) fs_->Wrote(name_, data.size());
      return s;
    }
    rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
      if (fs_->Dead()) return Off();
      rocksdb::IOStatus s = target()->Truncate(size, options, dbg);
      if (s.ok()) fs_->Truncated(name_, size);
      return s;
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      if (fs_->Dead()) return Off();
      rocksdb::IOStatus s = target()->Sync(options, dbg);
      if (s.ok()) fs_->Synced(name_);
      return s;
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      if (fs_->Dead()) return Off();
      rocksdb::IOStatus s = target()->Fsync(options, dbg);
      if (s.ok()) fs_->Synced(name_);
      return s;
    }
    rocksdb::IOStatus Flush(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      if (fs_->Dead()) return Off();
      return target()->Flush(options, dbg);
    }
    rocksdb::IOStatus Close(const rocksdb::IOOptions& options, rocksdb::IODebugContext* dbg) override {
      return target()->Close(options, dbg);  // closing writes nothing new
    }

   private:
    PowerCutFileSystem* const fs_;
    const std::string name_;
  };

  static rocksdb::IOStatus Off() { return rocksdb::IOStatus::IOError("power cut"); }
  bool Dead() {
    std::lock_guard<std::mutex> l(mu_);
    return dead_;
  }
  void Wrote(const std::string& name, uint64_t n) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = files_.find(name);
    if (it != files_.end()) it->second.written += n;
  }
  void Truncated(const std::string& name, uint64_t size) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = files_.find(name);
    if (it != files_.end()) {
      it->second.written = size;
      it->second.synced = std::min(it->second.synced, size);
    }
  }
  void Synced(const std::string& name) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = files_.find(name);
    if (it != files_.end()) it->second.synced = it->second.written;
  }

  std::mutex mu_;
  bool dead_ = false;
  std::map<std::string, Lengths> files_;
};

}  // namespace cw::storage::testing
