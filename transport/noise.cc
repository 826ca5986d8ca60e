// Noise revision 34, sections 4 (crypto functions), 5 (processing rules) and 7 (patterns), for the 25519,
// ChaChaPoly and BLAKE2b functions. Spec names are kept (MixKey, MixHash, EncryptAndHash, Split...).
#include "transport/noise.h"

#include <sodium.h>

#include <cstring>
#include <initializer_list>
#include <limits>
#include <vector>

namespace cw::transport::noise {
namespace {

constexpr size_t kBlockLen = 128;  // BLAKE2b's block length, for HMAC

using Hash = std::array<uint8_t, kHashLen>;

// HASH(parts...) = BLAKE2b-512 of their concatenation.
void Blake2b(std::initializer_list<ByteView> parts, uint8_t* out) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, kHashLen);
  for (ByteView p : parts) crypto_generichash_update(&st, p.data(), p.size());
  crypto_generichash_final(&st, out, kHashLen);
  sodium_memzero(&st, sizeof st);
}

// HMAC-HASH(key, data) per RFC 2104, as section 4.3 requires.
void HmacBlake2b(ByteView key, std::initializer_list<ByteView> data, uint8_t* out) {
  uint8_t k[kBlockLen] = {};
  if (key.size() > kBlockLen) {
    Blake2b({key}, k);
  } else if (!key.empty()) {
    std::memcpy(k, key.data(), key.size());
  }
  uint8_t pad[kBlockLen];
  uint8_t inner[kHashLen];
  crypto_generichash_state st;
  for (size_t i = 0; i < kBlockLen; ++i) pad[i] = k[i] ^ 0x36;
  crypto_generichash_init(&st, nullptr, 0, kHashLen);
  crypto_generichash_update(&st, pad, kBlockLen);
  for (ByteView d : data) crypto_generichash_update(&st, d.data(), d.size());
  crypto_generichash_final(&st, inner, kHashLen);
  for (size_t i = 0; i < kBlockLen; ++i) pad[i] = k[i] ^ 0x5c;
  crypto_generichash_init(&st, nullptr, 0, kHashLen);
  crypto_generichash_update(&st, pad, kBlockLen);
  crypto_generichash_update(&st, inner, kHashLen);
  crypto_generichash_final(&st, out, kHashLen);
  sodium_memzero(&st, sizeof st);
  sodium_memzero(k, sizeof k);
  sodium_memzero(pad, sizeof pad);
  sodium_memzero(inner, sizeof inner);
}

// HKDF(chaining_key, input_key_material, num_outputs) of section 4.3, with two or three outputs.
void Hkdf(ByteView chaining_key, ByteView ikm, uint8_t* out1, uint8_t* out2, uint8_t* out3 = nullptr) {
  uint8_t temp_key[kHashLen];
  const uint8_t one = 0x01, two = 0x02, three = 0x03;
  HmacBlake2b(chaining_key, {ikm}, temp_key);
  HmacBlake2b(temp_key, {ByteView(&one, 1)}, out1);
  HmacBlake2b(temp_key, {ByteView(out1, kHashLen), ByteView(&two, 1)}, out2);
  if (out3 != nullptr) HmacBlake2b(temp_key, {ByteView(out2, kHashLen), ByteView(&three, 1)}, out3);
  sodium_memzero(temp_key, sizeof temp_key);
}

// Section 12.3 (ChaChaPoly): 32 bits of zeros, then the little-endian 64-bit nonce.
void EncodeNonce(uint64_t n, uint8_t out[crypto::kChaChaPolyNonceSize]) {
  std::memset(out, 0, 4);
  for (int i = 0; i < 8; ++i) out[4 + i] = static_cast<uint8_t>(n >> (8 * i));
}

constexpr uint64_t kMaxNonce = std::numeric_limits<uint64_t>::max();  // reserved (section 5.1)

}  // namespace

// ---------------------------------------------------------------------------------------------- CipherState

void CipherState::InitializeKey(std::span<const uint8_t> key) {
  key_ = SecretBytes(key);
  n_ = 0;
  aead_.reset();
}

Status CipherState::EnsureAead() {
  if (aead_) return Status::Ok();
  CW_ASSIGN_OR_RETURN(aead_, crypto::ChaChaPoly::New(key_.reveal()));
  return Status::Ok();
}

Result<Bytes> CipherState::EncryptWithAd(ByteView ad, ByteView plaintext) {
  Bytes out;
  CW_RETURN_IF_ERROR(EncryptWithAd(ad, plaintext, &out));
  return out;
}

Result<Bytes> CipherState::DecryptWithAd(ByteView ad, ByteView ciphertext) {
  // Checked before the copy, so an oversized message is not copied first.
  if (ciphertext.size() > kMaxMessageSize)
    return Error(StatusCode::kMalformed, "Noise message over 65535 bytes");
  Bytes out(ciphertext.begin(), ciphertext.end());
  CW_ASSIGN_OR_RETURN(std::span<uint8_t> plaintext, DecryptInPlace(ad, out));
  out.resize(plaintext.size());
  return out;
}

Status CipherState::EncryptWithAd(ByteView ad, ByteView plaintext, Bytes* out) {
  if (plaintext.size() > kMaxTransportPlaintext + (HasKey() ? 0 : kTagLen)) {
    return Status(StatusCode::kInvalidArgument, "Noise message over 65535 bytes");
  }
  if (!HasKey()) {
    out->insert(out->end(), plaintext.begin(), plaintext.end());
    return Status::Ok();
  }
  if (n_ == kMaxNonce) return Status(StatusCode::kResourceExhausted, "Noise nonce exhausted");
  CW_RETURN_IF_ERROR(EnsureAead());
  uint8_t nonce[crypto::kChaChaPolyNonceSize];
  EncodeNonce(n_, nonce);
  const size_t at = out->size();
  out->resize(at + plaintext.size() + kTagLen);
  if (Status s = aead_->Seal(nonce, ad, plaintext, out->data() + at); !s.ok()) {
    out->resize(at);
    return s;
  }
  ++n_;
  return Status::Ok();
}

Result<std::span<uint8_t>> CipherState::DecryptInPlace(ByteView ad, std::span<uint8_t> message) {
  if (message.size() > kMaxMessageSize)
    return Error(StatusCode::kMalformed, "Noise message over 65535 bytes");
  if (!HasKey()) return message;
  if (message.size() < kTagLen) return Error(StatusCode::kMalformed, "Noise ciphertext shorter than its tag");
  if (n_ == kMaxNonce) return Error(StatusCode::kResourceExhausted, "Noise nonce exhausted");
  CW_RETURN_IF_ERROR(EnsureAead());
  uint8_t nonce[crypto::kChaChaPolyNonceSize];
  EncodeNonce(n_, nonce);
  if (Status s = aead_->Open(nonce, ad, message, message.data()); !s.ok()) {
    sodium_memzero(message.data(), message.size());
    if (s.code() == StatusCode::kTampered)
      return Error(StatusCode::kTampered, "Noise message failed to authenticate");
    return Error(s);
  }
  ++n_;
  return message.first(message.size() - kTagLen);
}

Status CipherState::Rekey() {
  if (!HasKey()) return Status(StatusCode::kInvalidArgument, "Rekey without a key");
  CW_RETURN_IF_ERROR(EnsureAead());
  uint8_t nonce[crypto::kChaChaPolyNonceSize];
  EncodeNonce(kMaxNonce, nonce);
  const uint8_t zeros[kKeyLen] = {};
  uint8_t out[kKeyLen + kTagLen];
  Status s = aead_->Seal(nonce, {}, zeros, out);
  if (s.ok()) {
    key_ = SecretBytes(out, kKeyLen);  // n is unchanged (section 4.2)
    aead_.reset();
  }
  sodium_memzero(out, sizeof out);
  return s;
}

// ------------------------------------------------------------------------------------------- SymmetricState

namespace {

class SymmetricState {
 public:
  explicit SymmetricState(std::string_view protocol_name) : ck_(kHashLen) {
    if (protocol_name.size() <= kHashLen) {
      h_.fill(0);
      std::memcpy(h_.data(), protocol_name.data(), protocol_name.size());
    } else {
      Blake2b({AsBytes(protocol_name)}, h_.data());
    }
    std::memcpy(ck_.reveal_mutable().data(), h_.data(), kHashLen);
  }

  void MixKey(ByteView ikm) {
    uint8_t out1[kHashLen], out2[kHashLen];
    Hkdf(ck_.reveal(), ikm, out1, out2);
    std::memcpy(ck_.reveal_mutable().data(), out1, kHashLen);
    cs_.InitializeKey(ByteView(out2, kKeyLen));  // HASHLEN 64: temp_k truncated to 32 bytes
    sodium_memzero(out1, sizeof out1);
    sodium_memzero(out2, sizeof out2);
  }

  void MixHash(ByteView data) { Blake2b({h_, data}, h_.data()); }

  bool HasKey() const { return cs_.HasKey(); }

  Result<Bytes> EncryptAndHash(ByteView plaintext) {
    CW_ASSIGN_OR_RETURN(Bytes ciphertext, cs_.EncryptWithAd(h_, plaintext));
    MixHash(ciphertext);
    return ciphertext;
  }

  Result<Bytes> DecryptAndHash(ByteView ciphertext) {
    CW_ASSIGN_OR_RETURN(Bytes plaintext, cs_.DecryptWithAd(h_, ciphertext));
    MixHash(ciphertext);
    return plaintext;
  }

  void Split(CipherState* c1, CipherState* c2) {
    uint8_t out1[kHashLen], out2[kHashLen];
    Hkdf(ck_.reveal(), {}, out1, out2);
    c1->InitializeKey(ByteView(out1, kKeyLen));
    c2->InitializeKey(ByteView(out2, kKeyLen));
    sodium_memzero(out1, sizeof out1);
    sodium_memzero(out2, sizeof out2);
  }

  const Hash& h() const { return h_; }

  void Wipe() {
    ck_ = SecretBytes();
    cs_ = CipherState();
  }

 private:
  SecretBytes ck_;
  Hash h_{};
  CipherState cs_;
};

enum class Token { kE, kS, kEE, kES, kSE, kSS };

struct PatternDef {
  bool initiator_pre_s;
  bool responder_pre_s;
  std::vector<std::vector<Token>> messages;
};

const PatternDef& Definition(Pattern p) {
  using enum Token;
  static const PatternDef xk{false, true, {{kE, kES}, {kE, kEE}, {kS, kSE}}};
  static const PatternDef ik{false, true, {{kE, kES, kS, kSS}, {kE, kEE, kSE}}};
  static const PatternDef kk{true, true, {{kE, kES, kSS}, {kE, kEE, kSE}}};
  switch (p) {
    case Pattern::kIK:
      return ik;
    case Pattern::kKK:
      return kk;
    case Pattern::kXK:
    default:
      return xk;
  }
}

}  // namespace

std::string_view ProtocolName(Pattern pattern) {
  switch (pattern) {
    case Pattern::kIK:
      return "Noise_IK_25519_ChaChaPoly_BLAKE2b";
    case Pattern::kKK:
      return "Noise_KK_25519_ChaChaPoly_BLAKE2b";
    case Pattern::kXK:
    default:
      return "Noise_XK_25519_ChaChaPoly_BLAKE2b";
  }
}

// ------------------------------------------------------------------------------------------- HandshakeState

struct HandshakeState::Impl {
  Impl(const HandshakeConfig& c, const PatternDef& d)
      : def(d), role(c.role), random(c.random), ss(ProtocolName(c.pattern)), rs(c.remote_static) {}

  const PatternDef& def;
  Role role;
  Random* random;
  SymmetricState ss;
  SecretBytes s_private;
  PublicKey s_public{};
  SecretBytes e_private;
  PublicKey e_public{};
  std::optional<PublicKey> rs;
  std::optional<PublicKey> re;
  size_t message_index = 0;
  bool failed = false;
  bool split = false;

  bool initiator() const { return role == Role::kInitiator; }

  void WipeAll() {
    ss.Wipe();
    s_private = SecretBytes();
    e_private = SecretBytes();
  }

  Status Fail(Status s) {
    failed = true;
    WipeAll();
    return s;
  }

  // MixKey(DH(local private, remote public)).
  Status MixDh(const SecretBytes& local, const std::optional<PublicKey>& remote) {
    if (local.empty() || !remote) return Status(StatusCode::kInternal, "Noise DH key missing");
    uint8_t shared[crypto_scalarmult_BYTES];
    if (crypto_scalarmult(shared, local.reveal().data(), remote->data()) != 0) {
      sodium_memzero(shared, sizeof shared);
      return Status(StatusCode::kMalformed, "Noise public key of low order");
    }
    ss.MixKey(ByteView(shared, sizeof shared));
    sodium_memzero(shared, sizeof shared);
    return Status::Ok();
  }

  Status ProcessDh(Token t) {
    switch (t) {
      case Token::kEE:
        return MixDh(e_private, re);
      case Token::kES:
        return initiator() ? MixDh(e_private, rs) : MixDh(s_private, re);
      case Token::kSE:
        return initiator() ? MixDh(s_private, re) : MixDh(e_private, rs);
      case Token::kSS:
        return MixDh(s_private, rs);
      default:
        return Status(StatusCode::kInternal, "not a DH token");
    }
  }

  Status CheckUsable(bool writing) const {
    if (failed || split) return Status(StatusCode::kInvalidArgument, "Noise handshake no longer usable");
    if (message_index >= def.messages.size())
      return Status(StatusCode::kInvalidArgument, "Noise handshake complete");
    const bool my_turn = (message_index % 2 == 0) == initiator();
    if (my_turn != writing)
      return Status(StatusCode::kInvalidArgument, "not this side's turn in the handshake");
    return Status::Ok();
  }

  Result<Bytes> Write(ByteView payload) {
    Bytes out;
    for (Token t : def.messages[message_index]) {
      if (t == Token::kE) {
        e_private = SecretBytes(kDhLen);
        random->Fill(e_private.reveal_mutable().data(), kDhLen);
        crypto_scalarmult_base(e_public.data(), e_private.reveal().data());
        out.insert(out.end(), e_public.begin(), e_public.end());
        ss.MixHash(e_public);
      } else if (t == Token::kS) {
        CW_ASSIGN_OR_RETURN(Bytes c, ss.EncryptAndHash(s_public));
        out.insert(out.end(), c.begin(), c.end());
      } else {
        CW_RETURN_IF_ERROR(ProcessDh(t));
      }
    }
    if (out.size() + payload.size() + (ss.HasKey() ? kTagLen : 0) > kMaxMessageSize) {
      return Error(StatusCode::kInvalidArgument, "Noise handshake message over 65535 bytes");
    }
    CW_ASSIGN_OR_RETURN(Bytes c, ss.EncryptAndHash(payload));
    out.insert(out.end(), c.begin(), c.end());
    ++message_index;
    return out;
  }

  Result<Bytes> Read(ByteView message) {
    if (message.size() > kMaxMessageSize)
      return Error(StatusCode::kMalformed, "Noise message over 65535 bytes");
    for (Token t : def.messages[message_index]) {
      if (t == Token::kE) {
        if (message.size() < kDhLen)
          return Error(StatusCode::kMalformed, "Noise handshake message too short");
        PublicKey e{};
        std::memcpy(e.data(), message.data(), kDhLen);
        re = e;
        ss.MixHash(e);
        message = message.subspan(kDhLen);
      } else if (t == Token::kS) {
        const size_t len = kDhLen + (ss.HasKey() ? kTagLen : 0);
        if (message.size() < len) return Error(StatusCode::kMalformed, "Noise handshake message too short");
        CW_ASSIGN_OR_RETURN(Bytes s, ss.DecryptAndHash(message.first(len)));
        PublicKey key{};
        std::memcpy(key.data(), s.data(), kDhLen);
        rs = key;
        message = message.subspan(len);
      } else {
        CW_RETURN_IF_ERROR(ProcessDh(t));
      }
    }
    CW_ASSIGN_OR_RETURN(Bytes payload, ss.DecryptAndHash(message));
    ++message_index;
    return payload;
  }
};

HandshakeState::HandshakeState(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HandshakeState::~HandshakeState() = default;

Result<std::unique_ptr<HandshakeState>> HandshakeState::New(const HandshakeConfig& config) {
  const PatternDef& def = Definition(config.pattern);
  const bool initiator = config.role == Role::kInitiator;
  if (config.local_static == nullptr || config.random == nullptr) {
    return Error(StatusCode::kInvalidArgument, "Noise handshake needs a static key pair and a Random");
  }
  const bool needs_rs = initiator ? def.responder_pre_s : def.initiator_pre_s;
  if (needs_rs && !config.remote_static) {
    return Error(StatusCode::kInvalidArgument, "Noise pattern needs the peer's static key in advance");
  }
  auto impl = std::make_unique<Impl>(config, def);
  if (!needs_rs) impl->rs.reset();  // learnt from the handshake, never taken on trust
  impl->s_private = config.local_static->private_key().Clone();
  impl->s_public = config.local_static->public_key();
  impl->ss.MixHash(config.prologue);
  // Pre-messages: the initiator's first, then the responder's (section 7.1).
  if (def.initiator_pre_s) impl->ss.MixHash(initiator ? impl->s_public : *impl->rs);
  if (def.responder_pre_s) impl->ss.MixHash(initiator ? *impl->rs : impl->s_public);
  return std::unique_ptr<HandshakeState>(new HandshakeState(std::move(impl)));
}

Result<Bytes> HandshakeState::WriteMessage(ByteView payload) {
  CW_RETURN_IF_ERROR(impl_->CheckUsable(true));
  auto out = impl_->Write(payload);
  if (!out) return Error(impl_->Fail(out.error()));
  return out;
}

Result<Bytes> HandshakeState::ReadMessage(ByteView message) {
  CW_RETURN_IF_ERROR(impl_->CheckUsable(false));
  auto out = impl_->Read(message);
  if (!out) return Error(impl_->Fail(out.error()));
  return out;
}

bool HandshakeState::IsMyTurn() const {
  return !IsComplete() && (impl_->message_index % 2 == 0) == impl_->initiator();
}

bool HandshakeState::IsComplete() const { return impl_->message_index >= impl_->def.messages.size(); }

const std::optional<PublicKey>& HandshakeState::remote_static() const { return impl_->rs; }

Result<TransportCiphers> HandshakeState::Split() {
  if (impl_->failed || impl_->split || !IsComplete()) {
    return Error(StatusCode::kInvalidArgument, "Split before the handshake completed");
  }
  TransportCiphers out;
  CipherState c1, c2;
  impl_->ss.Split(&c1, &c2);
  if (impl_->initiator()) {
    out.send = std::move(c1);
    out.receive = std::move(c2);
  } else {
    out.send = std::move(c2);
    out.receive = std::move(c1);
  }
  out.handshake_hash = impl_->ss.h();
  impl_->split = true;
  impl_->WipeAll();
  return out;
}

}  // namespace cw::transport::noise
