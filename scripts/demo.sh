#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts a local relay, and runs a real conversation between
# a clinician and a patient, each in separate `cipherward` processes with their own encrypted store:
# invitation, safety numbers, messages both ways, a file, the patient offline while the clinician writes and
# receiving everything on return, and what the relay holds (sealed, padded ciphertext only).
# The in-process engine demo is still there: build/release/core/demo/cipherward-demo.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/install-deps.sh"
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target cipherward cipherward-relay cipherward-demo

cw="$root/build/release/cli-demo/cipherward"
relay_bin="$root/build/release/relay/cipherward-relay"
work="$(mktemp -d "${TMPDIR:-/tmp}/cipherward-demo.XXXXXX")"
relay_pid=""
cleanup() {
  if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
    kill -TERM "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*" >&2; }
# The clinician and the patient: separate data directories and passphrases, one process per command.
clinician() { show "cipherward (clinician) $*"; CW_PASSPHRASE="clinician passphrase" "$cw" --home "$work/clinician" "$@"; }
patient()   { show "cipherward (patient) $*";   CW_PASSPHRASE="patient passphrase"   "$cw" --home "$work/patient" "$@"; }

step "Start a local relay on 127.0.0.1 (its data in $work/relay)"
stats_pub="$("$cw" operator-key --key-file "$work/operator.key")"
"$relay_bin" --data-dir "$work/relay" --listen 127.0.0.1:0 --stats-key "$stats_pub" --log-level warn \
  >"$work/relay.out" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/relay.out" ] && break
  sleep 0.1
done
relay="$(head -n1 "$work/relay.out")"
[ -n "$relay" ] || { echo "the relay did not start:"; cat "$work/relay.log"; exit 1; }
echo "relay address (clients pin its key): $relay"

step "The clinician creates an identity and an invitation"
clinician --relay "$relay" init --name dr.lee --kdf interactive
code="$(clinician invite 2>/dev/null)"
echo "invite code: $code"

step "The patient creates an identity and accepts the invitation"
patient --relay "$relay" init --name sam --kdf interactive
patient accept "$code" --message "Hello Dr. Lee, this is Sam. The new inhaler makes me cough."

step "The clinician receives the first message"
clinician receive

step "Both compare safety numbers (in person or on a call), then mark each other verified"
clinician verify sam
patient verify dr.lee
a="$(CW_PASSPHRASE="clinician passphrase" "$cw" --home "$work/clinician" --json verify sam | sed 's/.*"safety_number":"\([0-9]*\)".*/\1/')"
b="$(CW_PASSPHRASE="patient passphrase" "$cw" --home "$work/patient" --json verify dr.lee | sed 's/.*"safety_number":"\([0-9]*\)".*/\1/')"
if [ "$a" = "$b" ]; then echo "The two safety numbers match."; else echo "MISMATCH"; exit 1; fi
clinician verify sam --confirm >/dev/null
patient verify dr.lee --confirm >/dev/null
clinician contacts

step "Messages both ways"
clinician send sam "Thanks Sam. Stop the inhaler; I am sending a new prescription to your pharmacy."
patient receive
patient send dr.lee "Thank you, I will pick it up today."
clinician receive

step "A file: the clinician sends a discharge summary; the patient saves it and the digests match"
summary="$work/discharge-summary.txt"
{
  echo "Discharge summary for Sam"
  echo "Diagnosis: community-acquired pneumonia, improving."
  for i in $(seq 1 200); do echo "Day $i: amoxicillin 500 mg three times daily; temperature normal."; done
} >"$summary"
clinician send sam --file "$summary"
patient receive
received="$work/patient/downloads/discharge-summary.txt"
sent_digest="$(sha256sum <"$summary" | cut -d' ' -f1)"
got_digest="$(sha256sum <"$received" | cut -d' ' -f1)"
echo "sent:     $sent_digest"
echo "received: $got_digest"
if [ "$sent_digest" = "$got_digest" ]; then echo "The file arrived intact."; else echo "DIGEST MISMATCH"; exit 1; fi

step "The patient is offline; the clinician writes three messages"
clinician send sam "The pharmacy confirmed the prescription."
clinician send sam "Take one tablet in the morning with food."
clinician send sam "Book a follow-up in two weeks, please."

step "What the relay holds now: sealed, padded envelopes (no names, no text)"
"$cw" --relay "$relay" relay-stats --key-file "$work/operator.key"
patient relay-peek
if grep -rqa "prescription\|tablet\|dr.lee\|amoxicillin" "$work/relay"; then
  echo "plaintext found in the relay's files!"; exit 1
else
  echo "grep for 'prescription', 'tablet', 'dr.lee' or 'amoxicillin' in the relay's files ($work/relay): no match."
fi

step "The patient comes back and receives everything, once"
patient receive
patient receive
"$cw" --relay "$relay" relay-stats --key-file "$work/operator.key"

step "The patient's conversation, from the patient's own encrypted store"
patient history dr.lee --offline

cat <<EOT

== Chat interactively from two terminals
Start a relay and keep it running:
    $relay_bin --data-dir /tmp/cw-relay --listen 127.0.0.1:7400
It prints its address, cw://<key>@127.0.0.1:7400. Then, in terminal 1:
    $cw --home /tmp/cw-alice --relay <address> init --name alice
    $cw --home /tmp/cw-alice invite
and in terminal 2:
    $cw --home /tmp/cw-bob --relay <address> init --name bob
    $cw --home /tmp/cw-bob accept <code>
    $cw --home /tmp/cw-bob chat alice
and back in terminal 1:
    $cw --home /tmp/cw-alice chat bob
Type to send; incoming messages appear as they arrive; /file <path> sends a file (received files land in
<home>/downloads); /verify shows the safety number, /quit leaves.
(--passphrase-file FILE or CW_PASSPHRASE=... skip the passphrase prompt.)
EOT

step "Stop the relay"
kill -TERM "$relay_pid"
wait "$relay_pid" 2>/dev/null || true
relay_pid=""
echo "done."
