// The allocator a relay binary runs on, named for its start-up log and for benchmark headers.
//
// Release builds link the relay binary (and cw_relay_bench, which hosts the relay in process) with
// jemalloc: see relay/CMakeLists.txt. Sanitizer builds keep the sanitizer's allocator.
#pragma once

#include <cstddef>
#include <string>

#if defined(CW_RELAY_JEMALLOC)
// Declared here rather than through <jemalloc/jemalloc.h>, whose declarations of malloc and friends
// differ in attributes from glibc's. The call also keeps the library on the link line under --as-needed.
extern "C" int mallctl(const char* name, void* oldp, size_t* oldlenp, void* newp, size_t newlen);
#endif

namespace cw::relay {

inline std::string AllocatorName() {
#if defined(CW_RELAY_JEMALLOC)
  const char* version = nullptr;
  size_t len = sizeof(version);
  if (mallctl("version", &version, &len, nullptr, 0) == 0 && version != nullptr) {
    return std::string("jemalloc ") + version;
  }
  return "jemalloc";
#elif defined(CW_RELAY_SANITIZER_ALLOCATOR)
  return "the sanitizer's";
#else
  return "libc malloc";
#endif
}

}  // namespace cw::relay
