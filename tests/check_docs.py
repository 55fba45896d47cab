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
docs/c-api.md must have a heading "### `dynemb_NAME`" for every function the installed
header (src/client/dynemb.h, next to DOCS_DIR) declares, and none for a function it
does not declare.
docs/python.md must name, in backticks, every public name of the Python package
(tf_op/python/dynemb): each module's __all__ (dynemb, dynemb.torch, dynemb.tensorflow),
or, for a module without one (dynemb.losses), its top-level functions and classes whose
names do not start with "_"; and the public methods of dynemb's classes.
docs/protocol.md must name every control message (DE_MSG_*) and data-plane op (DE_OP_*)
of the wire header (src/proto.h) by its name without the prefix, in backticks.

Exit 0 when all of this holds, 1 with one line per problem otherwise. Plain python3.
"""

import ast
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


def header_functions(path):
    """Names of the functions a C header declares: "type name(" at the start of a line
    (declarations of the public header start at column 0), typedefs and macros left out."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    names = []
    for m in re.finditer(r"^(?!typedef|#|static)[A-Za-z_][^;{}()#]*?\b(dynemb_[a-z0-9_]+)\s*\(",
                         text, re.M):
        names.append(m.group(1))
    return names


def python_public(pkg_dir):
    """{module: [names]}: __all__ where a module has one, else its public top-level
    functions and classes; plus "Class.method" for the public methods of dynemb's
    classes (read with ast: nothing is imported)."""
    out = {}
    for mod, fname in (("dynemb", "__init__.py"), ("dynemb.torch", "torch.py"),
                       ("dynemb.tensorflow", "tensorflow.py"), ("dynemb.losses", "losses.py")):
        tree = ast.parse(open(os.path.join(pkg_dir, fname), encoding="utf-8").read())
        names = None
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and getattr(node.targets[0], "id", None) == "__all__"):
                names = [ast.literal_eval(e) for e in node.value.elts]
        if names is None:
            names = [n.name for n in tree.body
                     if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                     and not n.name.startswith("_")]
        if mod == "dynemb":
            for n in tree.body:
                if isinstance(n, ast.ClassDef) and n.name in names:
                    names += [f"{n.name}.{f.name}" for f in n.body
                              if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")]
        out[mod] = names
    return out


def proto_names(path):
    """The control messages and data-plane ops of the wire header, without prefixes."""
    text = open(path, encoding="utf-8").read()
    msgs = re.findall(r"^\s*DE_MSG_([A-Z_]+)\s*=", text, re.M)
    ops = re.findall(r"\bDE_OP_([A-Z_]+)\s*=", text)
    return msgs, ops


def backticked(text, name):
    """Whether name appears inside some `...` span of text (as a whole identifier);
    fenced code blocks do not count."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return any(re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])", span)
               for span in re.findall(r"`([^`]+)`", text))


def read_doc(path, problems):
    """The text of a docs file, or "" with the problem noted."""
    try:
        return open(path, encoding="utf-8").read()
    except OSError as e:
        problems.append(f"{path}: {e.strerror}")
        return ""


def check_reference(docs, problems):
    root = os.path.dirname(os.path.abspath(docs))
    capi_md = os.path.join(docs, "c-api.md")
    py_md = os.path.join(docs, "python.md")
    proto_md = os.path.join(docs, "protocol.md")
    header = os.path.join(root, "src", "client", "dynemb.h")
    funcs = header_functions(header)
    if not funcs:
        problems.append(f"{header}: no function declarations found (has its layout changed?)")
    capi = read_doc(capi_md, problems)
    documented = re.findall(r"^### `(dynemb_[a-z0-9_]+)`", capi, re.M)
    for f in funcs:
        if f not in documented:
            problems.append(f"{capi_md}: {f} ({header}) is not documented")
    for f in documented:
        if f not in funcs:
            problems.append(f"{capi_md}: {f} is documented but {header} does not declare it")

    py = read_doc(py_md, problems)
    names = python_public(os.path.join(root, "tf_op", "python", "dynemb"))
    for mod, ns in names.items():
        for n in ns:
            if "." in n:  # a method: a backticked span that starts with it
                cls, meth = n.split(".")
                ok = re.search(r"`(?:" + cls + r"\.)?" + re.escape(meth) + r"\b", py)
            else:
                ok = backticked(py, n)
            if not ok:
                problems.append(f"{py_md}: {mod}.{n} is not documented")

    proto = read_doc(proto_md, problems)
    msgs, ops = proto_names(os.path.join(root, "src", "proto.h"))
    for kind, ns in (("message", msgs), ("op", ops)):
        for n in ns:
            if not backticked(proto, n):
                problems.append(f"{proto_md}: {kind} {n} (src/proto.h) is not documented")
    return len(funcs), sum(len(v) for v in names.values()), len(msgs) + len(ops)


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

    nfuncs, npy, nproto = check_reference(docs, problems)

    for p in problems:
        print(p)
    print(f"check_docs: {len(printed)} keys, {len(flags)} flags, {len(cmds)} dynembctl "
          f"commands, {nfuncs} C functions, {npy} Python names, {nproto} wire names; "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
