// RunRelay: what cipherward-relay does between reading its flags and exiting, in a library so tests drive it.
//
// It opens the store, serves on the listen address, and keeps serving across a failed store write. After
// one, the store refuses every change (MailboxStore::Health), and a relay left like that answers "retry
// later" to everyone until somebody notices and restarts it. So the relay stops serving, closes the store,
// reopens it from what is durable (retrying with backoff while that fails, as it does while the disk is
// still full), and serves again on the same address, with the same key. Clients see their link drop and
// reconnect. Nothing acknowledged is lost, since every "stored" answer waited for its sync, and a sender
// whose deposit failed sends it again under the same message id.
//
// Threads: RunRelay runs on the caller's thread, which it blocks until `wait_for_stop` says to stop; the
// transport's loop thread must not be that thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "relay/log.h"
#include "relay/mailbox_store.h"
#include "relay/relay_service.h"
#include "relay/server.h"
#include "transport/transport.h"

namespace cw::relay {

struct RunOptions {
  RelayOptions relay;
  ServerOptions server;
  int64_t health_check_millis = 1000;  // how often the store's health is looked at
  // Between attempts to reopen a failed store: doubling from the first to the last.
  int64_t reopen_first_backoff_millis = 1000;
  int64_t reopen_max_backoff_millis = 30'000;
};

struct RunHooks {
  // Opens (or reopens) the store.
  std::function<Result<std::unique_ptr<MailboxStore>>()> open_store;
  // Waits up to `millis` and says whether the relay is to stop (the binary: a SIGINT or SIGTERM).
  std::function<bool(int64_t millis)> wait_for_stop;
  // Told the bound address, with the relay's key, each time the relay starts listening. Optional.
  std::function<void(const transport::Endpoint&)> listening;
};

// Serves until `wait_for_stop` says to stop, then stops gracefully (every deposit taken in is synced and
// answered) and returns Ok. The first opening of the store and the first listen are not retried: their
// error comes back (a misconfiguration the operator must see). Every reopening after a failure is retried.
Status RunRelay(transport::Transport& transport, const transport::Endpoint& listen, const RunOptions& options,
                const RunHooks& hooks, LogSink& log, const Clock& clock, Random& random);

}  // namespace cw::relay
