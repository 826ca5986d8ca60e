// Cipherward (libsignal-protocol-c behind cw::session::Engine) on in-memory stores. Each iteration includes
// the engine's whole operation: store reads, libsignal, padding, and the commit of the new state.
#include <string>

#include "bench/bench_util.h"
#include "bench/benchmarks.h"
#include "bench/cw_fixture.h"

namespace cw::bench {
namespace {
// Message benchmarks use one pre-key for the handshake; a smaller batch makes opening an engine cheap.
constexpr uint32_t kFewPreKeys = 4;
constexpr int64_t kSetupPlaintextSize = 256;
}  // namespace

void CipherwardSessionSetup(benchmark::State& state) {
  const Bytes plaintext = MakePlaintext(kSetupPlaintextSize);
  CwPair pair;
  uint64_t n = 0;
  for (auto _ : state) {
    // Outside the timing: fetching a bundle (the relay's job) and refilling pre-keys.
    state.PauseTiming();
    const wire::PreKeyBundle bundle = pair.FreshBobBundle();
    const session::Address bob{"bob." + std::to_string(n), 1};
    const session::Address alice{"alice." + std::to_string(n), 1};
    ++n;
    state.ResumeTiming();
    pair.SetUpSession(bob, alice, bundle, plaintext);
  }
  SetRates(state, plaintext.size());
}

void CipherwardOneWay(benchmark::State& state) {
  const Bytes plaintext = MakePlaintext(state.range(0));
  CwPair pair(kFewPreKeys);
  pair.Establish();
  size_t wire_size = 0;
  for (auto _ : state) wire_size = pair.Send(Direction::kAliceToBob, plaintext);
  SetRates(state, plaintext.size(), wire_size);
}

void CipherwardAlternating(benchmark::State& state) {
  const Bytes plaintext = MakePlaintext(state.range(0));
  CwPair pair(kFewPreKeys);
  pair.Establish();  // ends alice→bob, so bob speaks first
  bool bobs_turn = true;
  for (auto _ : state) {
    pair.Send(bobs_turn ? Direction::kBobToAlice : Direction::kAliceToBob, plaintext);
    bobs_turn = !bobs_turn;
  }
  SetRates(state, plaintext.size());
}

void CipherwardGroup(benchmark::State& state) {
  const Bytes plaintext = MakePlaintext(state.range(0));
  CwPair pair(kFewPreKeys);
  pair.Establish();
  const std::string group = pair.CreateGroup();
  size_t wire_size = 0;
  for (auto _ : state) wire_size = pair.GroupSend(group, plaintext);
  SetRates(state, plaintext.size(), wire_size);
}

}  // namespace cw::bench
