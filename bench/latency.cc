// cw_latency_bench: sender-to-recipient latency through a relay with both clients online (issue 5,
// Benchmarks). Plain main, prints one table.
//
//   build/rel/bench/cw_latency_bench [--messages 400] [--warmup 20] [--runs 3] [--size 64] [--no-receipts]
//                                    [--direct]
//
// A RelayServer (RocksDB store, deposits answered after their fsync, as the cipherward-relay binary runs it)
// listens on 127.0.0.1 in this process; a clinician and a patient are two runtime Clients, each with its own
// sealed store, TcpTransport (loop thread) and Noise link to the relay, both in the background (pushed
// messages). The patient sends one text at a time; the clock runs from the call to Client::SendText to the
// clinician's on_message callback, which the runtime calls only after the message is decrypted and its
// transcript row, dedup key and session state are committed. With delivery receipts on (the default), the
// clinician answers each message with a receipt that travels the same way back, so the next message shares
// the patient's device with it. The next message goes once the previous one
// arrived, so this is latency with one message in flight. Reported: p50, p90, p99 and max over --messages
// messages after --warmup, for each of --runs runs on fresh stores; and the median p50/p99 over runs.
//
// What one message costs on its way: the sender's encrypt and sealed commit, the sealed-sender envelope
// (crypto_box_seal), a Noise frame to the relay, the relay's synced deposit, a push to the clinician's
// link, crypto_box_seal_open, the decrypt and the recipient's sealed commit.
//
// --direct: both clients also listen on 127.0.0.1 (ClientOptions::direct_listen) and the clock starts once
// each has a direct P2P link to the other (core/runtime/direct_links.h): the relay's deposit, fsync and push
// are replaced by one Noise frame straight to the clinician; the sender's commit is still synced before the
// message leaves, and the ack still waits for the recipient's. The run fails unless every measured message
// went directly.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/loopback.h"
#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/runtime/client.h"

namespace {

using namespace cw;
using Clk = std::chrono::steady_clock;

struct Args {
  int messages = 400;
  int warmup = 20;
  int runs = 3;
  size_t size = 64;
  bool receipts = true;  // the clinician sends delivery receipts (the runtime's default)
  bool direct = false;   // both clients listen: messages go over direct P2P links
};

bool IsDirect(runtime::Client& c, const std::string& contact) {
  auto list = c.Contacts();
  if (!list) return false;
  for (const auto& ci : *list) {
    if (ci.name == contact) return ci.direct;
  }
  return false;
}

using bench::Die;
using bench::Must;
using bench::Percentiles;
using bench::Summarize;

// One run: a fresh relay and two fresh clients; returns the latencies in microseconds.
std::vector<double> Run(const Args& args) {
  bench::TempDir dir("cw_latency_bench");
  bench::LoopbackRelay relay(dir.Sub("relay"));
  const std::string address = relay.address();

  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  Clk::time_point arrived_at;
  runtime::ClientOptions clinician_options;
  clinician_options.keystore = storage::KeystoreOptions::MinimumCostForTesting();
  clinician_options.send_delivery_receipts = args.receipts;
  clinician_options.callbacks.on_message = [&](const runtime::IncomingMessage&) {
    const auto now = Clk::now();
    std::lock_guard<std::mutex> lock(mu);
    arrived_at = now;
    ++arrived;
    cv.notify_all();
  };
  runtime::ClientOptions patient_options;
  patient_options.keystore = storage::KeystoreOptions::MinimumCostForTesting();
  if (args.direct) {
    clinician_options.direct_listen = "127.0.0.1:0";
    patient_options.direct_listen = "127.0.0.1:0";
  }
  const auto pass = AsBytes("latency bench passphrase");
  auto clinician = Must(runtime::Client::Create(dir.Sub("clinician"), "dr.lee", pass, std::move(clinician_options)),
                        "clinician");
  auto patient = Must(runtime::Client::Create(dir.Sub("patient"), "pat", pass, std::move(patient_options)), "patient");
  Must(clinician->Register(address), "register clinician");
  Must(patient->Register(address), "register patient");
  const std::string code = Must(clinician->CreateInvite(), "invite");
  Must(patient->AcceptInvite(code, "hello"), "accept");
  Must(clinician->StartBackground(), "clinician background");
  Must(patient->StartBackground(), "patient background");

  auto wait_for = [&](int n) {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return arrived >= n; })) {
      Die("wait", Status(StatusCode::kUnavailable, "a message never arrived"));
    }
    return arrived_at;
  };
  wait_for(1);  // the invitation's first message
  if (args.direct) {
    // The announcements travel through the relay first; then each side links to the other.
    const auto deadline = Clk::now() + std::chrono::seconds(30);
    while (!IsDirect(*patient, "dr.lee") || !IsDirect(*clinician, "pat")) {
      if (Clk::now() > deadline) Die("direct", Status(StatusCode::kUnavailable, "no direct link came up"));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  const uint64_t direct_before = patient->GetDirectStats().value_or(runtime::DirectStats{}).delivered;

  const std::string text(args.size, 'x');
  std::vector<double> latencies;
  latencies.reserve(static_cast<size_t>(args.messages));
  for (int i = 0; i < args.warmup + args.messages; ++i) {
    const auto start = Clk::now();
    Must(patient->SendText("dr.lee", text), "send");
    const auto end = wait_for(2 + i);
    if (i >= args.warmup) latencies.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  if (args.direct) {
    // The last ack follows the clinician's durable commit, after on_message: wait for the outbox to drain.
    const auto deadline = Clk::now() + std::chrono::seconds(30);
    while (patient->PendingOutboxCount().value_or(1) != 0 && Clk::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const uint64_t direct = patient->GetDirectStats().value_or(runtime::DirectStats{}).delivered - direct_before;
    if (direct < static_cast<uint64_t>(args.warmup + args.messages)) {
      Die("direct", Status(StatusCode::kInternal, "only " + std::to_string(direct) + " of " +
                                                      std::to_string(args.warmup + args.messages) +
                                                      " messages went directly"));
    }
  }
  patient.reset();
  clinician.reset();
  return latencies;
}

Args Parse(int argc, char** argv) {
  Args a;
  CLI::App app{"Sender-to-recipient latency through a local relay (or a direct link)"};
  app.add_option("--messages", a.messages, "timed messages per run")->check(CLI::PositiveNumber);
  app.add_option("--warmup", a.warmup, "untimed messages first")->check(CLI::NonNegativeNumber);
  app.add_option("--runs", a.runs, "runs on fresh stores")->check(CLI::PositiveNumber);
  app.add_option("--size", a.size, "text bytes")->check(CLI::Range(1, 60'000));
  bool no_receipts = false;
  app.add_flag("--no-receipts", no_receipts, "the clinician sends no delivery receipts");
  app.add_flag("--direct", a.direct, "both clients listen: messages go over a direct P2P link");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  a.receipts = !no_receipts;
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  std::printf("== Sender-to-recipient latency %s, both clients online, one in flight ==\n",
              args.direct ? "over a direct P2P link (relay idle)" : "through a local relay");
  std::printf("messages/run=%d warmup=%d runs=%d text=%zu B delivery receipts=%s\n", args.messages, args.warmup,
              args.runs, args.size, args.receipts ? "on" : "off");
  std::printf("%-5s %10s %10s %10s %10s\n", "run", "p50 us", "p90 us", "p99 us", "max us");
  std::vector<double> p50s, p99s;
  for (int r = 0; r < args.runs; ++r) {
    const Percentiles p = Summarize(Run(args));
    std::printf("%-5d %10.1f %10.1f %10.1f %10.1f\n", r + 1, p.p50, p.p90, p.p99, p.max);
    p50s.push_back(p.p50);
    p99s.push_back(p.p99);
  }
  std::sort(p50s.begin(), p50s.end());
  std::sort(p99s.begin(), p99s.end());
  std::printf("median over runs: p50 %.1f us, p99 %.1f us\n", p50s[p50s.size() / 2], p99s[p99s.size() / 2]);
  return 0;
}
