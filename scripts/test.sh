#!/usr/bin/env bash
# Builds and runs every test: the Release build with gcc, then the whole suite again under ASan + UBSan
# (Debug) built with clang, so both of Debian's compilers build everything with warnings as errors.
# Fuzz corpora and every saved crash input are replayed by ctest in both builds.
# Usage: scripts/test.sh            (from anywhere; installs missing Debian packages first)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

"$root/scripts/install-deps.sh"

jobs="$(nproc)"
for type in Release Debug; do
  if [ "$type" = Release ]; then
    dir=build/release
    compilers=(-DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++)
  else
    dir=build/debug-clang
    compilers=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
  fi
  echo "=== $type build ($dir) ==="
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" "${compilers[@]}" -DCW_BUILD_TESTS=ON >/dev/null
  cmake --build "$dir" -j "$jobs"
  # ASan's leak checker needs ptrace, which some sandboxes refuse; leaks are still checked where it works.
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    ctest --test-dir "$dir" -j "$jobs" --output-on-failure --timeout 600
done
