#!/usr/bin/env bash
# Builds and runs every test: the Release build, then the whole suite again under ASan + UBSan (Debug).
# Fuzz corpora and every saved crash input are replayed by ctest in both builds.
# Usage: scripts/test.sh            (from anywhere; installs missing Debian packages first)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

"$root/scripts/install-deps.sh"

jobs="$(nproc)"
for type in Release Debug; do
  dir="build/$(echo "$type" | tr '[:upper:]' '[:lower:]')"
  echo "=== $type build ($dir) ==="
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" -DCW_BUILD_TESTS=ON >/dev/null
  cmake --build "$dir" -j "$jobs"
  # ASan's leak checker needs ptrace, which some sandboxes refuse; leaks are still checked where it works.
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    ctest --test-dir "$dir" -j "$jobs" --output-on-failure --timeout 600
done
