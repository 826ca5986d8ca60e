// Random: the one seam for randomness. SystemRandom draws from libsodium's CSPRNG; SeededRandom is a
// deterministic stream (ChaCha20 via randombytes_buf_deterministic) so whole sessions replay in tests and
// fuzz crashes reproduce. Thread rules: SystemRandom is safe from any thread; SeededRandom is not.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace cw {

class Random {
 public:
  virtual ~Random() = default;
  virtual void Fill(uint8_t* out, size_t len) = 0;
  uint32_t Uniform(uint32_t upper_bound);  // in [0, upper_bound), unbiased; upper_bound > 0
};

class SystemRandom final : public Random {
 public:
  void Fill(uint8_t* out, size_t len) override;
  static SystemRandom& Default();
};

class SeededRandom final : public Random {
 public:
  explicit SeededRandom(uint64_t seed);
  void Fill(uint8_t* out, size_t len) override;

 private:
  std::array<uint8_t, 32> seed_{};
  uint64_t counter_ = 0;
};

// Makes libsodium's own randombytes_* calls (key generation inside libsodium) deterministic for the rest
// of the process. For fuzzers and reproducible tests only; never in a shipped binary.
void UseDeterministicSodiumRandomForTesting(uint64_t seed);

}  // namespace cw
