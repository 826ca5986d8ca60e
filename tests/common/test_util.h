// Helpers every test folder uses: a status code and description from a Status or a Result, a temporary
// directory removed with everything in it, and killing a child process for good.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/base/status.h"

namespace cw::testing {

inline StatusCode CodeOf(const Status& s) { return s.code(); }
template <typename T>
StatusCode CodeOf(const Result<T>& r) {
  return r.has_value() ? StatusCode::kOk : r.error().code();
}
inline std::string Describe(const Status& s) { return s.ToString(); }
template <typename T>
std::string Describe(const Result<T>& r) {
  return r.has_value() ? std::string("OK") : r.error().ToString();
}

// SIGKILLs the child `*pid` (a crash: nothing more is written) and reaps it; *pid becomes -1. Nothing when
// *pid is not a child any more (-1).
inline void KillAndReap(pid_t* pid) {
  if (*pid <= 0) return;
  ::kill(*pid, SIGKILL);
  int status = 0;
  ::waitpid(*pid, &status, 0);
  *pid = -1;
}

// mkdtemp under $TMPDIR or /tmp; removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "cw_test") {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/" + prefix + "_XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp failed";
      return;
    }
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace cw::testing
