// Internal to cw_session: the engine's own stored records (contacts, groups) and store-key layouts.
// Stored records come back from sealed storage, but are still parsed with tight limits: a store the
// attacker could write to must not crash the engine.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/session/engine.h"

namespace cw::session::internal {

std::string BigEndian32(uint32_t v);
uint32_t ReadBigEndian32(std::span<const uint8_t> b);  // REQUIRES: b.size() == 4
std::string BigEndian64(uint64_t v);
uint64_t ReadBigEndian64(std::span<const uint8_t> b);  // REQUIRES: b.size() == 8

std::string SessionKey(std::string_view name, uint32_t device_id);
std::string SenderKeyKey(std::string_view group_id, std::string_view name, uint32_t device_id);

inline constexpr size_t kMaxRejectedKeys = 8;

struct ContactRecord {
  TrustState state = TrustState::kTrusted;
  wire::PublicKey identity_key{};
  std::optional<wire::PublicKey> pending_identity_key;
  // New keys the user rejected (Engine::RejectIdentityChange), oldest first, at most kMaxRejectedKeys: their
  // messages are refused without asking the user again. More than one, since an impostor can alternate keys
  // (found in review: with only the last one kept, a second rejected key brought the first one back).
  std::vector<wire::PublicKey> rejected_identity_keys;
  // While kChanged: whether identity_key was verified before the change, restored if it is rejected.
  bool verified_before_change = false;
};

SecretBytes EncodeContact(const ContactRecord& c);
Result<ContactRecord> DecodeContact(std::span<const uint8_t> bytes);

// A care-team group as this device knows it. The admin (its creator) is the only member whose membership
// changes are accepted, each with a higher epoch than the last.
struct GroupRecord {
  std::string admin;
  uint64_t epoch = 0;
  std::vector<std::string> members;
  // One per member, in the same order: the identity key the admin listed for that member (the key it trusted
  // for them at its last change), or none where it listed none (records and memberships from before keys).
  std::vector<std::optional<wire::PublicKey>> keys;

  std::optional<wire::PublicKey> KeyOf(std::string_view member) const;
};

SecretBytes EncodeGroup(const GroupRecord& group);
Result<GroupRecord> DecodeGroup(std::span<const uint8_t> bytes);

bool IsValidGroupId(std::string_view group_id);

}  // namespace cw::session::internal
