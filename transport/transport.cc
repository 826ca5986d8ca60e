// Static key pairs, keys in text, and endpoint addresses.
#include "transport/transport.h"

#include <arpa/inet.h>
#include <sodium.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace cw::transport {

StaticKeyPair StaticKeyPair::Generate(Random& random) {
  StaticKeyPair pair;
  pair.private_ = SecretBytes(kKeySize);
  random.Fill(pair.private_.reveal_mutable().data(), kKeySize);
  crypto_scalarmult_base(pair.public_.data(), pair.private_.reveal().data());
  return pair;
}

Result<StaticKeyPair> StaticKeyPair::FromPrivateKey(std::span<const uint8_t> private_key) {
  if (private_key.size() != kKeySize)
    return Error(StatusCode::kInvalidArgument, "private key must be 32 bytes");
  StaticKeyPair pair;
  pair.private_ = SecretBytes(private_key);
  crypto_scalarmult_base(pair.public_.data(), pair.private_.reveal().data());
  return pair;
}

StaticKeyPair StaticKeyPair::Clone() const {
  StaticKeyPair pair;
  pair.private_ = private_.Clone();
  pair.public_ = public_;
  return pair;
}

std::string KeyToHex(const PublicKey& key) { return ToHex(key); }

std::string KeyToBase64Url(const PublicKey& key) {
  const size_t len = sodium_base64_ENCODED_LEN(kKeySize, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  std::string out(len, '\0');
  sodium_bin2base64(out.data(), len, key.data(), key.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(len - 1);  // the terminating NUL
  return out;
}

std::string AddressGroup(std::string_view peer_address) {
  const std::string text(peer_address);
  in6_addr a6{};
  if (inet_pton(AF_INET6, text.c_str(), &a6) != 1) return text;
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char name[INET6_ADDRSTRLEN] = {};
  if (std::equal(std::begin(kMappedPrefix), std::end(kMappedPrefix), a6.s6_addr)) {
    in_addr a4{};
    std::memcpy(&a4, a6.s6_addr + 12, sizeof a4);
    if (inet_ntop(AF_INET, &a4, name, sizeof name) == nullptr) return text;
    return name;
  }
  std::fill(a6.s6_addr + 8, a6.s6_addr + 16, uint8_t{0});
  if (inet_ntop(AF_INET6, &a6, name, sizeof name) == nullptr) return text;
  return std::string(name) + "/64";
}

Result<PublicKey> ParseKey(std::string_view text) {
  PublicKey key{};
  if (text.size() == 2 * kKeySize) {
    Bytes raw;
    if (!FromHex(text, &raw) || raw.size() != kKeySize) {
      return Error(StatusCode::kInvalidArgument, "key: 64 characters but not hex");
    }
    std::copy(raw.begin(), raw.end(), key.begin());
    return key;
  }
  if (text.size() == 43) {
    size_t bin_len = 0;
    const std::string copy(text);
    if (sodium_base642bin(key.data(), key.size(), copy.data(), copy.size(), nullptr, &bin_len, nullptr,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        bin_len != kKeySize || KeyToBase64Url(key) != text) {  // canonical form only: one text per key
      return Error(StatusCode::kInvalidArgument, "key: 43 characters but not canonical base64url");
    }
    return key;
  }
  return Error(StatusCode::kInvalidArgument, "key: expected 64 hex digits or 43 base64url characters");
}

Result<Endpoint> Endpoint::Parse(std::string_view text) {
  Endpoint ep;
  constexpr std::string_view kScheme = "cw://";
  if (text.starts_with(kScheme)) {
    text.remove_prefix(kScheme.size());
    const size_t at = text.find('@');
    if (at == std::string_view::npos)
      return Error(StatusCode::kInvalidArgument, "address: cw:// needs <key>@");
    CW_ASSIGN_OR_RETURN(PublicKey key, ParseKey(text.substr(0, at)));
    ep.static_key = key;
    text.remove_prefix(at + 1);
  }
  size_t colon;
  if (text.starts_with('[')) {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Error(StatusCode::kInvalidArgument, "address: bad bracketed host");
    }
    ep.host = std::string(text.substr(1, close - 1));
    colon = close + 1;
  } else {
    colon = text.rfind(':');
    if (colon == std::string_view::npos) return Error(StatusCode::kInvalidArgument, "address: missing :port");
    ep.host = std::string(text.substr(0, colon));
    if (ep.host.find(':') != std::string::npos) {
      return Error(StatusCode::kInvalidArgument, "address: IPv6 hosts go in brackets");
    }
  }
  if (ep.host.empty()) return Error(StatusCode::kInvalidArgument, "address: empty host");
  const std::string_view port = text.substr(colon + 1);
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || port.size() > 5 || ec != std::errc() || ptr != port.data() + port.size() ||
      value > 65535) {
    return Error(StatusCode::kInvalidArgument, "address: bad port");
  }
  ep.port = static_cast<uint16_t>(value);
  return ep;
}

std::string Endpoint::ToString() const {
  std::string out;
  if (static_key) out = "cw://" + KeyToHex(*static_key) + "@";
  if (host.find(':') != std::string::npos) {
    out += "[" + host + "]";
  } else {
    out += host;
  }
  return out + ":" + std::to_string(port);
}

}  // namespace cw::transport
