#include "core/wire/direct.h"

#include <cstring>

#include "core/wire/msgpack_util.h"

namespace cw::wire {

namespace {
constexpr uint8_t kEndpointFields = 4;
constexpr uint8_t kDeliverFields = 4;
constexpr uint8_t kAckFields = 3;

bool IsHostChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
         c == ':';
}

// The host rules shared by both directions: what a peer announces ends up in a Connect call and in the
// sealed store, so nothing else (spaces, brackets, '@', control bytes) is let through.
bool ValidHostPort(std::string_view host, uint64_t port) {
  if (port > 65535) return false;
  if (host.empty() != (port == 0)) return false;
  if (host.size() > kMaxDirectHostSize) return false;
  for (char c : host) {
    if (!IsHostChar(c)) return false;
  }
  return true;
}

// The version is told apart from garbage before msgpack allocates anything (as DecodeAppMessage does).
Status CheckHeader(std::span<const uint8_t> bytes, const char* what) {
  if (bytes.size() < 2 || (bytes[0] & 0xf0) != 0x90) {
    return Status(StatusCode::kMalformed, std::string(what) + " is not an array");
  }
  if (bytes[1] != kDirectVersion) {
    if (bytes[1] < 0x80) return Status(StatusCode::kUnsupportedVersion, std::string("unknown ") + what + " version");
    return Status(StatusCode::kMalformed, std::string(what) + " version missing");
  }
  return Status::Ok();
}

Bytes Take(internal::SecretSink& sink) {
  const SecretBytes out = sink.Take();
  return Bytes(out.reveal().begin(), out.reveal().end());
}
}  // namespace

Result<Bytes> EncodeDirectEndpoint(const DirectEndpoint& e) {
  if (!ValidHostPort(e.host, e.port)) return Error(StatusCode::kInvalidArgument, "invalid direct endpoint host or port");
  internal::SecretSink sink;
  msgpack::packer<internal::SecretSink> pk(sink);
  pk.pack_array(kEndpointFields);
  pk.pack(kDirectVersion);
  pk.pack_bin(kDirectKeySize);
  pk.pack_bin_body(reinterpret_cast<const char*>(e.link_key.data()), kDirectKeySize);
  pk.pack(e.host);
  pk.pack(e.port);
  return Take(sink);
}

Result<DirectEndpoint> DecodeDirectEndpoint(std::span<const uint8_t> bytes) {
  const auto bad = [](const char* why) { return Error(StatusCode::kMalformed, why); };
  if (Status h = CheckHeader(bytes, "direct endpoint"); !h.ok()) return Error(h);
  if (bytes[0] != (0x90 | kEndpointFields)) return bad("direct endpoint has wrong field count");
  internal::Limits limits;
  limits.array = kEndpointFields;
  limits.str = kMaxDirectHostSize;
  limits.bin = kDirectKeySize;
  limits.depth = 1;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return bad("direct endpoint is not valid msgpack");
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size != kEndpointFields) {
    return bad("direct endpoint has wrong field count");
  }
  const msgpack::object* f = root.via.array.ptr;
  if (f[0].type != msgpack::type::POSITIVE_INTEGER || f[0].via.u64 != kDirectVersion) {
    return bad("direct endpoint version missing");
  }
  if (f[1].type != msgpack::type::BIN || f[1].via.bin.size != kDirectKeySize || f[2].type != msgpack::type::STR ||
      f[3].type != msgpack::type::POSITIVE_INTEGER) {
    return bad("direct endpoint field has wrong type or size");
  }
  const std::string_view host(f[2].via.str.ptr, f[2].via.str.size);
  if (!ValidHostPort(host, f[3].via.u64)) return bad("direct endpoint host or port is invalid");
  DirectEndpoint e;
  std::memcpy(e.link_key.data(), f[1].via.bin.ptr, kDirectKeySize);
  e.host.assign(host);
  e.port = static_cast<uint16_t>(f[3].via.u64);
  return e;
}

Result<Bytes> EncodeDirectFrame(const DirectFrame& fr) {
  if (fr.type == DirectFrameType::kDeliver) {
    if (fr.envelope.empty() || fr.envelope.size() > kMaxDirectEnvelopeSize) {
      return Error(StatusCode::kInvalidArgument, "a deliver frame carries 1 to kMaxDirectEnvelopeSize bytes");
    }
  } else if (fr.type == DirectFrameType::kAck) {
    if (!fr.envelope.empty()) return Error(StatusCode::kInvalidArgument, "an ack frame carries no envelope");
  } else {
    return Error(StatusCode::kInvalidArgument, "unknown direct frame type");
  }
  const bool deliver = fr.type == DirectFrameType::kDeliver;
  internal::SecretSink sink;  // the envelope is sealed already; the sink is simply the one that builds cleanly
  msgpack::packer<internal::SecretSink> pk(sink);
  pk.pack_array(deliver ? kDeliverFields : kAckFields);
  pk.pack(kDirectVersion);
  pk.pack(static_cast<uint8_t>(fr.type));
  pk.pack_bin(kDirectMessageIdSize);
  pk.pack_bin_body(reinterpret_cast<const char*>(fr.id.data()), kDirectMessageIdSize);
  if (deliver) {
    pk.pack_bin(static_cast<uint32_t>(fr.envelope.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(fr.envelope.data()), static_cast<uint32_t>(fr.envelope.size()));
  }
  return Take(sink);
}

Result<DirectFrame> DecodeDirectFrame(std::span<const uint8_t> bytes) {
  const auto bad = [](const char* why) { return Error(StatusCode::kMalformed, why); };
  if (Status h = CheckHeader(bytes, "direct frame"); !h.ok()) return Error(h);
  if (bytes.size() > kMaxDirectFrameSize) return bad("direct frame too large");
  if (bytes[0] != (0x90 | kDeliverFields) && bytes[0] != (0x90 | kAckFields)) {
    return bad("direct frame has wrong field count");
  }
  internal::Limits limits;
  limits.array = kDeliverFields;
  limits.str = 0;
  limits.bin = kMaxDirectEnvelopeSize;
  limits.depth = 1;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return bad("direct frame is not valid msgpack");
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size < kAckFields) return bad("direct frame has wrong field count");
  const msgpack::object* f = root.via.array.ptr;
  if (f[0].type != msgpack::type::POSITIVE_INTEGER || f[0].via.u64 != kDirectVersion) {
    return bad("direct frame version missing");
  }
  if (f[1].type != msgpack::type::POSITIVE_INTEGER) return bad("unknown direct frame type");
  const uint64_t type = f[1].via.u64;
  const uint32_t want = type == static_cast<uint8_t>(DirectFrameType::kDeliver) ? kDeliverFields
                        : type == static_cast<uint8_t>(DirectFrameType::kAck)   ? kAckFields
                                                                                : 0;
  if (want == 0) return bad("unknown direct frame type");
  if (root.via.array.size != want) return bad("direct frame has wrong field count");
  if (f[2].type != msgpack::type::BIN || f[2].via.bin.size != kDirectMessageIdSize) {
    return bad("direct frame message id has wrong type or size");
  }
  DirectFrame fr;
  fr.type = static_cast<DirectFrameType>(type);
  std::memcpy(fr.id.data(), f[2].via.bin.ptr, kDirectMessageIdSize);
  if (want == kDeliverFields) {
    if (f[3].type != msgpack::type::BIN || f[3].via.bin.size == 0 || f[3].via.bin.size > kMaxDirectEnvelopeSize) {
      return bad("direct frame envelope has wrong type or size");
    }
    const auto* p = reinterpret_cast<const uint8_t*>(f[3].via.bin.ptr);
    fr.envelope.assign(p, p + f[3].via.bin.size);
  }
  return fr;
}

}  // namespace cw::wire
