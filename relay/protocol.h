// The relay's command set: what a client sends in one frame and what the relay answers, encoded in msgpack
// (relay/README.md lists every command). Every decoder here takes untrusted bytes: it bounds sizes before msgpack
// allocates, checks types, lengths and the version, and never throws.
//
// Command frame:  [version, request_id, command, args...]            (fixed arity per command)
// Server frames:  [version, request_id, kResponse, command, code, message, body...]
//                 [version, request_id, kDelivery, mailbox, seq, message_id, envelope]
//                 [version, 0,          kPreKeysLow, mailbox, remaining]
// A request id of 0 marks a push (a delivery while connected, a low pre-key warning); a fetch answers with
// one delivery frame per message, carrying the fetch's request id, then its response.
// Thread rules: free functions, safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/status.h"
#include "core/wire/bundle.h"
#include "relay/types.h"

namespace cw::relay {

inline constexpr uint32_t kProtocolVersion = 1;

// Named limits. A command frame larger than kMaxCommandSize is refused before parsing.
inline constexpr size_t kMaxEnvelopeSize = 96 * 1024;
inline constexpr size_t kMaxAttachmentChunk = 64 * 1024;
inline constexpr uint64_t kMaxClaimWithinMillis = 366ull * 24 * 3600 * 1000;  // a year
inline constexpr size_t kMaxCommandSize = kMaxEnvelopeSize + 1024;
inline constexpr size_t kMaxServerFrameSize = kMaxEnvelopeSize + 1024;
inline constexpr size_t kMaxOneTimePreKeysPerUpload = 100;
inline constexpr size_t kMaxAcksPerCommand = 64;
inline constexpr uint32_t kMaxFetchCount = 64;
inline constexpr size_t kMaxErrorMessage = 128;

enum class CommandType : uint8_t {
  kCreateMailbox = 1,
  kUploadPreKeys = 2,
  kFetchBundle = 3,
  kDeposit = 4,
  kFetchMessages = 5,
  kAck = 6,
  kIssueDepositToken = 7,
  kRevokeDepositToken = 8,
  kCreateAttachment = 9,
  kPutAttachmentChunk = 10,
  kGetAttachmentChunk = 11,
  kStats = 12,
};

// One documented code per outcome. kDepositRefused is the single answer to "no such mailbox" and "wrong or
// revoked token" (same code, same message), and kNotFound the single answer to "no such mailbox" and "not
// your mailbox", so a prober learns nothing about which mailboxes exist.
enum class ResponseCode : uint8_t {
  kOk = 0,
  kMalformed = 1,           // the frame does not parse, or a field has the wrong type or size
  kUnsupportedVersion = 2,  // another protocol version
  kUnknownCommand = 3,      // a command number this relay does not know
  kTooLarge = 4,            // frame, envelope, chunk or attachment over its limit
  kDepositRefused = 5,      // unknown mailbox or invalid deposit token (indistinguishable)
  kMailboxFull = 6,         // the mailbox is at its message or byte quota; retry later
  kRateLimited = 7,         // too many requests from this link key; retry later
  kNotFound = 8,            // no such mailbox (or not yours), bundle or attachment
  kLimitExceeded = 9,       // too many pre-keys, acks or tokens in one request or mailbox
  kInvalidRequest = 10,     // well-formed but not applicable (wrong attachment offset, ...)
  kPermissionDenied = 11,   // the command needs a privilege this link key lacks (stats)
  kUnavailable = 12,        // the relay could not make the change durable; retry later
};
std::string_view ResponseCodeName(ResponseCode code);

// ---- Commands ----
struct CreateMailbox {
  friend bool operator==(const CreateMailbox&, const CreateMailbox&) = default;
};
struct UploadPreKeys {
  MailboxId mailbox{};
  uint32_t registration_id = 0;
  uint32_t device_id = 1;
  wire::PublicKey identity_key{};
  wire::SignedPreKeyPublic signed_pre_key;
  std::vector<wire::OneTimePreKeyPublic> one_time_pre_keys;  // at most kMaxOneTimePreKeysPerUpload
  friend bool operator==(const UploadPreKeys&, const UploadPreKeys&) = default;
};
struct FetchBundle {
  MailboxId mailbox{};
  friend bool operator==(const FetchBundle&, const FetchBundle&) = default;
};
struct Deposit {
  MailboxId mailbox{};
  DepositToken token{};
  MessageId message_id{};
  Bytes envelope;  // opaque, padded by the client; at most kMaxEnvelopeSize
  friend bool operator==(const Deposit&, const Deposit&) = default;
};
struct FetchMessages {
  MailboxId mailbox{};
  uint64_t after_seq = 0;
  uint32_t max_count = kMaxFetchCount;  // 1..kMaxFetchCount
  friend bool operator==(const FetchMessages&, const FetchMessages&) = default;
};
struct Ack {
  MailboxId mailbox{};
  std::vector<MessageId> message_ids;  // 1..kMaxAcksPerCommand
  friend bool operator==(const Ack&, const Ack&) = default;
};
struct IssueDepositToken {
  MailboxId mailbox{};
  // 0: the token is claimed from the start (kept until revoked). Else an invite's token: it admits its first
  // deposit only within this many milliseconds, then is kept until revoked (MailboxStore::AddDepositToken).
  // Sent as an optional second field, so the 1-field form of older clients still means 0.
  uint64_t claim_within_millis = 0;  // at most kMaxClaimWithinMillis
  friend bool operator==(const IssueDepositToken&, const IssueDepositToken&) = default;
};
struct RevokeDepositToken {
  MailboxId mailbox{};
  DepositToken token{};
  friend bool operator==(const RevokeDepositToken&, const RevokeDepositToken&) = default;
};
struct CreateAttachment {
  uint64_t total_size = 0;
  friend bool operator==(const CreateAttachment&, const CreateAttachment&) = default;
};
struct PutAttachmentChunk {
  AttachmentId id{};
  uint64_t offset = 0;
  Bytes chunk;  // 1..kMaxAttachmentChunk bytes
  friend bool operator==(const PutAttachmentChunk&, const PutAttachmentChunk&) = default;
};
struct GetAttachmentChunk {
  AttachmentId id{};
  uint64_t offset = 0;
  uint32_t max_len = kMaxAttachmentChunk;  // 1..kMaxAttachmentChunk
  friend bool operator==(const GetAttachmentChunk&, const GetAttachmentChunk&) = default;
};
struct GetStats {
  friend bool operator==(const GetStats&, const GetStats&) = default;
};

using CommandBody = std::variant<CreateMailbox, UploadPreKeys, FetchBundle, Deposit, FetchMessages, Ack,
                                 IssueDepositToken, RevokeDepositToken, CreateAttachment, PutAttachmentChunk,
                                 GetAttachmentChunk, GetStats>;
struct Command {
  uint32_t request_id = 0;
  CommandBody body;
  friend bool operator==(const Command&, const Command&) = default;
};
CommandType TypeOf(const CommandBody& body);

// Why a command frame was refused, and what the error response should carry.
struct CommandError {
  ResponseCode code = ResponseCode::kMalformed;
  uint32_t request_id = 0;   // 0 when it could not be read
  uint8_t command = 0;       // 0 when it could not be read
  std::string message;       // fixed text; never echoes input bytes
};

Bytes EncodeCommand(const Command& command);
// Exactly one well-formed command or a CommandError; never throws.
tl::expected<Command, CommandError> DecodeCommand(ByteView frame);

// ---- Server frames ----
struct RelayStatsView {
  uint64_t connections = 0;
  uint64_t mailboxes = 0;
  uint64_t queued_messages = 0;
  uint64_t queued_bytes = 0;
  uint64_t attachments = 0;
  uint64_t attachment_bytes = 0;
  uint64_t syncs = 0;
  uint64_t commands = 0;
  uint64_t errors = 0;
  friend bool operator==(const RelayStatsView&, const RelayStatsView&) = default;
};

// Response bodies; which one a response carries follows from its command and code (errors carry none).
struct NoBody {
  friend bool operator==(const NoBody&, const NoBody&) = default;
};
struct MailboxCreated {
  MailboxId mailbox{};
  friend bool operator==(const MailboxCreated&, const MailboxCreated&) = default;
};
struct PreKeysStored {
  uint32_t one_time_remaining = 0;
  friend bool operator==(const PreKeysStored&, const PreKeysStored&) = default;
};
struct BundleFound {
  Bytes bundle;  // wire::EncodeBundle format (docs/prekey-bundle-format.md)
  friend bool operator==(const BundleFound&, const BundleFound&) = default;
};
struct FetchDone {
  uint32_t delivered = 0;  // delivery frames sent before this response
  uint64_t last_seq = 0;   // pass as after_seq to continue; unchanged when nothing was delivered
  bool more = false;       // more messages wait after last_seq
  friend bool operator==(const FetchDone&, const FetchDone&) = default;
};
struct Acked {
  uint32_t removed = 0;  // ids that were present (an unknown or repeated id is not an error)
  friend bool operator==(const Acked&, const Acked&) = default;
};
struct TokenIssued {
  DepositToken token{};
  friend bool operator==(const TokenIssued&, const TokenIssued&) = default;
};
struct AttachmentCreated {
  AttachmentId id{};
  friend bool operator==(const AttachmentCreated&, const AttachmentCreated&) = default;
};
struct ChunkStored {
  uint64_t written = 0;  // bytes stored so far; the attachment is complete when written == total_size
  friend bool operator==(const ChunkStored&, const ChunkStored&) = default;
};
struct ChunkData {
  uint64_t total_size = 0;
  Bytes data;
  friend bool operator==(const ChunkData&, const ChunkData&) = default;
};
using ResponseBody = std::variant<NoBody, MailboxCreated, PreKeysStored, BundleFound, FetchDone, Acked,
                                  TokenIssued, AttachmentCreated, ChunkStored, ChunkData, RelayStatsView>;

struct Response {
  uint32_t request_id = 0;
  uint8_t command = 0;  // the CommandType answered (or the raw number of an unknown one; 0 if unreadable)
  ResponseCode code = ResponseCode::kOk;
  std::string message;  // empty on success; fixed text otherwise
  ResponseBody body;
  friend bool operator==(const Response&, const Response&) = default;
};
struct Delivery {
  uint32_t request_id = 0;  // the fetch's, or 0 for a push
  MailboxId mailbox{};
  uint64_t seq = 0;
  MessageId message_id{};
  Bytes envelope;
  friend bool operator==(const Delivery&, const Delivery&) = default;
};
struct PreKeysLow {
  MailboxId mailbox{};
  uint32_t remaining = 0;
  friend bool operator==(const PreKeysLow&, const PreKeysLow&) = default;
};
using ServerFrame = std::variant<Response, Delivery, PreKeysLow>;

enum class FrameKind : uint8_t { kResponse = 0, kDelivery = 1, kPreKeysLow = 2 };

Bytes EncodeServerFrame(const ServerFrame& frame);
// The delivery frame EncodeServerFrame makes of these fields, without first copying the envelope into a
// Delivery (a push encodes straight from the stored message).
Bytes EncodeDeliveryFrame(uint32_t request_id, const MailboxId& mailbox, uint64_t seq, const MessageId& message_id,
                          ByteView envelope);
// kMalformed or kUnsupportedVersion; never throws. Checks that the body matches the command and code.
Result<ServerFrame> DecodeServerFrame(ByteView frame);

// An error response for `command` (as much of it as is known).
Response ErrorResponse(uint32_t request_id, uint8_t command, ResponseCode code, std::string message);

}  // namespace cw::relay
