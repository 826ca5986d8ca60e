# Shared by the CLI test scripts (sourced, after `set -euo pipefail`): a scratch folder removed on exit, the
# passphrase from the environment, a real relay binary on an ephemeral port, and the tmux helpers of the
# interactive tests. Waits are bounded polls (generous: CI runs these under ASan on a loaded 2-core
# machine), a safety net and never a timing assertion.
#   cw=... relay_bin=... cli_setup NAME   sets work (the folder), sock (tmux), relay_pid
#   start_relay                           starts the relay; sets relay (its cw://key@host:port address)
#   stop_relay                            stops it for good (SIGTERM, then waits)
#   wait_for PANE TEXT                    until tmux pane chat.PANE shows TEXT
#   quit_chat                             /quit in both panes of session "chat", bottom first
#   expect TEXT OUTPUT                    OUTPUT contains TEXT
#   as WHO ARGS...                        runs cipherward --json in the home $work/WHO
#   json_field NAME OUTPUT                the value of a top-level string field of OUTPUT
trap 'echo "failed at line $LINENO" >&2' ERR

cli_setup() {
  work="$(mktemp -d "${TMPDIR:-/tmp}/cw_$1.XXXXXX")"
  sock="$work/tmux.sock"
  relay_pid=""
  trap cli_cleanup EXIT
  export CW_PASSPHRASE="test passphrase"
  export TERM="${TERM:-xterm}"  # CI may run without a terminal; tmux wants a terminal type for its panes
}

cli_cleanup() {
  tmux -S "$sock" kill-server 2>/dev/null || true
  stop_relay
  rm -rf "$work"
}

start_relay() {
  "$relay_bin" --data-dir "$work/relay" --listen 127.0.0.1:0 --log-level warn >"$work/relay.out" 2>"$work/relay.log" &
  relay_pid=$!
  for _ in $(seq 1 1200); do [ -s "$work/relay.out" ] && break; sleep 0.05; done
  relay="$(head -n1 "$work/relay.out")"
  [ -n "$relay" ]
}

stop_relay() {
  if [ -n "$relay_pid" ]; then kill -TERM "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
  relay_pid=""
}

wait_for() {  # pane, text
  for _ in $(seq 1 1200); do
    if grep -qF "$2" <<<"$(tmux -S "$sock" capture-pane -p -t "chat.$1" 2>/dev/null)"; then return 0; fi
    sleep 0.05
  done
  echo "pane $1 never showed: $2"; tmux -S "$sock" capture-pane -p -t "chat.$1"; return 1
}

quit_chat() {
  # Bottom pane first: when a pane closes, tmux renumbers the ones after it.
  tmux -S "$sock" send-keys -t chat.1 "/quit" Enter
  for _ in $(seq 1 1200); do [ "$(tmux -S "$sock" list-panes -t chat 2>/dev/null | wc -l)" -le 1 ] && break; sleep 0.05; done
  tmux -S "$sock" send-keys -t chat.0 "/quit" Enter
  for _ in $(seq 1 1200); do tmux -S "$sock" has-session -t chat 2>/dev/null || break; sleep 0.05; done
  if tmux -S "$sock" has-session -t chat 2>/dev/null; then echo "chat did not quit"; return 1; fi
}

expect() {  # text, output
  if ! grep -qF -- "$1" <<<"$2"; then echo "expected '$1' in: $2"; return 1; fi
}

as() { local who="$1"; shift; "$cw" --json --home "$work/$who" "$@"; }

json_field() {  # name, output: the value of a top-level string field
  sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$2"
}
