#!/usr/bin/env bash
# The compliance commands of the CLI against the real relay binary: policy, consent grant/show/withdraw,
# a purpose refused without consent, audit verify, a signed export verified offline (and a tampered one
# rejected), erasure. Every command runs with --json; outputs are checked as captured strings.
set -euo pipefail
cw="$1"
relay_bin="$2"
source "$(dirname "$0")/cli_lib.sh"
cli_setup cli_compliance
start_relay

clinic() { "$cw" --json --home "$work/clinic" "$@"; }
patient() { "$cw" --json --home "$work/patient" "$@"; }

out="$("$cw" --json --home "$work/clinic" --relay "$relay" init --name dr.lee --kdf interactive)"
clinic_key="$(json_field fingerprint "$out")"
[ ${#clinic_key} -eq 66 ]
"$cw" --json --home "$work/patient" --relay "$relay" init --name pat --kdf interactive >/dev/null
code="$("$cw" --home "$work/clinic" invite 2>/dev/null)"
patient accept "$code" --message "hello doctor" >/dev/null
clinic receive >/dev/null

out="$(clinic policy --clinic --retention-floor-days 2190)"
expect '"clinic":true' "$out"

# Without consent the clinic's core refuses a billing message; treatment needs none.
if out="$(clinic send pat "your invoice" --purpose billing)"; then echo "billing sent without consent"; exit 1; fi
expect '"code":"PERMISSION_DENIED"' "$out"
clinic send pat "how is the knee?" >/dev/null

out="$(patient consent grant dr.lee --purpose billing --purpose treatment --controller "Riverside Clinic")"
receipt="$(json_field receipt_id "$out")"
[ -n "$receipt" ]
clinic receive >/dev/null  # countersigns and returns the receipt
out="$(patient consent show)"
expect "\"receipt_id\":\"$receipt\"" "$out"
expect '"countersigned":true' "$out"
expect '"billing":"given"' "$out"
expect '"KI-CR-v1.1.0"' "$out"
out="$(clinic send pat "your invoice" --purpose billing)"
expect '"status":"sent"' "$out"
out="$(patient receive)"
expect '"text":"your invoice"' "$out"

out="$(patient consent withdraw "$receipt" --purpose billing)"
expect '"sent":true' "$out"
clinic receive >/dev/null
out="$(clinic consent show)"
expect '"billing":"withdrawn"' "$out"
if out="$(clinic send pat "overdue balance" --purpose billing)"; then echo "billing sent after withdrawal"; exit 1; fi
expect '"code":"PERMISSION_DENIED"' "$out"

out="$(patient audit verify --list)"
expect '"type":"consent_withdrawn"' "$out"
expect '"unanchored_tail"' "$out"
if grep -qF "your invoice" <<<"$out"; then echo "message content in the audit trail"; exit 1; fi

# A signed export verifies offline, with no identity or passphrase; a flipped byte does not.
out="$(patient export --out "$work/export.cwx")"
patient_key="$(json_field exporter_key "$out")"
out="$(env -u CW_PASSPHRASE "$cw" --json verify-export "$work/export.cwx" --exporter-key "$patient_key" --party-key "$patient_key" --party-key "$clinic_key")"
expect '"valid":true' "$out"
expect '"receipts":1' "$out"
if out="$("$cw" --json verify-export "$work/export.cwx" --exporter-key "$clinic_key")"; then echo "accepted another exporter's key"; exit 1; fi
expect '"code":"BAD_SIGNATURE"' "$out"
cp "$work/export.cwx" "$work/tampered.cwx"
size="$(stat -c %s "$work/tampered.cwx")"
printf '\x00' | dd of="$work/tampered.cwx" bs=1 seek=$((size / 2)) conv=notrunc status=none
cmp -s "$work/export.cwx" "$work/tampered.cwx" && printf '\x01' | dd of="$work/tampered.cwx" bs=1 seek=$((size / 2)) conv=notrunc status=none
if out="$("$cw" --json verify-export "$work/tampered.cwx" --exporter-key "$patient_key")"; then echo "tampered export accepted"; exit 1; fi
expect '"ok":false' "$out"
out="$(patient export --plain)"
expect '"cipherward-transcript-export"' "$out"

# Erasure: nothing readable is left on the patient's device; the clinic records the signed receipt.
out="$(patient erase dr.lee)"
erasure="$(json_field erasure_id "$out")"
[ -n "$erasure" ]
out="$(patient history dr.lee --offline)"
expect '"messages":[]' "$out"
clinic receive >/dev/null
out="$(clinic audit verify --list)"
expect "\"ref\":\"$erasure\"" "$out"
echo "cli compliance: ok"
