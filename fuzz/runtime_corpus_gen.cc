// Writes the seed corpora of the invite_decode and envelope_open targets: valid invites and envelopes
// built from fixed values, so two runs write the same files.
//   build/<dir>/fuzz/cw_fuzz_runtime_corpus_gen fuzz
#include <sodium.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include "core/base/bytes.h"
#include "core/runtime/codec.h"
#include "core/wire/padding.h"

namespace {

void Write(const std::string& dir, const std::string& name, const cw::Bytes& bytes) {
  std::ofstream(dir + "/" + name, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                           static_cast<std::streamsize>(bytes.size()));
}

cw::runtime::ContactCard Card(uint8_t fill) {
  cw::runtime::ContactCard c;
  c.relay = "cw://" + std::string(64, 'a') + "@127.0.0.1:7400";
  c.mailbox.fill(fill);
  c.token.fill(static_cast<uint8_t>(fill + 1));
  c.box_key.fill(static_cast<uint8_t>(fill + 2));
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || sodium_init() < 0) {
    std::fprintf(stderr, "usage: %s FUZZ_DIR\n", argv[0]);
    return 2;
  }
  const std::string fuzz = argv[1];
  cw::runtime::Invite invite;
  invite.card = Card(1);
  invite.identity_key.fill(7);
  invite.identity_key[0] = 0x05;
  invite.name = "dr.okafor";
  Write(fuzz + "/invite_decode/corpus", "gen-invite", cw::ToBytes(cw::runtime::EncodeInvite(invite)));
  invite.name = "patient.lee";
  invite.card.relay = "cw://" + std::string(43, 'B') + "@[::1]:1";
  Write(fuzz + "/invite_decode/corpus", "gen-invite-b64", cw::ToBytes(cw::runtime::EncodeInvite(invite)));
  invite.for_device_of = "patient.lee";  // version 3: a code for a contact's new device
  Write(fuzz + "/invite_decode/corpus", "gen-invite-device", cw::ToBytes(cw::runtime::EncodeInvite(invite)));
  invite.for_device_of.clear();
  // A genuine code, made by a client (tests/runtime/client_test.cc) and copied here: its signature verifies,
  // which the fixed values above cannot give, since XEdDSA signing takes a random nonce.
  Write(
      fuzz + "/invite_decode/corpus", "gen-invite-signed",
      cw::ToBytes(
          "cwi1.mALZVWN3Oi8vY2I5Mzk0ZThhMDEwZGU5ZDc3ZTI2NzkxMDdiZTQ4ZTg0NmEyZTNhZDNjZWM2MDZjZmEwNTNhODkxMjhh"
          "MjM3M0AxMjcuMC4wLjE6MzYwODXEEFJ2auvqR4Z0kJIuSucnKUTEIKFohVXsDqsE207XeJX6lEBPDmr37SrcV4diUrjD"
          "q0p1xCAq-cnGBqjkJkiGY9r_tNPFi39HIQTPpbCOct_pwv73LcQhBS9zWalEekV_XT5reSlfyTG1EIWI0E73NOV1JKvbB-"
          "wepmRyLmxlZcRAtt9ijE9G_zZ3tnzydrd--3qobfnZQX0aAQhgzHMmpJfR_2ZYtmqmGt7KdiPBA-XbjWZ-FzHn1hIqH1ZB3"
          "PrdAA"));

  // The same box key pair as the target.
  std::array<uint8_t, crypto_box_SEEDBYTES> seed{};
  seed.fill(0x42);
  cw::runtime::BoxPublicKey pub{};
  std::array<uint8_t, crypto_box_SECRETKEYBYTES> secret{};
  crypto_box_seed_keypair(pub.data(), secret.data(), seed.data());

  int n = 0;
  for (bool with_card : {false, true}) {
    cw::runtime::EnvelopeContent c;
    c.message.type = with_card ? cw::session::MessageType::kPreKey : cw::session::MessageType::kSignal;
    c.message.body = cw::Bytes(120, 0x33);
    c.sender = "dr.okafor";
    c.sender_device = 1;
    c.sent_at_ms = 1'700'000'000'000;
    if (with_card) c.card = Card(9);
    c.token.fill(0x5a);
    auto sealed = cw::runtime::SealEnvelope(c, pub);
    if (!sealed) return 1;
    // Odd first byte: the sealed envelope as the relay delivers it.
    cw::Bytes raw{1};
    raw.insert(raw.end(), sealed->begin(), sealed->end());
    Write(fuzz + "/envelope_open/corpus", "gen-sealed-" + std::to_string(n), raw);
    // Even first byte: the inner bytes (opened and unpadded here), which the target seals itself.
    cw::Bytes padded(sealed->size() - crypto_box_SEALBYTES);
    if (crypto_box_seal_open(padded.data(), sealed->data(), sealed->size(), pub.data(), secret.data()) != 0) return 1;
    auto inner = cw::wire::Unpad(padded);
    if (!inner) return 1;
    cw::Bytes plain{0};
    plain.insert(plain.end(), inner->reveal().begin(), inner->reveal().end());
    Write(fuzz + "/envelope_open/corpus", "gen-inner-" + std::to_string(n), plain);
    ++n;
  }
  sodium_memzero(secret.data(), secret.size());
  std::printf("invite_decode 4 files, envelope_open %d files\n", 2 * n);
  return 0;
}
