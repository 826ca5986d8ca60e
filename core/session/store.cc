#include "core/session/store.h"

namespace cw::session {

Result<std::optional<SecretBytes>> InMemoryStore::Get(Table table, std::string_view key) {
  const auto& t = tables_[static_cast<int>(table)];
  auto it = t.find(key);
  if (it == t.end()) return std::optional<SecretBytes>();
  return std::optional<SecretBytes>(it->second.Clone());
}

Result<std::vector<std::string>> InMemoryStore::ListKeys(Table table, std::string_view prefix) {
  std::vector<std::string> keys;
  const auto& t = tables_[static_cast<int>(table)];
  for (auto it = t.lower_bound(prefix); it != t.end() && it->first.starts_with(prefix); ++it) {
    keys.push_back(it->first);
  }
  return keys;
}

Status InMemoryStore::Commit(WriteBatch batch) {
  if (fail_after_ == 0) {
    fail_after_ = -1;
    return Status(StatusCode::kUnavailable, "injected commit failure");
  }
  if (fail_after_ > 0) --fail_after_;
  for (auto& w : batch.writes) {
    auto& t = tables_[static_cast<int>(w.table)];
    if (w.value) {
      t.insert_or_assign(std::move(w.key), std::move(*w.value));
    } else {
      auto it = t.find(w.key);
      if (it != t.end()) t.erase(it);
    }
  }
  ++commits_;
  return Status::Ok();
}

std::map<std::string, SecretBytes> InMemoryStore::Snapshot() const {
  std::map<std::string, SecretBytes> out;
  for (int i = 0; i < kTableCount; ++i) {
    for (const auto& [k, v] : tables_[i]) out.emplace(std::to_string(i) + ":" + k, v.Clone());
  }
  return out;
}

}  // namespace cw::session
