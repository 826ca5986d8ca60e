// Fuzz target: attachment chunks. crypto::SecretStream (OpenSSL) pulls every chunk of a downloaded blob,
// bytes a hostile relay or sender chose; libsodium's own secretstream is the reference it must match.
//
// Input: one mode byte, then
//   even (pull): a 24-byte header, then chunks [length: 2 bytes, little-endian][bytes], pulled in turn under
//                the fixed key kKey by SecretStream (OpenSSL) and by libsodium from the same header;
//   odd (push):  chunks [tag][length: 2 bytes][bytes], pushed as plaintext by SecretStream (OpenSSL) and by
//                libsodium from the header SecretStream drew.
// Asserts: both pull the same chunks (a refused chunk leaves both streams where they were, so the next one
// is compared from the same state), with the same tag and plaintext, and a refused one is kTampered and
// writes nothing; both push the same bytes, which libsodium pulls back. A length runs to the input's end
// when fewer bytes are left.
#include <sodium.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "core/crypto/crypto.h"
#include "fuzz/fuzz_check.h"

namespace {

// The seeds (fuzz/corpus_gen.cc) are streams under this key.
constexpr uint8_t kKeyByte = 0x4b;

struct Reader {
  std::span<const uint8_t> in;
  bool Done() const { return in.empty(); }
  uint8_t Byte() {
    if (in.empty()) return 0;
    const uint8_t b = in[0];
    in = in.subspan(1);
    return b;
  }
  std::span<const uint8_t> Chunk() {
    const size_t want = Byte() | (size_t{Byte()} << 8);
    const size_t take = std::min(want, in.size());
    auto out = in.subspan(0, take);
    in = in.subspan(take);
    return out;
  }
};

void Pull(Reader r, const uint8_t* key) {
  using cw::crypto::kSecretStreamHeaderSize;
  using cw::crypto::kSecretStreamOverhead;
  if (r.in.size() < kSecretStreamHeaderSize) return;
  const std::span<const uint8_t, kSecretStreamHeaderSize> header(r.in.data(), kSecretStreamHeaderSize);
  r.in = r.in.subspan(kSecretStreamHeaderSize);
  auto ours = cw::crypto::SecretStream::NewPull(std::span<const uint8_t>(key, 32), header);
  CW_FUZZ_CHECK(ours.has_value());
  CW_FUZZ_CHECK((*ours)->backend() == cw::crypto::SecretStream::Backend::kOpenSsl);
  crypto_secretstream_xchacha20poly1305_state theirs;
  CW_FUZZ_CHECK(crypto_secretstream_xchacha20poly1305_init_pull(&theirs, header.data(), key) == 0);
  while (!r.Done()) {
    const auto chunk = r.Chunk();
    const size_t size = chunk.size() < kSecretStreamOverhead ? 0 : chunk.size() - kSecretStreamOverhead;
    std::vector<uint8_t> mine(size + 1, 0xee), reference(size + 1, 0xee);
    auto tag = (*ours)->Pull(chunk, mine.data());
    unsigned char their_tag = 0;
    unsigned long long their_size = 0;
    const bool their_ok =
        chunk.size() >= kSecretStreamOverhead &&
        crypto_secretstream_xchacha20poly1305_pull(&theirs, reference.data(), &their_size, &their_tag,
                                                   chunk.data(), chunk.size(), nullptr, 0) == 0;
    CW_FUZZ_CHECK(tag.has_value() == their_ok);
    if (tag) {
      CW_FUZZ_CHECK(*tag == their_tag && their_size == size);
      CW_FUZZ_CHECK(mine == reference);
    } else {
      CW_FUZZ_CONTRACT_CHECK(tag.error().code() == cw::StatusCode::kTampered, tag.error());
      CW_FUZZ_CHECK(std::all_of(mine.begin(), mine.end(), [](uint8_t b) { return b == 0xee; }));
    }
  }
}

void Push(Reader r, const uint8_t* key) {
  using cw::crypto::kSecretStreamOverhead;
  uint8_t header[cw::crypto::kSecretStreamHeaderSize];
  auto ours = cw::crypto::SecretStream::NewPush(std::span<const uint8_t>(key, 32), header);
  CW_FUZZ_CHECK(ours.has_value());
  crypto_secretstream_xchacha20poly1305_state same, pull;
  CW_FUZZ_CHECK(crypto_secretstream_xchacha20poly1305_init_pull(&same, header, key) == 0);
  CW_FUZZ_CHECK(crypto_secretstream_xchacha20poly1305_init_pull(&pull, header, key) == 0);
  while (!r.Done()) {
    const uint8_t tag = r.Byte();
    const auto message = r.Chunk();
    std::vector<uint8_t> mine(message.size() + kSecretStreamOverhead), reference(mine.size());
    CW_FUZZ_CHECK((*ours)->Push(message, tag, mine.data()).ok());
    crypto_secretstream_xchacha20poly1305_push(&same, reference.data(), nullptr, message.data(),
                                               message.size(), nullptr, 0, tag);
    CW_FUZZ_CHECK(mine == reference);
    std::vector<uint8_t> back(message.size() + 1);
    unsigned char back_tag = 0;
    CW_FUZZ_CHECK(crypto_secretstream_xchacha20poly1305_pull(&pull, back.data(), nullptr, &back_tag,
                                                             mine.data(), mine.size(), nullptr, 0) == 0);
    CW_FUZZ_CHECK(back_tag == tag && std::equal(message.begin(), message.end(), back.begin()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (sodium_init() < 0) return 0;
  uint8_t key[32];
  std::memset(key, kKeyByte, sizeof key);
  Reader r{std::span<const uint8_t>(data, size)};
  if (r.Done()) return 0;
  if ((r.Byte() & 1) == 0) {
    Pull(r, key);
  } else {
    Push(r, key);
  }
  return 0;
}
