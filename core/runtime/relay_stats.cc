#include "core/runtime/relay_stats.h"

#include <chrono>
#include <future>

#include "transport/tcp_transport.h"

namespace cw::runtime {

Result<relay::RelayStatsView> FetchRelayStats(const std::string& relay_address,
                                              transport::StaticKeyPair operator_key, int64_t timeout_ms) {
  CW_ASSIGN_OR_RETURN(auto ep, transport::Endpoint::Parse(relay_address));
  CW_ASSIGN_OR_RETURN(auto t, transport::TcpTransport::New(std::move(operator_key)));
  auto promise = std::make_shared<std::promise<Result<relay::RelayStatsView>>>();
  auto fired = std::make_shared<bool>(false);  // touched on the loop thread only
  auto future = promise->get_future();
  auto finish = [promise, fired](Result<relay::RelayStatsView> r) {
    if (*fired) return;
    *fired = true;
    promise->set_value(std::move(r));
  };
  Status posted = t->Post([&t, ep, finish]() {
    transport::ConnectionCallbacks cbs;
    cbs.on_frame = [finish](ByteView frame) {
      auto f = relay::DecodeServerFrame(frame);
      if (!f) return finish(Error(f.error()));
      const auto* r = std::get_if<relay::Response>(&*f);
      if (!r) return;
      if (r->code != relay::ResponseCode::kOk) {
        return finish(Error(StatusCode::kPermissionDenied,
                            "relay refused stats: " + std::string(relay::ResponseCodeName(r->code))));
      }
      const auto* stats = std::get_if<relay::RelayStatsView>(&r->body);
      if (!stats) return finish(Error(StatusCode::kMalformed, "unexpected stats body"));
      finish(*stats);
    };
    cbs.on_closed = [finish](Status why) { finish(Error(StatusCode::kUnavailable, "relay link closed: " + why.message())); };
    Status s = t->Connect(ep, std::move(cbs), [finish](Result<std::shared_ptr<transport::Connection>> c) {
      if (!c) return finish(Error(c.error()));
      Status sent = (*c)->Send(relay::EncodeCommand(relay::Command{1, relay::GetStats{}}));
      if (!sent.ok()) finish(Error(sent));
    });
    if (!s.ok()) finish(Error(s));
  });
  if (!posted.ok()) return Error(posted);
  Result<relay::RelayStatsView> out = Error(StatusCode::kUnavailable, "timed out waiting for the relay");
  if (future.wait_for(std::chrono::milliseconds(timeout_ms)) == std::future_status::ready) out = future.get();
  (void)t->Shutdown();
  return out;
}

}  // namespace cw::runtime
