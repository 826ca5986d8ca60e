// libolm 3.2.13 (Olm for 1:1, Megolm for groups): the same workloads as cipherward_bench.cc, for comparison
// in the same run. olm keeps its state in memory and has no store, so each iteration is pure protocol work.
#include <string>

#include "bench/bench_util.h"
#include "bench/benchmarks.h"
#include "bench/olm_fixture.h"

namespace cw::bench {
namespace {
constexpr int64_t kSetupPlaintextSize = 256;
}  // namespace

void OlmSessionSetup(benchmark::State& state) {
  const Bytes plaintext = MakePlaintext(kSetupPlaintextSize);
  OlmPair pair;
  for (auto _ : state) {
    // Outside the timing, as for Cipherward: fetching the key (the server's job) and refilling keys.
    state.PauseTiming();
    const std::string one_time_key = pair.TakeBobOneTimeKey();
    state.ResumeTiming();
    pair.SetUpSession(one_time_key, plaintext);
  }
  SetRates(state, plaintext.size());
}

void OlmOneWay(benchmark::State& state) {
  const Bytes plaintext = MakePlaintext(state.range(0));
  OlmPair pair;
  pair.Establish();
  size_t wire_size = 0;
  for (auto _ : state) wire_size = pair.Send(Direction::kAliceToBob, plaintext);
  SetRates(state, plaintext.size(), wire_size);
}

void OlmAlternating(benchmark::State& state) {
  const Bytes plaintext = MakePlaintext(state.range(0));
  OlmPair pair;
  pair.Establish();  // ends alice→bob, so bob speaks first
  bool bobs_turn = true;
  for (auto _ : state) {
    pair.Send(bobs_turn ? Direction::kBobToAlice : Direction::kAliceToBob, plaintext);
    bobs_turn = !bobs_turn;
  }
  SetRates(state, plaintext.size());
}

void OlmGroup(benchmark::State& state) {
  const Bytes plaintext = MakePlaintext(state.range(0));
  MegolmGroup group;
  size_t wire_size = 0;
  for (auto _ : state) wire_size = group.Send(plaintext);
  SetRates(state, plaintext.size(), wire_size);
}

}  // namespace cw::bench
