// Fuzz target: relay command decoding and handling. Command frames arrive from any client of the relay.
// Asserts that
//   - whatever DecodeCommand accepts re-encodes within kMaxCommandSize and decodes to the same command, and
//     its encoding is a fixed point;
//   - a refusal carries one of the documented request-level codes;
//   - a fresh RelayService (in-memory store, seeded randomness, fake clock) answers the frame with frames
//     that all decode, the last being a response to it, and then still serves a well-formed request;
//   - what a loop thread takes in (TryHandleWithoutBlocking: deposits, acknowledgements, chunks, downloads,
//     bad frames) is answered exactly once, and with the same bytes Handle answers it with;
//   - whatever DecodeServerFrame accepts (the same bytes read as a server frame) round-trips.
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "fuzz/fuzz_check.h"
#include "relay/mailbox_store.h"
#include "relay/protocol.h"
#include "relay/relay_service.h"

namespace {

using cw::relay::ResponseCode;

bool RequestLevelCode(ResponseCode c) {
  return c == ResponseCode::kMalformed || c == ResponseCode::kUnsupportedVersion ||
         c == ResponseCode::kUnknownCommand || c == ResponseCode::kTooLarge || c == ResponseCode::kLimitExceeded;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const cw::ByteView input(data, size);

  auto decoded = cw::relay::DecodeCommand(input);
  if (decoded) {
    const cw::Bytes encoded = cw::relay::EncodeCommand(*decoded);
    CW_FUZZ_CHECK(encoded.size() <= cw::relay::kMaxCommandSize);
    auto again = cw::relay::DecodeCommand(encoded);
    CW_FUZZ_CHECK(again.has_value());
    CW_FUZZ_CHECK(*again == *decoded);
    CW_FUZZ_CHECK(cw::relay::EncodeCommand(*again) == encoded);
  } else {
    CW_FUZZ_CONTRACT_CHECK(RequestLevelCode(decoded.error().code),
                           cw::Status(cw::StatusCode::kMalformed, decoded.error().message));
  }

  {
    auto store = cw::relay::NewInMemoryMailboxStore();
    cw::FakeClock clock;
    cw::SeededRandom random(1);
    cw::relay::RelayService service(*store, clock, random);
    cw::relay::LinkKey client{};
    client.fill(0x11);
    const auto frames = service.Handle(client, input);
    CW_FUZZ_CHECK(!frames.empty());
    for (size_t i = 0; i < frames.size(); ++i) {
      auto f = cw::relay::DecodeServerFrame(frames[i]);
      CW_FUZZ_CHECK(f.has_value());
      const bool last = i + 1 == frames.size();
      CW_FUZZ_CHECK(last == std::holds_alternative<cw::relay::Response>(*f));
      if (last && decoded) CW_FUZZ_CHECK(std::get<cw::relay::Response>(*f).request_id == decoded->request_id);
    }
    const auto after = service.Handle(client, cw::relay::EncodeCommand({9, cw::relay::CreateMailbox{}}));
    auto ok = cw::relay::DecodeServerFrame(after.back());
    CW_FUZZ_CHECK(ok.has_value());
    CW_FUZZ_CHECK(std::get<cw::relay::Response>(*ok).code == ResponseCode::kOk);

    // The same frame on the loop thread's path, on an identical fresh service: the in-memory store is durable
    // at once, so a frame taken in is answered before TryHandleWithoutBlocking returns.
    auto loop_store = cw::relay::NewInMemoryMailboxStore();
    cw::FakeClock loop_clock;
    cw::SeededRandom loop_random(1);
    cw::relay::RelayService loop_service(*loop_store, loop_clock, loop_random);
    std::vector<std::vector<cw::Bytes>> answers;
    if (loop_service.TryHandleWithoutBlocking(
            client, input, [&](std::vector<cw::Bytes> out) { answers.push_back(std::move(out)); })) {
      CW_FUZZ_CHECK(answers.size() == 1);
      CW_FUZZ_CHECK(answers[0] == frames);
    } else {
      CW_FUZZ_CHECK(answers.empty());
    }
  }

  auto server = cw::relay::DecodeServerFrame(input);
  if (server) {
    const cw::Bytes encoded = cw::relay::EncodeServerFrame(*server);
    auto again = cw::relay::DecodeServerFrame(encoded);
    CW_FUZZ_CHECK(again.has_value());
    CW_FUZZ_CHECK(*again == *server);
    CW_FUZZ_CHECK(cw::relay::EncodeServerFrame(*again) == encoded);
  }
  return 0;
}
