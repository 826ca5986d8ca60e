// Structured logs for the relay: one event name and key=value fields per line (logfmt).
//
// What may be logged: event names, response codes, counts, sizes, and LogTag()s of ids and link keys (never
// the link key a deposit came on: that would undo sealed sender).
// Never an envelope, a deposit token, a key or an id itself. Thread rules: sinks are called from any thread.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cw::relay {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

struct LogField {
  std::string_view key;
  std::string value;
};

class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) = 0;
};

// Formats one logfmt line: `level=info event=deposit code=OK mailbox=1a2b3c4d`. Values holding spaces,
// quotes or '=' are quoted.
std::string FormatLogLine(LogLevel level, std::string_view event, std::initializer_list<LogField> fields);

// Writes lines to stderr, serialized.
class StderrLogSink final : public LogSink {
 public:
  explicit StderrLogSink(LogLevel min_level = LogLevel::kInfo) : min_level_(min_level) {}
  void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) override;

 private:
  LogLevel min_level_;
  std::mutex mu_;
};

// Keeps every line, for tests and audits.
class MemoryLogSink final : public LogSink {
 public:
  void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) override;
  std::vector<std::string> Lines();

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

class NullLogSink final : public LogSink {
 public:
  void Log(LogLevel, std::string_view, std::initializer_list<LogField>) override {}
};

}  // namespace cw::relay
