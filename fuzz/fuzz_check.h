// CW_FUZZ_CHECK: the assertion of fuzz targets. Unlike assert() it stays on in Release replay builds, and it
// aborts so libFuzzer records the input as a crash and ctest's replay fails.
#pragma once

#include <cstdio>
#include <cstdlib>

#define CW_FUZZ_CHECK(cond)                                                                  \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);     \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)
