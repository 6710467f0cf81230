#!/usr/bin/env bash
# bench/storage/run.sh: the snapshot-store benchmarks (not run by ctest).
#   bench/storage/run.sh peers    shoal beside restic, bup and borg on the ~1 GiB corpus
#                                 of ../shared/peers/storage_bench.sh (results in $OUT)
#   bench/storage/run.sh params V1 V2
#                                 chunk-size and zstd-level table of docs/storage.md on a
#                                 corpus V1 and its "next day" variant V2
#   bench/storage/run.sh bad-input
#                                 100,000 files in one directory, a 200-level tree and a
#                                 5 GiB sparse file through the CLI: create, no-change create,
#                                 restore, exact comparison (diff -r), time and peak RSS
#   bench/storage/run.sh gc       prune plus gc after deleting half the snapshots vs an
#                                 incremental snapshot of the variant, and a save of another
#                                 project while gc runs (timestamps); see gc_bench.sh
# Needs: build/h-storage built (storage_test, shoal); peers: apt-get install -y bup restic borgbackup
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build/h-storage}
OUT=${OUT:-$PWD/storage_bench_results}
case ${1:-peers} in
  peers)
    RUNS=${RUNS:-1} SKIP_MICRO=${SKIP_MICRO:-1} TOOLS=${TOOLS:-"shoal restic bup borg-none-zstd"} \
      SHOAL=$BUILD/bin/shoal RESULTS_DIR=$OUT bash "$ROOT/../shared/peers/storage_bench.sh" ;;
  params)
    V1=$2 V2=$3 W=$(mktemp -d)
    trap 'rm -rf "$W"' EXIT
    g++ -O2 -std=c++23 -DMSGPACK_NO_BOOST -I"$ROOT" "$ROOT/bench/storage/chunk_params.cc" \
      "$BUILD/storage/libshoal_storage.a" "$BUILD/base/libshoal_base.a" -llmdb -lzstd -lsodium -lpthread -o "$W/chunk_params"
    # min avg max (KiB) zstd-level workers, one configuration per group of five
    "$W/chunk_params" "$V1" "$V2" "$W" 16 64 256 3 2  16 64 256 1 2  16 64 256 6 2 \
      4 16 64 3 2  8 32 128 3 2  64 256 1024 3 2 ;;
  bad-input)
    SHOAL=$BUILD/bin/shoal W=$(mktemp -d)
    trap 'rm -rf "$W"' EXIT
    t() { local what=$1; shift; /usr/bin/time -f "$what: %e s wall, %U+%S s cpu, %M KiB peak RSS" "$@" >/dev/null; }
    python3 - "$W" <<'PY'
import os, sys
w = sys.argv[1]
os.makedirs(f"{w}/many")
for i in range(100000):
    with open(f"{w}/many/{i}", "w") as f:
        if i % 1000 == 0: f.write("x" * (i // 1000))
d = f"{w}/deep"
for i in range(200): d += f"/d{i % 10}"
os.makedirs(d)
open(f"{d}/leaf", "w").write("leaf")
os.makedirs(f"{w}/sparse")
with open(f"{w}/sparse/5g", "wb") as f:
    f.truncate(5 << 30)
    for off in (0, (1 << 30) + 12345, (5 << 30) - 4): f.seek(off); f.write(os.urandom(4))
PY
    for tree in many deep sparse; do
      t "$tree: create" "$SHOAL" snapshot create --store "$W/st" --project "$tree" "$W/$tree"
      t "$tree: no-change create" "$SHOAL" snapshot create --store "$W/st" --project "$tree" "$W/$tree"
      t "$tree: restore" "$SHOAL" snapshot restore --store "$W/st" --project "$tree" --to "$W/out-$tree"
      diff -r --no-dereference "$W/$tree" "$W/out-$tree" >/dev/null && echo "$tree: restored tree identical (diff -r)"
    done
    echo "sparse: $(stat -c '%s bytes, %b blocks of %B' "$W/out-sparse/5g") allocated after restore"
    "$SHOAL" snapshot verify --store "$W/st" ;;
  gc)
    SHOAL=${SHOAL:-$BUILD/bin/shoal} exec bash "$ROOT/bench/storage/gc_bench.sh" ;;
  *) echo "usage: $0 peers | params V1 V2 | bad-input | gc" >&2; exit 2 ;;
esac
