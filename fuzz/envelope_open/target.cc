// Fuzz target: sealed envelopes, as the relay hands them to a mailbox owner (from anyone holding a token).
// The first byte picks the path:
//   even: the rest is an inner envelope; it is padded and sealed to our box key here, so the inner parser
//         sees arbitrary bytes (a hostile sender can seal anything to us);
//   odd:  the rest is opened as it is (the sealing layer itself).
// Whatever opens must seal and open again to the same content.
#include <sodium.h>

#include <array>
#include <cstddef>
#include <cstdint>

#include "core/runtime/codec.h"
#include "core/wire/padding.h"
#include "fuzz/fuzz_check.h"

namespace {

struct BoxKeys {
  BoxKeys() : secret(crypto_box_SECRETKEYBYTES) {
    if (sodium_init() < 0) __builtin_trap();
    std::array<uint8_t, crypto_box_SEEDBYTES> seed{};
    seed.fill(0x42);
    crypto_box_seed_keypair(pub.data(), secret.reveal_mutable().data(), seed.data());
  }
  cw::runtime::BoxPublicKey pub{};
  cw::SecretBytes secret;
};

const BoxKeys& Keys() {
  static const BoxKeys keys;
  return keys;
}

bool SameContent(const cw::runtime::EnvelopeContent& a, const cw::runtime::EnvelopeContent& b) {
  return a.message.type == b.message.type && a.message.body == b.message.body &&
         a.message.group_id == b.message.group_id && a.sender == b.sender &&
         a.sender_device == b.sender_device && a.sent_at_ms == b.sent_at_ms && a.card == b.card &&
         a.token == b.token;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const BoxKeys& keys = Keys();
  cw::Bytes sealed;
  if (data[0] % 2 == 0) {
    auto padded = cw::wire::Pad({data + 1, size - 1});
    if (!padded) return 0;
    sealed.resize(padded->size() + crypto_box_SEALBYTES);
    crypto_box_seal(sealed.data(), padded->reveal().data(), padded->size(), keys.pub.data());
  } else {
    sealed.assign(data + 1, data + size);
  }
  auto opened = cw::runtime::OpenEnvelope(sealed, keys.pub, keys.secret);
  if (!opened) {
    const auto c = opened.error().code();
    CW_FUZZ_CONTRACT_CHECK(c == cw::StatusCode::kMalformed || c == cw::StatusCode::kTampered ||
                               c == cw::StatusCode::kUnsupportedVersion,
                           opened.error());
    return 0;
  }
  auto resealed = cw::runtime::SealEnvelope(*opened, keys.pub);
  CW_FUZZ_CHECK(resealed.has_value());
  auto again = cw::runtime::OpenEnvelope(*resealed, keys.pub, keys.secret);
  CW_FUZZ_CHECK(again.has_value());
  CW_FUZZ_CHECK(SameContent(*again, *opened));
  return 0;
}
