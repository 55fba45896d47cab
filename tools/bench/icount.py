#!/usr/bin/env python3
"""icount.py — the instruction-count regression gate: tools/bench/icount's workloads under
callgrind, compared with the counts recorded in tools/bench/icount.expected.

Wall-clock benchmarks on a shared 2-core machine move by 20-40% between runs; the number of
instructions a workload executes does not (same binary, same input: same count, to the
instruction, in our runs). So each workload of tools/bench/icount.c runs under
`valgrind --tool=callgrind --collect-atstart=no`; the program itself switches collection on
around the measured part and dumps it (CALLGRIND_DUMP_STATS_AT("icount")); this script reads
the Ir total of those dumps (the sum, or for ring_lookup the median of its per-batch dumps:
icount.c says why), divides by the keys and compares with the recorded figure:

  grown by more than --threshold (10%)   FAIL: exit 1, naming the workload, both counts
                                           and the change
  dropped by more than --threshold       reported ("faster: record it with --update"), exit 0
  within                                  ok

The counts depend on the compiler and its flags. They are recorded for the release build
(meson setup --buildtype=release without -Dfault_injection: .ci/run's build-release; the
program reports its build type, with "+fault_injection" when set) and the file says which
compiler made them. A build of another type is refused (exit 2: its counts mean nothing
against these). Another compiler version is warned about, and its growths are
reported but do not fail (exit 0; --strict makes them fail): rerecord with --update on the
new compiler.

usage:
  icount.py [--build DIR] [--workloads a,b] [--expected FILE] [--threshold PCT] [--strict]
  icount.py --update [--reason TEXT] ...   rewrite the expected file from this run
  icount.py --print ...                     measure and print, compare nothing
  icount.py --measured FILE ...             take the measured figures from FILE (the expected
                                            file's format) instead of running valgrind: the
                                            comparison alone, for its tests
Exit status: 0 passed, 1 a workload grew past the threshold, 2 a usage or setup error.
Python 3 standard library only (the system python3).
"""
import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

WORKLOADS = ["table_find", "table_find_or_insert", "ring_lookup", "sgd_step", "adam_step"]
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_EXPECTED = os.path.join(HERE, "icount.expected")


class Error(Exception):
    """A usage or setup problem: exit 2 with its message."""


class Figures:
    """Instructions per key by workload, with the build they came from."""

    def __init__(self):
        self.values = {}     # workload -> instructions per key (float)
        self.comments = {}   # workload -> the text of its "# workload: ..." line
        self.detail = {}     # workload -> a short note on how it was measured
        self.buildtype = None
        self.compiler = None
        self.valgrind = None


def read_figures(path):
    """Parse an expected (or --measured) file: '# key: value' header lines, one
    '# workload: comment' line per entry, and 'workload value' lines."""
    f = Figures()
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise Error(f"cannot read {path}: {e.strerror}")
    pending = None
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            m = re.match(r"#\s*([A-Za-z_]+):\s*(.*)$", s)
            if m:
                key, val = m.group(1), m.group(2).strip()
                if key == "buildtype":
                    f.buildtype = val
                elif key == "compiler":
                    f.compiler = val
                elif key == "valgrind":
                    f.valgrind = val
                elif key in WORKLOADS:
                    pending = (key, val)
            continue
        parts = s.split()
        if len(parts) != 2 or parts[0] not in WORKLOADS:
            raise Error(f"{path}:{n}: '{s}' is not 'WORKLOAD INSTRUCTIONS_PER_KEY' with a"
                        f" workload of {', '.join(WORKLOADS)}")
        try:
            v = float(parts[1])
        except ValueError:
            raise Error(f"{path}:{n}: '{parts[1]}' is not a number")
        if not v > 0:
            raise Error(f"{path}:{n}: {parts[0]}'s count {parts[1]} is not positive")
        f.values[parts[0]] = v
        if pending and pending[0] == parts[0]:
            f.comments[parts[0]] = pending[1]
        pending = None
    return f


def write_figures(path, f):
    out = [
        "# icount.expected — instructions per key of tools/bench/icount's workloads under",
        "# callgrind, the gate tools/bench/icount.py compares with (fails on a growth of more",
        "# than 10%). Recorded on the release build (meson setup --buildtype=release, .ci/run's",
        "# build-release); another compiler version only warns. Rewrite it with",
        "# `tools/bench/icount.py --build build-release --update --reason '...'`.",
        f"# buildtype: {f.buildtype}",
        f"# compiler: {f.compiler}",
        f"# valgrind: {f.valgrind}",
        "",
    ]
    for w in WORKLOADS:
        if w in f.values:
            out.append(f"# {w}: {f.comments.get(w, '')}".rstrip())
            out.append(f"{w} {f.values[w]:.1f}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")


def dump_ir(path):
    """(trigger description, Ir total) of one callgrind output file."""
    desc, total, events = "", None, []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("desc: Trigger:"):
                desc = line[len("desc: Trigger:"):].strip()
            elif line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:") or (total is None and line.startswith("totals:")):
                vals = line.split()[1:]
                idx = events.index("Ir") if "Ir" in events else 0
                total = int(vals[idx])
    return desc, total


def measure(build, workloads, valgrind):
    build = os.path.abspath(build)
    exe = os.path.join(build, "tools", "bench", "icount")
    if not os.access(exe, os.X_OK):
        raise Error(f"{exe} is not built (it needs valgrind's headers, valgrind/callgrind.h:"
                    f" tools/install-deps.sh installs Debian's valgrind; then reconfigure)")
    f = Figures()
    env = dict(os.environ)
    env.setdefault("DYNEMBD", os.path.join(build, "src", "server", "dynembd"))
    ver = subprocess.run([valgrind, "--version"], capture_output=True, text=True)
    f.valgrind = ver.stdout.strip() or "unknown"
    for w in workloads:
        with tempfile.TemporaryDirectory(prefix="icount-") as tmp:
            cmd = [valgrind, "--tool=callgrind", "--collect-atstart=no",
                   "--callgrind-out-file=" + os.path.join(tmp, "cg.%p"), exe, w]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
            if r.returncode != 0:
                raise Error(f"{w}: {' '.join(cmd)} exited {r.returncode}:\n"
                            + "\n".join(r.stderr.splitlines()[-25:]))
            m = re.search(r"^icount workload=(\S+) keys_per_dump=(\d+) dumps=(\d+)"
                          r" aggregate=(sum|median) buildtype=(\S+) compiler=(.*)$",
                          r.stdout, re.M)
            if not m or m.group(1) != w:
                raise Error(f"{w}: no 'icount workload={w} ...' line in its output:\n"
                            + r.stdout)
            keys, ndumps, agg = int(m.group(2)), int(m.group(3)), m.group(4)
            f.buildtype, f.compiler = m.group(5), m.group(6).strip()
            irs = []
            for name in sorted(os.listdir(tmp)):
                if name.startswith("cg."):
                    desc, ir = dump_ir(os.path.join(tmp, name))
                    if desc.endswith("Client Request: icount") and ir is not None:
                        irs.append(ir)
            if len(irs) != ndumps:
                raise Error(f"{w}: {len(irs)} callgrind dumps of the measured region, the"
                            f" program made {ndumps}")
            ir = sum(irs) if agg == "sum" else statistics.median(irs)
            if ir <= 0:
                raise Error(f"{w}: callgrind counted no instructions in the measured region")
            f.values[w] = ir / keys
            f.detail[w] = (f"{agg} of {ndumps} dump{'s' if ndumps > 1 else ''}"
                           f" ({min(irs)}..{max(irs)} Ir), {keys} keys per dump")
    return f


def pct(new, old):
    d = (new - old) / old * 100.0
    return d if abs(d) >= 0.05 else 0.0  # no "-0.0%" from the recorded figure's rounding


def main(argv):
    ap = argparse.ArgumentParser(description="instruction-count regression gate",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("usage:")[0])
    ap.add_argument("--build", default="build-release",
                    help="meson build directory with tools/bench/icount (default build-release)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help="comma-separated (default all: " + ",".join(WORKLOADS) + ")")
    ap.add_argument("--expected", default=DEFAULT_EXPECTED)
    ap.add_argument("--threshold", type=float, default=10.0,
                    help="percent change that fails (growth) or is reported (drop)")
    ap.add_argument("--strict", action="store_true",
                    help="fail on growth even when the compiler differs from the recorded one")
    ap.add_argument("--update", action="store_true", help="rewrite the expected file")
    ap.add_argument("--reason", default="", help="with --update: why (goes in the comments)")
    ap.add_argument("--print", dest="print_only", action="store_true",
                    help="measure and print only")
    ap.add_argument("--measured", help="read the measured figures from this file")
    ap.add_argument("--valgrind", default=shutil.which("valgrind") or "valgrind")
    a = ap.parse_args(argv)

    try:
        workloads = [w for w in a.workloads.split(",") if w]
        for w in workloads:
            if w not in WORKLOADS:
                raise Error(f"--workloads: '{w}' is not one of {', '.join(WORKLOADS)}")
        if not workloads:
            raise Error("--workloads: no workload named")
        if not (a.threshold > 0):
            raise Error(f"--threshold: {a.threshold} is not a positive percentage")
        if a.measured:
            meas = read_figures(a.measured)
            meas.values = {w: v for w, v in meas.values.items() if w in workloads}
        else:
            if not shutil.which(a.valgrind):
                raise Error(f"{a.valgrind} not found: install valgrind"
                            " (Debian: apt-get install valgrind; tools/install-deps.sh)")
            meas = measure(a.build, workloads, a.valgrind)

        for w in workloads:
            if w in meas.values:
                print(f"icount: {w:22s} {meas.values[w]:12.1f} instructions/key"
                      + (f"   [{meas.detail[w]}]" if w in meas.detail else ""))
        if a.print_only:
            return 0

        exists = os.path.exists(a.expected)
        exp = read_figures(a.expected) if exists else Figures()
        if meas.buildtype != "release":
            raise Error(f"the measured build is '{meas.buildtype}', the recorded counts are"
                        " for a release build: run it on one (meson setup"
                        " --buildtype=release build-release)")
        if a.update:
            today = datetime.date.today().isoformat()
            new = Figures()
            new.buildtype, new.compiler, new.valgrind = "release", meas.compiler, meas.valgrind
            new.values, new.comments = dict(exp.values), dict(exp.comments)
            for w, v in meas.values.items():
                old = exp.values.get(w)
                if old is None or round(old, 1) != round(v, 1) or exp.compiler != meas.compiler:
                    how = "first recording" if old is None else f"was {old:.1f} ({pct(v, old):+.1f}%)"
                    why = f": {a.reason}" if a.reason else ""
                    new.comments[w] = f"set {today} on {meas.compiler}, {how}{why}"
                new.values[w] = v
            write_figures(a.expected, new)
            print(f"icount: wrote {a.expected}")
            return 0
        if not exists:
            raise Error(f"{a.expected} does not exist: record it with --update")

        if exp.valgrind and meas.valgrind and exp.valgrind != meas.valgrind:
            print(f"icount: note: recorded under {exp.valgrind}, measured under"
                  f" {meas.valgrind} (callgrind's Ir counts guest instructions: the same"
                  " across versions, as far as we know)")
        compiler_differs = exp.compiler is not None and exp.compiler != meas.compiler
        if compiler_differs:
            print(f"icount: WARNING: the counts were recorded with '{exp.compiler}', this build"
                  f" is '{meas.compiler}': counts move with the compiler, so growths below are"
                  + (" failures (--strict)" if a.strict else " reported without failing;"
                     " rerecord with --update"))
        failed, drops = [], []
        for w in workloads:
            if w not in meas.values:
                continue
            if w not in exp.values:
                print(f"icount: {w}: no recorded count in {a.expected}: add it with --update")
                continue
            old, new = exp.values[w], meas.values[w]
            d = pct(new, old)
            line = f"{w}: recorded {old:.1f}, measured {new:.1f} instructions/key ({d:+.1f}%)"
            if d > a.threshold:
                if compiler_differs and not a.strict:
                    print(f"icount: WARNING (other compiler): {line}")
                else:
                    failed.append(w)
                    print(f"icount: FAIL {line}: more than {a.threshold:g}% growth")
            elif d < -a.threshold:
                drops.append(w)
                print(f"icount: DROP {line}: faster by more than {a.threshold:g}%; record it"
                      " with --update so the gate holds the gain")
            else:
                print(f"icount: ok   {line}")
        if failed:
            print(f"icount: FAILED: {', '.join(failed)} grew more than {a.threshold:g}%"
                  f" against {a.expected}")
            return 1
        print(f"icount: passed ({len(workloads)} workload{'s' if len(workloads) > 1 else ''}"
              + (f"; {len(drops)} dropped: update {a.expected})" if drops else ")"))
        return 0
    except Error as e:
        print(f"icount: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
