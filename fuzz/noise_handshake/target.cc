// Fuzz target: the Noise XK responder fed attacker bytes, the first thing a relay runs on a new connection.
// Keys and ephemerals come from fixed seeds, so every input replays exactly.
// Input: byte 0 picks the mode; the rest is the attacker's bytes.
//   0: handshake message 1 to a fresh responder. Fails with kMalformed or kTampered (and the state is dead),
//      or succeeds (someone who knows the responder's public key can always build a message 1) and then
//      message 2 can be written.
//   1: handshake message 3 after a real message 1 and 2. Succeeds only if it is byte for byte the real
//      initiator's message 3 (nobody else knows the keys that authenticate it).
//   2: a byte stream to a NoiseLink responder (records, handshake, frames). Never crashes; errors are
//      kMalformed or kTampered; if the handshake completes, the proven key is the real initiator's.
#include <cstddef>
#include <cstdint>

#include "core/base/random.h"
#include "fuzz/fuzz_check.h"
#include "transport/link.h"
#include "transport/noise.h"

namespace {

using cw::transport::StaticKeyPair;
using namespace cw::transport::noise;

bool AllowedFailure(const cw::Status& s) {
  return s.code() == cw::StatusCode::kMalformed || s.code() == cw::StatusCode::kTampered;
}

struct Keys {
  Keys() {
    cw::SeededRandom rng(0x5eed);
    initiator = std::make_unique<StaticKeyPair>(StaticKeyPair::Generate(rng));
    responder = std::make_unique<StaticKeyPair>(StaticKeyPair::Generate(rng));
  }
  std::unique_ptr<StaticKeyPair> initiator, responder;
};

const Keys& TheKeys() {
  static const Keys keys;
  return keys;
}

std::unique_ptr<HandshakeState> Make(Role role, cw::Random* rng) {
  HandshakeConfig c;
  c.role = role;
  c.prologue = cw::AsBytes("cipherward-link-v1");
  c.random = rng;
  if (role == Role::kInitiator) {
    c.local_static = TheKeys().initiator.get();
    c.remote_static = TheKeys().responder->public_key();
  } else {
    c.local_static = TheKeys().responder.get();
  }
  return std::move(*HandshakeState::New(c));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const cw::ByteView input(data + 1, size - 1);
  cw::SeededRandom irng(1), rrng(2);

  switch (data[0] % 3) {
    case 0: {
      auto responder = Make(Role::kResponder, &rrng);
      auto read = responder->ReadMessage(input);
      if (!read) {
        CW_FUZZ_CONTRACT_CHECK(AllowedFailure(read.error()), read.error());
        CW_FUZZ_CHECK(!responder->WriteMessage({}).has_value());
      } else {
        CW_FUZZ_CHECK(responder->WriteMessage({}).has_value());
        CW_FUZZ_CHECK(!responder->IsComplete());
      }
      break;
    }
    case 1: {
      auto initiator = Make(Role::kInitiator, &irng);
      auto responder = Make(Role::kResponder, &rrng);
      auto m1 = initiator->WriteMessage({});
      CW_FUZZ_CHECK(m1.has_value() && responder->ReadMessage(*m1).has_value());
      auto m2 = responder->WriteMessage({});
      CW_FUZZ_CHECK(m2.has_value() && initiator->ReadMessage(*m2).has_value());
      auto m3 = initiator->WriteMessage({});
      CW_FUZZ_CHECK(m3.has_value());
      auto read = responder->ReadMessage(input);
      if (read) {
        CW_FUZZ_CHECK(std::equal(input.begin(), input.end(), m3->begin(), m3->end()));
        CW_FUZZ_CHECK(responder->IsComplete());
        CW_FUZZ_CHECK(*responder->remote_static() == TheKeys().initiator->public_key());
      } else {
        CW_FUZZ_CONTRACT_CHECK(AllowedFailure(read.error()), read.error());
        CW_FUZZ_CHECK(!responder->IsComplete());
      }
      break;
    }
    default: {
      cw::transport::NoiseLink::Config c;
      c.role = Role::kResponder;
      c.local_static = TheKeys().responder.get();
      c.prologue = cw::AsBytes("cipherward-link-v1");
      c.max_frame_size = 1000;
      c.random = &rrng;
      auto link = std::move(*cw::transport::NoiseLink::New(c));
      // Feed in two pieces so records split across reads are exercised too.
      const size_t half = input.size() / 2;
      cw::Status s = link->Feed(input.first(half));
      for (int piece = 0; piece < 2 && s.ok(); ++piece) {
        for (;;) {
          cw::Bytes out;
          auto ev = link->Next(&out);
          if (!ev) {
            s = ev.error();
            break;
          }
          if (ev->kind == cw::transport::NoiseLink::EventKind::kNeedMore) break;
          if (ev->kind == cw::transport::NoiseLink::EventKind::kFrame) {
            CW_FUZZ_CHECK(!ev->frame.empty() && ev->frame.size() <= 1000);
          }
        }
        if (piece == 0 && s.ok()) s = link->Feed(input.subspan(half));
      }
      if (!s.ok()) CW_FUZZ_CONTRACT_CHECK(AllowedFailure(s), s);
      if (link->handshake_complete()) {
        CW_FUZZ_CHECK(*link->remote_static() == TheKeys().initiator->public_key());
      }
      break;
    }
  }
  return 0;
}
