// Helpers shared by the benchmarks: failing loudly, plaintexts, and the rates Google Benchmark reports.
// A benchmark that cannot set up or whose round trip fails must not print numbers, so failures end the
// process with a message on stderr. Thread rules: single-threaded benchmarks only.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "core/base/bytes.h"
#include "core/base/status.h"

namespace cw::bench {

enum class Direction { kAliceToBob, kBobToAlice };

[[noreturn]] inline void Fail(std::string_view what, std::string_view why) {
  std::fprintf(stderr, "cw_bench: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(why.size()), why.data());
  std::abort();
}

inline void Must(const Status& status, std::string_view what) {
  if (!status.ok()) Fail(what, status.ToString());
}

template <typename T>
T Must(Result<T> result, std::string_view what) {
  if (!result) Fail(what, result.error().ToString());
  return std::move(*result);
}

// A plaintext of `size` bytes. Its content does not matter to either library's cost.
inline Bytes MakePlaintext(int64_t size) {
  Bytes plaintext(static_cast<size_t>(size));
  for (size_t i = 0; i < plaintext.size(); ++i) plaintext[i] = static_cast<uint8_t>('a' + i % 26);
  return plaintext;
}

// One item is one message (or one session set-up); bytes count plaintext. `wire_size`, when known, is the
// size of the last message on the wire, to compare each system's overhead.
inline void SetRates(benchmark::State& state, size_t plaintext_size, size_t wire_size = 0) {
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(plaintext_size));
  if (wire_size > 0) state.counters["wire_bytes"] = static_cast<double>(wire_size);
}

}  // namespace cw::bench
