#include "core/base/status.h"

#include <gtest/gtest.h>

namespace cw {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return Error(StatusCode::kInvalidArgument, "odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  CW_ASSIGN_OR_RETURN(int h, Half(x));
  CW_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, OkByDefaultAndToStringNamesTheCode) {
  EXPECT_TRUE(Status().ok());
  Status s(StatusCode::kTampered, "record failed to open");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "TAMPERED: record failed to open");
}

TEST(StatusTest, AssignOrReturnPropagatesTheFirstError) {
  ASSERT_TRUE(Quarter(8).has_value());
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);  // 6 -> 3 -> odd
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cw
