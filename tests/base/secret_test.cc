#include "core/base/secret.h"

#include <gtest/gtest.h>

namespace cw {
namespace {

TEST(SecretBytesTest, MoveLeavesTheSourceEmpty) {
  const uint8_t raw[] = {1, 2, 3, 4};
  SecretBytes a(raw, sizeof raw);
  const uint8_t* where = a.reveal().data();
  SecretBytes b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): that is the point
  EXPECT_EQ(b.size(), 4u);
  EXPECT_EQ(b.reveal().data(), where) << "a move must transfer the heap buffer, not copy it";
}

TEST(SecretBytesTest, EqualityIsByContentAndLength) {
  const uint8_t x[] = {1, 2, 3};
  const uint8_t y[] = {1, 2, 4};
  EXPECT_TRUE(SecretBytes(x, 3).Equals(SecretBytes(x, 3)));
  EXPECT_FALSE(SecretBytes(x, 3).Equals(SecretBytes(y, 3)));
  EXPECT_FALSE(SecretBytes(x, 3).Equals(SecretBytes(x, 2)));
  EXPECT_TRUE(SecretBytes().Equals(SecretBytes()));
}

TEST(SecretBytesTest, CloneIsIndependent) {
  const uint8_t x[] = {9, 9};
  SecretBytes a(x, 2);
  SecretBytes b = a.Clone();
  a.reveal_mutable()[0] = 0;
  EXPECT_EQ(b.reveal()[0], 9);
}

}  // namespace
}  // namespace cw
