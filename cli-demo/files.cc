#include "cli-demo/files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

namespace cw::cli {

std::string HumanSize(uint64_t bytes) {
  char buf[32];
  if (bytes < 1024) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else if (bytes < (1u << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  }
  return buf;
}

runtime::ProgressFn ProgressBar(std::string label, bool quiet) {
  if (quiet || !::isatty(STDERR_FILENO)) return {};
  return [label = std::move(label), last = -1](uint64_t done, uint64_t total) mutable {
    const int percent = total == 0 ? 100 : static_cast<int>(done * 100 / total);
    if (percent == last) return;  // redraw only when it moves: a 20 MiB file reports 320 times
    last = percent;
    constexpr int kWidth = 30;
    const int filled = percent * kWidth / 100;
    std::fprintf(stderr, "\r%s [%s%s] %3d%%  %s/%s", label.c_str(), std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, ' ').c_str(), percent, HumanSize(done).c_str(),
                 HumanSize(total).c_str());
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
}

namespace {

// "name (n).ext" for the n-th try; a leading dot is part of the stem (".bashrc (2)").
std::string Numbered(const std::string& name, int n) {
  if (n == 1) return name;
  const size_t dot = name.rfind('.');
  const bool has_ext = dot != std::string::npos && dot > 0;
  const std::string stem = has_ext ? name.substr(0, dot) : name;
  const std::string ext = has_ext ? name.substr(dot) : "";
  return stem + " (" + std::to_string(n) + ")" + ext;
}

}  // namespace

Result<std::string> SaveIncomingFile(runtime::Client& client, const std::string& home,
                                     const wire::AttachmentDescriptor& file,
                                     const runtime::ProgressFn& progress, int64_t timeout_ms) {
  const std::string dir = home + "/downloads";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Error(StatusCode::kUnavailable, "cannot create the downloads folder");
  ::chmod(dir.c_str(), 0700);
  // The descriptor's name is already a bare name (the wire parser refuses anything else); sanitise anyway,
  // since this is where a hostile name would escape the folder.
  const std::string name = wire::SanitizeFileName(file.file_name);
  for (int n = 1; n < 1000; ++n) {
    const std::string path = dir + "/" + Numbered(name, n);
    if (std::filesystem::exists(std::filesystem::symlink_status(path, ec))) continue;
    Status s = client.FetchAttachment(file, path, progress, timeout_ms);
    if (s.code() == StatusCode::kAlreadyExists) continue;  // taken meanwhile
    if (!s.ok()) return Error(s);
    return path;
  }
  return Error(StatusCode::kResourceExhausted, "too many files with that name in the downloads folder");
}

}  // namespace cw::cli
