#include "relay/run.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

namespace cw::relay {

Status RunRelay(transport::Transport& transport, const transport::Endpoint& listen, const RunOptions& options,
                const RunHooks& hooks, LogSink& log, const Clock& clock, Random& random) {
  std::unique_ptr<MailboxStore> store;
  // Where the relay listened first: a restart listens on the same port even when `listen` asked for any.
  // Unset until then, and until then a failure to open or to listen is the caller's.
  std::optional<transport::Endpoint> bound;
  int64_t backoff = options.reopen_first_backoff_millis;
  // Waits out the current backoff and doubles the next one; true if the relay is to stop meanwhile.
  auto back_off = [&] {
    const int64_t wait = backoff;
    backoff = std::min(backoff * 2, options.reopen_max_backoff_millis);
    return hooks.wait_for_stop(wait);
  };

  for (;;) {
    if (!store) {
      auto opened = hooks.open_store();
      if (!opened) {
        if (!bound) return opened.error();
        log.Log(LogLevel::kWarn, "store_reopen_failed",
                {{"error", opened.error().ToString()}, {"retry_in_ms", std::to_string(backoff)}});
        if (back_off()) return Status::Ok();
        continue;
      }
      store = std::move(*opened);
      if (bound) log.Log(LogLevel::kInfo, "store_reopened", {});
    }
    Status failure;
    {
      RelayService service(*store, clock, random, options.relay, &log);
      auto server =
          RelayServer::Start(transport, service, bound ? *bound : listen, options.server, log, clock);
      if (!server) {
        if (!bound) return server.error();
        // The port was taken while the relay was down: keep the store and try again.
        log.Log(LogLevel::kWarn, "listen_failed",
                {{"error", server.error().ToString()}, {"retry_in_ms", std::to_string(backoff)}});
        if (back_off()) return Status::Ok();
        continue;
      }
      bound = (*server)->endpoint();
      if (hooks.listening) hooks.listening(*bound);
      bool stop = false;
      int64_t healthy_millis = 0;
      while (!(stop = hooks.wait_for_stop(options.health_check_millis))) {
        failure = store->Health();
        if (!failure.ok()) break;
        // Served long enough since the last failure: the next one is a new incident, retried at once.
        healthy_millis += options.health_check_millis;
        if (healthy_millis >= options.reopen_max_backoff_millis)
          backoff = options.reopen_first_backoff_millis;
      }
      (*server)->Stop();
      if (stop) {
        server->reset();
        store.reset();  // the committer finishes every recorded write before the database closes
        return Status::Ok();
      }
    }
    // The error names the store's files and the system's reason (no key, token or envelope is in it).
    log.Log(LogLevel::kError, "store_failed",
            {{"error", failure.ToString()}, {"reopen_in_ms", std::to_string(backoff)}});
    store.reset();
    if (back_off()) return Status::Ok();
  }
}

}  // namespace cw::relay
