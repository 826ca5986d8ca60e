// Files in the CLI: a progress bar for transfers, and where received files go (<home>/downloads, mode 0700,
// under the name the sender gave, sanitised and made unique). Used from the main thread only.
#pragma once

#include <cstdint>
#include <string>

#include "core/base/status.h"
#include "core/runtime/client.h"

namespace cw::cli {

// A progress bar on stderr ("label [#####     ]  45%  9.0/20.0 MiB"), redrawn in place; silent when
// stderr is not a terminal or `quiet`. Ends its line when the transfer reaches its total.
runtime::ProgressFn ProgressBar(std::string label, bool quiet);

// Downloads `file` into <home>/downloads/<its name>, choosing "name (2).ext" and so on when taken. Returns
// the path written.
Result<std::string> SaveIncomingFile(runtime::Client& client, const std::string& home,
                                     const wire::AttachmentDescriptor& file,
                                     const runtime::ProgressFn& progress, int64_t timeout_ms);

// "12.3 MiB", "512 B".
std::string HumanSize(uint64_t bytes);

}  // namespace cw::cli
