#include <chrono>
#include <cstring>

#include <sodium.h>

#include "core/base/clock.h"
#include "core/base/random.h"

namespace cw {

int64_t SystemClock::NowMillis() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

SystemClock& SystemClock::Default() {
  static SystemClock clock;
  return clock;
}

uint32_t Random::Uniform(uint32_t upper_bound) {
  // Rejection sampling: drop the top partial range so every value is equally likely.
  const uint32_t limit = UINT32_MAX - (UINT32_MAX % upper_bound);
  for (;;) {
    uint32_t v;
    Fill(reinterpret_cast<uint8_t*>(&v), sizeof v);
    if (v < limit) return v % upper_bound;
  }
}

void SystemRandom::Fill(uint8_t* out, size_t len) { randombytes_buf(out, len); }

SystemRandom& SystemRandom::Default() {
  static SystemRandom random;
  return random;
}

SeededRandom::SeededRandom(uint64_t seed) { std::memcpy(seed_.data(), &seed, sizeof seed); }

void SeededRandom::Fill(uint8_t* out, size_t len) {
  if (len == 0) return;  // libsodium declares the buffer non-null
  // Each call derives a fresh block from (seed, counter) so the stream does not depend on call sizes
  // more than it must, and never repeats.
  std::array<uint8_t, 32> call_seed = seed_;
  uint64_t c = ++counter_;
  std::memcpy(call_seed.data() + 8, &c, sizeof c);
  randombytes_buf_deterministic(out, len, call_seed.data());
}

namespace {
uint64_t g_sodium_seed = 0;
uint64_t g_sodium_counter = 0;
const char* DeterministicName() { return "cipherward-deterministic"; }
uint32_t DeterministicRandom() {
  uint32_t v;
  std::array<uint8_t, 32> s{};
  uint64_t c = ++g_sodium_counter;
  std::memcpy(s.data(), &g_sodium_seed, 8);
  std::memcpy(s.data() + 8, &c, 8);
  randombytes_buf_deterministic(&v, sizeof v, s.data());
  return v;
}
void DeterministicBuf(void* buf, size_t size) {
  std::array<uint8_t, 32> s{};
  uint64_t c = ++g_sodium_counter;
  std::memcpy(s.data(), &g_sodium_seed, 8);
  std::memcpy(s.data() + 8, &c, 8);
  randombytes_buf_deterministic(buf, size, s.data());
}
randombytes_implementation g_impl = {DeterministicName, DeterministicRandom, nullptr, nullptr, DeterministicBuf,
                                     nullptr};
}  // namespace

void UseDeterministicSodiumRandomForTesting(uint64_t seed) {
  g_sodium_seed = seed;
  g_sodium_counter = 0;
  randombytes_set_implementation(&g_impl);
}

}  // namespace cw
