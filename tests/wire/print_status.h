// Makes GoogleTest print status codes by name ("MALFORMED") rather than as raw bytes.
#pragma once

#include <ostream>

#include "core/base/status.h"

namespace cw {

inline void PrintTo(StatusCode code, std::ostream* os) { *os << StatusCodeName(code); }
inline void PrintTo(const Status& status, std::ostream* os) { *os << status.ToString(); }

}  // namespace cw
