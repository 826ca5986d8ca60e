#!/usr/bin/env bash
# Starts a real cipherward-relay on 127.0.0.1 (as tests/runtime/cli_chat_test.sh does) and runs the C API
# test against it. Usage: capi_test.sh RELAY_BINARY TEST_BINARY
set -euo pipefail
relay_bin="$1"
test_bin="$2"
work="$(mktemp -d "${TMPDIR:-/tmp}/cw_capi.XXXXXX")"
relay_pid=""
cleanup() {
  if [ -n "$relay_pid" ]; then kill -TERM "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$relay_bin" --data-dir "$work/relay" --listen 127.0.0.1:0 --log-level warn >"$work/relay.out" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 1 1200); do [ -s "$work/relay.out" ] && break; sleep 0.05; done
relay="$(head -n1 "$work/relay.out")"
[ -n "$relay" ] || { echo "relay did not start"; cat "$work/relay.log"; exit 1; }
mkdir -p "$work/clients"
# LD_DEBUG records how libsignal-protocol-c's calls bind: its frees must reach our wiping signal_buffer_free
# (exported by libcipherward.so) and its crypto_hash_sha512 calls libsodium's.
LD_DEBUG=bindings LD_DEBUG_OUTPUT="$work/ld" "$test_bin" "$relay" "$work/clients"
bindings="$(cat "$work"/ld.* | grep 'binding file [^ ]*libsignal-protocol-c' || true)"
grep -q "libcipherward[^ ]* .*signal_buffer_free" <<<"$bindings" \
  || { echo "libsignal's signal_buffer_free does not bind to libcipherward's"; exit 1; }
if grep "crypto_hash_sha512'" <<<"$bindings" | grep -v libsodium >/dev/null; then
  echo "libsignal's crypto_hash_sha512 does not bind to libsodium's"; exit 1
fi
echo "bindings ok"
