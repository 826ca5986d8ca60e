#include "bench/cw_fixture.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "bench/bench_util.h"

namespace cw::bench {
namespace {

using session::Engine;
using session::EngineOptions;
using session::MessageType;
using session::Received;

std::unique_ptr<Engine> OpenEngine(session::InMemoryStore* store, const std::string& name, uint32_t batch) {
  EngineOptions options;  // SystemClock and SystemRandom
  options.one_time_pre_key_batch = batch;
  options.one_time_pre_key_refill_below = std::min<uint32_t>(options.one_time_pre_key_refill_below, batch);
  return Must(Engine::Open(store, name, std::move(options)), "Engine::Open");
}

void CheckMessage(const Received& received, ByteView plaintext, Received::Kind kind) {
  const auto body = received.body.reveal();
  if (received.kind != kind || !std::equal(body.begin(), body.end(), plaintext.begin(), plaintext.end())) {
    Fail("Decrypt", "the plaintext did not round-trip");
  }
}

}  // namespace

CwPair::CwPair(uint32_t one_time_pre_key_batch)
    : alice_(OpenEngine(&alice_store_, alice_address_.name, one_time_pre_key_batch)),
      bob_(OpenEngine(&bob_store_, bob_address_.name, one_time_pre_key_batch)) {}

CwPair::~CwPair() = default;

void CwPair::Establish() {
  const Bytes hello = MakePlaintext(32);
  Must(alice_->ProcessBundle(bob_address_, FreshBobBundle()), "ProcessBundle");
  Send(Direction::kAliceToBob, hello);
  Send(Direction::kBobToAlice, hello);
  Send(Direction::kAliceToBob, hello);
}

size_t CwPair::Send(Direction direction, ByteView plaintext) {
  const bool from_alice = direction == Direction::kAliceToBob;
  Engine& sender = from_alice ? *alice_ : *bob_;
  Engine& receiver = from_alice ? *bob_ : *alice_;
  const session::Address& to = from_alice ? bob_address_ : alice_address_;
  const session::Address& from = from_alice ? alice_address_ : bob_address_;

  const session::Ciphertext ciphertext = Must(sender.Encrypt(to, plaintext), "Encrypt");
  const Received received = Must(receiver.Decrypt(from, ciphertext), "Decrypt");
  CheckMessage(received, plaintext, Received::Kind::kMessage);
  return ciphertext.body.size();
}

wire::PreKeyBundle CwPair::FreshBobBundle() {
  if (Must(bob_->NeedsOneTimePreKeyRefill(), "NeedsOneTimePreKeyRefill")) {
    Must(bob_->GenerateOneTimePreKeys(), "GenerateOneTimePreKeys");
  }
  wire::PreKeyBundle bundle = Must(bob_->MakeBundle(/*with_one_time_pre_key=*/true), "MakeBundle");
  if (!bundle.one_time_pre_key) Fail("MakeBundle", "no one-time pre-key left after a refill");
  return bundle;
}

void CwPair::SetUpSession(const session::Address& bob_as_seen_by_alice,
                          const session::Address& alice_as_seen_by_bob, const wire::PreKeyBundle& bundle,
                          ByteView plaintext) {
  Must(alice_->ProcessBundle(bob_as_seen_by_alice, bundle), "ProcessBundle");
  const session::Ciphertext first = Must(alice_->Encrypt(bob_as_seen_by_alice, plaintext), "Encrypt");
  if (first.type != MessageType::kPreKey)
    Fail("Encrypt", "a first message that is not a PreKeySignalMessage");
  const Received received = Must(bob_->Decrypt(alice_as_seen_by_bob, first), "Decrypt");
  CheckMessage(received, plaintext, Received::Kind::kMessage);
}

std::string CwPair::CreateGroup() {
  const std::string group_id = alice_->NewGroupId();
  DeliverAll(Must(alice_->CreateGroup(group_id, {bob_address_.name}), "CreateGroup").messages, alice_address_);
  return group_id;
}

size_t CwPair::GroupSend(const std::string& group_id, ByteView plaintext) {
  const session::Ciphertext ciphertext = Must(alice_->GroupEncrypt(group_id, plaintext), "GroupEncrypt");
  const Received received = Must(bob_->Decrypt(alice_address_, ciphertext), "Decrypt (group)");
  CheckMessage(received, plaintext, Received::Kind::kGroupMessage);
  return ciphertext.body.size();
}

void CwPair::DeliverAll(std::vector<session::Outgoing> first, const session::Address& from) {
  std::deque<std::pair<session::Address, session::Outgoing>> queue;
  for (auto& out : first) queue.emplace_back(from, std::move(out));
  while (!queue.empty()) {
    auto [sender, out] = std::move(queue.front());
    queue.pop_front();
    Engine* receiver = out.to == bob_address_     ? bob_.get()
                       : out.to == alice_address_ ? alice_.get()
                                                  : nullptr;
    if (receiver == nullptr) Fail("DeliverAll", "a message for an unknown address");
    Received received = Must(receiver->Decrypt(sender, out.message), "Decrypt (delivery)");
    if (!received.missing_sessions.empty()) Fail("DeliverAll", "a group member without a 1:1 session");
    for (auto& reply : received.replies) queue.emplace_back(out.to, std::move(reply));
  }
}

}  // namespace cw::bench
