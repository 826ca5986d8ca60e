#include "storage/transcript_records.h"

#include <sodium.h>

#include <cstring>
#include <msgpack.hpp>
#include <optional>

namespace cw::storage::internal {
namespace {

// A msgpack write sink whose growth leaves no unwiped copies (rows hold plaintext and keys).
class SecretSink {
 public:
  void write(const char* data, size_t size) {
    bytes_.Append(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data), size));
  }
  SecretBytes Take() { return std::move(bytes_); }

 private:
  SecretBytes bytes_;
};
using Packer = msgpack::packer<SecretSink>;

void PackBin(Packer& p, std::span<const uint8_t> b) {
  p.pack_bin(static_cast<uint32_t>(b.size()));
  p.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
}
void PackStr(Packer& p, std::string_view s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}
void PackStr(Packer& p, const SecretBytes& s) {
  PackStr(p, AsText(s.reveal()));
}

// Bounds for every record here: the library defaults are 4 G of everything.
struct Limits {
  size_t array;
  size_t str;
  size_t bin;
  size_t depth;
};

bool ReferenceAll(msgpack::type::object_type, size_t, void*) { return true; }

// Exactly one object filling `bytes`, referencing (not copying) strings and binaries in `bytes`.
std::optional<msgpack::object_handle> UnpackOne(std::span<const uint8_t> bytes, const Limits& l) {
  if (bytes.empty()) return std::nullopt;
  try {
    size_t offset = 0;
    msgpack::unpack_limit limit(l.array, /*map=*/0, l.str, l.bin, /*ext=*/0, l.depth);
    msgpack::object_handle h = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size(),
                                               offset, ReferenceAll, nullptr, limit);
    if (offset != bytes.size()) return std::nullopt;
    return h;
  } catch (...) {
    return std::nullopt;  // malformed, truncated or over a limit: all "malformed"
  }
}

auto Malformed(std::string_view what) {
  return Error(StatusCode::kMalformed, std::string(what) + " is malformed");
}

const msgpack::object* Array(const msgpack::object& o, uint32_t size) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != size) return nullptr;
  return o.via.array.ptr;
}
bool GetInt(const msgpack::object& o, int64_t* out) {
  if (o.type == msgpack::type::POSITIVE_INTEGER) {
    if (o.via.u64 > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(o.via.u64);
    return true;
  }
  if (o.type == msgpack::type::NEGATIVE_INTEGER) {
    *out = o.via.i64;
    return true;
  }
  return false;
}
bool GetUint(const msgpack::object& o, uint64_t max, uint64_t* out) {
  if (o.type != msgpack::type::POSITIVE_INTEGER || o.via.u64 > max) return false;
  *out = o.via.u64;
  return true;
}
bool GetBin(const msgpack::object& o, std::span<const uint8_t>* out) {
  if (o.type != msgpack::type::BIN) return false;
  *out = {reinterpret_cast<const uint8_t*>(o.via.bin.ptr), o.via.bin.size};
  return true;
}
bool GetStr(const msgpack::object& o, size_t max, std::string* out) {
  if (o.type != msgpack::type::STR || o.via.str.size > max) return false;
  out->assign(o.via.str.ptr, o.via.str.size);
  return true;
}
bool GetStr(const msgpack::object& o, size_t max, SecretBytes* out) {
  if (o.type != msgpack::type::STR || o.via.str.size > max) return false;
  *out = SecretBytes(reinterpret_cast<const uint8_t*>(o.via.str.ptr), o.via.str.size);
  return true;
}

constexpr size_t kNonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t kTag = crypto_aead_xchacha20poly1305_ietf_ABYTES;
constexpr size_t kMaxInnerSize = kMaxBodySize + kMaxAttachments * (kMaxAttachmentRefSize + 5) + 1024;

// "cw-row-1" || BLAKE2b-256(conversation id) || BE64(sequence): a blob opens only at its own place.
std::string BlobAd(std::string_view conversation_id, uint64_t sequence) {
  std::string ad = "cw-row-1";
  uint8_t h[32];
  crypto_generichash(h, sizeof h, reinterpret_cast<const uint8_t*>(conversation_id.data()),
                     conversation_id.size(), nullptr, 0);
  ad.append(reinterpret_cast<const char*>(h), sizeof h);
  ad += BigEndian64(sequence);
  return ad;
}

}  // namespace

std::string BigEndian64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (56 - 8 * i));
  return s;
}
uint64_t ReadBigEndian64(std::span<const uint8_t> b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | b[i];
  return v;
}

std::string RowKey(std::string_view conversation_id, uint64_t sequence) {
  std::string k(conversation_id);
  k.push_back('\0');
  k += BigEndian64(sequence);
  return k;
}

bool ParseRowKey(std::string_view key, std::string* conversation_id, uint64_t* sequence) {
  if (key.size() < 10) return false;
  const size_t nul = key.size() - 9;
  if (key[nul] != '\0' || key.substr(0, nul).find('\0') != std::string_view::npos) return false;
  *conversation_id = std::string(key.substr(0, nul));
  *sequence = ReadBigEndian64(AsBytes(key.substr(nul + 1)));
  return true;
}

SecretBytes EncodeConversation(const ConversationRecord& c) {
  SecretSink sink;
  Packer p(sink);
  p.pack_array(5);
  p.pack_uint8(kRecordVersion);
  PackBin(p, c.key.reveal());
  p.pack_int64(c.disappearing_ms);
  p.pack_int64(c.created_at_ms);
  p.pack_uint64(c.next_sequence);
  return sink.Take();
}

Result<ConversationRecord> DecodeConversation(std::span<const uint8_t> bytes) {
  auto h = UnpackOne(bytes, {5, 0, kConversationKeySize, 1});
  if (!h) return Malformed("conversation record");
  const size_t fields = h->get().type == msgpack::type::ARRAY && h->get().via.array.size == 5 ? 5 : 4;
  const msgpack::object* a = Array(h->get(), fields);
  uint64_t version = 0;
  std::span<const uint8_t> key;
  ConversationRecord c;
  if (!a || !GetUint(a[0], 255, &version) || !GetBin(a[1], &key) || !GetInt(a[2], &c.disappearing_ms) ||
      !GetInt(a[3], &c.created_at_ms) ||
      (fields == 5 && !GetUint(a[4], std::numeric_limits<uint64_t>::max(), &c.next_sequence))) {
    return Malformed("conversation record");
  }
  if (version != kRecordVersion) return Error(StatusCode::kUnsupportedVersion, "conversation record version");
  if (key.size() != kConversationKeySize || c.disappearing_ms < 0) return Malformed("conversation record");
  c.key = SecretBytes(key);
  return c;
}

SecretBytes EncodeRow(const RowRecord& r) {
  SecretSink sink;
  Packer p(sink);
  p.pack_array(4);
  p.pack_uint8(kRecordVersion);
  p.pack_uint8(static_cast<uint8_t>(r.status));
  p.pack_int64(r.expires_at_ms);
  PackBin(p, r.blob);
  return sink.Take();
}

Result<RowRecord> DecodeRow(std::span<const uint8_t> bytes) {
  auto h = UnpackOne(bytes, {4, 0, kNonce + kTag + kMaxInnerSize, 1});
  if (!h) return Malformed("transcript row");
  const msgpack::object* a = Array(h->get(), 4);
  uint64_t version = 0, status = 0;
  std::span<const uint8_t> blob;
  RowRecord r;
  if (!a || !GetUint(a[0], 255, &version) || !GetUint(a[1], 255, &status) ||
      !GetInt(a[2], &r.expires_at_ms) || !GetBin(a[3], &blob)) {
    return Malformed("transcript row");
  }
  if (version != kRecordVersion) return Error(StatusCode::kUnsupportedVersion, "transcript row version");
  if (status < 1 || status > 5 || r.expires_at_ms < 0 || blob.size() < kNonce + kTag) {
    return Malformed("transcript row");
  }
  r.status = static_cast<MessageStatus>(status);
  r.blob.assign(blob.begin(), blob.end());
  return r;
}

Result<SecretBytes> EncodeInner(const TranscriptMessage& m) {
  if (m.body.size() > kMaxBodySize) return Error(StatusCode::kInvalidArgument, "message body too long");
  if (m.sender.size() > kMaxSenderSize) return Error(StatusCode::kInvalidArgument, "sender too long");
  if (m.attachments.size() > kMaxAttachments)
    return Error(StatusCode::kInvalidArgument, "too many attachments");
  for (const auto& a : m.attachments) {
    if (a.size() > kMaxAttachmentRefSize)
      return Error(StatusCode::kInvalidArgument, "attachment reference too long");
  }
  SecretSink sink;
  Packer p(sink);
  p.pack_array(8);
  PackBin(p, m.message_id);
  p.pack_uint8(static_cast<uint8_t>(m.direction));
  PackStr(p, m.sender);
  p.pack_uint32(m.sender_device);
  p.pack_int64(m.sent_at_ms);
  p.pack_int64(m.received_at_ms);
  PackBin(p, m.body.reveal());
  p.pack_array(static_cast<uint32_t>(m.attachments.size()));
  for (const auto& a : m.attachments) PackStr(p, a);
  return sink.Take();
}

Status DecodeInner(std::span<const uint8_t> bytes, TranscriptMessage* m) {
  auto h = UnpackOne(bytes, {std::max<size_t>(8, kMaxAttachments),
                             std::max(kMaxSenderSize, kMaxAttachmentRefSize), kMaxBodySize, 2});
  if (!h) return Malformed("transcript message");
  const msgpack::object* a = Array(h->get(), 8);
  std::span<const uint8_t> id, body;
  uint64_t direction = 0, device = 0;
  if (!a || !GetBin(a[0], &id) || id.size() != kMessageIdSize || !GetUint(a[1], 2, &direction) ||
      direction < 1 || !GetStr(a[2], kMaxSenderSize, &m->sender) || !GetUint(a[3], UINT32_MAX, &device) ||
      !GetInt(a[4], &m->sent_at_ms) || !GetInt(a[5], &m->received_at_ms) || !GetBin(a[6], &body) ||
      a[7].type != msgpack::type::ARRAY || a[7].via.array.size > kMaxAttachments) {
    return Malformed("transcript message");
  }
  std::memcpy(m->message_id.data(), id.data(), kMessageIdSize);
  m->direction = static_cast<Direction>(direction);
  m->sender_device = static_cast<uint32_t>(device);
  m->body = SecretBytes(body);
  m->attachments.clear();
  for (uint32_t i = 0; i < a[7].via.array.size; ++i) {
    SecretBytes ref;
    if (!GetStr(a[7].via.array.ptr[i], kMaxAttachmentRefSize, &ref)) return Malformed("transcript message");
    m->attachments.push_back(std::move(ref));
  }
  return Status::Ok();
}

Bytes SealBlob(std::span<const uint8_t> conversation_key, std::string_view conversation_id, uint64_t sequence,
               std::span<const uint8_t> inner, Random& random) {
  const std::string ad = BlobAd(conversation_id, sequence);
  Bytes out(kNonce + inner.size() + kTag);
  random.Fill(out.data(), kNonce);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out.data() + kNonce, &written, inner.data(), inner.size(),
                                             reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), nullptr,
                                             out.data(), conversation_key.data());
  return out;
}

Result<SecretBytes> OpenBlob(std::span<const uint8_t> conversation_key, std::string_view conversation_id,
                             uint64_t sequence, std::span<const uint8_t> blob) {
  if (conversation_key.size() != kConversationKeySize || blob.size() < kNonce + kTag) {
    return Error(StatusCode::kTampered, "transcript row failed to open");
  }
  const std::string ad = BlobAd(conversation_id, sequence);
  SecretBytes inner(blob.size() - kNonce - kTag);
  unsigned long long len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(inner.reveal_mutable().data(), &len, nullptr,
                                                 blob.data() + kNonce, blob.size() - kNonce,
                                                 reinterpret_cast<const uint8_t*>(ad.data()), ad.size(),
                                                 blob.data(), conversation_key.data()) != 0) {
    return Error(StatusCode::kTampered, "transcript row failed to open");
  }
  return inner;
}

Result<SecretBytes> EncodeOutbox(const OutboxEntry& e) {
  if (e.recipients.size() > kMaxOutboxRecipients)
    return Error(StatusCode::kInvalidArgument, "too many recipients");
  if (e.message.body.size() > kMaxBodySize * 2)
    return Error(StatusCode::kInvalidArgument, "ciphertext too long");
  SecretSink sink;
  Packer p(sink);
  p.pack_array(5);
  p.pack_uint8(kRecordVersion);
  p.pack_array(static_cast<uint32_t>(e.recipients.size()));
  for (const auto& r : e.recipients) {
    if (r.name.size() > kMaxSenderSize) return Error(StatusCode::kInvalidArgument, "recipient name too long");
    p.pack_array(2);
    PackStr(p, r.name);
    p.pack_uint32(r.device_id);
  }
  p.pack_uint8(static_cast<uint8_t>(e.message.type));
  PackStr(p, e.message.group_id);
  PackBin(p, e.message.body);
  return sink.Take();
}

Status DecodeOutbox(std::span<const uint8_t> bytes, OutboxEntry* e) {
  auto h = UnpackOne(bytes, {kMaxOutboxRecipients, kMaxSenderSize, kMaxBodySize * 2, 3});
  if (!h) return Malformed("outbox entry");
  const msgpack::object* a = Array(h->get(), 5);
  uint64_t version = 0, type = 0;
  std::span<const uint8_t> body;
  if (!a || !GetUint(a[0], 255, &version) || a[1].type != msgpack::type::ARRAY || !GetUint(a[2], 5, &type) ||
      type < 2 || !GetStr(a[3], kMaxSenderSize, &e->message.group_id) || !GetBin(a[4], &body)) {
    return Malformed("outbox entry");
  }
  if (version != kRecordVersion) return Error(StatusCode::kUnsupportedVersion, "outbox entry version");
  e->recipients.clear();
  for (uint32_t i = 0; i < a[1].via.array.size; ++i) {
    const msgpack::object* r = Array(a[1].via.array.ptr[i], 2);
    session::Address addr;
    uint64_t device = 0;
    if (!r || !GetStr(r[0], kMaxSenderSize, &addr.name) || !GetUint(r[1], UINT32_MAX, &device)) {
      return Malformed("outbox entry");
    }
    addr.device_id = static_cast<uint32_t>(device);
    e->recipients.push_back(std::move(addr));
  }
  e->message.type = static_cast<session::MessageType>(type);
  e->message.body.assign(body.begin(), body.end());
  return Status::Ok();
}

}  // namespace cw::storage::internal
