#!/usr/bin/env bash
# The CLI's --direct option end to end: two interactive chats (tmux panes) that both listen for direct P2P
# links keep talking after the relay process is killed, which only a direct link can carry; afterwards
# `contacts --json` reports the `direct` field and each history holds every message once.
#   cli_direct_test.sh CIPHERWARD_BINARY RELAY_BINARY
set -euo pipefail
trap 'echo "failed at line $LINENO" >&2' ERR
cw="$1"
relay_bin="$2"
command -v tmux >/dev/null || { echo "tmux missing"; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/cw_cli_direct.XXXXXX")"
sock="$work/tmux.sock"
relay_pid=""
cleanup() {
  tmux -S "$sock" kill-server 2>/dev/null || true
  if [ -n "$relay_pid" ]; then kill -TERM "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export CW_PASSPHRASE="test passphrase"
export TERM="${TERM:-xterm}"

"$relay_bin" --data-dir "$work/relay" --listen 127.0.0.1:0 --log-level warn >"$work/relay.out" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 1 1200); do [ -s "$work/relay.out" ] && break; sleep 0.05; done
relay="$(head -n1 "$work/relay.out")"
[ -n "$relay" ]

"$cw" --home "$work/alice" --relay "$relay" init --name alice --kdf interactive >/dev/null
"$cw" --home "$work/bob" --relay "$relay" init --name bob --kdf interactive >/dev/null
code="$("$cw" --home "$work/alice" invite 2>/dev/null)"
"$cw" --home "$work/bob" accept "$code" --message "hi alice" >/dev/null
# Off by default: a client run without --direct reports no direct link.
"$cw" --home "$work/bob" --json contacts | grep -qF '"direct":false'

tmux -S "$sock" -f /dev/null new-session -d -s chat -x 160 -y 40 \
  "env CW_PASSPHRASE='$CW_PASSPHRASE' $cw --home $work/alice --direct 127.0.0.1:0 chat bob"
tmux -S "$sock" split-window -t chat -v \
  "env CW_PASSPHRASE='$CW_PASSPHRASE' $cw --home $work/bob --direct 127.0.0.1:0 chat alice"

wait_for() {  # pane, text
  for _ in $(seq 1 1200); do
    if grep -qF "$2" <<<"$(tmux -S "$sock" capture-pane -p -t "chat.$1" 2>/dev/null)"; then return 0; fi
    sleep 0.05
  done
  echo "pane $1 never showed: $2"; tmux -S "$sock" capture-pane -p -t "chat.$1"; return 1
}

wait_for 0 "direct links: listening on 127.0.0.1:"
wait_for 1 "direct links: listening on 127.0.0.1:"
wait_for 0 "bob: hi alice"
tmux -S "$sock" send-keys -t chat.0 "through whichever way is up" Enter
wait_for 1 "alice: through whichever way is up"

# The relay goes away for good: what follows can only travel over the direct links (messages typed before a
# link is up wait in the outbox and go as soon as it is).
kill -TERM "$relay_pid"; wait "$relay_pid" 2>/dev/null || true; relay_pid=""
tmux -S "$sock" send-keys -t chat.0 "relay is gone, still here" Enter
wait_for 1 "alice: relay is gone, still here"
tmux -S "$sock" send-keys -t chat.1 "reading you directly" Enter
wait_for 0 "bob: reading you directly"

tmux -S "$sock" send-keys -t chat.1 "/quit" Enter
for _ in $(seq 1 1200); do [ "$(tmux -S "$sock" list-panes -t chat 2>/dev/null | wc -l)" -le 1 ] && break; sleep 0.05; done
tmux -S "$sock" send-keys -t chat.0 "/quit" Enter
for _ in $(seq 1 1200); do tmux -S "$sock" has-session -t chat 2>/dev/null || break; sleep 0.05; done
if tmux -S "$sock" has-session -t chat 2>/dev/null; then echo "chat did not quit"; exit 1; fi

bob_history="$("$cw" --home "$work/bob" history alice --offline)"
for t in "hi alice" "through whichever way is up" "relay is gone, still here" "reading you directly"; do
  [ "$(grep -cF "$t" <<<"$bob_history")" -eq 1 ] || { echo "bob's history lacks or repeats: $t"; echo "$bob_history"; exit 1; }
done
"$cw" --home "$work/alice" --json --timeout-ms 500 contacts | grep -qF '"direct":'
echo "ok"
