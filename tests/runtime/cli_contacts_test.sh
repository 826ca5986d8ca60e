#!/usr/bin/env bash
# Invites and contact revocation from the CLI against the real relay binary: an invite with its expiry and
# id, the open invites listed and one cancelled (whoever accepts its code is refused at the relay), a
# contact revoked (its messages are refused; writing to it still works), then removed; clear errors for bad
# input. Every command runs with --json; outputs are checked as strings.
set -euo pipefail
cw="$1"
relay_bin="$2"
source "$(dirname "$0")/cli_lib.sh"
cli_setup cli_contacts
start_relay

for p in clinic pat sam; do as "$p" --relay "$relay" init --name "$p" --kdf interactive >/dev/null; done

# An invite valid for two hours: its id (not its token) and expiry are shown, and it is listed until answered.
out="$(as clinic invite --valid-hours 2)"
code="$(json_field code "$out")"
id="$(json_field id "$out")"
[ ${#id} -eq 12 ] || { echo "no invite id in: $out"; exit 1; }
grep -q '"expires_ms":[1-9]' <<<"$out" || { echo "no expiry in: $out"; exit 1; }
expect "\"id\":\"$id\"" "$(as clinic invites)"
as pat accept "$code" --message "hello clinic" >/dev/null
out="$(as clinic receive)"
expect 'hello clinic' "$out"
expect '"invites":[]' "$(as clinic invites)"

# A cancelled invite admits nobody: its code still parses, but the relay refuses what it carries.
out="$(as clinic invite)"
code="$(json_field code "$out")"
id="$(json_field id "$out")"
out="$(as clinic invites --cancel "$id")"
expect "\"cancelled\":\"$id\"" "$out"
expect '"invites":[]' "$out"
as sam accept "$code" --message "hello from sam" >/dev/null || true
expect '"status":"failed"' "$(as sam history clinic)"
[ "$(as clinic receive | grep -c 'hello from sam' || true)" -eq 0 ] || { echo "a cancelled invite admitted sam"; exit 1; }
if out="$(as clinic invites --cancel "$id")"; then echo "cancelled twice"; exit 1; fi
expect '"code":"NOT_FOUND"' "$out"
expect "no open invite" "$out"

# Revoked: the patient's messages are refused at the relay; the clinic still writes to the patient.
expect '"revoked":true' "$(as clinic revoke pat)"
as pat send clinic "are you there?" >/dev/null || true
expect '"status":"failed"' "$(as pat history clinic)"
as clinic send pat "please call us" >/dev/null
expect 'please call us' "$(as pat receive)"
if out="$(as clinic revoke pat)"; then echo "revoked twice"; exit 1; fi
expect '"code":"NOT_FOUND"' "$out"
# Removed: forgotten (nothing left to revoke), the conversation kept until erase.
expect '"removed":true' "$(as clinic remove pat)"
out="$(as clinic contacts)"
expect '"contacts":[]' "$out"
if out="$(as clinic remove pat)"; then echo "removed an unknown contact"; exit 1; fi
expect "no such contact" "$out"

# Bad input: a clear error, nothing made.
if out="$(as clinic invite --valid-hours -1)"; then echo "a negative validity was taken"; exit 1; fi
expect "0 (never expires) to 8784" "$out"
if out="$(as clinic invite --valid-hours 1000000000000000)"; then echo "an overflowing validity was taken"; exit 1; fi
expect '"invites":[]' "$(as clinic invites)"
echo "cli contacts: ok"
