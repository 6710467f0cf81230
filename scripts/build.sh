#!/usr/bin/env bash
# Configures and builds one preset (default: release). Usage: scripts/build.sh [preset] [targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"; shift || true
jobs="${SHOAL_JOBS:-$(nproc)}"
# Always configure: modules appear as folders gain a CMakeLists.txt, which a
# plain rebuild would not notice. Re-configuring an existing tree is cheap.
cmake --preset "$preset" >/dev/null
if [ $# -gt 0 ]; then
  cmake --build --preset "$preset" -j "$jobs" --target "$@"
else
  cmake --build --preset "$preset" -j "$jobs"
fi
