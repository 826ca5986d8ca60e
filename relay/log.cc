#include "relay/log.h"

#include <sodium.h>

#include <cstdio>

#include "relay/types.h"

namespace cw::relay {

namespace {
std::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}
}  // namespace

std::string LogTag(ByteView value) {
  uint8_t h[4];
  crypto_generichash(h, sizeof h, value.data(), value.size(), nullptr, 0);
  return ToHex(ByteView(h, sizeof h));
}

TokenHash HashDepositToken(const MailboxId& mailbox, const DepositToken& token) {
  TokenHash out;
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, out.size());
  crypto_generichash_update(&st, mailbox.data(), mailbox.size());
  crypto_generichash_update(&st, token.data(), token.size());
  crypto_generichash_final(&st, out.data(), out.size());
  sodium_memzero(&st, sizeof st);
  return out;
}

std::string FormatLogLine(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  std::string line = "level=";
  line += LevelName(level);
  line += " event=";
  line += event;
  for (const auto& f : fields) {
    line += ' ';
    line += f.key;
    line += '=';
    const bool quote = f.value.empty() || f.value.find_first_of(" \"=") != std::string::npos;
    if (!quote) {
      line += f.value;
      continue;
    }
    line += '"';
    for (char c : f.value) {
      if (c == '"' || c == '\\') line += '\\';
      line += (c == '\n' ? ' ' : c);
    }
    line += '"';
  }
  return line;
}

void StderrLogSink::Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  if (level < min_level_) return;
  const std::string line = FormatLogLine(level, event, fields);
  std::lock_guard<std::mutex> lock(mu_);
  std::fprintf(stderr, "%s\n", line.c_str());
}

void MemoryLogSink::Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  std::string line = FormatLogLine(level, event, fields);
  std::lock_guard<std::mutex> lock(mu_);
  lines_.push_back(std::move(line));
}

std::vector<std::string> MemoryLogSink::Lines() {
  std::lock_guard<std::mutex> lock(mu_);
  return lines_;
}

}  // namespace cw::relay
