#!/usr/bin/env bash
# bench/storage/gc_bench.sh: prune plus gc after deleting half the snapshots,
# timed against an incremental snapshot of the "next day" variant in the same
# run, then a save of another project while gc runs (timestamps).
#
# Corpus: the same system files as ../shared/peers/storage_bench.sh (section 1)
# and its deterministic mutation (mutate.py, extracted verbatim from that
# script), applied in place with seeds SEED, SEED+1, ... as the peers' harness
# does for its "incr" step. SMALL=1 uses only the doc, vim and include parts.
#
# Steps, store $W/st, project a:
#   s1 initial; mutate; s2 incremental (the reference); mutate; s3; mutate; s4
#   prune --keep-last 2 (removes s1 and s2, half) + gc: timed, compared with s2
#   mutate; s5; prune --keep-last 2; gc in the background and, 0.05 s later (during its mark), a
#   save of project b (a copy of the corpus's doc part): start/end timestamps
#   show b's save running while gc marks; verify and stats at the end.
# Usage: bench/storage/gc_bench.sh   (SHOAL=path/to/shoal, default build/h-storage)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHOAL=${SHOAL:-$ROOT/build/h-storage/bin/shoal}
PEERS=${PEERS:-$ROOT/../shared/peers/storage_bench.sh}
SEED=${SEED:-20240601}
W=$(mktemp -d "${TMPDIR:-/tmp}/gc_bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
H=$W/home ST=$W/st
now() { date +%s.%N; }
T0=$(now)
at() { python3 -c "print(f'{$1 - $T0:8.2f}')"; }
# tm LABEL CMD...: runs CMD under GNU time; prints wall, cpu, peak RSS; wall in $WALL.
tm() {
  local label=$1; shift
  sync
  /usr/bin/time -f "%e %U %S %M" -o "$W/t" "$@" >"$W/out" 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
  local e u s m; read -r e u s m <"$W/t"
  WALL=$e
  printf '%-44s wall %6.2f s  cpu %6.2f s  peak RSS %4d MiB\n' "$label" "$e" "$(python3 -c "print($u+$s)")" $((m / 1024))
}

mkdir -p "$H"/{python,doc,include,man,vim,src,share,lib}
cp_if() { local dst=$1; shift; for s in "$@"; do [ -e "$s" ] && cp -a "$s" "$dst"/; done; return 0; }
cp_if "$H/doc" /usr/share/doc
cp_if "$H/vim" /usr/share/vim
cp_if "$H/include" /usr/include
if [ -z "${SMALL:-}" ]; then
  cp_if "$H/python" /usr/lib/python3 /usr/lib/python3.11
  cp_if "$H/man" /usr/share/man
  cp_if "$H/src" /usr/share/fpcsrc
  cp_if "$H/share" /usr/share/icons /usr/share/fonts
  L=/usr/lib/x86_64-linux-gnu
  cp_if "$H/lib" $L/libLLVM-15.so.1 $L/libicudata.so.72.1 $L/libz3.so.4 $L/libx265.so.199 \
    $L/liblapack_pic.a $L/libcrypto.a $L/libpython3.11.so.1.0 $L/libc.a $L/lapack $L/blas
fi
cp -a "$H/doc" "$W/other"
sed -n "/^cat >\"\$W\/mutate.py\" <<'PY'\$/,/^PY\$/p" "$PEERS" | sed '1d;$d' >"$W/mutate.py"
[ -s "$W/mutate.py" ] || { echo "could not extract mutate.py from $PEERS" >&2; exit 1; }
echo "corpus: $(find "$H" -type f | wc -l) files, $(( $(du -sb "$H" | cut -f1) / 1048576 )) MiB; other project: $(find "$W/other" -type f | wc -l) files, $(( $(du -sb "$W/other" | cut -f1) / 1048576 )) MiB"
echo "shoal: $SHOAL ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo ?)); load average: $(cut -d' ' -f1-3 /proc/loadavg)"

S() { "$SHOAL" snapshot "$@"; }
SN=("$SHOAL" snapshot)
mutate() { python3 "$W/mutate.py" "$H" "$1" >/dev/null; }
tm "s1 initial" "${SN[@]}" create --store "$ST" --project a "$H"
mutate "$SEED"
tm "s2 incremental of the variant (reference)" "${SN[@]}" create --store "$ST" --project a "$H"
INCR=$WALL
mutate $((SEED + 1)); tm "s3 incremental" "${SN[@]}" create --store "$ST" --project a "$H"
mutate $((SEED + 2)); tm "s4 incremental" "${SN[@]}" create --store "$ST" --project a "$H"
S stats --store "$ST" --json >"$W/before.json"
tm "prune --keep-last 2 (removes s1, s2)" "${SN[@]}" prune --store "$ST" --project a --keep-last 2
PRUNE=$WALL
tm "gc" "${SN[@]}" gc --store "$ST" --json
GC=$WALL
echo "gc: $(cat "$W/out")"
S stats --store "$ST" --json >"$W/after.json"
python3 - "$W/before.json" "$W/after.json" "$INCR" "$PRUNE" "$GC" <<'PY'
import json, sys
b, a = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
incr, prune, gc = map(float, sys.argv[3:6])
mib = lambda x: x / 1048576
print(f"stored chunk bytes {mib(b['stored_bytes']):.1f} -> {mib(a['stored_bytes']):.1f} MiB, "
      f"chunks {b['chunks']} -> {a['chunks']}, store files {mib(b['file_bytes']):.0f} -> {mib(a['file_bytes']):.0f} MiB")
print(f"prune + gc {prune + gc:.2f} s vs incremental {incr:.2f} s: {(prune + gc) / incr:.2f}x")
PY

echo "--- a save of project b while gc runs (seconds since the start of this script)"
mutate $((SEED + 3)); tm "s5 incremental" "${SN[@]}" create --store "$ST" --project a "$H"
S prune --store "$ST" --project a --keep-last 2 >/dev/null
(s=$(now); S gc --store "$ST" --json >"$W/gc2.json"; e=$(now); echo "gc          start $(at "$s")  end $(at "$e")") &
GCPID=$!
sleep 0.05
s=$(now); S create --store "$ST" --project b "$W/other" >/dev/null; e=$(now)
echo "save of b   start $(at "$s")  end $(at "$e")"
wait "$GCPID"
echo "gc: $(cat "$W/gc2.json")"
S verify --store "$ST"
S stats --store "$ST" --json | python3 -c "import json,sys; j=json.load(sys.stdin); print('snapshots', j['snapshots'], 'unreferenced chunks', j['unreferenced_chunks'])"
