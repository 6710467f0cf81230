#!/usr/bin/env bash
# bench/storage/run.sh: the snapshot-store benchmarks (not run by ctest).
#   bench/storage/run.sh peers    shoal beside restic, bup and borg on the ~1 GiB corpus
#                                 of ../shared/peers/storage_bench.sh (results in $OUT)
#   bench/storage/run.sh params V1 V2
#                                 chunk-size and zstd-level table of docs/storage.md on a
#                                 corpus V1 and its "next day" variant V2
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
  *) echo "usage: $0 peers | params V1 V2" >&2; exit 2 ;;
esac
