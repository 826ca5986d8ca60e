#include "relay/attachment_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace cw::relay::internal {

namespace {

// Open files kept for uploads under way. An upload that stalls holds one until it is pushed out; a relay
// with more uploads than this at once reopens files now and then, which costs an open(), not correctness.
constexpr size_t kMaxOpen = 64;

// An attachment id, as the store names its file: lowercase hex (ToHex), and nothing else decodes as one.
bool IdOfName(const char* name, AttachmentId* id) { return FromHexInto(name, *id) && ToHex(*id) == name; }

// The error text names the operation and errno, never a path (it holds an attachment id).
Status Failed(std::string_view what, int err) {
  return Status(StatusCode::kUnavailable, std::string(what) + ": " + std::strerror(err));
}

std::shared_ptr<const int> OwnFd(int fd) {
  return std::shared_ptr<const int>(new int(fd), [](const int* p) {
    ::close(*p);
    delete p;
  });
}

}  // namespace

Result<std::unique_ptr<AttachmentFiles>> AttachmentFiles::Open(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) {
    // The new directory's entry must be durable before anything counts on a file in it.
    const std::string parent = std::filesystem::path(dir).parent_path().string();
    const int parent_fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent_fd < 0) return Error(Failed("open store directory", errno));
    const int synced = ::fsync(parent_fd);
    const int err = errno;
    ::close(parent_fd);
    if (synced != 0) return Error(Failed("sync store directory", err));
  } else if (errno != EEXIST) {
    return Error(Failed("create attachment directory", errno));
  }
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Error(Failed("open attachment directory", errno));
  return std::unique_ptr<AttachmentFiles>(new AttachmentFiles(dir, fd));
}

AttachmentFiles::~AttachmentFiles() { ::close(dir_fd_); }

std::string AttachmentFiles::PathOf(const AttachmentId& id) const { return dir_ + "/" + ToHex(id); }

Status AttachmentFiles::Write(const AttachmentId& id, uint64_t offset, ByteView data) {
  std::shared_ptr<const int> fd;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (dirty_.size() >= kMaxDirty && dirty_.count(id) == 0) {
      return Status(StatusCode::kUnavailable, "too many attachment uploads at once; retry");
    }
    auto it = open_.find(id);
    if (it != open_.end()) fd = it->second;
  }
  if (!fd) {
    const std::string path = PathOf(id);
    int raw = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (raw < 0 && errno == ENOENT) {
      raw = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (raw >= 0) {
        // Even if the write below fails: the next one finds the file and would not know it is new.
        std::lock_guard<std::mutex> lock(mu_);
        dir_dirty_ = true;
      }
    }
    if (raw < 0) return Failed("open attachment file", errno);
    fd = OwnFd(raw);
  }
  for (size_t done = 0; done < data.size();) {
    const ssize_t n =
        ::pwrite(*fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Failed("write attachment file", n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (open_.size() >= kMaxOpen && open_.count(id) == 0) open_.erase(open_.begin());
  open_[id] = fd;
  dirty_[id] = fd;
  return Status::Ok();
}

void AttachmentFiles::Completed(const AttachmentId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  open_.erase(id);  // a dirty one stays open in dirty_ until synced
}

void AttachmentFiles::Forget(const AttachmentId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  open_.erase(id);
  reading_.erase(id);
  ++removals_;
}

void AttachmentFiles::Remove(const std::vector<AttachmentId>& ids) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const AttachmentId& id : ids) reading_.erase(id);
    ++removals_;
  }
  // A file that stays (an I/O error) is an orphan, removed at the next open.
  for (const AttachmentId& id : ids) ::unlink(PathOf(id).c_str());
}

AttachmentFiles::Dirty AttachmentFiles::TakeDirty() {
  std::lock_guard<std::mutex> lock(mu_);
  Dirty d;
  d.fds.reserve(dirty_.size());
  for (auto& [id, fd] : dirty_) d.fds.push_back(std::move(fd));
  dirty_.clear();
  d.directory = dir_dirty_;
  dir_dirty_ = false;
  return d;
}

Status AttachmentFiles::SyncDirty(const Dirty& dirty) const {
  for (const auto& fd : dirty.fds) {
    if (::fdatasync(*fd) != 0) return Failed("sync attachment file", errno);
  }
  if (dirty.directory && ::fsync(dir_fd_) != 0) return Failed("sync attachment directory", errno);
  return Status::Ok();
}

Result<Bytes> AttachmentFiles::Read(const AttachmentId& id, uint64_t offset, size_t len) const {
  std::shared_ptr<const int> fd;
  uint64_t removals = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    removals = removals_;
    auto it = reading_.find(id);
    if (it != reading_.end()) fd = it->second;
  }
  if (!fd) {
    const int raw = ::open(PathOf(id).c_str(), O_RDONLY | O_CLOEXEC);
    if (raw < 0) {
      if (errno == ENOENT) return Bytes();
      return Error(Failed("open attachment file", errno));
    }
    fd = OwnFd(raw);
  }
  Bytes out(len);
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pread(*fd, out.data() + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error(Failed("read attachment file", errno));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  // Kept only if no attachment went meanwhile: this one may be what went, and its file must not stay held
  // open. The one pushed out is closed after the lock (a close may free blocks).
  std::shared_ptr<const int> pushed_out;
  std::lock_guard<std::mutex> lock(mu_);
  if (removals_ != removals) return out;
  if (reading_.size() >= kMaxOpen && reading_.count(id) == 0) {
    pushed_out = std::move(reading_.begin()->second);
    reading_.erase(reading_.begin());
  }
  reading_[id] = fd;
  return out;
}

std::optional<Result<Bytes>> AttachmentFiles::TryReadWithoutBlocking(const AttachmentId& id, uint64_t offset,
                                                                     size_t len) const {
  std::shared_ptr<const int> fd;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = reading_.find(id);
    if (it == reading_.end()) return std::nullopt;
    fd = it->second;
  }
  Bytes out(len);
  size_t done = 0;
  while (done < len) {
    iovec v{out.data() + done, len - done};
    const ssize_t n = ::preadv2(*fd, &v, 1, static_cast<off_t>(offset + done), RWF_NOWAIT);
    if (n < 0 && errno == EINTR) continue;
    // EAGAIN: not all in the page cache; EOPNOTSUPP or EINVAL: a filesystem or kernel without RWF_NOWAIT.
    if (n < 0 && (errno == EAGAIN || errno == EOPNOTSUPP || errno == EINVAL)) return std::nullopt;
    if (n < 0) return Error(Failed("read attachment file", errno));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return Result<Bytes>(std::move(out));
}

Result<uint64_t> AttachmentFiles::Size(const AttachmentId& id) const {
  struct stat st {};
  if (::stat(PathOf(id).c_str(), &st) != 0) {
    if (errno == ENOENT) return uint64_t{0};
    return Error(Failed("stat attachment file", errno));
  }
  return static_cast<uint64_t>(st.st_size);
}

Status AttachmentFiles::RemoveOrphans(const std::function<bool(const AttachmentId&)>& known) const {
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return Failed("list attachment directory", errno);
  std::vector<std::string> orphans;
  while (const dirent* e = ::readdir(d)) {
    AttachmentId id;
    // Regular files only: whatever else is there was not made by the store.
    if (e->d_type == DT_REG && IdOfName(e->d_name, &id) && !known(id))
      orphans.push_back(dir_ + "/" + e->d_name);
  }
  ::closedir(d);
  for (const std::string& path : orphans) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Failed("remove orphan attachment file", errno);
  }
  return Status::Ok();
}

}  // namespace cw::relay::internal
