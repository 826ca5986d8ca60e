// Fuzz target: Engine::Decrypt on attacker bytes, against a fixed established session (SessionFixture:
// bob holds a two-way session with alice and alice's sender key for a group).
// Input: one type byte, then the message body as it would arrive from the relay claiming to be from alice.
// 2 = SignalMessage, 3 = PreKeySignalMessage, 4 = SenderKeyMessage (for the fixture's group); any other
// first byte is folded onto those.
//
// Asserts the engine's promise that a failed decrypt changes no stored state: after every failure bob's
// store is byte-for-byte what it was. A success (only the seed corpus's real messages, in practice) changes
// the state legitimately, so the fixture is rebuilt for the next input.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "core/session/engine.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/session_fixture.h"

namespace {

struct State {
  std::unique_ptr<cw::fuzz::SessionFixture> fixture;
  std::map<std::string, cw::SecretBytes> snapshot;  // bob's store as built
};

State& GetState(bool rebuild) {
  static State* state = new State();  // never destroyed: no engine teardown at exit
  if (rebuild || !state->fixture) {
    state->fixture.reset();
    state->fixture = cw::fuzz::SessionFixture::Build();
    state->snapshot = state->fixture->bob_store.Snapshot();
  }
  return *state;
}

bool DocumentedDecryptError(cw::StatusCode code) {
  switch (code) {
    case cw::StatusCode::kDuplicate:
    case cw::StatusCode::kTampered:
    case cw::StatusCode::kMalformed:
    case cw::StatusCode::kUnsupportedVersion:
    case cw::StatusCode::kTooFarAhead:
    case cw::StatusCode::kNoSession:
    case cw::StatusCode::kNotFound:
    case cw::StatusCode::kUntrustedIdentity:
    case cw::StatusCode::kPermissionDenied:
      return true;
    default:
      return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  State& state = GetState(false);
  cw::fuzz::SessionFixture& f = *state.fixture;

  uint8_t type = data[0];
  if (type < 2 || type > 4) type = static_cast<uint8_t>(2 + type % 3);
  cw::session::Ciphertext message;
  message.type = static_cast<cw::session::MessageType>(type);
  message.body.assign(data + 1, data + size);
  if (message.type == cw::session::MessageType::kSenderKey) message.group_id = cw::fuzz::kFixtureGroupId;

  auto received = f.bob->Decrypt(f.alice_address(), message);
  if (received) {
    GetState(true);
    return 0;
  }
  if (!DocumentedDecryptError(received.error().code())) {
    std::fprintf(stderr, "undocumented decrypt error: %s\n", received.error().ToString().c_str());
    CW_FUZZ_CHECK(DocumentedDecryptError(received.error().code()));
  }
  CW_FUZZ_CHECK(cw::fuzz::SameSnapshot(f.bob_store.Snapshot(), state.snapshot));
  return 0;
}
