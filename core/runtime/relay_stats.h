// FetchRelayStats: one stats command to a relay, over a link proven with `operator_key` (the relay must list
// its public half with --stats-key). For operators and the demo; a Client never needs it.
// Thread rules: blocking; call from any thread that is not a transport loop thread.
#pragma once

#include <cstdint>
#include <string>

#include "core/base/status.h"
#include "relay/protocol.h"
#include "transport/transport.h"

namespace cw::runtime {

Result<relay::RelayStatsView> FetchRelayStats(const std::string& relay_address,
                                              transport::StaticKeyPair operator_key, int64_t timeout_ms = 10'000);

}  // namespace cw::runtime
