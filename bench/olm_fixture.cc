#include "bench/olm_fixture.h"

#include <sodium.h>

#include <algorithm>
#include <string_view>

namespace cw::bench {
namespace {

SecretBytes RandomBytes(size_t size) {
  SecretBytes random(size);
  if (size > 0) randombytes_buf(random.reveal_mutable().data(), size);
  return random;
}

// olm reports failure as olm_error() and keeps the reason in the object.
template <typename T>
size_t CheckOlm(size_t result, std::string_view what, T* object, const char* (*last_error)(const T*)) {
  if (result == olm_error()) Fail(what, last_error(object));
  return result;
}
size_t CheckSession(size_t result, std::string_view what, OlmSession* session) {
  return CheckOlm(result, what, session, olm_session_last_error);
}
size_t CheckAccount(size_t result, std::string_view what, OlmAccount* account) {
  return CheckOlm(result, what, account, olm_account_last_error);
}

// The contents of every "..." in a JSON text of olm's (no escapes occur in its key listings).
std::vector<std::string> QuotedStrings(std::string_view json) {
  std::vector<std::string> out;
  for (size_t open = json.find('"'); open != std::string_view::npos; open = json.find('"', open)) {
    const size_t close = json.find('"', open + 1);
    if (close == std::string_view::npos) Fail("olm JSON", "unterminated string");
    out.emplace_back(json.substr(open + 1, close - open - 1));
    open = close + 1;
  }
  return out;
}

// {"curve25519":"<key>","ed25519":"<key>"} -> the Curve25519 key.
std::string CurveIdentityKey(OlmAccount* account) {
  std::string json(olm_account_identity_keys_length(account), '\0');
  json.resize(
      CheckAccount(olm_account_identity_keys(account, json.data(), json.size()), "identity keys", account));
  const std::vector<std::string> tokens = QuotedStrings(json);
  const auto it = std::find(tokens.begin(), tokens.end(), "curve25519");
  if (it == tokens.end() || it + 1 == tokens.end()) Fail("identity keys", "no curve25519 key");
  return *(it + 1);
}

Bytes Encrypt(OlmSession* session, ByteView plaintext, size_t* type) {
  SecretBytes random = RandomBytes(olm_encrypt_random_length(session));
  *type = olm_encrypt_message_type(session);
  Bytes message(olm_encrypt_message_length(session, plaintext.size()));
  message.resize(
      CheckSession(olm_encrypt(session, plaintext.data(), plaintext.size(), random.reveal_mutable().data(),
                               random.size(), message.data(), message.size()),
                   "olm_encrypt", session));
  return message;
}

// Consumes `message` (olm decodes base64 in place). A plaintext is never longer than its message.
void DecryptAndCheck(OlmSession* session, size_t type, Bytes& message, ByteView expected) {
  SecretBytes plaintext(message.size());
  const size_t length = CheckSession(olm_decrypt(session, type, message.data(), message.size(),
                                                 plaintext.reveal_mutable().data(), plaintext.size()),
                                     "olm_decrypt", session);
  const auto got = plaintext.reveal().first(length);
  if (!std::equal(got.begin(), got.end(), expected.begin(), expected.end())) {
    Fail("olm_decrypt", "the plaintext did not round-trip");
  }
}

void CreateAccount(OlmAccount* account) {
  SecretBytes random = RandomBytes(olm_create_account_random_length(account));
  CheckAccount(olm_create_account(account, random.reveal_mutable().data(), random.size()),
               "olm_create_account", account);
}

}  // namespace

OlmPair::OlmPair() {
  CreateAccount(alice_.get());
  CreateAccount(bob_.get());
  alice_identity_key_ = CurveIdentityKey(alice_.get());
  bob_identity_key_ = CurveIdentityKey(bob_.get());
}

OlmPair::~OlmPair() = default;

std::string OlmPair::TakeBobOneTimeKey() {
  OlmAccount* bob = bob_.get();
  if (bob_one_time_keys_.empty()) {
    const size_t count = olm_account_max_number_of_one_time_keys(bob);
    SecretBytes random = RandomBytes(olm_account_generate_one_time_keys_random_length(bob, count));
    CheckAccount(
        olm_account_generate_one_time_keys(bob, count, random.reveal_mutable().data(), random.size()),
        "generate one-time keys", bob);
    std::string json(olm_account_one_time_keys_length(bob), '\0');
    json.resize(CheckAccount(olm_account_one_time_keys(bob, json.data(), json.size()), "one-time keys", bob));
    CheckAccount(olm_account_mark_keys_as_published(bob), "mark published", bob);
    // {"curve25519":{"<id>":"<key>",...}}: the keys are every second string after the first.
    const std::vector<std::string> tokens = QuotedStrings(json);
    for (size_t i = 2; i < tokens.size(); i += 2) bob_one_time_keys_.push_back(tokens[i]);
    if (bob_one_time_keys_.empty()) Fail("one-time keys", "olm generated none");
  }
  std::string key = std::move(bob_one_time_keys_.back());
  bob_one_time_keys_.pop_back();
  return key;
}

void OlmPair::SetUpSession(const std::string& one_time_key, ByteView plaintext) {
  OlmSessionObject outbound;
  OlmSessionObject inbound;
  SecretBytes random = RandomBytes(olm_create_outbound_session_random_length(outbound.get()));
  CheckSession(olm_create_outbound_session(outbound.get(), alice_.get(), bob_identity_key_.data(),
                                           bob_identity_key_.size(), one_time_key.data(), one_time_key.size(),
                                           random.reveal_mutable().data(), random.size()),
               "olm_create_outbound_session", outbound.get());
  size_t type = 0;
  Bytes message = Encrypt(outbound.get(), plaintext, &type);
  if (type != OLM_MESSAGE_TYPE_PRE_KEY) Fail("olm_encrypt", "a first message that is not a pre-key message");
  Bytes consumed = message;  // olm_create_inbound_session_from decodes its input in place
  CheckSession(olm_create_inbound_session_from(inbound.get(), bob_.get(), alice_identity_key_.data(),
                                               alice_identity_key_.size(), consumed.data(), consumed.size()),
               "olm_create_inbound_session_from", inbound.get());
  CheckAccount(olm_remove_one_time_keys(bob_.get(), inbound.get()), "olm_remove_one_time_keys", bob_.get());
  DecryptAndCheck(inbound.get(), type, message, plaintext);
}

void OlmPair::Establish() {
  const Bytes hello = MakePlaintext(32);
  const std::string one_time_key = TakeBobOneTimeKey();
  alice_session_ = std::make_unique<OlmSessionObject>();
  bob_session_ = std::make_unique<OlmSessionObject>();
  SecretBytes random = RandomBytes(olm_create_outbound_session_random_length(alice_session_->get()));
  CheckSession(olm_create_outbound_session(alice_session_->get(), alice_.get(), bob_identity_key_.data(),
                                           bob_identity_key_.size(), one_time_key.data(), one_time_key.size(),
                                           random.reveal_mutable().data(), random.size()),
               "olm_create_outbound_session", alice_session_->get());
  size_t type = 0;
  Bytes message = Encrypt(alice_session_->get(), hello, &type);
  Bytes consumed = message;
  CheckSession(olm_create_inbound_session_from(bob_session_->get(), bob_.get(), alice_identity_key_.data(),
                                               alice_identity_key_.size(), consumed.data(), consumed.size()),
               "olm_create_inbound_session_from", bob_session_->get());
  CheckAccount(olm_remove_one_time_keys(bob_.get(), bob_session_->get()), "olm_remove_one_time_keys",
               bob_.get());
  DecryptAndCheck(bob_session_->get(), type, message, hello);
  Send(Direction::kBobToAlice, hello);
  Send(Direction::kAliceToBob, hello);
}

size_t OlmPair::Send(Direction direction, ByteView plaintext) {
  const bool from_alice = direction == Direction::kAliceToBob;
  OlmSession* sender = (from_alice ? alice_session_ : bob_session_)->get();
  OlmSession* receiver = (from_alice ? bob_session_ : alice_session_)->get();
  size_t type = 0;
  Bytes message = Encrypt(sender, plaintext, &type);
  const size_t size = message.size();
  DecryptAndCheck(receiver, type, message, plaintext);
  return size;
}

MegolmGroup::MegolmGroup() {
  OlmOutboundGroupSession* outbound = outbound_.get();
  SecretBytes random = RandomBytes(olm_init_outbound_group_session_random_length(outbound));
  if (olm_init_outbound_group_session(outbound, random.reveal_mutable().data(), random.size()) ==
      olm_error()) {
    Fail("olm_init_outbound_group_session", olm_outbound_group_session_last_error(outbound));
  }
  SecretBytes session_key(olm_outbound_group_session_key_length(outbound));
  const size_t key_length =
      olm_outbound_group_session_key(outbound, session_key.reveal_mutable().data(), session_key.size());
  if (key_length == olm_error())
    Fail("olm_outbound_group_session_key", olm_outbound_group_session_last_error(outbound));
  if (olm_init_inbound_group_session(inbound_.get(), session_key.reveal().data(), key_length) ==
      olm_error()) {
    Fail("olm_init_inbound_group_session", olm_inbound_group_session_last_error(inbound_.get()));
  }
}

size_t MegolmGroup::Send(ByteView plaintext) {
  OlmOutboundGroupSession* outbound = outbound_.get();
  Bytes message(olm_group_encrypt_message_length(outbound, plaintext.size()));
  const size_t size =
      olm_group_encrypt(outbound, plaintext.data(), plaintext.size(), message.data(), message.size());
  if (size == olm_error()) Fail("olm_group_encrypt", olm_outbound_group_session_last_error(outbound));

  // olm_group_decrypt decodes `message` in place; a plaintext is never longer than its message.
  SecretBytes decrypted(size);
  uint32_t index = 0;
  const size_t length = olm_group_decrypt(inbound_.get(), message.data(), size,
                                          decrypted.reveal_mutable().data(), decrypted.size(), &index);
  if (length == olm_error()) Fail("olm_group_decrypt", olm_inbound_group_session_last_error(inbound_.get()));
  const auto got = decrypted.reveal().first(length);
  if (!std::equal(got.begin(), got.end(), plaintext.begin(), plaintext.end())) {
    Fail("olm_group_decrypt", "the plaintext did not round-trip");
  }
  return size;
}

}  // namespace cw::bench
