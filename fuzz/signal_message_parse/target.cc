// Fuzz target: parsing of serialized Signal messages (libsignal's protobuf decoders behind
// cw::session::ParseSignalMessage), as a relay-side check or the engine before decrypting would run them.
// Input: one type byte, then the message. Bytes 2..5 are the protocol's own type numbers (kSignal, kPreKey,
// kSenderKey, kSenderKeyDistribution); any other first byte is folded onto them so no input is wasted.
#include <cstddef>
#include <cstdint>

#include "core/session/engine.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint8_t type = data[0];
  if (type < 2 || type > 5) type = static_cast<uint8_t>(2 + type % 4);
  const cw::Status status = cw::session::ParseSignalMessage(static_cast<cw::session::MessageType>(type),
                                                            cw::ByteView(data + 1, size - 1));
  if (!status.ok()) {
    CW_FUZZ_CONTRACT_CHECK(
        status.code() == cw::StatusCode::kMalformed || status.code() == cw::StatusCode::kUnsupportedVersion,
        status);
  }
  return 0;
}
