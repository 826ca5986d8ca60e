// libsignal-protocol-c frees key material with signal_buffer_free, which does not wipe; the engine exports
// a wiping one that the dynamic linker must bind libsignal's own calls to.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <signal/signal_protocol.h>

namespace {

TEST(SignalBufferFree, ResolvesToTheWipingDefinition) {
  void* resolved = dlsym(RTLD_DEFAULT, "signal_buffer_free");
  ASSERT_NE(resolved, nullptr);
  Dl_info info{};
  ASSERT_NE(dladdr(resolved, &info), 0);
  // Ours lives in the test executable, not in libsignal-protocol-c.so.
  std::string where = info.dli_fname ? info.dli_fname : "";
  EXPECT_EQ(where.find("libsignal-protocol-c"), std::string::npos) << "bound to " << where;
  EXPECT_EQ(reinterpret_cast<void*>(&signal_buffer_free), resolved);
}

}  // namespace
