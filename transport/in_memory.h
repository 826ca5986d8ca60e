// InMemoryNetwork: a simulated network for deterministic tests. Each node is a Transport (same interface as
// TcpTransport) named by a host string; endpoints are "name:port". Everything is driven by the test: a
// FakeClock that the network advances, and a SeededRandom that decides which frames are dropped, delayed,
// reordered or duplicated, so a seed replays a run exactly.
//
// What is simulated and what is not:
//   - No bytes are encrypted: the in-memory link stands for an already-authenticated Noise link. Connect
//     still checks the key pinned in the endpoint against the listening node's static key (a mismatch gives
//     on_connected(kPermissionDenied), as TcpTransport does), and remote_static_key() is the peer node's key.
//   - Frame size limits, send-queue accounting, backpressure and on_closed reasons behave as in TcpTransport.
//     A frame is "on the wire" from Send until its delivery time; queued_bytes() counts it until then.
//   - Faults apply per frame: with faults on, frames may arrive late, out of order, twice, or never. With
//     default Faults the network is perfect (in order, exactly once, after latency_millis).
//   - A connection attempt is lost with drop_probability too; the initiator then hears kUnavailable
//     "handshake timed out" after handshake_timeout_millis of fake time.
//
// Thread rules: single-threaded. The thread that created the network is every node's loop thread; all calls
// (including Advance and RunUntilIdle) on it. Post is also safe from other threads; the work runs at the next
// RunUntilIdle or Advance.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/base/clock.h"
#include "transport/transport.h"

namespace cw::transport {

struct Faults {
  double drop_probability = 0;       // each frame (and each connection attempt) lost with this probability
  double duplicate_probability = 0;  // each delivered frame delivered a second time with this probability
  int64_t latency_millis = 0;        // every delivery takes at least this long
  int64_t jitter_millis = 0;         // plus a uniform extra in [0, jitter]; frames can overtake each other
};

struct NetworkStats {
  uint64_t frames_sent = 0;
  uint64_t frames_delivered = 0;
  uint64_t frames_dropped = 0;
  uint64_t frames_duplicated = 0;
};

class InMemoryNetwork {
 public:
  // `clock` must outlive the network; the network is the only one that should advance it.
  InMemoryNetwork(uint64_t seed, FakeClock& clock, Faults faults = {});
  ~InMemoryNetwork();
  InMemoryNetwork(const InMemoryNetwork&) = delete;
  InMemoryNetwork& operator=(const InMemoryNetwork&) = delete;

  // Adds a node named `name` (unique; kAlreadyExists otherwise). The network owns it; the pointer is valid
  // until RemoveNode or the network's destruction.
  Result<Transport*> AddNode(const std::string& name, StaticKeyPair key, TransportOptions options = {});
  // Closes the node's listeners and connections (peers see kUnavailable), drops its timers, and removes it.
  void RemoveNode(const std::string& name);
  // Closes every connection of the node with `reason` on its side and kUnavailable on the peers' side;
  // listeners stay. Models a link failure or a process restart of the peer.
  void BreakConnections(const std::string& name, Status reason);

  void set_faults(Faults faults);
  const Faults& faults() const;
  const NetworkStats& stats() const;

  // Runs posted work, due deliveries and due timers until nothing is due at the current fake time.
  void RunUntilIdle();
  // Moves the clock forward by `millis` in steps, stopping at each due event in time order and running
  // until idle there. REQUIRES: millis >= 0.
  void Advance(int64_t millis);
  // Fake time of the next scheduled event, if any (for "run until everything settles" loops).
  bool NextEventTime(int64_t* when) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cw::transport
