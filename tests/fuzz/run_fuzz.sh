#!/usr/bin/env bash
# Builds one libFuzzer target with clang (ASan+UBSan) and runs it for a bounded
# time over its seed corpus. Usage: run_fuzz.sh SOURCE_DIR WORK_DIR TARGET SECONDS SOURCES...
# libstdc++ 12 hides std::expected from clang < 19 (it checks __cpp_concepts);
# clang implements what <expected> needs, so we raise the macro for this build.
set -euo pipefail
src="$1"; work="$2"; target="$3"; seconds="$4"; shift 4
clang=""
for c in clang++-19 clang++-18 clang++-17 clang++-16; do
  if command -v "$c" >/dev/null; then clang="$c"; break; fi
done
if [ -z "$clang" ]; then echo "run_fuzz: no clang++ 16 or newer found (scripts/install-deps.sh installs clang-16)" >&2; exit 1; fi
mkdir -p "$work/corpus-$target"
cp -n "$src/tests/fuzz/corpus/$target"/* "$work/corpus-$target/" 2>/dev/null || true
sources=()
for s in "$@"; do sources+=("$src/$s"); done
"$clang" -std=c++2b -O1 -g -U__cpp_concepts -D__cpp_concepts=202002L -Wno-builtin-macro-redefined \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DMSGPACK_NO_BOOST \
  -DMSGPACK_DEFAULT_API_VERSION=3 -I"$src" "$src/tests/fuzz/$target.cc" "${sources[@]}" \
  -lsodium -o "$work/$target"
# -rss_limit_mb bounds memory: an input that makes a decoder allocate without bound fails the run.
"$work/$target" -max_total_time="$seconds" -rss_limit_mb=512 -malloc_limit_mb=256 -seed=1 -timeout=5 \
  -print_final_stats=1 "$work/corpus-$target"
