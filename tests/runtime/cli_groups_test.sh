#!/usr/bin/env bash
# The group commands of the CLI against the real relay binary: a lead and three members who are all
# contacts; group create, send from everyone, list, history, remove (the removed member reads nothing
# after), and clear errors for bad input. Every command runs with --json; outputs are checked as strings.
set -euo pipefail
cw="$1"
relay_bin="$2"
source "$(dirname "$0")/cli_lib.sh"
cli_setup cli_groups
start_relay

count() {  # text, output: how many times text occurs
  grep -oF -- "$1" <<<"$2" | wc -l
}

people=(lead ana ben cyd)
for p in "${people[@]}"; do "$cw" --json --home "$work/$p" --relay "$relay" init --name "$p" --kdf interactive >/dev/null; done
for i in 0 1 2 3; do
  for j in 0 1 2 3; do
    if [ "$i" -lt "$j" ]; then
      code="$("$cw" --home "$work/${people[$i]}" invite 2>/dev/null)"
      as "${people[$j]}" accept "$code" --message "hi ${people[$i]}" >/dev/null
      as "${people[$i]}" receive >/dev/null
    fi
  done
done

out="$(as lead group create "ward 7" ana ben cyd)"
expect '"status":"sent"' "$out"
expect '"members":["ana","ben","cyd","lead"]' "$out"
expect '"missing_sessions":[]' "$out"
group="$(json_field group "$out")"
[ ${#group} -eq 64 ]
# Two rounds: the membership reaches everyone, then every member's sender key does.
for _ in 1 2; do for p in ana ben cyd lead; do as "$p" receive >/dev/null; done; done

for p in "${people[@]}"; do
  out="$(as "$p" group send "$group" "from $p")"
  expect '"status":"sent"' "$out"
done
for p in "${people[@]}"; do
  out="$(as "$p" group history "$group")"
  for q in "${people[@]}"; do
    [ "$(count "\"text\":\"from $q\"" "$out")" -eq 1 ] || { echo "$p: from $q not exactly once in: $out"; exit 1; }
  done
done

out="$(as ana group list)"
expect "\"group\":\"$group\"" "$out"
expect '"admin":"lead"' "$out"
expect '"active":true' "$out"
out="$(as lead group list)"
expect '"label":"ward 7"' "$out"

# Only the admin changes membership; a non-member is refused with a clear error.
if out="$(as ana group remove "$group" ben)"; then echo "a member removed someone"; exit 1; fi
expect '"code":"PERMISSION_DENIED"' "$out"
if out="$(as lead group send nosuchgroup "x")"; then echo "sent to no group"; exit 1; fi
expect '"code":"NOT_FOUND"' "$out"

out="$(as lead group remove "$group" cyd)"
expect '"members":["ana","ben","lead"]' "$out"
for _ in 1 2; do for p in ana ben cyd lead; do as "$p" receive >/dev/null; done; done
out="$(as cyd group list)"
expect '"active":false' "$out"
as ana group send "$group" "after removal" >/dev/null
out="$(as ben group history "$group")"
expect '"text":"after removal"' "$out"
out="$(as cyd receive)"
expect '"messages":[]' "$out"
out="$(as cyd group history "$group")"
[ "$(count '"text":"after removal"' "$out")" -eq 0 ]
echo "ok"
