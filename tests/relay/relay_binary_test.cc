// The cipherward-relay binary itself, started as an operator would, in a child process: under a low
// open-file limit it lowers its connection caps so that its connections cannot take the descriptors its
// store needs; killed with deposits in flight, it loses none it answered "stored".
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "relay/protocol.h"
#include "tests/relay/link_client.h"
#include "tests/relay/relay_test_util.h"
#include "transport/tcp_transport.h"

namespace cw::relay {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The relay binary in a child process with RLIMIT_NOFILE soft = hard = `open_files` (so it cannot raise it).
class RelayProcess {
 public:
  // `open_files` 0: the limits this process has. `extra`: more flags.
  RelayProcess(const std::string& dir, rlim_t open_files, std::vector<std::string> extra = {})
      : out_(dir + "/relay.out"), log_(dir + "/relay.log") {
    std::vector<std::string> args = {"cipherward-relay", "--data-dir",  dir + "/relay", "--listen",
                                     "127.0.0.1:0",      "--log-level", "info"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Everything the child needs is made before fork: after it, only async-signal-safe calls.
    const rlimit limit{open_files, open_files};
    std::error_code ec;
    std::filesystem::remove(out_, ec);  // a restart's address is not the previous one
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Dies with the test: a test that aborts (a failed ASSERT under ASan, a ctest timeout) leaves no relay.
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(125);
      const int out = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int err = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (out < 0 || err < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0 ||
          (open_files != 0 && ::setrlimit(RLIMIT_NOFILE, &limit) != 0)) {
        ::_exit(126);
      }
      ::execv(CW_RELAY_BINARY, argv.data());
      ::_exit(127);
    }
  }
  ~RelayProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    if (Wait() == -1) Kill();  // a stop that hangs fails the test's expectations, not the test run
  }
  // A crash: no graceful stop, nothing more written.
  void Kill() { ::cw::testing::KillAndReap(&pid_); }
  // Waits (at most 60 s) for the relay to exit: its exit code, or -1 if it did not (or was signalled).
  int Wait() {
    for (int i = 0; i < 6000 && pid_ > 0; ++i) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      if (r < 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

  // The line the relay printed, its address (a bounded wait: a safety net, not a timing assertion).
  std::string Printed() {
    for (int i = 0; i < 400; ++i) {
      const std::string out = ReadFile(out_);
      if (out.find('\n') != std::string::npos) return out.substr(0, out.find('\n'));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "";
  }
  std::optional<transport::Endpoint> Address() {
    auto e = transport::Endpoint::Parse(Printed());
    if (!e) return std::nullopt;
    return *e;
  }
  std::string Log() const { return ReadFile(log_); }

 private:
  std::string out_, log_;
  pid_t pid_ = -1;
};

// Many links to one relay from one transport, each counting whether it was closed.
class Links {
 public:
  explicit Links(uint64_t seed) {
    SeededRandom r(seed);
    transport_ = std::move(transport::TcpTransport::New(transport::StaticKeyPair::Generate(r)).value());
  }
  ~Links() { transport_->Shutdown().ok(); }

  // Connects one at a time: the relay's handshake caps are low here, and this measures the connection cap.
  void Connect(const transport::Endpoint& relay, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      auto c = testing::ConnectAndWait(
          *transport_, relay,
          [this](ByteView f) {
            std::lock_guard<std::mutex> lock(mu_);
            frames_.emplace_back(f.begin(), f.end());
            cv_.notify_all();
          },
          [this](Status) {
            std::lock_guard<std::mutex> lock(mu_);
            ++closed_;
            cv_.notify_all();
          });
      ASSERT_TRUE(c.has_value()) << "connection " << i << ": " << c.error().ToString();
      conns_.push_back(*c);
    }
  }
  // Waits (bounded) until `n` links were closed, then says how many were.
  size_t ClosedAfterWaitingFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return closed_ >= n; });
    return closed_;
  }
  // Sends `body` on link `i` and returns the first frame that comes back (bounded wait).
  std::optional<ServerFrame> Ask(size_t i, CommandBody body) {
    const Bytes f = EncodeCommand(Command{1, std::move(body)});
    transport::RunSync(*transport_, [&]() -> Status { return conns_[i]->Send(f); }).ok();
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return !frames_.empty(); })) return std::nullopt;
    auto d = DecodeServerFrame(frames_.front());
    frames_.clear();
    if (!d) return std::nullopt;
    return *d;
  }

 private:
  std::unique_ptr<transport::TcpTransport> transport_;
  std::vector<std::shared_ptr<transport::Connection>> conns_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Bytes> frames_;
  size_t closed_ = 0;
};

TEST(RelayBinary, FitsItsConnectionCapsToTheOpenFileLimitAndKeepsServing) {
  testing::TempDir dir;
  // 256 descriptors: a quarter (64) stays with the store and the rest, handshakes get 12 of the other 192,
  // and established links 180 (FitToOpenFileLimit). The default cap, 20000, would take them all.
  RelayProcess relay(dir.path(), 256);
  const auto address = relay.Address();
  ASSERT_TRUE(address.has_value()) << relay.Log();
  EXPECT_NE(
      relay.Log().find("event=connections_capped open_file_limit=256 max_connections=180 max_handshaking=12"),
      std::string::npos)
      << relay.Log();

  Links links(3);
  links.Connect(*address, 200);
  // Each handshake completes; the relay then closes every link past its cap.
  EXPECT_EQ(links.ClosedAfterWaitingFor(20), 20u);
  // The links it kept are served, and its store still has descriptors to work with.
  auto created = links.Ask(0, CreateMailbox{});
  ASSERT_TRUE(created.has_value());
  const auto* r = std::get_if<Response>(&*created);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->code, ResponseCode::kOk) << r->message;
}

// "The relay restarted mid-conversation loses nothing", with the restart a crash: the relay binary is killed
// (SIGKILL) with deposits in flight, four times, and restarted on the same data. Every deposit it answered
// "stored" must be in the mailbox afterwards, once; deposits in flight at the kill may or may not be (their
// senders were never told), and a depositor that sends them again finds each stored once.
TEST(RelayBinary, EveryDepositAnsweredStoredSurvivesTheRelayBeingKilled) {
  testing::TempDir dir;
  const std::vector<std::string> flags = {"--quota-messages", "100000"};
  MailboxId box{};
  DepositToken token{};
  std::set<uint32_t> answered;  // message numbers answered kOk
  uint32_t next = 0;
  auto deposit = [&](testing::LinkClient& link, uint32_t n) {
    link.Send(relay::Deposit{box, token, testing::Mid(n), Bytes(200, static_cast<uint8_t>(n))});
  };
  for (int crash = 0; crash < 4; ++crash) {
    RelayProcess relay(dir.path(), 0, flags);
    const auto address = relay.Address();
    ASSERT_TRUE(address.has_value()) << relay.Log();
    if (crash == 0) {
      testing::LinkClient owner(1, *address);  // the same link key (seed) owns the mailbox after restarts
      std::tie(box, token) = testing::MailboxWithToken(owner);
    }
    testing::LinkClient depositor(2 + crash, *address);
    ASSERT_TRUE(depositor.connected());
    // 32 in flight until 150 are answered; the k-th Send on a link carries request id k.
    std::map<uint32_t, uint32_t> number_of;  // request id -> message number
    uint32_t sent = 0;
    size_t in_flight = 0;
    for (size_t got = 0; got < 150;) {
      while (in_flight < 32) {
        number_of[++sent] = next;
        deposit(depositor, next++);
        ++in_flight;
      }
      const Response r = depositor.NextResponse();
      ASSERT_NE(r.request_id, 0u) << r.message;
      --in_flight;
      ++got;
      if (r.code == ResponseCode::kOk) answered.insert(number_of.at(r.request_id));
    }
    relay.Kill();  // 32 deposits in flight
  }

  RelayProcess relay(dir.path(), 0, flags);
  const auto address = relay.Address();
  ASSERT_TRUE(address.has_value()) << relay.Log();
  testing::LinkClient owner(1, *address);
  auto stored = [&] {
    std::map<uint32_t, size_t> count;  // message number -> copies
    uint64_t after = 0;
    for (bool more = true; more;) {
      owner.Send(relay::FetchMessages{box, after, kMaxFetchCount});
      const Response r = owner.NextResponse();
      EXPECT_EQ(r.code, ResponseCode::kOk) << r.message;
      if (r.code != ResponseCode::kOk) break;
      const auto& done = std::get<FetchDone>(r.body);
      after = done.last_seq;
      more = done.more;
      for (const ServerFrame& f : owner.other_) {
        const auto* d = std::get_if<Delivery>(&f);
        // Fetched copies only: the deposits sent again below are also pushed (request id 0) to the owner.
        if (d != nullptr && d->request_id != 0) {
          uint32_t n = 0;
          for (int i = 0; i < 4; ++i) n |= uint32_t(d->message_id[i]) << (8 * i);
          ++count[n];
        }
      }
      owner.other_.clear();
    }
    return count;
  };
  const auto after_crashes = stored();
  ASSERT_EQ(answered.size(), 4u * 150);  // every answer was kOk
  for (uint32_t n : answered)
    EXPECT_EQ(after_crashes.count(n), 1u) << "deposit " << n << " was answered stored";
  for (const auto& [n, copies] : after_crashes) EXPECT_EQ(copies, 1u) << "deposit " << n;

  // Every deposit sent again (answered or not, as a sender that never heard back would): each is there once.
  testing::LinkClient depositor(9, *address);
  for (uint32_t n = 0; n < next; ++n) {
    deposit(depositor, n);
    ASSERT_EQ(depositor.NextResponse().code, ResponseCode::kOk);
  }
  const auto after_retries = stored();
  EXPECT_EQ(after_retries.size(), next);
  for (const auto& [n, copies] : after_retries) EXPECT_EQ(copies, 1u) << "deposit " << n;
}

TEST(RelayBinary, PrintsTheAdvertisedAddressForClients) {
  testing::TempDir dir;
  {
    RelayProcess relay(dir.path(), 0, {"--advertise", "203.0.113.7:7443"});
    const auto shown = transport::Endpoint::Parse(relay.Printed());
    ASSERT_TRUE(shown.has_value()) << relay.Log();
    EXPECT_EQ(shown->host, "203.0.113.7");
    EXPECT_EQ(shown->port, 7443);
    EXPECT_TRUE(shown->static_key.has_value());
  }
  {
    // A name is refused: clients dial IP addresses only, and could not use it.
    RelayProcess relay(dir.path(), 0, {"--advertise", "relay.example.org"});
    EXPECT_EQ(relay.Wait(), 1);
    EXPECT_NE(relay.Log().find("--advertise wants the IP address"), std::string::npos) << relay.Log();
  }
  // An address alone keeps the port the relay listens on (the one its listening line names).
  RelayProcess relay(dir.path(), 0, {"--advertise", "[2001:db8::7]"});
  const auto shown = transport::Endpoint::Parse(relay.Printed());
  ASSERT_TRUE(shown.has_value()) << relay.Log();
  EXPECT_EQ(shown->host, "2001:db8::7");
  EXPECT_NE(relay.Log().find(":" + std::to_string(shown->port) + "\n"), std::string::npos) << relay.Log();
}

TEST(RelayBinary, TheBundleFetchLimitIsTheOperatorsToSet) {
  testing::TempDir dir;
  RelayProcess relay(dir.path(), 0, {"--bundle-fetch-burst", "2"});
  const auto address = relay.Address();
  ASSERT_TRUE(address.has_value()) << relay.Log();
  testing::LinkClient client(5, *address);
  ASSERT_TRUE(client.connected());
  // Every fetch takes a token, found or not (probing addresses is what the limit is for).
  const MailboxId unknown = testing::Filled<kMailboxIdSize>(0x42);
  for (int i = 0; i < 2; ++i) {
    client.Send(FetchBundle{unknown});
    EXPECT_EQ(client.NextResponse().code, ResponseCode::kNotFound) << i;
  }
  client.Send(FetchBundle{unknown});
  EXPECT_EQ(client.NextResponse().code, ResponseCode::kRateLimited);  // the default (6) would not be
}

}  // namespace
}  // namespace cw::relay
