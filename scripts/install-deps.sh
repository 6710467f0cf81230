#!/usr/bin/env bash
# Installs every Debian package shoal needs to build, test and run. Idempotent:
# packages already present are not touched, and apt is not called at all when
# nothing is missing.
set -euo pipefail

packages=(
  build-essential g++ cmake ninja-build ccache pkg-config
  libuv1-dev libmsgpack-cxx-dev libsodium-dev liblmdb-dev libspdlog-dev
  libgtest-dev libzstd-dev libhttp-parser-dev libtomlplusplus-dev
  nlohmann-json3-dev python3
  # libFuzzer targets: clang 16 is the first whose std::expected works with libstdc++ 12.
  clang-16 libclang-rt-16-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
