#include "core/session/fast_curve.h"

#include <dlfcn.h>
#include <sodium.h>

#include <atomic>

// libsignal-protocol-c's curve25519-donna takes about 185 us per scalar multiplication on this machine,
// libsodium's 43 (2000 calls each, same process), and a ratchet step does three.
// The library calls it only through the PLT, so defining it here, exported from every binary that links the
// engine (cw_session's link options, core/capi/cipherward.map), binds all of libsignal's calls to this one.
//
// The two are not the same function at every input: libsignal's donna does not clamp the scalar (the
// library clamps private keys when it makes them), while libsodium always clamps, and refuses a result of
// all zeros (a low-order point). So libsodium answers only for a clamped scalar and a result it accepts;
// everything else goes to the library's own donna, found behind this definition (RTLD_NEXT). Outputs are
// therefore the library's, bit for bit. The test checks that on known answers, random and low-order inputs.
//
// The fuzz build links a static libsignal-protocol-c whose donna cannot be interposed (nor needs to be).
#ifndef CW_SIGNAL_STATIC

namespace {

std::atomic<uint64_t> g_fast_calls{0};

using DonnaFn = int (*)(uint8_t*, const uint8_t*, const uint8_t*);

DonnaFn LibraryDonna() {
  static const DonnaFn next = reinterpret_cast<DonnaFn>(dlsym(RTLD_NEXT, "curve25519_donna"));
  return next;
}

// The form libsignal gives its private keys (curve_generate_private_key): low three bits clear, bit 255
// clear, bit 254 set. Branching on it reveals only whether a key has that form, which all of them do.
bool Clamped(const uint8_t* scalar) { return (scalar[0] & 7) == 0 && (scalar[31] & 0xc0) == 0x40; }

}  // namespace

extern "C" __attribute__((visibility("default"))) int curve25519_donna(uint8_t* mypublic, const uint8_t* secret,
                                                                       const uint8_t* basepoint) {
  if (Clamped(secret) && crypto_scalarmult_curve25519(mypublic, secret, basepoint) == 0) {
    g_fast_calls.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  const DonnaFn library = LibraryDonna();
  // Not found would mean no libsignal in the process; libsignal treats a nonzero result as a bad key.
  if (library == nullptr) return -1;
  return library(mypublic, secret, basepoint);
}

#endif  // CW_SIGNAL_STATIC

namespace cw::session {

uint64_t FastCurveCallsForTesting() {
#ifndef CW_SIGNAL_STATIC
  return g_fast_calls.load(std::memory_order_relaxed);
#else
  return 0;
#endif
}

}  // namespace cw::session
