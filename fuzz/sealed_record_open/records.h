// Shared by the sealed_record_open fuzz target and its corpus generator: the fixed key, names and the
// layout of an input (one mode byte, then the bytes that mode decodes).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace cw::fuzz::sealed_record_open {

enum Mode : uint8_t {
  kSealedRecord = 0,  // a whole sealed store record under kSealKey, column family kCf, stored key kStoredKey
  kConversation = 1,  // a conversation record (kConversation value)
  kRow = 2,           // a transcript row (kTranscript value)
  kInner = 3,         // a row's inner fields, as sealed under the conversation key
  kOutbox = 4,        // an outbox entry
  kContact = 5,       // the engine's contact record
  kGroup = 6,         // the engine's group record
  kBlob = 7,          // a row blob sealed under kConversationKey for kConversationId, sequence kSequence
  kRowKey = 8,        // a transcript/outbox key
  kModeCount = 9,
};

inline constexpr std::array<uint8_t, 32> kSealKey = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                                     12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                                     23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
inline constexpr std::array<uint8_t, 32> kConversationKey = {
    200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215,
    216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231};
inline constexpr std::string_view kCf = "transcript";
inline constexpr std::string_view kStoredKey = "stored-key-0123456789abcdef";
inline constexpr std::string_view kConversationId = "dm:patient.bob";
inline constexpr uint64_t kSequence = 7;

}  // namespace cw::fuzz::sealed_record_open
