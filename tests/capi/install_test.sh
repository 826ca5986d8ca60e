#!/usr/bin/env bash
# `cmake --install` puts what an embedder needs in place: the header, the library, the CMake package config
# and cipherward.pc, and pkg-config finds the library from it. Usage: install_test.sh BUILD_DIR
set -euo pipefail
build="$1"
prefix="$(mktemp -d "${TMPDIR:-/tmp}/cw_install.XXXXXX")"
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
test -f "$prefix/include/cipherward/cipherward.h"
pc="$(find "$prefix" -name cipherward.pc)"
cfg="$(find "$prefix" -name cipherwardConfig.cmake)"
test -n "$pc" && test -n "$cfg"
test -n "$(find "$prefix" -name 'cipherwardTargets*.cmake')"
test -n "$(find "$prefix" -name 'libcipherward.so*')"
libs="$(PKG_CONFIG_PATH="$(dirname "$pc")" pkg-config --libs cipherward)"
grep -q -- '-lcipherward' <<<"$libs"
# The .pc was generated for the configured prefix; check its fields rather than the path.
grep -q '^Cflags: -I\${includedir}' "$pc"
echo ok
