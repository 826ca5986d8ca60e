#include "storage/export.h"

#include <sodium.h>

#include <cstring>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <streambuf>
#include <vector>

#include "core/base/secret.h"

namespace cw::storage {
namespace {

using nlohmann::json;

// Zeroes every string in `j` (names and message text) before the tree is freed.
void WipeStrings(json& j) {
  if (j.is_string()) {
    auto& s = j.get_ref<std::string&>();
    sodium_memzero(s.data(), s.size());
  } else if (j.is_array() || j.is_object()) {
    for (auto& v : j) WipeStrings(v);
  }
}
struct WipeStringsOnExit {
  json& j;
  ~WipeStringsOnExit() { WipeStrings(j); }
};

// Where the export text is written: growth included, nothing it frees keeps plaintext (json::dump would
// build a std::string whose earlier, smaller buffers are freed as they are).
class WipedStreamBuf final : public std::streambuf {
 public:
  const std::vector<char, WipingAllocator<char>>& data() const { return data_; }

 protected:
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof())) data_.push_back(traits_type::to_char_type(c));
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    data_.insert(data_.end(), s, s + n);
    return n;
  }

 private:
  std::vector<char, WipingAllocator<char>> data_;
};

std::string Base64(std::span<const uint8_t> b) {
  std::string out(sodium_base64_ENCODED_LEN(b.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), b.data(), b.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

bool FromBase64(const std::string& s, SecretBytes* out) {
  SecretBytes buf(s.size() / 4 * 3 + 3);
  size_t len = 0;
  if (sodium_base642bin(buf.reveal_mutable().data(), buf.size(), s.data(), s.size(), nullptr, &len, nullptr,
                        sodium_base64_VARIANT_ORIGINAL) != 0) {
    return false;
  }
  buf.Resize(len);
  *out = std::move(buf);
  return true;
}

// Names, ids and attachment references are byte strings that are nearly always UTF-8. JSON strings must
// be: a value that is not becomes {"base64": "..."} so the export never loses or mangles it.
bool IsUtf8(std::string_view s) {
  try {
    (void)json(std::string(s)).dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}
json Text(std::string_view s) {
  if (IsUtf8(s)) return std::string(s);
  return json{{"base64", Base64(AsBytes(s))}};
}
bool FromText(const json& j, std::string* out) {
  if (j.is_string()) {
    *out = j.get<std::string>();
    return true;
  }
  SecretBytes b;
  if (!j.is_object() || !j.contains("base64") || !j["base64"].is_string() || !FromBase64(j["base64"], &b))
    return false;
  out->assign(reinterpret_cast<const char*>(b.reveal().data()), b.size());
  return true;
}

json MessageJson(const TranscriptMessage& m) {
  json j;
  j["sequence"] = m.sequence;
  j["message_id"] = ToHex(m.message_id);
  j["direction"] = DirectionName(m.direction);
  j["sender"] = Text(m.sender);
  j["sender_device"] = m.sender_device;
  j["sent_at_ms"] = m.sent_at_ms;
  j["received_at_ms"] = m.received_at_ms;
  j["status"] = MessageStatusName(m.status);
  j["expires_at_ms"] = m.expires_at_ms;
  j["body_base64"] = Base64(m.body.reveal());
  const std::string_view body = AsText(m.body.reveal());
  if (IsUtf8(body)) j["text"] = std::string(body);
  json attachments = json::array();
  for (const auto& a : m.attachments) attachments.push_back(Text(AsText(a.reveal())));
  j["attachments"] = std::move(attachments);
  return j;
}

Status AddConversation(Transcripts& t, const ConversationInfo& info, json* conversations) {
  CW_ASSIGN_OR_RETURN(std::vector<TranscriptMessage> messages, t.All(info.id));
  json c;
  c["id"] = Text(info.id);
  c["disappearing_ms"] = info.disappearing_ms;
  c["created_at_ms"] = info.created_at_ms;
  json ms = json::array();
  for (const auto& m : messages) ms.push_back(MessageJson(m));
  c["messages"] = std::move(ms);
  conversations->push_back(std::move(c));
  return Status::Ok();
}

template <typename T>
bool GetNumber(const json& j, const char* field, T* out) {
  if (!j.contains(field) || !j[field].is_number_integer()) return false;
  *out = j[field].get<T>();
  return true;
}

bool ParseMessage(const json& j, const std::string& conversation_id, TranscriptMessage* m) {
  if (!j.is_object()) return false;
  m->conversation_id = conversation_id;
  Bytes id;
  if (!GetNumber(j, "sequence", &m->sequence) || !j.contains("message_id") || !j["message_id"].is_string() ||
      !FromHex(j["message_id"].get<std::string>(), &id) || id.size() != kMessageIdSize) {
    return false;
  }
  std::memcpy(m->message_id.data(), id.data(), kMessageIdSize);
  if (!j.contains("direction") || !j["direction"].is_string()) return false;
  auto d = ParseDirection(j["direction"].get<std::string>());
  if (!j.contains("status") || !j["status"].is_string()) return false;
  auto s = ParseMessageStatus(j["status"].get<std::string>());
  if (!d || !s) return false;
  m->direction = *d;
  m->status = *s;
  if (!j.contains("sender") || !FromText(j["sender"], &m->sender)) return false;
  if (!GetNumber(j, "sender_device", &m->sender_device) || !GetNumber(j, "sent_at_ms", &m->sent_at_ms) ||
      !GetNumber(j, "received_at_ms", &m->received_at_ms) ||
      !GetNumber(j, "expires_at_ms", &m->expires_at_ms)) {
    return false;
  }
  if (!j.contains("body_base64") || !j["body_base64"].is_string() ||
      !FromBase64(j["body_base64"], &m->body)) {
    return false;
  }
  if (!j.contains("attachments") || !j["attachments"].is_array()) return false;
  for (const auto& a : j["attachments"]) {
    std::string ref;
    if (!FromText(a, &ref)) return false;
    m->attachments.push_back(SecretBytes(AsBytes(ref)));
    sodium_memzero(ref.data(), ref.size());
  }
  return true;
}

}  // namespace

Result<SecretBytes> ExportJson(Transcripts& transcripts, std::optional<std::string_view> conversation_id,
                               std::string_view local_name, int64_t now_ms) {
  try {
    json root;
    json conversations = json::array();
    const WipeStringsOnExit wipe_root{root}, wipe_conversations{conversations};
    root["format"] = kExportFormat;
    root["version"] = kExportVersion;
    root["exported_at_ms"] = now_ms;
    root["local_name"] = Text(local_name);
    if (conversation_id) {
      CW_ASSIGN_OR_RETURN(auto info, transcripts.GetConversation(*conversation_id));
      if (!info) return Error(StatusCode::kNotFound, "no such conversation");
      CW_RETURN_IF_ERROR(AddConversation(transcripts, *info, &conversations));
    } else {
      CW_ASSIGN_OR_RETURN(std::vector<ConversationInfo> all, transcripts.ListConversations());
      for (const auto& info : all) CW_RETURN_IF_ERROR(AddConversation(transcripts, info, &conversations));
    }
    root["conversations"] = std::move(conversations);
    WipedStreamBuf text;
    std::ostream os(&text);
    os << std::setw(2) << root;  // as root.dump(2)
    if (!os) return Error(StatusCode::kInternal, "export failed");
    return SecretBytes(reinterpret_cast<const uint8_t*>(text.data().data()), text.data().size());
  } catch (const std::exception&) {
    return Error(StatusCode::kInternal, "export failed");
  }
}

Result<ExportedData> ParseExport(std::span<const uint8_t> bytes) {
  auto malformed = [] { return Error(StatusCode::kMalformed, "not a Cipherward transcript export"); };
  try {
    const json root = json::parse(bytes.begin(), bytes.end());
    if (!root.is_object() || !root.contains("format") || root["format"] != kExportFormat) return malformed();
    int version = 0;
    if (!GetNumber(root, "version", &version)) return malformed();
    if (version > kExportVersion) return Error(StatusCode::kUnsupportedVersion, "export version is newer");
    ExportedData out;
    if (!GetNumber(root, "exported_at_ms", &out.exported_at_ms) || !root.contains("local_name") ||
        !FromText(root["local_name"], &out.local_name) || !root.contains("conversations") ||
        !root["conversations"].is_array()) {
      return malformed();
    }
    for (const auto& c : root["conversations"]) {
      ExportedConversation ec;
      if (!c.is_object() || !c.contains("id") || !FromText(c["id"], &ec.info.id) ||
          !GetNumber(c, "disappearing_ms", &ec.info.disappearing_ms) ||
          !GetNumber(c, "created_at_ms", &ec.info.created_at_ms) || !c.contains("messages") ||
          !c["messages"].is_array()) {
        return malformed();
      }
      for (const auto& mj : c["messages"]) {
        TranscriptMessage m;
        if (!ParseMessage(mj, ec.info.id, &m)) return malformed();
        ec.messages.push_back(std::move(m));
      }
      out.conversations.push_back(std::move(ec));
    }
    return out;
  } catch (const std::exception&) {
    return malformed();
  }
}

}  // namespace cw::storage
