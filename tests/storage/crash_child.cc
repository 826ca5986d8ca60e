// cw_crash_child: the receiving device of the crash test (crash_test.cc), run as a child process and killed
// with SIGKILL at random points.
//
//   cw_crash_child DIR START [group]
//
// First start (no keystore in DIR): creates the keystore, the sealed store and the engine and prints
// "BUNDLE <hex of the encoded pre-key bundle>". Later starts unlock and open them and print "READY".
// START numbers the start, so each gets its own random stream. `group` opens the store under group commit
// (SealedStoreOptions::sync = false, the runtime's policy: write-behind overlay, one sync for many commits);
// without it every commit is synced. Then, per line on stdin:
//   MSG <n> <type> <hex body>  decrypt message n from "patient.bob" with relay id "relay-<n>": the engine's
//                              hook stages the transcript row and the dedup key into the session's batch,
//                              which commits; then prints "ACK <n>" ("ACK <n> DUP" when the relay id was
//                              already received), under group commit only after the next SYNC, as the
//                              runtime acknowledges to the relay only what is durable. "TORN <n>" if the
//                              ratchet knows the message but the dedup key is missing; "ERR <n> <status>" for
//                              any other failure.
//   SYNC                       group commit: syncs the store (SealedStore::SyncNow), then prints the ACKs it
//                              held back. Nothing without group commit.
//   CHECK                      prints "ROW <sequence> <body>" for each transcript row of the conversation,
//                              "DEDUP <count of dedup keys>", then "END".
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/session/engine.h"
#include "core/wire/bundle.h"
#include "storage/keystore.h"
#include "storage/sealed_store.h"
#include "storage/transcript.h"

namespace {

using namespace cw;

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::printf("FATAL %s %s\n", what.c_str(), s.ToString().c_str());
  std::fflush(stdout);
  std::exit(2);
}

template <typename T>
T Take(const std::string& what, Result<T> r) {
  if (!r) Die(what, r.error());
  return std::move(*r);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) return 1;
  const std::string dir = argv[1];
  const uint64_t start = std::strtoull(argv[2], nullptr, 10);
  const bool group = argc == 4 && std::string(argv[3]) == "group";
  const std::string passphrase = "crash test passphrase";
  const std::string ks_path = dir + "/keystore";
  const bool fresh = ::access(ks_path.c_str(), F_OK) != 0;

  storage::KeystoreOptions ko = storage::KeystoreOptions::MinimumCostForTesting();
  std::unique_ptr<storage::Keystore> keystore;
  if (fresh) {
    keystore = Take("create keystore", storage::Keystore::Create(ks_path, AsBytes(passphrase), ko));
  } else {
    keystore = Take("open keystore", storage::Keystore::Open(ks_path, ko));
    Status s = keystore->Unlock(AsBytes(passphrase));
    if (!s.ok()) Die("unlock", s);
  }
  storage::SealedStoreOptions so;
  so.sync = !group;
  auto store = Take("open store", storage::SealedStore::Open(dir + "/db", keystore.get(), so));
  SeededRandom random(77'000 + start);
  session::EngineOptions eo;
  eo.random = &random;
  eo.one_time_pre_key_batch = 5;
  eo.one_time_pre_key_refill_below = 2;
  auto engine = Take("open engine", session::Engine::Open(store.get(), "dr.alice", eo));
  storage::TranscriptOptions to;
  to.random = &random;
  to.local_name = "dr.alice";
  auto transcripts = Take("transcripts", storage::Transcripts::New(store.get(), to));

  if (fresh) {
    auto bundle = Take("bundle", engine->MakeBundle(true));
    std::printf("BUNDLE %s\n", ToHex(wire::EncodeBundle(bundle)).c_str());
  } else {
    std::printf("READY\n");
  }
  std::fflush(stdout);

  const session::Address bob{"patient.bob", 1};
  const std::string conversation = storage::Transcripts::DirectConversationId(bob.name);
  std::vector<std::string> held;  // group commit: ACK lines waiting for the next sync
  auto ack = [&](uint64_t n, bool dup) {
    std::string a = "ACK " + std::to_string(n) + (dup ? " DUP" : "");
    if (group) {
      held.push_back(std::move(a));
    } else {
      std::printf("%s\n", a.c_str());
    }
  };
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "MSG") {
      uint64_t n = 0;
      int type = 0;
      std::string hex;
      in >> n >> type >> hex;
      std::string relay_id = "relay-";
      relay_id.append(std::to_string(n));
      session::Ciphertext ct;
      ct.type = static_cast<session::MessageType>(type);
      if (!FromHex(hex, &ct.body)) {
        std::printf("ERR %llu bad hex\n", static_cast<unsigned long long>(n));
      } else if (Take("dedup", transcripts->IsDuplicate(relay_id))) {
        ack(n, /*dup=*/true);
      } else {
        auto r = engine->Decrypt(bob, ct, [&](const session::Received& rec, session::WriteBatch* b) {
          return transcripts->StageIncoming(rec, relay_id, b);
        });
        if (r) {
          ack(n, /*dup=*/false);
        } else if (r.error().code() == StatusCode::kDuplicate) {
          std::printf("TORN %llu\n", static_cast<unsigned long long>(n));
        } else {
          std::printf("ERR %llu %s\n", static_cast<unsigned long long>(n), r.error().ToString().c_str());
        }
      }
    } else if (cmd == "SYNC") {
      if (Status s = store->SyncNow(); !s.ok()) Die("sync", s);
      for (const auto& a : held) std::printf("%s\n", a.c_str());
      held.clear();
    } else if (cmd == "CHECK") {
      auto rows = Take("rows", transcripts->All(conversation));
      for (const auto& m : rows) {
        std::printf("ROW %llu %.*s\n", static_cast<unsigned long long>(m.sequence),
                    static_cast<int>(m.body.size()), reinterpret_cast<const char*>(m.body.reveal().data()));
      }
      auto dedup = Take("dedup keys", store->ListKeys(session::Table::kInboundDedup, ""));
      std::printf("DEDUP %zu\nEND\n", dedup.size());
    }
    std::fflush(stdout);
  }
  return 0;
}
