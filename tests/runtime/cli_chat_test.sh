#!/usr/bin/env bash
# The interactive CLI through real pseudo-terminals: a relay, two identities, and `cipherward chat` in two
# tmux panes driven with send-keys; capture-pane shows each side the other's messages. Waits are bounded
# polls (a safety net), never timing assertions.
set -euo pipefail
cw="$1"
relay_bin="$2"
command -v tmux >/dev/null || { echo "tmux missing"; exit 1; }
source "$(dirname "$0")/cli_lib.sh"
cli_setup cli_chat
start_relay

"$cw" --home "$work/alice" --relay "$relay" init --name alice --kdf interactive >/dev/null
"$cw" --home "$work/bob" --relay "$relay" init --name bob --kdf interactive >/dev/null
code="$("$cw" --home "$work/alice" invite 2>/dev/null)"
"$cw" --home "$work/bob" accept "$code" --message "hi alice" >/dev/null

tmux -S "$sock" -f /dev/null new-session -d -s chat -x 160 -y 40 \
  "env CW_PASSPHRASE='$CW_PASSPHRASE' $cw --home $work/alice chat bob"
tmux -S "$sock" split-window -t chat -v "env CW_PASSPHRASE='$CW_PASSPHRASE' $cw --home $work/bob chat alice"


wait_for 0 "chatting with bob"
wait_for 1 "chatting with alice"
wait_for 0 "bob: hi alice"                   # the accept message, fetched on start
tmux -S "$sock" send-keys -t chat.0 "hello bob, how is the knee?" Enter
wait_for 1 "alice: hello bob, how is the knee?"
tmux -S "$sock" send-keys -t chat.1 "much better since Monday" Enter
wait_for 0 "bob: much better since Monday"
# A file from alice's pane: bob's pane announces it and saves it to his downloads folder, byte for byte.
head -c 300000 /dev/urandom >"$work/x-ray.png"
tmux -S "$sock" send-keys -t chat.0 "/file $work/x-ray.png" Enter
wait_for 0 "sent a file: $work/x-ray.png"
wait_for 0 "] 100%"                        # the progress bar reached the end
wait_for 1 "alice sent a file: x-ray.png"
wait_for 1 "saved $work/bob/downloads/x-ray.png"
cmp "$work/x-ray.png" "$work/bob/downloads/x-ray.png"
tmux -S "$sock" send-keys -t chat.1 "/verify" Enter
wait_for 1 "Safety number with alice"
quit_chat

# After quitting, both stores hold the whole conversation.
# Captured first: `cmd | grep -q` under pipefail can fail on the writer's SIGPIPE after grep has matched.
bob_history="$("$cw" --home "$work/bob" history alice --offline)"
alice_history="$("$cw" --home "$work/alice" history bob --offline)"
grep -qF "much better since Monday" <<<"$bob_history"
grep -qF "hello bob, how is the knee?" <<<"$alice_history"
echo "ok"
