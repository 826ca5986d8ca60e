// TcpTransport: the Transport over TCP on libuv, with a Noise_XK_25519_ChaChaPoly_BLAKE2b handshake on every
// connection and length-prefixed frames inside the encrypted stream (wire format in transport/frame.h).
//
// It owns one event loop and the thread that runs it (the "loop thread" of transport/transport.h). Each
// connection has a send queue with the high/low-water backpressure of TransportOptions, a handshake timeout
// measured on the injected Clock, and a graceful close (queued frames flushed, TCP shutdown, handles freed in
// their close callbacks). The first New() sets SIGPIPE to ignored if it still has its default action (a peer
// that hangs up must not kill the process; libuv leaves this to the application). Thread rules: as Transport;
// New and Shutdown from any thread except the loop thread.
#pragma once

#include <memory>
#include <string>

#include "core/base/clock.h"
#include "core/base/status.h"
#include "transport/transport.h"

namespace cw::transport {

class TcpTransport : public Transport {
 public:
  // Creates the loop and starts its thread. `clock` must outlive the transport. kInternal if libuv fails,
  // kInvalidArgument for inconsistent options (low water >= high water, max_frame_size 0 or over 16 MiB).
  static Result<std::unique_ptr<TcpTransport>> New(StaticKeyPair local_static, TransportOptions options = {},
                                                   const Clock& clock = SystemClock::Default());

  // Closes every listener and connection (their on_closed gets kUnavailable "transport shutting down";
  // pending on_connected gets kUnavailable), drops pending timers and posted work, waits for every handle's
  // close callback, stops the loop thread and closes the loop. Ok only if the loop closed cleanly (no handle
  // left open). Idempotent; the destructor calls it. REQUIRES: not on the loop thread.
  virtual Status Shutdown() = 0;
};

// Whether a TcpTransport can connect to `host`: an IP literal, or localhost (it resolves no other names).
// kInvalidArgument otherwise. For what a server tells its clients to dial.
Status CheckDialableHost(const std::string& host);

}  // namespace cw::transport
