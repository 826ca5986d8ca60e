// Content: what travels inside a 1:1 Signal session, once decrypted and unpadded. A peer who holds a valid
// session can still send hostile bytes here, so this is a parser of untrusted input with tight limits.
//
// Encoding (msgpack array):
//   version 1: [1, kind, group_id (str, "" for none), body (bin), members ([str]), epoch (uint, 0 for none)]
//   version 2: the same with version 2 and a seventh field, member_keys ([bin 33 | nil], one per member).
// Content without member keys is written as version 1, which clients from before member keys read; only a
// membership that lists keys needs version 2.
// A group's membership changes carry a strictly increasing epoch, so a relay that replays or reorders
// them cannot bring back a removed member, and the identity key the admin trusts for each member, so a
// member's name alone, which anyone writing first to a device may claim, never gets the group's keys.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/wire/bundle.h"

namespace cw::wire {

inline constexpr uint8_t kContentVersion = 1;
inline constexpr uint8_t kContentVersionWithKeys = 2;
inline constexpr size_t kMaxGroupIdSize = 64;
inline constexpr size_t kMaxGroupMembers = 256;
inline constexpr size_t kMaxNameSize = 256;

enum class ContentKind : uint8_t {
  kMessage = 1,          // an application message: body is the user's plaintext
  kSenderKey = 2,        // body is a SenderKeyDistributionMessage for group_id
  kGroupMembers = 3,     // members is the new member list of group_id
};

struct Content {
  ContentKind kind = ContentKind::kMessage;
  std::string group_id;
  SecretBytes body;
  std::vector<std::string> members;
  uint64_t epoch = 0;  // for kGroupMembers
  // For kGroupMembers: empty, or one per member, in the same order: the key the admin lists for that member
  // (none where it knows none).
  std::vector<std::optional<PublicKey>> member_keys;
};

Result<SecretBytes> EncodeContent(const Content& content);
Result<Content> DecodeContent(std::span<const uint8_t> bytes);

// Names (addresses of contacts) are non-empty UTF-8-agnostic byte strings of at most kMaxNameSize bytes with
// no NUL byte; the stores use NUL as a separator.
bool IsValidName(std::string_view name);

}  // namespace cw::wire
