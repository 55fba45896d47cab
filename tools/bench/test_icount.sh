#!/usr/bin/env bash
# test_icount.sh — the tests of the instruction-count gate (tools/bench/icount.py); meson
# runs them as icount_compare and icount_callgrind (tools/bench/meson.build).
#   test_icount.sh compare          the comparison alone, no valgrind: a measured file
#                                   against doctored expected files (icount.py --measured)
#   test_icount.sh callgrind BUILD  one real callgrind run of a small workload of BUILD's
#                                   tools/bench/icount, twice (the count must repeat);
#                                   exits 77 (meson's SKIP) without valgrind or the program
# Each check says what it expected; the first one that fails ends the script with 1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
gate="$here/icount.py"
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

die() { echo "FAIL: $*" >&2; exit 1; }

# run NAME WANT_RC WANT_TEXT ARGS...: icount.py's exit status must be WANT_RC and its
# output must contain WANT_TEXT (a fixed string; empty: no check)
run() {
  local name=$1 want=$2 text=$3 rc=0
  shift 3
  "$py" "$gate" "$@" >"$tmp/out" 2>&1 || rc=$?
  if [ "$rc" -ne "$want" ]; then
    cat "$tmp/out" >&2
    die "$name: icount.py exited $rc, expected $want"
  fi
  if [ -n "$text" ] && ! grep -qF -- "$text" "$tmp/out"; then
    cat "$tmp/out" >&2
    die "$name: no '$text' in icount.py's output"
  fi
  echo "ok: $name"
}

# figures FILE COMPILER BUILDTYPE SCALE: the five workloads' counts times SCALE
figures() {
  "$py" - "$@" <<'EOF'
import sys
path, compiler, buildtype, scale = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
base = {"table_find": 250.0, "table_find_or_insert": 3300.0, "ring_lookup": 260.0,
        "sgd_step": 1400.0, "adam_step": 2100.0}
with open(path, "w") as f:
    f.write(f"# buildtype: {buildtype}\n# compiler: {compiler}\n# valgrind: valgrind-3.19.0\n")
    for w, v in base.items():
        f.write(f"# {w}: test figure\n{w} {v * scale:.1f}\n")
EOF
}

compare() {
  local m="$tmp/measured" e="$tmp/expected"
  figures "$m" "gcc 12.2.0" release 1.0
  # recorded 20% lower: every workload grew 25%: exit 1, each named with both counts
  figures "$e" "gcc 12.2.0" release 0.8
  run "20% lower recorded fails" 1 "FAIL table_find: recorded 200.0, measured 250.0 instructions/key (+25.0%)" \
    --measured "$m" --expected "$e"
  grep -qF "FAILED: table_find, table_find_or_insert, ring_lookup, sgd_step, adam_step grew" "$tmp/out" ||
    die "20% lower recorded: not every workload named in the FAILED line"
  # one workload alone: only it is named
  run "one workload grown fails naming it" 1 "FAILED: adam_step grew more than 10%" \
    --measured "$m" --expected "$e" --workloads adam_step
  # recorded 5% higher (measured 4.8% lower): within the threshold, exit 0
  figures "$e" "gcc 12.2.0" release 1.05
  run "5% higher recorded passes" 0 "ok   sgd_step: recorded 1470.0, measured 1400.0" \
    --measured "$m" --expected "$e"
  grep -q "DROP" "$tmp/out" && die "5% higher recorded: a drop reported within the threshold"
  # recorded 5% lower (measured +5.3%): still within 10%
  figures "$e" "gcc 12.2.0" release 0.95
  run "5% lower recorded passes" 0 "passed (5 workloads)" --measured "$m" --expected "$e"
  # the threshold is a parameter: +5.3% fails at 5%
  run "--threshold 5 fails at +5.3%" 1 "FAIL ring_lookup" \
    --measured "$m" --expected "$e" --threshold 5
  # recorded 20% higher: a drop of 16.7%, reported, exit 0
  figures "$e" "gcc 12.2.0" release 1.2
  run "a drop is reported, not failed" 0 "DROP table_find: recorded 300.0, measured 250.0" \
    --measured "$m" --expected "$e"
  # another compiler: a warning, growths do not fail; --strict fails them
  figures "$e" "gcc 13.1.0" release 0.8
  run "another compiler warns" 0 "WARNING: the counts were recorded with 'gcc 13.1.0'" \
    --measured "$m" --expected "$e"
  run "another compiler with --strict fails" 1 "FAIL sgd_step" \
    --measured "$m" --expected "$e" --strict
  # a debug build's counts are refused
  figures "$m.debug" "gcc 12.2.0" debugoptimized 1.0
  run "a non-release build is refused" 2 "the measured build is 'debugoptimized'" \
    --measured "$m.debug" --expected "$e"
  figures "$m.fi" "gcc 12.2.0" release+fault_injection 1.0
  run "a fault-injection build is refused" 2 "the measured build is 'release+fault_injection'" \
    --measured "$m.fi" --expected "$e"
  # --update rewrites the file: the same figures then pass, the old file's growth is gone
  figures "$e" "gcc 12.2.0" release 0.8
  run "--update rewrites" 0 "wrote $e" --measured "$m" --expected "$e" --update --reason "test"
  grep -qxF "sgd_step 1400.0" "$e" || die "--update: no 'sgd_step 1400.0' line in $e"
  grep -qF "# sgd_step: set " "$e" || die "--update: no dated comment line for sgd_step"
  grep -qF "was 1120.0 (+25.0%): test" "$e" || die "--update: the comment does not say what changed"
  run "after --update it passes" 0 "passed (5 workloads)" --measured "$m" --expected "$e"
  # malformed files are named
  printf 'table_find abc\n' > "$tmp/bad"
  run "a malformed expected file is refused" 2 "'abc' is not a number" \
    --measured "$m" --expected "$tmp/bad"
  run "an unknown workload is refused" 2 "'nosuch' is not one of" \
    --measured "$m" --expected "$e" --workloads nosuch
  # the repository's own file parses, and holds every workload for a release build
  "$py" "$gate" --measured "$here/icount.expected" --expected "$here/icount.expected" \
    >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; die "tools/bench/icount.expected does not compare with itself"; }
  for w in table_find table_find_or_insert ring_lookup sgd_step adam_step; do
    grep -qF "ok   $w:" "$tmp/out" || die "tools/bench/icount.expected has no $w"
  done
  echo "ok: tools/bench/icount.expected"
}

callgrind() {
  local build=$1
  if ! command -v valgrind >/dev/null; then
    echo "SKIP: no valgrind (Debian: apt-get install valgrind)"
    exit 77
  fi
  if [ ! -x "$build/tools/bench/icount" ]; then
    echo "SKIP: $build/tools/bench/icount is not built (valgrind/callgrind.h missing at configure)"
    exit 77
  fi
  local a b
  for i in 1 2; do
    "$py" "$gate" --build "$build" --workloads sgd_step --print >"$tmp/run$i" 2>&1 ||
      { cat "$tmp/run$i" >&2; die "callgrind run $i of sgd_step failed"; }
    cat "$tmp/run$i"
  done
  a=$(awk '/^icount: sgd_step/ { print $3 }' "$tmp/run1")
  b=$(awk '/^icount: sgd_step/ { print $3 }' "$tmp/run2")
  [ -n "$a" ] || die "no sgd_step figure in the output"
  awk -v a="$a" 'BEGIN { exit !(a > 100 && a < 1000000) }' ||
    die "sgd_step: $a instructions per key is not a plausible count"
  [ "$a" = "$b" ] || die "sgd_step counted $a, then $b instructions per key: not deterministic"
  echo "ok: sgd_step under callgrind: $a instructions/key, twice"
}

case "${1:-}" in
  compare) compare ;;
  callgrind) [ $# -eq 2 ] || { echo "usage: $0 callgrind BUILD" >&2; exit 2; }; callgrind "$2" ;;
  *) echo "usage: $0 compare | callgrind BUILD" >&2; exit 2 ;;
esac
