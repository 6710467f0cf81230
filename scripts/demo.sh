#!/usr/bin/env bash
# The demo: installs what is missing, builds `shoal`, starts a 6-agent mesh in
# 3 data centers on 127.0.0.1, shows the members, kills one agent with -9 and
# shows the others detecting it through `shoal watch`; then creates projects
# from /usr/share/doc subtrees, saves them on their primaries, kills the
# primary of one with -9, shows the failover with `shoal where` and restores
# the project byte-identically on its new primary (diff -r). Stops everything
# it started (by pid). Ports: 29500-29511 (override with DEMO_PORT_BASE).
# DEMO_SHOAL=/path/to/shoal uses that binary instead of installing and building.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${DEMO_SHOAL:-}" ]; then
  SHOAL="$DEMO_SHOAL"
else
  scripts/install-deps.sh
  scripts/build.sh release shoal >/dev/null
  SHOAL="$PWD/build/release/bin/shoal"
fi

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


# ---- Projects: placement, saves, failover, byte-identical restore ----------
{ kill "$watch_pid"; wait "$watch_pid"; } 2>/dev/null || true
watch_pid=""
admin_of() { echo "127.0.0.1:$((base + 2 * ${1#node-} + 1))"; }  # node-3 -> its admin address
json_field() { python3 -c 'import json,sys; v=json.load(sys.stdin); print(" ".join(v[sys.argv[1]]) if isinstance(v[sys.argv[1]], list) else v[sys.argv[1]])' "$1"; }

# Four /usr/share/doc subtrees of 300 KB - 3 MB, evenly spaced by name.
mapfile -t docs < <(du -s --apparent-size --block-size=1 /usr/share/doc/*/ 2>/dev/null |
  awk '$1 >= 300000 && $1 <= 3000000 { print $2 }' | sort |
  awk '{ d[NR] = $0 } END { for (i = 0; i < 4 && NR > 0; i++) print d[int(i * NR / 4) + 1] }')
[ "${#docs[@]}" -gt 0 ] || docs=(/usr/share/doc/bash/)

say "shoal project create --from DIR: ${#docs[@]} projects from /usr/share/doc"
projects=()
for d in "${docs[@]}"; do
  name="doc-$(basename "$d")"
  cp -a "$d" "$work/src-$name"
  printf '  %-28s %5s  ' "$name" "$(du -sh --apparent-size "$work/src-$name" | cut -f1)"
  "$SHOAL" project create --id "$name" --from "$work/src-$name"
  projects+=("$name")
done

say "shoal project list (node-0's view)"
"$SHOAL" project list

say "shoal where (the committed placement, read through a majority of each project's replicas)"
for p in "${projects[@]}"; do "$SHOAL" where "$p"; done

say "shoal project save on each primary, after editing its working directory"
for p in "${projects[@]}"; do
  primary="$("$SHOAL" where "$p" --json | json_field primary)"
  wd="$work/data-${primary#node-}/projects/$p"
  echo "edited by the demo at $(date -u +%FT%TZ)" >> "$wd/DEMO-NOTES"
  snap="$("$SHOAL" project save "$p" --admin "$(admin_of "$primary")")"
  rm -rf "$work/saved-$p"; cp -a "$wd" "$work/saved-$p"  # What the acknowledged save holds.
  echo "  $p saved on $primary: snapshot ${snap:0:12}"
done

p="${projects[0]}"
old="$("$SHOAL" where "$p" --json)"
victim_name="$(json_field primary <<<"$old")"
victim=${victim_name#node-}
asker="node-$(( (victim + 1) % 6 ))"
say "kill -9 $victim_name (pid ${pids[$victim]}), the primary of $p at epoch $(json_field epoch <<<"$old")"
killed=$EPOCHREALTIME
{ kill -9 "${pids[$victim]}"; wait "${pids[$victim]}"; } 2>/dev/null || true
new_primary=""
for _ in $(seq 600); do
  if now="$("$SHOAL" where "$p" --json --admin "$(admin_of "$asker")" 2>/dev/null)" &&
     [ "$(json_field primary <<<"$now")" != "$victim_name" ]; then
    new_primary="$(json_field primary <<<"$now")"
    break
  fi
  sleep 0.1
done
if [ -z "$new_primary" ]; then
  echo "  no new primary for $p after $(elapsed "$killed") s; $asker says:"
  "$SHOAL" where "$p" --admin "$(admin_of "$asker")" || true
  exit 1
fi
echo "  $asker sees a new primary for $p after $(elapsed "$killed") s:"
"$SHOAL" where "$p" --admin "$(admin_of "$asker")"

say "shoal project restore $p on its new primary $new_primary, then diff -r against the last acknowledged save"
"$SHOAL" project restore "$p" --to "$work/restored-$p" --admin "$(admin_of "$new_primary")"
if diff -r "$work/saved-$p" "$work/restored-$p"; then
  echo "  byte-identical: $(find "$work/restored-$p" -type f | wc -l) files, $(du -sh --apparent-size "$work/restored-$p" | cut -f1)"
else
  echo "  the restore differs from the last acknowledged save"
  exit 1
fi

say "stopping every agent this demo started (SIGTERM: graceful leave)"
