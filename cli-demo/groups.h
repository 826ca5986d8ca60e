// The `group` commands of the cipherward CLI (care-team groups, core/runtime/client_groups.h):
//
//   group create <label> <member>...    a group administered by this identity
//   group add|remove <group> <member>   admin only; removal rotates the group's keys
//   group send <group> <text> [--purpose P]
//   group list                          groups this device is or was in
//   group history <group> [-n N]
//
// Each opens the identity, does one thing, syncs with the relay (unless --offline for list and history) and
// prints human text or, with --json, one JSON object. main.cc lends them its passphrase handling and output
// helpers through CliIo, so this file needs none of main.cc's internals.
//
// Thread rules: the CLI's main thread only. Ownership: GroupCommands keeps pointers into the CLI::App it
// was given, which must outlive it.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "core/runtime/client.h"

namespace cw::cli {

struct CliIo {
  std::function<Result<std::unique_ptr<runtime::Client>>()> open;
  std::function<int(const Status&, const std::string& what)> fail;
  std::function<void(const nlohmann::json&, const std::string& human)> print;
  std::function<nlohmann::json(const storage::TranscriptMessage&)> message_json;
  std::function<std::string(const storage::TranscriptMessage&)> message_line;
  int64_t timeout_ms = 15'000;
};

class GroupCommands {
 public:
  // Adds the `group` subcommand and its subcommands to `app`.
  explicit GroupCommands(CLI::App& app);
  // True when the command line named a `group` command.
  bool parsed() const;
  // Runs it; the process exit code.
  int Run(const CliIo& io);

 private:
  CLI::App* group_ = nullptr;
  CLI::App* create_ = nullptr;
  CLI::App* add_ = nullptr;
  CLI::App* remove_ = nullptr;
  CLI::App* send_ = nullptr;
  CLI::App* list_ = nullptr;
  CLI::App* history_ = nullptr;
  std::string label_, group_id_, member_, text_, purpose_;
  std::vector<std::string> members_;
  size_t n_ = 50;
  bool offline_ = false;
};

}  // namespace cw::cli
