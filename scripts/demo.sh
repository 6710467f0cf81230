#!/usr/bin/env bash
# The demo: installs what is missing, builds `shoal`, starts a 6-agent mesh in
# 3 data centers on 127.0.0.1, shows the members, kills one agent with -9 and
# shows the others detecting it through `shoal watch`, then stops everything
# it started (by pid). Ports: 29500-29511 (override with DEMO_PORT_BASE).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release shoal >/dev/null
SHOAL="$PWD/build/release/bin/shoal"

base="${DEMO_PORT_BASE:-29500}"
work="$(mktemp -d -t shoal-demo-XXXXXX)"
pids=()
watch_pid=""
cleanup() {
  [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$SHOAL" keygen > "$work/cluster.key"
chmod 600 "$work/cluster.key"

say "starting 6 agents in 3 data centers (logs in $work)"
for i in 0 1 2 3 4 5; do
  gossip=$((base + 2 * i)); admin=$((base + 2 * i + 1)); dc="dc$((i % 3 + 1))"
  join=()
  [ "$i" -gt 0 ] && join=(--join "127.0.0.1:$base")
  "$SHOAL" agent --name "node-$i" --dc "$dc" --data-dir "$work/data-$i" --bind "127.0.0.1:$gossip" \
    --admin "127.0.0.1:$admin" --cluster-key-file "$work/cluster.key" "${join[@]}" \
    >"$work/node-$i.log" 2>&1 &
  pids+=($!)
  echo "  node-$i  dc=$dc  gossip=127.0.0.1:$gossip  admin=127.0.0.1:$admin  pid=${pids[-1]}"
  # Wait for the admin API before starting the next agent.
  for _ in $(seq 100); do "$SHOAL" members --admin "127.0.0.1:$admin" >/dev/null 2>&1 && break; sleep 0.1; done
done
export SHOAL_ADMIN="127.0.0.1:$((base + 1))"

say "waiting for every agent to see 6 alive members"
start=$EPOCHREALTIME
for _ in $(seq 100); do
  [ "$("$SHOAL" members --json --status alive | grep -c '"name"')" -eq 6 ] && break
  sleep 0.1
done
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
echo "  converged in $(elapsed "$start") s"

say "shoal members (as node-0 sees the mesh)"
"$SHOAL" members

say "shoal watch (node-0's event stream) in the background"
"$SHOAL" watch &
watch_pid=$!
sleep 0.5

victim=4
say "kill -9 node-$victim (pid ${pids[$victim]})"
killed=$EPOCHREALTIME
{ kill -9 "${pids[$victim]}"; wait "${pids[$victim]}"; } 2>/dev/null || true  # Braces: no "Killed" job notice.
for _ in $(seq 300); do
  "$SHOAL" members --json --status dead | grep -q "\"node-$victim\"" && break
  sleep 0.1
done
echo "  node-0 lists node-$victim dead after $(elapsed "$killed") s"
sleep 1

say "shoal members after the failure"
"$SHOAL" members

say "restart node-$victim with its data dir (no --join: it rejoins from what it remembers)"
i=$victim; gossip=$((base + 2 * i)); admin=$((base + 2 * i + 1))
"$SHOAL" agent --name "node-$i" --dc "dc$((i % 3 + 1))" --data-dir "$work/data-$i" --bind "127.0.0.1:$gossip" \
  --admin "127.0.0.1:$admin" --cluster-key-file "$work/cluster.key" >>"$work/node-$i.log" 2>&1 &
pids[$victim]=$!
for _ in $(seq 100); do
  [ "$("$SHOAL" members --json --status alive | grep -c '"name"')" -eq 6 ] && break
  sleep 0.1
done
sleep 0.5
"$SHOAL" members

say "stopping every agent this demo started (SIGTERM: graceful leave)"
