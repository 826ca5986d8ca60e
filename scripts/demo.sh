#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the in-process conversation between a clinician,
# a patient and a nurse (X3DH from a bundle, messages both ways, safety numbers, a care-team group message).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/install-deps.sh"
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$(nproc)" --target cipherward-demo
exec build/release/core/demo/cipherward-demo
