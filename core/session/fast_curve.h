// X25519 for libsignal-protocol-c on libsodium (defined in core/session/provider.cc).
//
// libsignal-protocol-c does every X25519 (key generation, X3DH, each Double-Ratchet step) in its bundled
// curve25519-donna, through the PLT. Every binary that links the engine exports our curve25519_donna, which
// computes the same function with libsodium's constant-time implementation when it can and hands anything
// else to the library's own, so every result is bit-identical (tests/session/fast_curve_test.cc).
#pragma once

#include <cstdint>

namespace cw::session {

// How many curve25519_donna calls libsodium answered in this process. For tests: proof that libsignal's
// own calls reach the definition in fast_curve.cc. Thread rules: safe from any thread.
uint64_t FastCurveCallsForTesting();

}  // namespace cw::session
