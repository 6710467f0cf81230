#!/usr/bin/env bash
# The one test command: installs what is missing, builds, runs every test.
# CI calls this through .ci/run. In CI (CI=true) warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
preset=release
if [ "${CI:-}" = "true" ]; then preset=ci; fi
scripts/build.sh "$preset"
ctest --preset "$preset" -j "${SHOAL_TEST_JOBS:-2}" --timeout 600 "$@"
