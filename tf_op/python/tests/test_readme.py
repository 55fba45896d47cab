"""The five-minute tour of README.md, run as written.

Each tour snippet of README.md follows a marker line (``<!-- tour-c -->``,
``<!-- tour-python -->``, ``<!-- tour-torch -->``, ``<!-- tour-tf -->``) and is taken from
the fenced block right after it, so what a reader copies is what runs here: the C one is
compiled against src/client/dynemb.h and the build's libdynemb, the Python ones run in a
fresh interpreter (this venv's, with the installed package). The one change made is the
socket: the tour's /tmp/dynemb.sock becomes this session's private dynembd. Each snippet
prints a value computed independently below (an SGD and an Adam step by hand), and the
test compares it.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, tf_op_library

README = os.path.join(ROOT, "README.md")
TOUR_SOCKET = "/tmp/dynemb.sock"


def snippet(marker):
    """The fenced block right after <!-- marker --> in README.md (exactly one)."""
    text = open(README, encoding="utf-8").read()
    found = re.findall(r"^<!-- " + re.escape(marker) + r" -->\n```[a-z]*\n(.*?)^```$", text,
                       re.M | re.S)
    assert len(found) == 1, f"README.md: {len(found)} blocks after <!-- {marker} -->"
    assert TOUR_SOCKET in found[0], f"README.md {marker}: does not use {TOUR_SOCKET}"
    return found[0]


def run_python(code, daemon, tmp_path):
    path = tmp_path / "tour.py"
    path.write_text(code.replace(TOUR_SOCKET, daemon))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                       timeout=240, env=env, cwd=tmp_path)
    assert p.returncode == 0, f"README snippet failed:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_tour_c(daemon, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    build = os.environ["DYNEMB_BUILD"]
    src = tmp_path / "tour.c"
    src.write_text(snippet("tour-c"))
    exe = tmp_path / "tour"
    p = subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", str(src),
                        "-I", os.path.join(ROOT, "src", "client"),
                        "-L", os.path.join(build, "src", "client"), "-ldynemb", "-o", str(exe)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(build, "src", "client"))
    p = subprocess.run([str(exe), daemon], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    # rows 4..7 assigned, one SGD step of lr 0.5 with gradient 1: 3.5 .. 6.5
    want = " ".join(f"{4 + i - 0.5:g}" for i in range(4))
    assert p.stdout.strip() == f"key 42: {want}"


def test_tour_python(daemon, tmp_path):
    out = run_python(snippet("tour-python"), daemon, tmp_path)
    # one Adam step from zeros with lr 5e-4: -lr * sign(grad) (bias-corrected m / sqrt(v))
    vals = [float(v) for v in out.strip().strip("[]").split()]
    assert vals == pytest.approx([-5e-4, -5e-4], rel=1e-4)


def assert_trained(daemon, name, keys):
    """The rows of keys in table name (dim 16, Adagrad lr 0.05, the default initializer)
    moved away from their initial values: compared with the same keys created fresh in
    a second table of the same config (the initializer is deterministic per seed and
    key)."""
    import dynemb
    with dynemb.Client(daemon) as c:
        cfg = dict(optimizer="adagrad", lr=0.05)
        got = c.open(name, 16, **cfg).lookup(keys, readonly=True)
        init = c.open(name + "_init", 16, **cfg).lookup(keys)
    assert got.any(axis=1).all(), f"{name}: keys {keys} were not created"
    assert (abs(got - init).max(axis=1) > 1e-4).all(), f"{name}: no gradient reached {keys}"


@pytest.mark.torch
def test_tour_torch(daemon, tmp_path):
    out = run_python(snippet("tour-torch"), daemon, tmp_path)
    assert 0.0 < float(out.strip()) < 2.0
    assert_trained(daemon, "tour_user", [3, 17])


@pytest.mark.tensorflow
def test_tour_tensorflow(daemon, tmp_path):
    tf_op_library()  # skips, saying why, where meson built no op library
    out = run_python(snippet("tour-tf"), daemon, tmp_path)
    shape, loss = out.strip().rsplit(" ", 1)
    assert shape == "(2, 2, 16)"
    assert 0.0 < float(loss) < 2.0
    assert_trained(daemon, "tour_tf_user", [1, 2, 3, 4])
