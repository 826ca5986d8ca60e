#!/usr/bin/env bash
# The CLI's --direct option end to end: two interactive chats (tmux panes) that both listen for direct P2P
# links keep talking after the relay process is killed, which only a direct link can carry; afterwards
# `contacts --json` reports the `direct` field and each history holds every message once.
#   cli_direct_test.sh CIPHERWARD_BINARY RELAY_BINARY
set -euo pipefail
cw="$1"
relay_bin="$2"
command -v tmux >/dev/null || { echo "tmux missing"; exit 1; }
source "$(dirname "$0")/cli_lib.sh"
cli_setup cli_direct
start_relay

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


wait_for 0 "direct links: listening on 127.0.0.1:"
wait_for 1 "direct links: listening on 127.0.0.1:"
wait_for 0 "bob: hi alice"
tmux -S "$sock" send-keys -t chat.0 "through whichever way is up" Enter
wait_for 1 "alice: through whichever way is up"

# The relay goes away for good: what follows can only travel over the direct links (messages typed before a
# link is up wait in the outbox and go as soon as it is).
stop_relay
tmux -S "$sock" send-keys -t chat.0 "relay is gone, still here" Enter
wait_for 1 "alice: relay is gone, still here"
tmux -S "$sock" send-keys -t chat.1 "reading you directly" Enter
wait_for 0 "bob: reading you directly"

quit_chat

bob_history="$("$cw" --home "$work/bob" history alice --offline)"
for t in "hi alice" "through whichever way is up" "relay is gone, still here" "reading you directly"; do
  [ "$(grep -cF "$t" <<<"$bob_history")" -eq 1 ] || { echo "bob's history lacks or repeats: $t"; echo "$bob_history"; exit 1; }
done
"$cw" --home "$work/alice" --json --timeout-ms 500 contacts | grep -qF '"direct":'
echo "ok"
