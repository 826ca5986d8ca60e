#include "relay/protocol.h"

#include <msgpack.hpp>

#include <cstring>

#include "core/wire/msgpack_util.h"

namespace cw::relay {
namespace {

// Frames are packed straight into the Bytes they are sent as: no 8 KiB msgpack::sbuffer to allocate and
// then copy out of for every answer and push (an envelope is copied into its frame once).
class BytesWriter {
 public:
  explicit BytesWriter(size_t reserve) { out_.reserve(reserve); }
  // Out of line: inlined into the packer's fixed-size writes, GCC 12 mistakes the insert for an overflow
  // (-Wstringop-overflow false positive); the call costs less than the zero-fill a resize would add.
  [[gnu::noinline]] void write(const char* p, size_t n) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(p);
    out_.insert(out_.end(), bytes, bytes + n);
  }
  Bytes Take() { return std::move(out_); }

 private:
  Bytes out_;
};
using Packer = msgpack::packer<BytesWriter>;
// Room for a frame's fixed fields (ids, numbers, msgpack headers) around its variable-length parts.
constexpr size_t kFrameOverhead = 96;

// ---- reading ----
bool ReadU64(const msgpack::object& o, uint64_t* out) {
  if (o.type != msgpack::type::POSITIVE_INTEGER) return false;
  *out = o.via.u64;
  return true;
}
bool ReadU32(const msgpack::object& o, uint32_t* out) {
  uint64_t v = 0;
  if (!ReadU64(o, &v) || v > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}
bool ReadBool(const msgpack::object& o, bool* out) {
  if (o.type != msgpack::type::BOOLEAN) return false;
  *out = o.via.boolean;
  return true;
}
template <size_t N>
bool ReadFixed(const msgpack::object& o, std::array<uint8_t, N>* out) {
  if (o.type != msgpack::type::BIN || o.via.bin.size != N) return false;
  std::memcpy(out->data(), o.via.bin.ptr, N);
  return true;
}
bool ReadBin(const msgpack::object& o, size_t min, size_t max, Bytes* out) {
  if (o.type != msgpack::type::BIN || o.via.bin.size < min || o.via.bin.size > max) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(o.via.bin.ptr);
  out->assign(p, p + o.via.bin.size);
  return true;
}
bool ReadStr(const msgpack::object& o, size_t max, std::string* out) {
  if (o.type != msgpack::type::STR || o.via.str.size > max) return false;
  out->assign(o.via.str.ptr, o.via.str.size);
  return true;
}

// ---- writing ----
void PackBin(Packer& pk, ByteView v) {
  pk.pack_bin(static_cast<uint32_t>(v.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(v.data()), static_cast<uint32_t>(v.size()));
}

// Argument count after [version, request_id, command].
size_t ArgCount(CommandType type) {
  switch (type) {
    case CommandType::kCreateMailbox: return 0;
    case CommandType::kUploadPreKeys: return 8;
    case CommandType::kFetchBundle: return 1;
    case CommandType::kDeposit: return 4;
    case CommandType::kFetchMessages: return 3;
    case CommandType::kAck: return 2;
    case CommandType::kIssueDepositToken: return 1;
    case CommandType::kRevokeDepositToken: return 2;
    case CommandType::kCreateAttachment: return 1;
    case CommandType::kPutAttachmentChunk: return 3;
    case CommandType::kGetAttachmentChunk: return 3;
    case CommandType::kStats: return 0;
  }
  return 0;
}
bool KnownCommand(uint64_t v) { return v >= 1 && v <= static_cast<uint64_t>(CommandType::kStats); }

// The largest array any frame holds: the upload's one-time pre-keys (the command itself has 11 elements).
constexpr size_t kMaxArray = 128;  // over every count limit, so those read as kLimitExceeded
static_assert(kMaxArray > kMaxOneTimePreKeysPerUpload && kMaxArray > kMaxAcksPerCommand);

// Which body an OK response to each command carries (index into ResponseBody).
size_t ExpectedBody(uint8_t command, ResponseCode code) {
  if (code != ResponseCode::kOk || !KnownCommand(command)) return 0;
  switch (static_cast<CommandType>(command)) {
    case CommandType::kCreateMailbox: return 1;
    case CommandType::kUploadPreKeys: return 2;
    case CommandType::kFetchBundle: return 3;
    case CommandType::kDeposit: return 0;
    case CommandType::kFetchMessages: return 4;
    case CommandType::kAck: return 5;
    case CommandType::kIssueDepositToken: return 6;
    case CommandType::kRevokeDepositToken: return 0;
    case CommandType::kCreateAttachment: return 7;
    case CommandType::kPutAttachmentChunk: return 8;
    case CommandType::kGetAttachmentChunk: return 9;
    case CommandType::kStats: return 10;
  }
  return 0;
}
constexpr size_t kBodyFields[] = {0, 1, 1, 1, 3, 1, 1, 1, 1, 2, 9};
static_assert(std::variant_size_v<ResponseBody> == std::size(kBodyFields));

bool KnownCode(uint64_t v) { return v <= static_cast<uint64_t>(ResponseCode::kUnavailable); }

}  // namespace

std::string_view ResponseCodeName(ResponseCode code) {
  switch (code) {
    case ResponseCode::kOk: return "OK";
    case ResponseCode::kMalformed: return "MALFORMED";
    case ResponseCode::kUnsupportedVersion: return "UNSUPPORTED_VERSION";
    case ResponseCode::kUnknownCommand: return "UNKNOWN_COMMAND";
    case ResponseCode::kTooLarge: return "TOO_LARGE";
    case ResponseCode::kDepositRefused: return "DEPOSIT_REFUSED";
    case ResponseCode::kMailboxFull: return "MAILBOX_FULL";
    case ResponseCode::kRateLimited: return "RATE_LIMITED";
    case ResponseCode::kNotFound: return "NOT_FOUND";
    case ResponseCode::kLimitExceeded: return "LIMIT_EXCEEDED";
    case ResponseCode::kInvalidRequest: return "INVALID_REQUEST";
    case ResponseCode::kPermissionDenied: return "PERMISSION_DENIED";
    case ResponseCode::kUnavailable: return "UNAVAILABLE";
  }
  return "UNKNOWN";
}

CommandType TypeOf(const CommandBody& body) {
  return static_cast<CommandType>(body.index() + 1);  // the variant lists the commands in number order
}
static_assert(std::variant_size_v<CommandBody> == static_cast<size_t>(CommandType::kStats));

Response ErrorResponse(uint32_t request_id, uint8_t command, ResponseCode code, std::string message) {
  Response r;
  r.request_id = request_id;
  r.command = command;
  r.code = code;
  r.message = std::move(message);
  return r;
}

Bytes EncodeCommand(const Command& command) {
  const auto* deposit = std::get_if<Deposit>(&command.body);
  BytesWriter buf(kFrameOverhead + (deposit != nullptr ? deposit->envelope.size() : 0));
  Packer pk(buf);
  const CommandType type = TypeOf(command.body);
  const auto* issue = std::get_if<IssueDepositToken>(&command.body);
  const bool optional_field = issue != nullptr && issue->claim_within_millis != 0;
  pk.pack_array(static_cast<uint32_t>(3 + ArgCount(type) + (optional_field ? 1 : 0)));
  pk.pack(kProtocolVersion);
  pk.pack(command.request_id);
  pk.pack(static_cast<uint8_t>(type));
  std::visit(
      [&](const auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, UploadPreKeys>) {
          PackBin(pk, c.mailbox);
          pk.pack(c.registration_id);
          pk.pack(c.device_id);
          PackBin(pk, c.identity_key);
          pk.pack(c.signed_pre_key.id);
          PackBin(pk, c.signed_pre_key.public_key);
          PackBin(pk, c.signed_pre_key.signature);
          pk.pack_array(static_cast<uint32_t>(c.one_time_pre_keys.size()));
          for (const auto& k : c.one_time_pre_keys) {
            pk.pack_array(2);
            pk.pack(k.id);
            PackBin(pk, k.public_key);
          }
        } else if constexpr (std::is_same_v<T, FetchBundle>) {
          PackBin(pk, c.mailbox);
        } else if constexpr (std::is_same_v<T, IssueDepositToken>) {
          PackBin(pk, c.mailbox);
          if (c.claim_within_millis != 0) pk.pack(c.claim_within_millis);
        } else if constexpr (std::is_same_v<T, Deposit>) {
          PackBin(pk, c.mailbox);
          PackBin(pk, c.token);
          PackBin(pk, c.message_id);
          PackBin(pk, c.envelope);
        } else if constexpr (std::is_same_v<T, FetchMessages>) {
          PackBin(pk, c.mailbox);
          pk.pack(c.after_seq);
          pk.pack(c.max_count);
        } else if constexpr (std::is_same_v<T, Ack>) {
          PackBin(pk, c.mailbox);
          pk.pack_array(static_cast<uint32_t>(c.message_ids.size()));
          for (const auto& id : c.message_ids) PackBin(pk, id);
        } else if constexpr (std::is_same_v<T, RevokeDepositToken>) {
          PackBin(pk, c.mailbox);
          PackBin(pk, c.token);
        } else if constexpr (std::is_same_v<T, CreateAttachment>) {
          pk.pack(c.total_size);
        } else if constexpr (std::is_same_v<T, PutAttachmentChunk>) {
          PackBin(pk, c.id);
          pk.pack(c.offset);
          PackBin(pk, c.chunk);
        } else if constexpr (std::is_same_v<T, GetAttachmentChunk>) {
          PackBin(pk, c.id);
          pk.pack(c.offset);
          pk.pack(c.max_len);
        }
      },
      command.body);
  return buf.Take();
}

tl::expected<Command, CommandError> DecodeCommand(ByteView frame) {
  CommandError err;
  auto fail = [&](ResponseCode code, const char* message) {
    err.code = code;
    err.message = message;
    return tl::unexpected<CommandError>(err);
  };
  if (frame.size() > kMaxCommandSize) return fail(ResponseCode::kTooLarge, "command frame too large");
  wire::internal::Limits limits;
  limits.array = kMaxArray;
  limits.map = 0;
  limits.str = 256;  // no command of this version has a string; a later one may, and reads as unsupported
  limits.bin = kMaxEnvelopeSize;
  limits.depth = 3;
  auto handle = wire::internal::UnpackOne(frame, limits);
  if (!handle) return fail(ResponseCode::kMalformed, "command is not valid msgpack within limits");
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 3) {
    return fail(ResponseCode::kMalformed, "command is not an array of at least 3 elements");
  }
  const msgpack::object* f = root.via.array.ptr;
  const size_t n = root.via.array.size;
  uint32_t version = 0;
  if (!ReadU32(f[0], &version)) return fail(ResponseCode::kMalformed, "command version missing");
  // The request id and command number are read before the version check, so that even a refusal can be
  // matched to its request by a client of another version.
  uint32_t request_id = 0;
  if (ReadU32(f[1], &request_id)) err.request_id = request_id;
  uint64_t type_number = 0;
  if (ReadU64(f[2], &type_number) && type_number <= UINT8_MAX) err.command = static_cast<uint8_t>(type_number);
  if (version != kProtocolVersion) return fail(ResponseCode::kUnsupportedVersion, "unsupported protocol version");
  if (f[1].type != msgpack::type::POSITIVE_INTEGER || f[1].via.u64 > UINT32_MAX) {
    return fail(ResponseCode::kMalformed, "request id missing");
  }
  if (f[2].type != msgpack::type::POSITIVE_INTEGER) return fail(ResponseCode::kMalformed, "command number missing");
  if (!KnownCommand(type_number)) return fail(ResponseCode::kUnknownCommand, "unknown command");
  const auto type = static_cast<CommandType>(type_number);
  const bool optional_field = type == CommandType::kIssueDepositToken && n == 3 + ArgCount(type) + 1;
  if (n != 3 + ArgCount(type) && !optional_field) {
    return fail(ResponseCode::kMalformed, "command has the wrong number of fields");
  }
  const msgpack::object* a = f + 3;

  Command cmd;
  cmd.request_id = request_id;
  const char* bad_field = "command field has the wrong type or size";
  switch (type) {
    case CommandType::kCreateMailbox:
      cmd.body = CreateMailbox{};
      break;
    case CommandType::kUploadPreKeys: {
      UploadPreKeys c;
      if (!ReadFixed(a[0], &c.mailbox) || !ReadU32(a[1], &c.registration_id) || !ReadU32(a[2], &c.device_id) ||
          !ReadFixed(a[3], &c.identity_key) || !ReadU32(a[4], &c.signed_pre_key.id) ||
          !ReadFixed(a[5], &c.signed_pre_key.public_key) || !ReadFixed(a[6], &c.signed_pre_key.signature) ||
          a[7].type != msgpack::type::ARRAY) {
        return fail(ResponseCode::kMalformed, bad_field);
      }
      if (a[7].via.array.size > kMaxOneTimePreKeysPerUpload) {
        return fail(ResponseCode::kLimitExceeded, "too many one-time pre-keys in one upload");
      }
      c.one_time_pre_keys.reserve(a[7].via.array.size);
      for (uint32_t i = 0; i < a[7].via.array.size; ++i) {
        const msgpack::object& e = a[7].via.array.ptr[i];
        wire::OneTimePreKeyPublic k;
        if (e.type != msgpack::type::ARRAY || e.via.array.size != 2 || !ReadU32(e.via.array.ptr[0], &k.id) ||
            !ReadFixed(e.via.array.ptr[1], &k.public_key)) {
          return fail(ResponseCode::kMalformed, "one-time pre-key has the wrong shape");
        }
        c.one_time_pre_keys.push_back(k);
      }
      cmd.body = std::move(c);
      break;
    }
    case CommandType::kFetchBundle: {
      FetchBundle c;
      if (!ReadFixed(a[0], &c.mailbox)) return fail(ResponseCode::kMalformed, bad_field);
      cmd.body = c;
      break;
    }
    case CommandType::kDeposit: {
      Deposit c;
      if (!ReadFixed(a[0], &c.mailbox) || !ReadFixed(a[1], &c.token) || !ReadFixed(a[2], &c.message_id) ||
          !ReadBin(a[3], 1, kMaxEnvelopeSize, &c.envelope)) {
        return fail(ResponseCode::kMalformed, bad_field);
      }
      cmd.body = std::move(c);
      break;
    }
    case CommandType::kFetchMessages: {
      FetchMessages c;
      if (!ReadFixed(a[0], &c.mailbox) || !ReadU64(a[1], &c.after_seq) || !ReadU32(a[2], &c.max_count) ||
          c.max_count == 0 || c.max_count > kMaxFetchCount) {
        return fail(ResponseCode::kMalformed, bad_field);
      }
      cmd.body = c;
      break;
    }
    case CommandType::kAck: {
      Ack c;
      if (!ReadFixed(a[0], &c.mailbox) || a[1].type != msgpack::type::ARRAY || a[1].via.array.size == 0) {
        return fail(ResponseCode::kMalformed, bad_field);
      }
      if (a[1].via.array.size > kMaxAcksPerCommand) {
        return fail(ResponseCode::kLimitExceeded, "too many message ids in one ack");
      }
      for (uint32_t i = 0; i < a[1].via.array.size; ++i) {
        MessageId id;
        if (!ReadFixed(a[1].via.array.ptr[i], &id)) return fail(ResponseCode::kMalformed, bad_field);
        c.message_ids.push_back(id);
      }
      cmd.body = std::move(c);
      break;
    }
    case CommandType::kIssueDepositToken: {
      IssueDepositToken c;
      if (!ReadFixed(a[0], &c.mailbox)) return fail(ResponseCode::kMalformed, bad_field);
      if (optional_field) {
        if (!ReadU64(a[1], &c.claim_within_millis) || c.claim_within_millis == 0) {
          return fail(ResponseCode::kMalformed, bad_field);
        }
        if (c.claim_within_millis > kMaxClaimWithinMillis) {
          return fail(ResponseCode::kLimitExceeded, "a deposit token's claim time is over a year");
        }
      }
      cmd.body = c;
      break;
    }
    case CommandType::kRevokeDepositToken: {
      RevokeDepositToken c;
      if (!ReadFixed(a[0], &c.mailbox) || !ReadFixed(a[1], &c.token)) {
        return fail(ResponseCode::kMalformed, bad_field);
      }
      cmd.body = c;
      break;
    }
    case CommandType::kCreateAttachment: {
      CreateAttachment c;
      if (!ReadU64(a[0], &c.total_size) || c.total_size == 0) return fail(ResponseCode::kMalformed, bad_field);
      cmd.body = c;
      break;
    }
    case CommandType::kPutAttachmentChunk: {
      PutAttachmentChunk c;
      if (!ReadFixed(a[0], &c.id) || !ReadU64(a[1], &c.offset)) return fail(ResponseCode::kMalformed, bad_field);
      if (a[2].type == msgpack::type::BIN && a[2].via.bin.size > kMaxAttachmentChunk) {
        return fail(ResponseCode::kTooLarge, "attachment chunk too large");
      }
      if (!ReadBin(a[2], 1, kMaxAttachmentChunk, &c.chunk)) return fail(ResponseCode::kMalformed, bad_field);
      cmd.body = std::move(c);
      break;
    }
    case CommandType::kGetAttachmentChunk: {
      GetAttachmentChunk c;
      if (!ReadFixed(a[0], &c.id) || !ReadU64(a[1], &c.offset) || !ReadU32(a[2], &c.max_len) ||
          c.max_len == 0 || c.max_len > kMaxAttachmentChunk) {
        return fail(ResponseCode::kMalformed, bad_field);
      }
      cmd.body = c;
      break;
    }
    case CommandType::kStats:
      cmd.body = GetStats{};
      break;
  }
  return cmd;
}

Bytes EncodeDeliveryFrame(uint32_t request_id, const MailboxId& mailbox, uint64_t seq, const MessageId& message_id,
                          ByteView envelope) {
  BytesWriter buf(kFrameOverhead + envelope.size());
  Packer pk(buf);
  pk.pack_array(7);
  pk.pack(kProtocolVersion);
  pk.pack(request_id);
  pk.pack(static_cast<uint8_t>(FrameKind::kDelivery));
  PackBin(pk, mailbox);
  pk.pack(seq);
  PackBin(pk, message_id);
  PackBin(pk, envelope);
  return buf.Take();
}

Bytes EncodeServerFrame(const ServerFrame& frame) {
  if (const auto* d = std::get_if<Delivery>(&frame)) {
    return EncodeDeliveryFrame(d->request_id, d->mailbox, d->seq, d->message_id, d->envelope);
  }
  const auto* response = std::get_if<Response>(&frame);
  const auto* chunk = response != nullptr ? std::get_if<ChunkData>(&response->body) : nullptr;
  BytesWriter buf(kFrameOverhead + (response != nullptr ? response->message.size() : 0) +
                  (chunk != nullptr ? chunk->data.size() : 0));
  Packer pk(buf);
  if (const auto* l = std::get_if<PreKeysLow>(&frame)) {
    pk.pack_array(5);
    pk.pack(kProtocolVersion);
    pk.pack(uint32_t{0});
    pk.pack(static_cast<uint8_t>(FrameKind::kPreKeysLow));
    PackBin(pk, l->mailbox);
    pk.pack(l->remaining);
    return buf.Take();
  }
  const auto& r = std::get<Response>(frame);
  pk.pack_array(static_cast<uint32_t>(6 + kBodyFields[r.body.index()]));
  pk.pack(kProtocolVersion);
  pk.pack(r.request_id);
  pk.pack(static_cast<uint8_t>(FrameKind::kResponse));
  pk.pack(r.command);
  pk.pack(static_cast<uint8_t>(r.code));
  const std::string_view message = std::string_view(r.message).substr(0, kMaxErrorMessage);
  pk.pack_str(static_cast<uint32_t>(message.size()));
  pk.pack_str_body(message.data(), static_cast<uint32_t>(message.size()));
  std::visit(
      [&](const auto& b) {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, MailboxCreated>) {
          PackBin(pk, b.mailbox);
        } else if constexpr (std::is_same_v<T, PreKeysStored>) {
          pk.pack(b.one_time_remaining);
        } else if constexpr (std::is_same_v<T, BundleFound>) {
          PackBin(pk, b.bundle);
        } else if constexpr (std::is_same_v<T, FetchDone>) {
          pk.pack(b.delivered);
          pk.pack(b.last_seq);
          pk.pack(b.more);
        } else if constexpr (std::is_same_v<T, Acked>) {
          pk.pack(b.removed);
        } else if constexpr (std::is_same_v<T, TokenIssued>) {
          PackBin(pk, b.token);
        } else if constexpr (std::is_same_v<T, AttachmentCreated>) {
          PackBin(pk, b.id);
        } else if constexpr (std::is_same_v<T, ChunkStored>) {
          pk.pack(b.written);
        } else if constexpr (std::is_same_v<T, ChunkData>) {
          pk.pack(b.total_size);
          PackBin(pk, b.data);
        } else if constexpr (std::is_same_v<T, RelayStatsView>) {
          for (uint64_t v : {b.connections, b.mailboxes, b.queued_messages, b.queued_bytes, b.attachments,
                             b.attachment_bytes, b.syncs, b.commands, b.errors}) {
            pk.pack(v);
          }
        }
      },
      r.body);
  return buf.Take();
}

Result<ServerFrame> DecodeServerFrame(ByteView frame) {
  auto malformed = [](const char* m) { return Error(StatusCode::kMalformed, m); };
  if (frame.size() > kMaxServerFrameSize) return malformed("server frame too large");
  wire::internal::Limits limits;
  limits.array = 16;
  limits.map = 0;
  limits.str = kMaxErrorMessage;
  limits.bin = kMaxEnvelopeSize;
  limits.depth = 1;
  auto handle = wire::internal::UnpackOne(frame, limits);
  if (!handle) return malformed("server frame is not valid msgpack within limits");
  const msgpack::object& root = handle->get();
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 3) return malformed("server frame is not an array");
  const msgpack::object* f = root.via.array.ptr;
  const size_t n = root.via.array.size;
  uint32_t version = 0;
  if (!ReadU32(f[0], &version)) return malformed("server frame version missing");
  if (version != kProtocolVersion) return Error(StatusCode::kUnsupportedVersion, "unsupported protocol version");
  uint32_t request_id = 0;
  uint32_t kind = 0;
  if (!ReadU32(f[1], &request_id) || !ReadU32(f[2], &kind)) return malformed("server frame header malformed");
  switch (static_cast<FrameKind>(kind)) {
    case FrameKind::kDelivery: {
      Delivery d;
      d.request_id = request_id;
      if (n != 7 || !ReadFixed(f[3], &d.mailbox) || !ReadU64(f[4], &d.seq) || !ReadFixed(f[5], &d.message_id) ||
          !ReadBin(f[6], 1, kMaxEnvelopeSize, &d.envelope)) {
        return malformed("delivery frame malformed");
      }
      return ServerFrame(std::move(d));
    }
    case FrameKind::kPreKeysLow: {
      PreKeysLow l;
      if (n != 5 || request_id != 0 || !ReadFixed(f[3], &l.mailbox) || !ReadU32(f[4], &l.remaining)) {
        return malformed("pre-keys-low frame malformed");
      }
      return ServerFrame(l);
    }
    case FrameKind::kResponse:
      break;
    default:
      return malformed("unknown server frame kind");
  }
  Response r;
  r.request_id = request_id;
  uint32_t command = 0;
  uint32_t code = 0;
  if (n < 6 || !ReadU32(f[3], &command) || command > UINT8_MAX || !ReadU32(f[4], &code) || !KnownCode(code) ||
      !ReadStr(f[5], kMaxErrorMessage, &r.message)) {
    return malformed("response header malformed");
  }
  r.command = static_cast<uint8_t>(command);
  r.code = static_cast<ResponseCode>(code);
  const size_t body = ExpectedBody(r.command, r.code);
  if (n != 6 + kBodyFields[body]) return malformed("response has the wrong number of fields");
  const msgpack::object* b = f + 6;
  bool ok = true;
  switch (body) {
    case 0: r.body = NoBody{}; break;
    case 1: { MailboxCreated v; ok = ReadFixed(b[0], &v.mailbox); r.body = v; break; }
    case 2: { PreKeysStored v; ok = ReadU32(b[0], &v.one_time_remaining); r.body = v; break; }
    case 3: {
      BundleFound v;
      ok = ReadBin(b[0], 1, wire::kMaxBundleSize, &v.bundle);
      r.body = std::move(v);
      break;
    }
    case 4: {
      FetchDone v;
      ok = ReadU32(b[0], &v.delivered) && ReadU64(b[1], &v.last_seq) && ReadBool(b[2], &v.more);
      r.body = v;
      break;
    }
    case 5: { Acked v; ok = ReadU32(b[0], &v.removed); r.body = v; break; }
    case 6: { TokenIssued v; ok = ReadFixed(b[0], &v.token); r.body = v; break; }
    case 7: { AttachmentCreated v; ok = ReadFixed(b[0], &v.id); r.body = v; break; }
    case 8: { ChunkStored v; ok = ReadU64(b[0], &v.written); r.body = v; break; }
    case 9: {
      ChunkData v;
      ok = ReadU64(b[0], &v.total_size) && ReadBin(b[1], 0, kMaxAttachmentChunk, &v.data);
      r.body = std::move(v);
      break;
    }
    case 10: {
      RelayStatsView v;
      uint64_t* fields[] = {&v.connections, &v.mailboxes,        &v.queued_messages, &v.queued_bytes, &v.attachments,
                            &v.attachment_bytes, &v.syncs, &v.commands, &v.errors};
      for (size_t i = 0; i < 9 && ok; ++i) ok = ReadU64(b[i], fields[i]);
      r.body = v;
      break;
    }
  }
  if (!ok) return malformed("response body malformed");
  return ServerFrame(std::move(r));
}

}  // namespace cw::relay
