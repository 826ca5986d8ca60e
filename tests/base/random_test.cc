#include "core/base/random.h"

#include <gtest/gtest.h>

#include <vector>

namespace cw {
namespace {

TEST(RandomTest, SeededRandomReplaysAndDiffersBySeed) {
  SeededRandom a(42), b(42), c(43);
  std::vector<uint8_t> x(64), y(64), z(64);
  a.Fill(x.data(), x.size());
  b.Fill(y.data(), y.size());
  c.Fill(z.data(), z.size());
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  std::vector<uint8_t> x2(64);
  a.Fill(x2.data(), x2.size());
  EXPECT_NE(x, x2) << "consecutive draws must not repeat";
}

TEST(RandomTest, UniformStaysInRange) {
  SeededRandom r(7);
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 1000; ++i) {
    uint32_t v = r.Uniform(5);
    ASSERT_LT(v, 5u);
    seen[v]++;
  }
  for (int n : seen) EXPECT_GT(n, 100);
}

}  // namespace
}  // namespace cw
