#!/usr/bin/env bash
# Installs every Debian 12 package that Cipherward's build, tests, fuzzing and benchmarks need.
# Idempotent: packages already present are left alone. Works as root or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev clang-format dpkg-dev
  libsignal-protocol-c-dev libsodium-dev libssl-dev libuv1-dev
  libmsgpack-cxx-dev librocksdb-dev libexpected-dev libjemalloc-dev
  libgtest-dev libgmock-dev libbenchmark-dev librapidcheck-dev
  libolm-dev nlohmann-json3-dev libcli11-dev libfmt-dev libreadline-dev
  python3 python3-dissononce tmux
  mosquitto libmosquitto-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
