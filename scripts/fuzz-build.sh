#!/usr/bin/env bash
# Builds Cipherward's libFuzzer targets against an instrumented libsignal-protocol-c and runs each of them.
#
#   scripts/fuzz-build.sh [-n] [SECONDS] [TARGET...]
#
#   -n        build only, do not run
#   SECONDS   how long each fuzzer runs (-max_total_time), default 60
#   TARGET    fuzz target names (the directories fuzz/<target>/ with a target.cc); default all of them
#
# Steps, each skipped when already done (the script is idempotent):
#   1. make sure apt has a deb-src entry (Debian 12 deb822: adds /etc/apt/sources.list.d/debian-src.sources),
#   2. `apt-get source libsignal-protocol-c` into build/fuzz-src (Debian's source with Debian's patches),
#   3. build it with clang -fsanitize=fuzzer-no-link,address,undefined as a static library into
#      build/fuzz-signal/install (Debian's shared library is not instrumented: a harness linked against it
#      sees no coverage inside libsignal),
#   4. configure build/fuzz (CMAKE_BUILD_TYPE=Fuzz, CW_SIGNAL_FUZZ_LIB pointing at that library) and build
#      the fuzzers,
#   5. run each fuzzer on a scratch copy of its corpus (build/fuzz/work/<target>), so fuzz/<target>/corpus
#      only changes by hand. Crashing inputs are copied into fuzz/<target>/crashes/, where ctest replays them.
#
# Needs network access to the Debian mirrors for step 2, and root (or sudo) for step 1.
#
# Environment: CW_FUZZ_FLAGS adds libFuzzer flags (e.g. "-jobs=2 -workers=2", "-entropic=0");
# CW_FUZZ_LENIENT=1 turns off the targets' error-code contract checks (fuzz/fuzz_check.h), to fuzz past a
# known contract bug.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Every target there is, so a new one is fuzzed without anyone remembering to list it here.
all_targets=()
for f in "$root"/fuzz/*/target.cc; do
  t="${f%/target.cc}"
  all_targets+=("${t##*/}")
done

run=1
if [ "${1:-}" = "-n" ]; then
  run=0
  shift
fi
seconds=60
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
  seconds="$1"
  shift
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${all_targets[@]}")
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

src_root="$root/build/fuzz-src"
signal_build="$root/build/fuzz-signal"
signal_prefix="$signal_build/install"
signal_lib="$signal_prefix/lib/libsignal-protocol-c.a"
fuzz_build="$root/build/fuzz"

# Flags for the instrumented library. Its bundled protobuf-c and curve25519 code shift signed values
# (UBSan "shift") and signal_buffer_create memcpys from NULL with length 0 ("nonnull-attribute"): both are
# known, harmless in practice, and would otherwise stop every run in the first second.
signal_cflags="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined"
signal_cflags+=" -fno-sanitize=shift,nonnull-attribute"
signal_cflags+=" -DCW_WIPING_SIGNAL_BUFFER_FREE"  # marks builds with the wiping patch below (and forces a rebuild)
# No coverage instrumentation (ASan and UBSan stay) in the curve25519/ed25519 arithmetic: its loops and
# comparisons add tens of thousands of features that say nothing about parsing or protocol logic, and
# libFuzzer spent two thirds of its time bookkeeping them (session_decrypt ran 3x slower).
coverage_ignorelist="$signal_build/coverage-ignorelist.txt"
signal_cflags+=" -fsanitize-coverage-ignorelist=$coverage_ignorelist"

step() { printf '\n== %s\n' "$*"; }

# --- 1. deb-src --------------------------------------------------------------------------------------------
has_deb_src() {
  grep -Eqs '^[[:space:]]*Types:.*deb-src' /etc/apt/sources.list.d/*.sources 2>/dev/null && return 0
  grep -Eqs '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null &&
    return 0
  return 1
}

if [ ! -f "$signal_lib" ] && ! ls -d "$src_root"/libsignal-protocol-c-*/ >/dev/null 2>&1; then
  if ! has_deb_src; then
    step "adding a deb-src entry"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      # The same mirrors and suites as the binary entries, as source entries.
      sed -E 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources |
        $sudo tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
    else
      printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n%s\n' \
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' |
        $sudo tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
    fi
    $sudo apt-get update -qq
  fi

  # --- 2. the source package -------------------------------------------------------------------------------
  step "fetching Debian's libsignal-protocol-c source into build/fuzz-src"
  command -v dpkg-source >/dev/null || { echo "dpkg-source missing: run scripts/install-deps.sh" >&2; exit 1; }
  mkdir -p "$src_root"
  # As root apt cannot drop to the _apt user for a directory it does not own; that is only a warning.
  (cd "$src_root" && apt-get source -qq libsignal-protocol-c)
fi

src_dir="$(ls -d "$src_root"/libsignal-protocol-c-*/ 2>/dev/null | head -n1)"
src_dir="${src_dir%/}"

# --- 3. the instrumented static library ----------------------------------------------------------------------
# Rebuilt whenever the flags change (the stamp file holds the ones it was built with).
flags_stamp="$signal_build/cflags"
if [ ! -f "$signal_lib" ] || [ "$(cat "$flags_stamp" 2>/dev/null)" != "$signal_cflags" ]; then
  step "building instrumented libsignal-protocol-c from ${src_dir#"$root"/}"
  [ -n "$src_dir" ] || { echo "no source in $src_root" >&2; exit 1; }
  # Statically linked, the library's own signal_buffer_free cannot be interposed as in the shared build
  # (core/session/provider.cc), so make it wipe in the source, as signal_buffer_bzero_free does.
  python3 - "$src_dir/src/signal_protocol.c" <<'PY'
import sys
path = sys.argv[1]
s = open(path).read()
plain = "void signal_buffer_free(signal_buffer *buffer)\n{\n    if(buffer) {\n        free(buffer);"
wiping = ("void signal_buffer_free(signal_buffer *buffer)\n{\n    if(buffer) {\n"
          "        signal_explicit_bzero(buffer->data, buffer->len);\n        free(buffer);")
if plain in s:
    open(path, "w").write(s.replace(plain, wiping))
elif wiping not in s:
    sys.exit("signal_buffer_free not found in " + path)
PY
  rm -rf "$signal_build/obj" "$signal_prefix"
  mkdir -p "$signal_build"
  printf 'src:*/curve25519/*\n' >"$coverage_ignorelist"
  cmake -S "$src_dir" -B "$signal_build/obj" -G Ninja \
    -DCMAKE_BUILD_TYPE=None \
    -DCMAKE_C_COMPILER=clang \
    -DCMAKE_C_FLAGS="$signal_cflags" \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DBUILD_SHARED_LIBS=OFF \
    -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX="$signal_prefix" \
    -DCMAKE_INSTALL_LIBDIR=lib >/dev/null
  cmake --build "$signal_build/obj"
  cmake --install "$signal_build/obj" >/dev/null
  printf '%s' "$signal_cflags" >"$flags_stamp"
fi
[ -f "$signal_lib" ] || { echo "instrumented library missing: $signal_lib" >&2; exit 1; }

# --- 4. our Fuzz build ----------------------------------------------------------------------------------
step "configuring and building build/fuzz"
cmake -S "$root" -B "$fuzz_build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Fuzz \
  -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ \
  -DCW_SIGNAL_FUZZ_LIB="$signal_lib" \
  -DCW_SIGNAL_FUZZ_INCLUDE="$signal_prefix/include" >/dev/null
cmake --build "$fuzz_build" --target $(printf 'fuzz_%s ' "${targets[@]}")

[ "$run" -eq 1 ] || exit 0

# --- 5. run ---------------------------------------------------------------------------------------------
failed=()
summary=()
for t in "${targets[@]}"; do
  step "fuzzing $t for ${seconds}s"
  work="$fuzz_build/work/$t"
  rm -rf "$work/artifacts"  # only this run's findings get reported and copied
  mkdir -p "$work/corpus" "$work/artifacts"
  log="$work/fuzz.log"
  status=0
  # The committed corpus is read (second directory) but only the scratch one grows.
  (cd "$work" && "$fuzz_build/fuzz/fuzz_$t" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" -close_fd_mask=1 ${CW_FUZZ_FLAGS:-} \
    "$work/corpus" "$root/fuzz/$t/corpus") >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb' \
    "$log" || true
  cov="$(grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log" | tail -n1 | grep -Eo 'cov: [0-9]+ ft: [0-9]+' || true)"
  eps="$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || true)"
  found=0
  for f in "$work"/artifacts/*; do
    [ -f "$f" ] || continue
    mkdir -p "$root/fuzz/$t/crashes"
    cp "$f" "$root/fuzz/$t/crashes/"
    echo "saved $(basename "$f") into fuzz/$t/crashes/"
    found=1
  done
  if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
    failed+=("$t")
    echo "FAILED ($status): see $log"
    grep -E -A40 '^==[0-9]+==ERROR|runtime error|deadly signal' "$log" | head -n 60 || true
  fi
  summary+=("$(printf '%-22s %s  exec/s %s  status %s' "$t" "${cov:-?}" "${eps:-?}" "$status")")
done

step "summary (${seconds}s each)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes or errors in: ${failed[*]}"
  exit 1
fi
