// Export of transcripts as JSON (nlohmann-json): the patient's right of access and data portability.
// The schema is documented in docs/export-schema.md; ParseExport reads it back (for the round-trip test
// and for an import tool).
//
// The export holds plaintext. It comes back in a SecretBytes (wiped when dropped); what the caller then
// writes to a file or share sheet is up to the caller. nlohmann-json builds its own unwiped strings on the
// way: an export is a deliberate, rare act of the user, and its result leaves the device's protection anyway.
//
// Thread rules: as Transcripts (its owner thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "core/base/secret.h"
#include "core/base/status.h"
#include "storage/transcript.h"

namespace cw::storage {

inline constexpr int kExportVersion = 1;
inline constexpr std::string_view kExportFormat = "cipherward-transcript-export";

struct ExportedConversation {
  ConversationInfo info;
  std::vector<TranscriptMessage> messages;
};

struct ExportedData {
  int64_t exported_at_ms = 0;
  std::string local_name;
  std::vector<ExportedConversation> conversations;
};

// One conversation (kNotFound when absent), or every conversation when `conversation_id` is nullopt.
Result<SecretBytes> ExportJson(Transcripts& transcripts, std::optional<std::string_view> conversation_id,
                               std::string_view local_name, int64_t now_ms);

// kMalformed unless `json` is an export of this format; kUnsupportedVersion for a newer version.
Result<ExportedData> ParseExport(std::span<const uint8_t> json);

}  // namespace cw::storage
