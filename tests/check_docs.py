#!/usr/bin/env python3
"""check_docs.py — the operator documentation (docs/) against the built binaries.

  check_docs.py DOCS_DIR DYNEMBD DYNEMBCTL

docs/configuration.md must document exactly what dynembd knows:
  - every key `dynembd --print-config` prints (with a [namespace NAME] section added
    from a scratch config file, so that its keys print too), as a table row
    "| `key` | ..." under a heading that names its section ("## `[server]`", and
    "## `[namespace NAME]`" for every namespace); and no key the daemon does not print;
  - the default in the row's third column (its first `value`, or "empty"), where the
    daemon prints one that does not depend on the machine, equal to the printed one
    (sizes may be written 64M);
  - every flag of `dynembd --help` (long and short) as `--flag` / `-f` in backticks, and
    no backticked flag the daemon does not have.
docs/operations.md must name every command of `dynembctl --help`'s command list on a
line that says "dynembctl CMD" (a command line or a table cell).

Exit 0 when all of this holds, 1 with one line per problem otherwise. Plain python3.
"""

import os
import re
import subprocess
import sys
import tempfile

# printed values that depend on the machine or on the scratch file
MACHINE_DEFAULTS = {("quota", "host_bytes"), ("namespace NAME", "prefix")}


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        sys.exit(f"check_docs: {' '.join(argv)}: exit {p.returncode}: {p.stderr}")
    return p.stdout


def printed_keys(dynembd):
    """{(section, key): value} of --print-config; namespace sections as 'namespace NAME'."""
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
        f.write("[namespace docs-check]\nprefix = docs-check/\n")
        ini = f.name
    try:
        out = run([dynembd, "--config", ini, "--print-config"])
    finally:
        os.unlink(ini)
    keys, section = {}, None
    for line in out.splitlines():
        m = re.fullmatch(r"\[([^\]]+)\]", line)
        if m:
            section = "namespace NAME" if m.group(1).startswith("namespace ") else m.group(1)
            continue
        k, sep, v = line.partition(" =")
        if not sep or section is None:
            sys.exit(f"check_docs: not a key line in --print-config: {line!r}")
        keys[(section, k.strip())] = v.strip()
    return keys


def help_flags(dynembd):
    """The long and short flags of --help's option lines."""
    flags = set()
    for line in run([dynembd, "--help"]).splitlines():
        m = re.match(r"^\s+(?:-([A-Za-z]), )?--([a-z][a-z0-9-]*)", line)
        if m:
            flags.add("--" + m.group(2))
            if m.group(1):
                flags.add("-" + m.group(1))
    return flags


def ctl_commands(dynembctl):
    """The commands of dynembctl --help: the lines indented by two from its "Commands"
    heading to its "Options" heading (every group of commands between them)."""
    cmds, inside = [], False
    for line in run([dynembctl, "--help"]).splitlines():
        if line.startswith("Commands"):
            inside = True
            continue
        if inside and line.startswith("Options"):
            break
        m = re.match(r"^  ([a-z][a-z0-9-]*)\b", line)
        if inside and m:
            cmds.append(m.group(1))
    return cmds


def doc_keys(text):
    """{(section, key): default cell} of the tables under each '## `[section]`' heading."""
    keys, section = {}, None
    for line in text.splitlines():
        m = re.match(r"^#{2,3} .*`\[([^\]]+)\]`", line)
        if m:
            section = m.group(1)
            continue
        if line.startswith("#"):
            section = None
            continue
        m = re.match(r"^\|\s*`([a-z_]+)`\s*\|([^|]*)\|([^|]*)\|", line)
        if m and section:
            keys.setdefault((section, m.group(1)), m.group(3).strip())
    return keys


def size_value(s):
    """'64M' -> 67108864 (K, M, G, T: powers of 1024); plain digits as is; else None."""
    m = re.fullmatch(r"(\d+)([KMGT]?)(?:i?B)?", s)
    if not m:
        return None
    return int(m.group(1)) << (10 * "_KMGT".index(m.group(2) or "_"))


def same_default(doc_cell, printed):
    if doc_cell.startswith("empty"):
        return printed == ""
    m = re.match(r"`([^`]*)`", doc_cell)
    if not m:
        return False
    d = m.group(1).strip()
    if d == printed:
        return True
    a, b = size_value(d), size_value(printed)
    return a is not None and a == b


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    docs, dynembd, dynembctl = argv
    problems = []
    conf_md = os.path.join(docs, "configuration.md")
    ops_md = os.path.join(docs, "operations.md")
    conf = open(conf_md, encoding="utf-8").read()
    ops = open(ops_md, encoding="utf-8").read()

    printed = printed_keys(dynembd)
    documented = doc_keys(conf)
    for (s, k), v in printed.items():
        if (s, k) not in documented:
            problems.append(f"{conf_md}: [{s}] {k} (dynembd --print-config) is not documented")
        elif (s, k) not in MACHINE_DEFAULTS and not same_default(documented[(s, k)], v):
            problems.append(f"{conf_md}: [{s}] {k}: documented default "
                            f"{documented[(s, k)]!r}, the daemon's is {v!r}")
    for s, k in documented:
        if (s, k) not in printed:
            problems.append(f"{conf_md}: [{s}] {k} is documented but dynembd does not print it")

    flags = help_flags(dynembd)
    doc_flags = set(re.findall(r"`(--?[A-Za-z][a-z0-9-]*)`", conf))
    for f in sorted(flags - doc_flags):
        problems.append(f"{conf_md}: flag {f} (dynembd --help) is not documented")
    for f in sorted(doc_flags - flags):
        problems.append(f"{conf_md}: flag {f} is documented but dynembd --help has no such flag")

    cmds = ctl_commands(dynembctl)
    if not cmds:
        problems.append("dynembctl --help lists no commands (has its layout changed?)")
    for c in cmds:
        if not re.search(r"dynembctl(?: +--?[a-z-]+(?: +\S+)?)* +" + re.escape(c) + r"\b", ops):
            problems.append(f"{ops_md}: dynembctl {c} (dynembctl --help) is not documented")

    for p in problems:
        print(p)
    print(f"check_docs: {len(printed)} keys, {len(flags)} flags, {len(cmds)} dynembctl "
          f"commands; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
