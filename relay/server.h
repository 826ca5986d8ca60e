// RelayServer: RelayService on a Transport. Wires the pieces together and adds what only a network server
// needs: deposits and acknowledgements taken in on the loop thread that wait for their sync without holding
// any thread (RelayService::TryHandleWithoutBlocking; many in flight at once is what lets them share an
// fsync), a worker pool for the other commands (they wait for their store write), per-address limits on
// connections and frames, pushes to connected owners, periodic purging of expired data and a stats log, and a
// graceful stop.
//
// Threads: the transport's loop thread runs its callbacks, takes in deposits, acknowledgements and
// attachment chunks (short in-memory locks, no waiting) and answers downloads whose bytes are in the page
// cache (never waiting for the disk); other command frames go to the worker pool. Answers (from a worker,
// or for those taken in from the store's committer once synced) and pushes are queued and handed to the loop
// thread in batches, one Post per batch. Start and Stop from a thread that is not the transport's loop
// thread.
#pragma once

#include <cstdint>
#include <memory>

#include "core/base/clock.h"
#include "relay/log.h"
#include "relay/relay_service.h"
#include "transport/transport.h"

namespace cw::relay {

struct ServerOptions {
  size_t max_connections = 20000;
  // "Per address" here means per transport::AddressGroup: an IPv4 address, or an IPv6 /64.
  size_t max_connections_per_address = 256;
  // Frames per address: a bucket of `frame_burst`, refilled at `frames_per_second`. A connection whose
  // address runs dry is closed (kResourceExhausted "frame rate limit"). The bucket outlives the address's
  // connections until it has refilled, so reconnecting buys no fresh burst.
  uint32_t frame_burst = 2000;
  uint32_t frames_per_second = 1000;
  // Noise handshakes under way at once, in all and per address (transport::ListenOptions): a connection past
  // either is closed at once, so silent connections cannot hold every handshake slot.
  size_t max_handshaking = transport::kDefaultMaxHandshaking;
  size_t max_handshaking_per_address = transport::kDefaultMaxHandshakingPerAddress;
  size_t max_in_flight_per_connection = 256;  // commands queued or running; more closes the connection
  size_t workers = 16;  // for commands other than deposits, acks and chunks, which never occupy one
  int64_t purge_interval_millis = 60'000;
  int64_t stats_log_interval_millis = 60'000;
};

// Every connection, handshaking or not, holds a file descriptor, and so do the store's files (RocksDB opens
// its table and log files as it goes) and attachments being read or written. A relay whose connections take
// the last descriptor cannot open a table file, and its store fails: RunRelay then reopens it, and every
// client loses its link. ReservedDescriptors is what connections must leave to the rest: a quarter of
// `open_file_limit` (RLIMIT_NOFILE's soft limit after raising it to the hard one), at most
// kReservedDescriptors; the store's open table files are to fit in it (RocksDbStoreOptions::max_open_files).
// FitToOpenFileLimit returns `options` with its connection caps (max_connections, max_handshaking and
// max_handshaking_per_address) lowered, if need be, so that all connections together leave that much.
inline constexpr uint64_t kReservedDescriptors = 1024;
uint64_t ReservedDescriptors(uint64_t open_file_limit);
ServerOptions FitToOpenFileLimit(ServerOptions options, uint64_t open_file_limit);

class RelayServer {
 public:
  // Listens on `listen` and starts serving. `transport`, `service`, `log` and `clock` must outlive the
  // server. kUnavailable / kInvalidArgument as Transport::Listen.
  static Result<std::unique_ptr<RelayServer>> Start(transport::Transport& transport, RelayService& service,
                                                    const transport::Endpoint& listen, ServerOptions options,
                                                    LogSink& log, const Clock& clock);
  virtual ~RelayServer() = default;

  // The bound address with this relay's key: hand `endpoint().ToString()` to clients.
  virtual const transport::Endpoint& endpoint() const = 0;
  // Stops accepting connections and taking in commands, waits until every command already taken in has
  // finished and been answered (so every deposit answered "stored" is synced, and its depositor heard so),
  // then closes every connection after what is queued on it is sent. Idempotent; the destructor calls it.
  virtual void Stop() = 0;
  virtual size_t connection_count() const = 0;
};

}  // namespace cw::relay
