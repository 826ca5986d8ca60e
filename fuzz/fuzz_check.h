// Assertions for fuzz targets. Unlike assert() they stay on in Release replay builds, and they abort, so
// libFuzzer records the input as a crash and ctest's replay fails.
//
// CW_FUZZ_CHECK(cond): a property that must always hold (round trips, no state change on failure).
// CW_FUZZ_CONTRACT_CHECK(cond, status): a documented-API detail, such as which error code a failure reports.
//   Setting CW_FUZZ_LENIENT=1 in the environment turns these off, so a long fuzzing run can go on past a
//   known, reported contract bug and still look for memory errors. ctest never sets it.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace cw::fuzz {

inline bool Lenient() {
  static const bool lenient = [] {
    const char* v = std::getenv("CW_FUZZ_LENIENT");
    return v != nullptr && v[0] != '\0' && v[0] != '0';
  }();
  return lenient;
}

}  // namespace cw::fuzz

#define CW_FUZZ_CHECK(cond)                                                              \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// `status` is a cw::Status printed with the failure.
#define CW_FUZZ_CONTRACT_CHECK(cond, status)                                                                 \
  do {                                                                                                       \
    if (!(cond) && !::cw::fuzz::Lenient()) {                                                                 \
      std::fprintf(stderr, "%s:%d: fuzz contract check failed: %s (status %s)\n", __FILE__, __LINE__, #cond, \
                   (status).ToString().c_str());                                                             \
      std::abort();                                                                                          \
    }                                                                                                        \
  } while (0)
