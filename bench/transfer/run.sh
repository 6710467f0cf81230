#!/usr/bin/env bash
# bench/transfer/run.sh -- shoal's chunk transfer beside rsync over ssh, in one run (not run by ctest).
#
# Mirrors ../shared/peers/transfer_bench.sh (that file cannot be sourced: it runs its whole
# benchmark when read): the same private mount namespace with a tmpfs work area, the same
# ~1 GiB corpus of real files, the same private sshd on 127.0.0.1, the same rsync command
# (`rsync -a --delete --stats -e ssh`, default cipher), the same ~2% mutation with the same
# seed. Then two shoal agents on 127.0.0.1 (A holds the snapshots, B receives) and:
#   initial      replicate snapshot 1 A->B            vs rsync initial copy
#   incremental  replicate snapshot 2 (after the ~2% change); wire bytes vs stored growth of A
#   nochange     replicate snapshot 2 again            vs rsync no-change re-sync
#   resume       kill -9 the receiver, then the sender, at ~half-way; bytes resent after restart
#   limit        rate limit L on A, wire bytes over a 10 s window
#   memory       VmHWM / RSS of both agents before and after the initial replication
#   channel      bench/transfer/channel_bench.cc: channel alone (memory, TCP) vs raw libsodium,
#                authenticated connection set-up time
# Usage: bench/transfer/run.sh [results.md]      (as root: unshare, mount)
#   env: BUILD=build/h-xfer CORPUS_MB=1024 REPS=1 SEED=20240601 LIMIT_BPS=25000000 CORPUS_DIRS=...
# Needs: rsync openssh-server openssh-client python3 libsodium-dev (apt-get install -y ...).
set -euo pipefail
if [ "${XFER_IN_NS:-}" != 1 ]; then
  exec unshare -m --propagation private env XFER_IN_NS=1 bash "$0" "$@"
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build/h-xfer}
SHOAL=$BUILD/bin/shoal
RESULTS=${1:-$PWD/transfer_bench_results.md}
RAW=${RESULTS%.md}.tsv
CORPUS_MB=${CORPUS_MB:-1024}
REPS=${REPS:-1}
SEED=${SEED:-20240601}
LIMIT_BPS=${LIMIT_BPS:-25000000}
[ -x "$SHOAL" ] || { echo "no $SHOAL: build first (cmake --build $BUILD)" >&2; exit 2; }
BASE_PORT=$(( 20000 + RANDOM % 10000 ))
W=$(mktemp -d /tmp/shoalxfer.XXXXXX)
mount -t tmpfs -o "size=${TMPFS_SIZE:-8g},mode=700" tmpfs "$W"
PIDS=()
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
cleanup() {
  local e p c
  for e in "${PIDS[@]}"; do
    p=${e%%:*}; c=${e#*:}
    if [ -r "/proc/$p/comm" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$c" ]; then kill "$p" 2>/dev/null || true; fi
  done
  sleep 1
  for e in "${PIDS[@]}"; do
    p=${e%%:*}; c=${e#*:}
    if [ -r "/proc/$p/comm" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$c" ]; then kill -9 "$p" 2>/dev/null || true; fi
  done
  if mountpoint -q "$W"; then umount -l "$W"; fi
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
port_free() { ! ss -tanH 2>/dev/null | awk '{print $4}' | grep -q ":$1\$"; }
: > "$RAW"
emit() { printf '%s\n' "$(IFS=$'\t'; echo "$*")" >> "$RAW"; }
busy_pct() { local a b; a=($(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)); sleep 1
             b=($(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat))
             echo $(( 100 * (b[0]-a[0]) / (b[1]-a[1] > 0 ? b[1]-a[1] : 1) )); }
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }

emit meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
emit meta cores "$(nproc)"
emit meta kernel "$(uname -r)"
emit meta rsync "$(rsync --version | head -1)"
emit meta ssh "$(ssh -V 2>&1)"
emit meta shoal_commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
emit meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- channel micro-benchmark
log "channel_bench"
g++ -O2 -std=c++23 -DMSGPACK_NO_BOOST -I"$ROOT" "$ROOT/bench/transfer/channel_bench.cc" \
  "$BUILD/transfer/libshoal_transfer.a" "$BUILD/base/libshoal_base.a" -lsodium -lpthread -o "$W/channel_bench"
"$W/channel_bench" 3 200 | while IFS= read -r line; do emit "$line"; done

# ---------------------------------------------------------------- corpus (as transfer_bench.sh)
log "building corpus"
SRC=$W/src; mkdir -p "$SRC"
copy_in() { mkdir -p "$SRC$(dirname "$1")" && cp -a "$1" "$SRC$(dirname "$1")/"; }
for d in ${CORPUS_DIRS:-/usr/lib/python3* /usr/share/doc /usr/include /usr/lib/gcc}; do
  if [ -d "$d" ]; then copy_in "$d"; fi
done
find "$SRC" -type l -delete
budget=$(( CORPUS_MB * 1048576 - $(find "$SRC" -type f -printf '%s\n' | awk '{s+=$1} END{print s+0}') ))
while IFS= read -r f; do
  sz=$(stat -c %s "$f")
  if [ "$sz" -le "$budget" ]; then copy_in "$f"; budget=$(( budget - sz )); fi
  if [ "$budget" -lt 65536 ]; then break; fi
done < <(find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' | LC_ALL=C sort)
emit corpus files "$(find "$SRC" -type f | wc -l)"
emit corpus bytes "$(find "$SRC" -type f -printf '%s\n' | awk '{s+=$1} END{print s}')"

# ---------------------------------------------------------------- private sshd (as transfer_bench.sh)
SSH_PORT=$BASE_PORT
while ! port_free "$SSH_PORT"; do SSH_PORT=$((SSH_PORT + 1)); done
ssh-keygen -q -t ed25519 -N '' -f "$W/host_key" -C benchhost
ssh-keygen -q -t ed25519 -N '' -f "$W/client_key" -C benchclient
cp "$W/client_key.pub" "$W/authorized_keys"
SFTP=/usr/lib/openssh/sftp-server; [ -x "$SFTP" ] || SFTP=internal-sftp
cat > "$W/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $W/host_key
PidFile $W/sshd.pid
AuthorizedKeysFile $W/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
Subsystem sftp $SFTP
LogLevel ERROR
EOF
RCFILE=$(getent passwd "$(id -un)" | cut -d: -f6)/.bashrc
unshare -m --propagation private sh -c '
  mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/sshd &&
  { [ ! -e "$1" ] || mount --bind /dev/null "$1"; } &&
  exec /usr/sbin/sshd -D -e -f "$2"' sh "$RCFILE" "$W/sshd_config" > "$W/sshd.log" 2>&1 &
SSHD_PID=$!; PIDS+=("$SSHD_PID:sshd")
for _ in $(seq 50); do ss -ltnH | awk '{print $4}' | grep -qx "127.0.0.1:$SSH_PORT" && break; sleep 0.1; done
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$W/host_key.pub")" > "$W/known_hosts"
SSHO=(-F /dev/null -p "$SSH_PORT" -i "$W/client_key" -o IdentitiesOnly=yes -o BatchMode=yes
      -o UserKnownHostsFile="$W/known_hosts" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes
      -o Compression=no -o ControlMaster=no -o ControlPath=none)
USER_AT=$(id -un)@127.0.0.1
ssh "${SSHO[@]}" "$USER_AT" true || { cat "$W/sshd.log"; exit 1; }
# ssh connection set-up (key exchange + auth + remote `true`), median of 10
for i in $(seq 10); do t0=$(now); ssh "${SSHO[@]}" "$USER_AT" true; t1=$(now); dt "$t0" "$t1"; echo; done \
  | sort -n | awk '{a[NR]=$1} END{printf "%.1f\n", a[int((NR+1)/2)]*1000}' > "$W/sshms"
emit limit ssh_connect_ms median "$(cat "$W/sshms")"

RS=(rsync -a --delete --stats --rsync-path=/usr/bin/rsync -e "ssh ${SSHO[*]}")
rsync_run() { # scenario rep dst
  local t0 t1 busy; sync; busy=$(busy_pct); t0=$(now)
  "${RS[@]}" "$SRC/" "$USER_AT:$3/" > "$W/rsync.log" 2>&1
  t1=$(now)
  emit run rsync_ssh "$1" "$2" "$(dt "$t0" "$t1")" \
    "$(awk -F': ' '$1=="Total bytes sent"{gsub(/[^0-9]/,"",$2); print $2}' "$W/rsync.log")" "$busy"
}

# ---------------------------------------------------------------- shoal agents
SP=$((BASE_PORT + 40)); while ! port_free "$SP" || ! port_free $((SP+1)) || ! port_free $((SP+2)) || ! port_free $((SP+3)); do SP=$((SP + 4)); done
"$SHOAL" keygen > "$W/cluster.key"; chmod 600 "$W/cluster.key"
declare -A GPORT APORT PID
GPORT[a]=$SP; APORT[a]=$((SP+1)); GPORT[b]=$((SP+2)); APORT[b]=$((SP+3))
start_agent() { # a|b [join]
  local n=$1; shift
  local args=(agent --name "node-$n" --dc dc1 --data-dir "$W/data-$n" --bind "127.0.0.1:${GPORT[$n]}"
              --admin "127.0.0.1:${APORT[$n]}" --cluster-key-file "$W/cluster.key" --profile lan)
  if [ $# -gt 0 ]; then args+=(--join "$1"); fi
  "$SHOAL" "${args[@]}" >> "$W/agent-$n.log" 2>&1 &
  PID[$n]=$!; PIDS+=("${PID[$n]}:shoal")
  for _ in $(seq 150); do curl -sf "http://127.0.0.1:${APORT[$n]}/v1/self" > /dev/null && return 0; sleep 0.1; done
  log "agent $n did not start"; tail -20 "$W/agent-$n.log" >&2; exit 1
}
api() { curl -sf "http://127.0.0.1:${APORT[$1]}$2"; }
post() { curl -sf -X POST -H 'Content-Type: application/json' -d "$3" "http://127.0.0.1:${APORT[$1]}$2"; }
alive_b() { # A and B list each other alive
  for _ in $(seq 300); do
    if "$SHOAL" members --json --admin "127.0.0.1:${APORT[a]}" 2>/dev/null | python3 -c '
import json,sys; m={x["name"]:x["status"] for x in json.load(sys.stdin)}; sys.exit(0 if m.get("node-b")=="alive" else 1)' &&
       "$SHOAL" members --json --admin "127.0.0.1:${APORT[b]}" 2>/dev/null | python3 -c '
import json,sys; m={x["name"]:x["status"] for x in json.load(sys.stdin)}; sys.exit(0 if m.get("node-a")=="alive" else 1)'; then return 0; fi
    sleep 0.1
  done
  log "agents did not converge"; exit 1
}
metric() { api "$1" /metrics | awk -v k="$2" '$1==k{print $2}'; }
field() { python3 -c 'import json,sys; t=json.load(sys.stdin); print(t.get(sys.argv[1], ""))' "$1"; }
hwm() { awk '/VmHWM/{print $2}' "/proc/${PID[$1]}/status"; }
# Peak anonymous memory (heap, buffers; not the LMDB map's file pages) of both agents, sampled
# every 50 ms until the file $W/stop_sampling appears: "a_kib b_kib".
sample_anon() {
  local ma=0 mb=0 x
  rm -f "$W/stop_sampling"
  while [ ! -e "$W/stop_sampling" ]; do
    x=$(awk '/RssAnon/{print $2}' "/proc/${PID[a]}/status" 2>/dev/null || echo 0); [ "${x:-0}" -gt "$ma" ] && ma=$x
    x=$(awk '/RssAnon/{print $2}' "/proc/${PID[b]}/status" 2>/dev/null || echo 0); [ "${x:-0}" -gt "$mb" ] && mb=$x
    sleep 0.05
  done
  echo "$ma $mb" > "$W/anon_peak"
}
rss() { awk '/VmRSS/{print $2}' "/proc/${PID[$1]}/status"; }
wipe_b() { # restart B with an empty store
  kill "${PID[b]}"; wait "${PID[b]}" 2>/dev/null || true
  rm -rf "$W/data-b/store"
  start_agent b "127.0.0.1:${GPORT[a]}"; alive_b
}
# replicate SCEN REP SNAP: CLI wall time, the transfer's own seconds, chunk bytes, wire bytes out of A
shoal_run() {
  local scen=$1 rep=$2 snap=$3 w0 w1 t0 t1 busy last
  sync; busy=$(busy_pct)
  w0=$(metric a shoal_transfer_wire_bytes_out_total)
  t0=$(now)
  "$SHOAL" replicate --admin "127.0.0.1:${APORT[a]}" --project bench --snapshot "$snap" --to node-b > "$W/rep.log" 2>&1 \
    || { log "replicate failed: $(cat "$W/rep.log")"; exit 1; }
  t1=$(now)
  w1=$(metric a shoal_transfer_wire_bytes_out_total)
  last=$(api a /v1/transfers | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["transfers"][0]))')
  emit run shoal "$scen" "$rep" "$(dt "$t0" "$t1")" "$((w1 - w0))" "$busy" \
    "$(echo "$last" | field seconds)" "$(echo "$last" | field bytes)" "$(echo "$last" | field chunks)"
}

log "starting agents on 127.0.0.1:$SP-$((SP+3))"
start_agent a
start_agent b "127.0.0.1:${GPORT[a]}"
alive_b

t0=$(now)
S1=$("$SHOAL" snapshot create --store "$W/data-a/store" --project bench "$SRC" 2>/dev/null)
t1=$(now)
emit step shoal_snapshot1_s "$(dt "$t0" "$t1")"
emit step stored_bytes_s1 "$("$SHOAL" snapshot stats --store "$W/data-a/store" --json | field stored_bytes)"

# ---------------------------------------------------------------- initial
for rep in $(seq "$REPS"); do
  log "initial rsync rep $rep"; rm -rf "$W/dst"; mkdir -p "$W/dst"; rsync_run initial "$rep" "$W/dst"
  log "initial shoal rep $rep"
  if [ "$rep" -gt 1 ]; then wipe_b; fi
  ha0=$(rss a); hb0=$(rss b)
  aa0=$(awk '/RssAnon/{print $2}' "/proc/${PID[a]}/status"); ab0=$(awk '/RssAnon/{print $2}' "/proc/${PID[b]}/status")
  sample_anon & SAMPLER=$!
  shoal_run initial "$rep" "$S1"
  touch "$W/stop_sampling"; wait "$SAMPLER"
  emit mem "$rep" rss_before_kib_a_b "$ha0" "$hb0" hwm_after_kib_a_b "$(hwm a)" "$(hwm b)" \
    anon_before_kib_a_b "$aa0" "$ab0" anon_peak_kib_a_b $(cat "$W/anon_peak")
done
"$SHOAL" snapshot verify --store "$W/data-b/store" > /dev/null 2>&1 && emit check verify_b_after_initial clean \
  || emit check verify_b_after_initial DAMAGED
rm -rf "$W/restore"; "$SHOAL" snapshot restore --store "$W/data-b/store" --project bench --snapshot "$S1" --to "$W/restore" > /dev/null 2>&1
emit check restore_diff_lines "$(diff -rq --no-dereference "$W/dst" "$W/restore" | wc -l)"
rm -rf "$W/restore"
cp -a "$W/dst" "$W/dst_base"; rm -rf "$W/dst"

# ---------------------------------------------------------------- the ~2% change (same code and seed as transfer_bench.sh)
log "mutating ~2% of files (seed $SEED)"
python3 - "$SRC" "$SEED" >> "$RAW" <<'EOF'
import os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
files = []
for dp, dns, fns in os.walk(root):
    dns.sort()
    for fn in sorted(fns):
        p = os.path.join(dp, fn)
        if os.path.isfile(p) and not os.path.islink(p): files.append(p)
files.sort()
size = {p: os.path.getsize(p) for p in files}
k = max(20, round(0.02 * len(files)))
large = [p for p in files if size[p] >= 1 << 20]
n_ins = min(len(large), max(1, k // 10)); n_del = max(1, k // 20); n_new = max(1, k // 20)
n_app = k - n_ins - n_del
ins = rng.sample(large, n_ins); sins = set(ins)
rest = rng.sample([p for p in files if p not in sins], n_app + n_del)
app, dele = rest[:n_app], rest[n_app:]
newb = 0; touched = 0
for p in app:
    b = rng.randbytes(rng.randint(1024, 16384))
    with open(p, "ab") as f: f.write(b)
    newb += len(b); touched += size[p] + len(b)
for p in ins:
    with open(p, "rb") as f: d = f.read()
    off = rng.randint(len(d) // 3, 2 * len(d) // 3)
    b = rng.randbytes(rng.randint(4096, 65536))
    with open(p, "wb") as f: f.write(d[:off] + b + d[off:])
    newb += len(b); touched += len(d) + len(b)
for p in dele: os.remove(p)
dirs = sorted({os.path.dirname(p) for p in files})
for i in range(n_new):
    b = rng.randbytes(rng.randint(1024, 262144))
    with open(os.path.join(rng.choice(dirs), "zz_bench_new_%04d.bin" % i), "wb") as f: f.write(b)
    newb += len(b); touched += len(b)
for k_, v in [("appended", n_app), ("middle_inserts_in_files_ge_1MiB", n_ins), ("deleted", n_del),
              ("new_files", n_new), ("new_payload_bytes", newb), ("bytes_of_touched_files", touched)]:
    print("mutation\t%s\t%d" % (k_, v))
EOF
t0=$(now)
S2=$("$SHOAL" snapshot create --store "$W/data-a/store" --project bench "$SRC" 2>/dev/null)
t1=$(now)
emit step shoal_snapshot2_s "$(dt "$t0" "$t1")"
emit step stored_bytes_s2 "$("$SHOAL" snapshot stats --store "$W/data-a/store" --json | field stored_bytes)"

# ---------------------------------------------------------------- incremental and no-change
for rep in $(seq "$REPS"); do
  log "incremental/nochange rsync rep $rep"
  rm -rf "$W/dst"; cp -a "$W/dst_base" "$W/dst"
  rsync_run incremental "$rep" "$W/dst"
  rsync_run nochange "$rep" "$W/dst"
  log "incremental/nochange shoal rep $rep"
  if [ "$rep" -gt 1 ]; then wipe_b; shoal_run initial_again "$rep" "$S1"; fi
  shoal_run incremental "$rep" "$S2"
  shoal_run nochange "$rep" "$S2"
done
rm -rf "$W/dst" "$W/dst_base"

# ---------------------------------------------------------------- kill at about half-way, then resume
FULL=$(awk -F'\t' '$1=="run" && $2=="shoal" && $3=="initial" {print $9; exit}' "$RAW")
halfway_kill() { # victim: b (receiver) or a (sender)
  local victim=$1 got=0 t=0 id
  wipe_b
  # Paced at HALF_BPS so that polling every ~50 ms stops it close to half-way.
  post a /v1/transfers/limit "{\"bytes_per_second\":${HALF_BPS:-40000000}}" > /dev/null
  id=$(post a /v1/replicate "{\"project\":\"bench\",\"snapshot\":\"$S1\",\"to\":\"node-b\",\"detach\":true}" | field id)
  while [ "$t" -lt 3000 ]; do
    got=$(api b /v1/transfers | python3 -c 'import json,sys
t=[x for x in json.load(sys.stdin)["transfers"] if x["direction"]=="receive"]; print(t[0]["bytes"] if t else 0)')
    if [ "$got" -ge $((FULL / 2)) ]; then break; fi
    sleep 0.02; t=$((t + 1))
  done
  kill -9 "${PID[$victim]}"; wait "${PID[$victim]}" 2>/dev/null || true
  local w0 w1 resent attempts
  if [ "$victim" = b ]; then
    # The sender keeps the transfer and retries it (backoff 0.25 s, 0.5 s, ...) until b is back.
    post a /v1/transfers/limit '{"bytes_per_second":0}' > /dev/null
    w0=$(metric a shoal_transfer_wire_bytes_out_total)
    start_agent b "127.0.0.1:${GPORT[a]}"
    for _ in $(seq 600); do
      case $(api a "/v1/transfers/$id" | field state) in done|failed) break ;; esac; sleep 0.1
    done
    if [ "$(api a "/v1/transfers/$id" | field state)" != done ]; then
      log "the retried transfer did not complete ($(api a "/v1/transfers/$id" | field error)); replicating again"
      alive_b
      "$SHOAL" replicate --admin "127.0.0.1:${APORT[a]}" --project bench --snapshot "$S1" --to node-b > "$W/rep.log" 2>&1 \
        || { log "resume failed: $(cat "$W/rep.log")"; exit 1; }
      id=$(api a /v1/transfers | python3 -c 'import json,sys; print(json.load(sys.stdin)["transfers"][0]["id"])')
    fi
  else
    start_agent a "127.0.0.1:${GPORT[b]}"   # A new process: the transfer is gone, so replicate again.
    alive_b
    w0=$(metric a shoal_transfer_wire_bytes_out_total)
    "$SHOAL" replicate --admin "127.0.0.1:${APORT[a]}" --project bench --snapshot "$S1" --to node-b > "$W/rep.log" 2>&1 \
      || { log "resume failed: $(cat "$W/rep.log")"; exit 1; }
    id=$(api a /v1/transfers | python3 -c 'import json,sys; print(json.load(sys.stdin)["transfers"][0]["id"])')
  fi
  w1=$(metric a shoal_transfer_wire_bytes_out_total)
  resent=$(api a "/v1/transfers/$id" | field bytes)
  attempts=$(api a "/v1/transfers/$id" | field attempts)
  emit resume "$victim" "$got" "$resent" "$FULL" "$((w1 - w0))" "$(api a "/v1/transfers/$id" | field state)" "$attempts"
  "$SHOAL" snapshot verify --store "$W/data-b/store" > /dev/null 2>&1 && emit check "verify_b_after_kill_$victim" clean \
    || emit check "verify_b_after_kill_$victim" DAMAGED
}
log "kill -9 receiver at half-way"; halfway_kill b
log "kill -9 sender at half-way"; halfway_kill a

# ---------------------------------------------------------------- bandwidth limit over 10 s
log "rate limit $LIMIT_BPS B/s"
wipe_b
post a /v1/transfers/limit "{\"bytes_per_second\":$LIMIT_BPS}" > /dev/null
post a /v1/replicate "{\"project\":\"bench\",\"snapshot\":\"$S1\",\"to\":\"node-b\",\"detach\":true}" > /dev/null
sleep 2
w0=$(metric a shoal_transfer_wire_bytes_out_total); t0=$(now)
sleep 10
w1=$(metric a shoal_transfer_wire_bytes_out_total); t1=$(now)
emit limit_run "$LIMIT_BPS" "$(dt "$t0" "$t1")" "$((w1 - w0))"
post a /v1/transfers/limit '{"bytes_per_second":0}' > /dev/null
emit meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- summary
python3 - "$RAW" "$RESULTS" <<'EOF'
import sys, statistics as st
raw, out = sys.argv[1], sys.argv[2]
rows = [l.rstrip("\n").split("\t") for l in open(raw)]
meta = {r[1]: r[2] for r in rows if r[0] == "meta"}
def runs(tool, scen): return [r for r in rows if r[0] == "run" and r[1] == tool and r[2] == scen]
def med(xs): xs = [float(x) for x in xs if x not in ("", None)]; return st.median(xs) if xs else float("nan")
L = ["# bench/transfer results", ""]
L.append("Machine: %s, %s cores, kernel %s; %s; %s; shoal %s; load average %s at start, %s at end" % (
    meta.get("cpu"), meta.get("cores"), meta.get("kernel"), meta.get("rsync"), meta.get("ssh"),
    meta.get("shoal_commit"), meta.get("loadavg_start"), meta.get("loadavg_end")))
c = {r[1]: r[2] for r in rows if r[0] == "corpus"}
L.append("Corpus: %s files, %.1f MiB; mutation: %s" % (c.get("files"), int(c.get("bytes", 0)) / 1048576,
         ", ".join("%s=%s" % (r[1], r[2]) for r in rows if r[0] == "mutation")))
L.append("")
L.append("| scenario | rsync+ssh wall s | shoal CLI wall s | shoal transfer s | ratio (CLI wall) | shoal chunk bytes | shoal wire bytes | rsync bytes sent |")
L.append("|---|---|---|---|---|---|---|---|")
for scen in ("initial", "incremental", "nochange"):
    r, s = runs("rsync_ssh", scen), runs("shoal", scen)
    rw, sw = med([x[4] for x in r]), med([x[4] for x in s])
    L.append("| %s | %.3f | %.3f | %.3f | %.3fx | %.0f | %.0f | %.0f |" % (scen, rw, sw, med([x[7] for x in s]),
             sw / rw if rw else float("nan"), med([x[8] for x in s]), med([x[5] for x in s]), med([x[5] for x in r])))
L.append("")
for r in rows:
    if r[0] in ("sodium", "channel", "setup", "limit", "step", "mem", "resume", "limit_run", "check"):
        L.append("- " + " | ".join(r))
st1 = {r[1]: r[2] for r in rows if r[0] == "step"}
inc = runs("shoal", "incremental")
if inc and "stored_bytes_s2" in st1:
    growth = int(st1["stored_bytes_s2"]) - int(st1["stored_bytes_s1"])
    L.append("- incremental wire bytes / stored growth of A (new chunks + manifests): %.0f / %d = %.3fx" % (
        med([x[5] for x in inc]), growth, med([x[5] for x in inc]) / growth))
for r in rows:
    if r[0] == "resume":
        L.append("- kill -9 of %s at %s of %s chunk bytes (%.2f): resent %s chunk bytes = %.3fx of the full transfer (wire %s; %s after %s attempts)" % (
            {"a": "the sender", "b": "the receiver"}[r[1]], r[2], r[4], int(r[2]) / int(r[4]), r[3], int(r[3]) / int(r[4]), r[5], r[6], r[7]))
    if r[0] == "limit_run":
        rate = int(r[3]) / float(r[2])
        L.append("- limit %s B/s: %.0f B/s over %s s = %.3f of the limit" % (r[1], rate, r[2], rate / int(r[1])))
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
EOF
log "done: $RESULTS ($RAW)"
