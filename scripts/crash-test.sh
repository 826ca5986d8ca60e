#!/usr/bin/env bash
# Runs the storage crash test with many kills: a receiving device (cw_crash_child) is killed with SIGKILL at
# random points, 200 times by default, and after each restart every acknowledged message must be stored
# exactly once, with nothing torn, and the session must go on decrypting.
#   scripts/crash-test.sh [cycles] [seed]     (build directory: $BUILD_DIR, default build/rel)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build/rel}"
"$(dirname "$0")/install-deps.sh"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" >/dev/null
cmake --build "$build_dir" --target cw_storage_tests
CW_CRASH_CYCLES="${1:-200}" CW_CRASH_SEED="${2:-$RANDOM}" \
  "$build_dir/tests/storage/cw_storage_tests" --gtest_filter='CrashTest.*'
