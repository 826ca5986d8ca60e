// Helpers for relay tests: ids from a byte, a mkdtemp directory, and status matchers.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "relay/types.h"

namespace cw::relay::testing {

template <size_t N>
std::array<uint8_t, N> Filled(uint8_t b) {
  std::array<uint8_t, N> a;
  a.fill(b);
  return a;
}
inline LinkKey Key(uint8_t b) { return Filled<kLinkKeySize>(b); }
inline MessageId Mid(uint32_t n) {
  MessageId id{};
  for (int i = 0; i < 4; ++i) id[i] = static_cast<uint8_t>(n >> (8 * i));
  id[15] = 0x4d;
  return id;
}

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
#define CW_RL_ASSERT_OK(expr)                                                                                     \
  do {                                                                                                            \
    const auto& cw_r_ = (expr);                                                                                   \
    ASSERT_EQ(::cw::relay::testing::CodeOf(cw_r_), ::cw::StatusCode::kOk) << #expr << ": "                       \
                                                                          << ::cw::relay::testing::Describe(cw_r_); \
  } while (0)
#define CW_RL_EXPECT_CODE(expr, code)                                                                       \
  do {                                                                                                      \
    const auto& cw_r_ = (expr);                                                                             \
    EXPECT_EQ(::cw::relay::testing::CodeOf(cw_r_), code) << #expr << ": " << ::cw::relay::testing::Describe(cw_r_); \
  } while (0)

// mkdtemp under $TMPDIR or /tmp; removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/cw_relay_test_XXXXXX";
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

}  // namespace cw::relay::testing
