// Helpers for relay tests: ids from a byte, a mkdtemp directory, and status matchers.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "tests/common/test_util.h"
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

using ::cw::testing::CodeOf;
using ::cw::testing::Describe;
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

// A temporary directory named after this test folder.
class TempDir : public ::cw::testing::TempDir {
 public:
  TempDir() : ::cw::testing::TempDir("cw_relay_test") {}
};

}  // namespace cw::relay::testing
