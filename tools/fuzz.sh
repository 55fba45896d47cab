#!/usr/bin/env bash
# tools/fuzz.sh [SECONDS] — build the libFuzzer targets of tests/fuzz/ with meson and clang
# (-Dfuzz=true, ASan + UBSan, every sanitizer report fatal) into build-fuzz/, then run
# each for SECONDS (default 20) from its seeds in tests/fuzz/corpus_*/ (the WAL, snapshot
# and manifest seeds come from tests/fuzz/make_persist_seeds.py). Prints, per target, the
# runs, the coverage (edges, features) and the corpus size. Exits non-zero when a target
# crashes, leaks, times out, trips a sanitizer or fails one of its own checks; the input
# that did it is in build-fuzz/artifacts/ (replay: build-fuzz/tests/fuzz/fuzz_NAME FILE).
#
# Each target links only what it fuzzes (tests/fuzz/meson.build): the daemon's validators
# (src/server/validate*.c) for control and sqe, libdeuring/libdeshm for the readers,
# libdepeer for the peer frames (peer).
# Needs clang and libFuzzer (Debian: clang libclang-rt-14-dev; tools/install-deps.sh).
# CLANG=... picks another compiler; FUZZ_ARGS adds libFuzzer flags (e.g. -jobs=4).
set -euo pipefail

secs=${1:-20}
[[ $secs =~ ^[0-9]+$ ]] || { echo "usage: tools/fuzz.sh [SECONDS]" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/build-fuzz
cc=${CLANG:-clang}
command -v "$cc" >/dev/null || { echo "fuzz.sh: no $cc (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }

names=(control sqe export wal snapshot manifest peer)
mkdir -p "$out"
if [ ! -f "$out/build.ninja" ]; then
  CC=$cc meson setup "$out" "$root" -Dfuzz=true -Db_sanitize=address,undefined \
    -Db_lundef=false -Dtests=disabled -Dtensorflow=disabled -Dwerror=true \
    -Doptimization=1 -Ddebug=true >"$out/setup.log" 2>&1 ||
    { cat "$out/setup.log" >&2; echo "fuzz.sh: meson setup failed" >&2; exit 2; }
fi
ninja -C "$out" "${names[@]/#/tests/fuzz/fuzz_}" >"$out/ninja.log" 2>&1 ||
  { tail -40 "$out/ninja.log" >&2; echo "fuzz.sh: build failed" >&2; exit 2; }
mkdir -p "$out/artifacts"

status=0
for name in "${names[@]}"; do
  bin=$out/tests/fuzz/fuzz_$name
  # a working corpus under build-fuzz/ (grows); the committed seeds are only read
  corpus=$out/corpus_$name
  mkdir -p "$corpus"
  log=$out/fuzz_$name.log
  rc=0
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=4200 \
      -print_final_stats=1 -artifact_prefix="$out/artifacts/$name-" ${FUZZ_ARGS:-} \
      "$corpus" "$root/tests/fuzz/corpus_$name" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
  if [ "$rc" -eq 0 ]; then
    echo "fuzz_$name: ok: ${runs:-?} runs in ${secs}s, cov ${cov:-?} edges, ft ${ft:-?}, corpus ${corp:-?}"
  else
    status=1
    echo "fuzz_$name: FAILED (exit $rc) after ${runs:-?} runs, cov ${cov:-?}; log: $log" >&2
    grep -E 'ERROR: |SUMMARY: |runtime error|check failed|Test unit written' "$log" | head -20 >&2 || true
  fi
done
exit $status
