#!/usr/bin/env bash
# Installs what is needed, builds (warnings are errors: -Dwerror=true), and runs the whole
# test suite.
#   tools/test.sh           plain build in build/
#   tools/test.sh --asan    AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/
#   tools/test.sh --tsan    ThreadSanitizer (the concurrency tests) in build-tsan/
# Ends with one line "tests: N passed, M failed, K skipped" and exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh

case "${1:-}" in
  "")     dir=build;      opts=(-Dwerror=true -Dfault_injection=true) ;;
  --asan) dir=build-asan; opts=(-Dwerror=true -Dfault_injection=true -Db_sanitize=address,undefined -Db_lundef=false) ;;
  --tsan) dir=build-tsan; opts=(-Dwerror=true -Db_sanitize=thread -Db_lundef=false) ;;
  *) echo "usage: $0 [--asan|--tsan]" >&2; exit 2 ;;
esac

if [ -f "$dir/build.ninja" ]; then
  [ ${#opts[@]} -eq 0 ] || meson configure "$dir" "${opts[@]}" >/dev/null
else
  meson setup "$dir" "${opts[@]}" >/dev/null
fi
ninja -C "$dir" >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
rc=0
meson test -C "$dir" --print-errorlogs --num-processes 2 || rc=$?

# One closing line: passed and failed summed from each program's own counts (Criterion's
# synthesis lines, the mini-criterion line of the TSan build, pytest's -q summary) in
# meson's log; skipped is meson's count of SKIP results (testlog.json: a program exits 77
# when all its tests skipped: tests/criterion_main.c, mini_criterion.h, python_venv.py).
log="$dir/meson-logs/testlog.txt"
skipped=$(python3 -c 'import json, sys
print(sum(json.loads(l).get("result") == "SKIP" for l in open(sys.argv[1]) if l.strip()))' \
  "$dir/meson-logs/testlog.json")
awk -v rc="$rc" -v s="$skipped" '
  /Synthesis: Tested:/ { for (i = 1; i <= NF; i++) {
      if ($i == "Passing:") p += $(i + 1)
      if ($i == "Failing:" || $i == "Crashing:") f += $(i + 1) } }
  /^mini-criterion: [0-9]+ passed/ { p += $2; f += $4 }
  /^[0-9]+ (passed|failed)/ && / in [0-9.]+s/ {   # pytest -q summary
      for (i = 1; i < NF; i++) {
        if ($(i + 1) ~ /^passed/) p += $i
        if ($(i + 1) ~ /^(failed|errors?)/) f += $i } }
  END { if (rc != 0 && f == 0) f = 1
        printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$rc"
