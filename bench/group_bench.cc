// cw_group_bench: care-team group fan-out latency through a relay, every client online (issue 5, groups).
// Plain main, prints one table.
//
//   build/rel/bench/cw_group_bench [--members 3] [--messages 200] [--warmup 10] [--runs 3] [--size 64]
//
// A RelayServer (RocksDB store, synced deposits) listens on 127.0.0.1 in this process; an admin and
// --members members are runtime Clients in the background, each with its own sealed store and link. The
// admin creates a group and sends one text at a time with Client::SendGroupText: one GroupEncrypt, one
// outbox entry, one sealed envelope and deposit per member. The clock runs from the call to the moment the
// LAST member's on_message fired (the text decrypted and committed there); the next text goes once every
// member has the previous one. Reported: p50, p90, p99 and max per run, and the median p50/p99 over runs.
// Compare with cw_latency_bench (one 1:1 recipient) for what each extra member adds.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
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
  int members = 3;  // besides the admin
  int messages = 200;
  int warmup = 10;
  int runs = 3;
  size_t size = 64;
};

using bench::Die;
using bench::Must;
using bench::Percentiles;
using bench::Summarize;

// One run: a fresh relay and fresh clients; returns the fan-out latencies in microseconds.
std::vector<double> Run(const Args& args) {
  bench::TempDir dir("cw_group_bench");
  bench::LoopbackRelay relay(dir.Sub("relay"));
  const std::string address = relay.address();

  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;  // group texts received, over all members
  Clk::time_point arrived_at;
  const auto pass = AsBytes("group bench passphrase");
  runtime::ClientOptions admin_options;
  admin_options.keystore = storage::KeystoreOptions::MinimumCostForTesting();
  auto admin = Must(runtime::Client::Create(dir.Sub("admin"), "lead", pass, std::move(admin_options)), "admin");
  Must(admin->Register(address), "register admin");
  std::vector<std::unique_ptr<runtime::Client>> members;
  std::vector<std::string> names;
  for (int i = 0; i < args.members; ++i) {
    runtime::ClientOptions o;
    o.keystore = storage::KeystoreOptions::MinimumCostForTesting();
    o.callbacks.on_message = [&](const runtime::IncomingMessage& m) {
      if (m.group_id.empty()) return;
      const auto now = Clk::now();
      std::lock_guard<std::mutex> lock(mu);
      arrived_at = now;
      ++arrived;
      cv.notify_all();
    };
    names.push_back("member" + std::to_string(i));
    members.push_back(Must(runtime::Client::Create(dir.Sub(names.back()), names.back(), pass, std::move(o)), "member"));
    Must(members.back()->Register(address), "register member");
    Must(members.back()->AcceptInvite(Must(admin->CreateInvite(), "invite"), "hello"), "accept");
  }
  (void)Must(admin->Sync(), "admin sync");
  const std::string group = Must(admin->CreateGroup("bench", names), "create group").group_id;
  (void)Must(admin->Sync(), "admin sync");
  for (auto& m : members) (void)Must(m->Sync(), "member sync");
  Must(admin->StartBackground(), "admin background");
  for (auto& m : members) Must(m->StartBackground(), "member background");

  auto wait_for = [&](int n) {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return arrived >= n; })) {
      Die("wait", Status(StatusCode::kUnavailable, "a group message never arrived"));
    }
    return arrived_at;
  };
  const std::string text(args.size, 'x');
  std::vector<double> latencies;
  latencies.reserve(static_cast<size_t>(args.messages));
  for (int i = 0; i < args.warmup + args.messages; ++i) {
    const auto start = Clk::now();
    (void)Must(admin->SendGroupText(group, text), "send");
    const auto end = wait_for((i + 1) * args.members);
    if (i >= args.warmup) latencies.push_back(std::chrono::duration<double, std::micro>(end - start).count());
  }
  members.clear();
  admin.reset();
  return latencies;
}

Args Parse(int argc, char** argv) {
  Args a;
  CLI::App app{"Care-team group fan-out latency through a local relay"};
  app.add_option("--members", a.members, "members besides the admin")->check(CLI::Range(1, 64));
  app.add_option("--messages", a.messages, "timed messages per run")->check(CLI::PositiveNumber);
  app.add_option("--warmup", a.warmup, "untimed messages first")->check(CLI::NonNegativeNumber);
  app.add_option("--runs", a.runs, "runs on fresh stores")->check(CLI::PositiveNumber);
  app.add_option("--size", a.size, "text bytes")->check(CLI::Range(1, 60'000));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = Parse(argc, argv);
  std::printf("== Group fan-out latency through a local relay, every client online, one text in flight ==\n");
  std::printf("members=%d (+ admin) messages/run=%d warmup=%d runs=%d text=%zu B\n", args.members, args.messages,
              args.warmup, args.runs, args.size);
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
  std::printf("median over runs: p50 %.1f us, p99 %.1f us (until the last member has it)\n", p50s[p50s.size() / 2],
              p99s[p99s.size() / 2]);
  return 0;
}
