// cw_bench: Cipherward and libolm side by side. Benchmarks are registered here, not with BENCHMARK(), so
// each workload's two systems print next to each other, Cipherward first.
//   cw_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <olm/olm.h>
#include <sodium.h>

#include <cstdio>
#include <string>

#include "bench/benchmarks.h"

namespace {

using benchmark::State;
using BenchFn = void (*)(State&);

void Register(const char* name, BenchFn fn, int64_t plaintext_size = -1) {
  benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(name, fn);
  if (plaintext_size >= 0) b->Arg(plaintext_size);
  b->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) {
    std::fprintf(stderr, "cw_bench: sodium_init failed\n");
    return 1;
  }
  uint8_t major = 0, minor = 0, patch = 0;
  olm_get_library_version(&major, &minor, &patch);
  benchmark::AddCustomContext(
      "libolm", std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch));
  benchmark::AddCustomContext("libsodium", sodium_version_string());

  using namespace cw::bench;
  Register("Cipherward/SessionSetup", CipherwardSessionSetup);
  Register("Olm/SessionSetup", OlmSessionSetup);
  for (int64_t size : {256, 4096}) {
    Register("Cipherward/OneWay", CipherwardOneWay, size);
    Register("Olm/OneWay", OlmOneWay, size);
  }
  Register("Cipherward/Alternating", CipherwardAlternating, 256);
  Register("Olm/Alternating", OlmAlternating, 256);
  Register("Cipherward/Group", CipherwardGroup, 256);
  Register("Olm/Group", OlmGroup, 256);

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
