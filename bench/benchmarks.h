// The benchmark bodies, registered side by side (Cipherward, then libolm, per workload) by main.cc.
// state.range(0), where used, is the plaintext size in bytes.
#pragma once

#include <benchmark/benchmark.h>

namespace cw::bench {

void CipherwardSessionSetup(benchmark::State& state);
void CipherwardOneWay(benchmark::State& state);
void CipherwardAlternating(benchmark::State& state);
void CipherwardGroup(benchmark::State& state);

void OlmSessionSetup(benchmark::State& state);
void OlmOneWay(benchmark::State& state);
void OlmAlternating(benchmark::State& state);
void OlmGroup(benchmark::State& state);

}  // namespace cw::bench
