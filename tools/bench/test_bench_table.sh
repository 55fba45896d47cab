#!/usr/bin/env bash
# test_bench_table.sh BENCH — dynemb-bench table on a tiny table (meson: bench_table_small,
# tools/bench/meson.build): it must exit 0 (it exits 1 when an existing key is not found)
# and its --json must carry both bounds, gather and gather2, with the ratios find/gather
# and find/gather2 that their rates give. The figures themselves are not checked.
set -euo pipefail
bench=$1
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

rc=0
"$bench" table --keys 20000 --dims 16 --seconds 0.02 --repeat 2 --json \
  >"$tmp/out.json" 2>"$tmp/human.txt" || rc=$?
if [ "$rc" -ne 0 ]; then
  cat "$tmp/human.txt" >&2
  echo "FAIL: dynemb-bench table exited $rc" >&2
  exit 1
fi
if ! grep -q "find / gather2 bound" "$tmp/human.txt"; then
  echo "FAIL: no gather2 line in the summary" >&2
  exit 1
fi
"$py" - "$tmp/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def check(o, where):
    for k in ("find_rows_per_s", "gather_rows_per_s", "gather2_rows_per_s"):
        v = o.get(k)
        if not isinstance(v, (int, float)) or v <= 0:
            sys.exit(f"FAIL: {where}: {k} = {v!r}, expected a positive rate")
    for r, b in (("find_over_gather", "gather_rows_per_s"),
                 ("find_over_gather2", "gather2_rows_per_s")):
        want = o["find_rows_per_s"] / o[b]
        if abs(o.get(r, -1) - want) > 1e-3 * max(1.0, want):
            sys.exit(f"FAIL: {where}: {r} = {o.get(r)!r}, the rates give {want:.4f}")
if d.get("repeat") != 2:
    sys.exit(f"FAIL: repeat = {d.get('repeat')!r}, expected 2")
check(d, "headline")
if len(d["results"]) != 2:
    sys.exit(f"FAIL: {len(d['results'])} results, expected 2 (uniform, zipf)")
for r in d["results"]:
    check(r, f"dim {r['dim']} {r['dist']}")
    if not r["per_thread_cpu_s"].get("gather2_rows", 0) > 0:
        sys.exit("FAIL: per_thread_cpu_s.gather2_rows missing")
print("ok: gather and gather2 bounds, ratios consistent")
PY
