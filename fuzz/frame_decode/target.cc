// Fuzz target: the streaming FrameDecoder, which reads every byte a peer sends (Noise records with a 2-byte
// header, and the decrypted frame stream with a 4-byte header).
// Input: byte 0 picks the header width (even: 4, odd: 2) and seeds the chunk sizes; the rest is the stream.
// Asserts:
//   - fed in arbitrary chunks, the decoder yields exactly the frames and the error it yields when fed the
//     whole stream at once (chunking never changes the result);
//   - every frame is 1..max bytes, and re-encoding the frames gives back the prefix of the stream consumed;
//   - errors are kMalformed, and sticky.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/base/random.h"
#include "fuzz/fuzz_check.h"
#include "transport/frame.h"

namespace {

constexpr size_t kMax = 1000;  // small, so oversized lengths are common

struct Outcome {
  std::vector<cw::Bytes> frames;
  cw::Status error;
};

void Drain(cw::transport::FrameDecoder& d, Outcome* out) {
  for (;;) {
    auto f = d.Next();
    if (!f) {
      out->error = f.error();
      return;
    }
    if (!*f) return;
    out->frames.emplace_back((*f)->begin(), (*f)->end());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t header = (data[0] & 1) ? 2 : 4;
  const cw::ByteView stream(data + 1, size - 1);

  Outcome whole;
  {
    cw::transport::FrameDecoder d(kMax, header);
    cw::Status s = d.Append(stream);
    if (s.ok())
      Drain(d, &whole);
    else
      whole.error = s;
  }

  Outcome chunked;
  {
    cw::transport::FrameDecoder d(kMax, header);
    cw::SeededRandom rng(data[0]);
    size_t pos = 0;
    while (pos < stream.size() && chunked.error.ok()) {
      const size_t n = std::min<size_t>(stream.size() - pos, 1 + rng.Uniform(16));
      cw::Status s = d.Append(stream.subspan(pos, n));
      pos += n;
      if (!s.ok()) {
        chunked.error = s;
        break;
      }
      Drain(d, &chunked);
    }
    if (!chunked.error.ok()) {
      CW_FUZZ_CHECK(d.Append(cw::ByteView()).code() == chunked.error.code());  // sticky
      CW_FUZZ_CHECK(!d.Next().has_value());
    }
  }

  CW_FUZZ_CHECK(whole.frames == chunked.frames);
  CW_FUZZ_CHECK(whole.error.code() == chunked.error.code());
  CW_FUZZ_CONTRACT_CHECK(whole.error.ok() || whole.error.code() == cw::StatusCode::kMalformed, whole.error);

  cw::Bytes reencoded;
  for (const auto& f : whole.frames) {
    CW_FUZZ_CHECK(!f.empty() && f.size() <= kMax);
    CW_FUZZ_CHECK(cw::transport::AppendFrame(f, kMax, &reencoded, header).ok());
  }
  CW_FUZZ_CHECK(reencoded.size() <= stream.size());
  CW_FUZZ_CHECK(std::equal(reencoded.begin(), reencoded.end(), stream.begin()));
  return 0;
}
