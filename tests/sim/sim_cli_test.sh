#!/usr/bin/env bash
# Runs the `shoal` binary as a user would: the same scenario and seed in two
# separate processes must print the same event-log hash, and a malformed
# scenario must fail with exit code 2 and a message naming file, line and key.
set -u
shoal="$1"
data="$2"
fail() { echo "FAIL: $*" >&2; exit 1; }

h1=$("$shoal" sim run "$data/tiny.toml" --seed 7 | awk '/^hash /{print $2}')
h2=$("$shoal" sim run "$data/tiny.toml" --seed 7 | awk '/^hash /{print $2}')
h3=$("$shoal" sim run "$data/tiny.toml" --seed 8 | awk '/^hash /{print $2}')
[ -n "$h1" ] || fail "no hash printed"
[ "$h1" = "$h2" ] || fail "hash differs across processes: $h1 vs $h2"
[ "$h1" != "$h3" ] || fail "different seeds gave the same hash"

err=$("$shoal" sim run "$data/malformed.toml" 2>&1 >/dev/null)
rc=$?
[ "$rc" -eq 2 ] || fail "malformed scenario exit code $rc, want 2"
case "$err" in
  *"malformed.toml:10: network.lossy: unknown key"*) ;;
  *) fail "message does not name file, line and key: $err" ;;
esac

out=$(mktemp -d)
"$shoal" sim run "$data/tiny.toml" --out "$out" >/dev/null || fail "run with --out failed"
for f in report.md report.json detection_cdf.svg awareness.svg traffic.svg; do
  [ -s "$out/$f" ] || fail "missing $f"
done
rm -rf "$out"
echo "ok: hash $h1 reproduced across processes; malformed scenario -> exit 2"
