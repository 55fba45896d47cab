#!/usr/bin/env python3
"""tests/python_venv.py: the Python package (tf_op/python) installed the way a user
installs it, for meson's tests (tests/meson.build and tests/install/meson.build call it).

Every venv made here is built on the project venv (.venv at the repository root, which
tools/install-deps.sh fills from tools/python-requirements.txt: TensorFlow, torch, numpy,
pytest, matplotlib): made with that venv's interpreter, and a .pth file puts its
site-packages on sys.path, after the new venv's own (so the package installed here wins,
and the project venv is never written to).

  python_venv.py setup VENV PKG STAMP
      The meson custom target 'python-venv': creates VENV once (as above) and
      `pip install --no-deps --no-build-isolation` PKG into it, not editable, from a copy
      (setuptools' build/ and egg-info stay out of the source tree); then touches STAMP.
      Re-run by meson when the package's files change.

  python_venv.py pytest PYTHON ARGS...
      Runs `PYTHON -m pytest ARGS` (with the working directory meson gives, outside
      tf_op/python) and exits 77, meson's SKIP, when no test ran: pytest's exit 5 (nothing
      collected, or every test deselected by -m) or every test skipped.

  python_venv.py user PKG LIB
      What a user does: a fresh venv in a temporary directory (as above, for numpy),
      `pip install PKG` from a copy of the tree (build isolation: pip
      fetches setuptools from PyPI), then `python -c "import dynemb"` from outside the tree
      with DYNEMB_LIB=LIB; checks the package loaded LIB.
"""

import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PROJECT_VENV = os.path.join(ROOT, ".venv")
PROJECT_PYTHON = os.path.join(PROJECT_VENV, "bin", "python")


def _make_venv(venv):
    """venv from the project venv's interpreter, the project venv's packages visible."""
    if not os.access(PROJECT_PYTHON, os.X_OK):
        sys.exit(f"python_venv.py: no project venv at {PROJECT_VENV}: run tools/install-deps.sh")
    subprocess.run([PROJECT_PYTHON, "-m", "venv", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    base = subprocess.run([PROJECT_PYTHON, "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "dynemb-project-venv.pth"), "w") as f:
        f.write(base + "\n")
    return py


def _copy_package(pkg, dest):
    shutil.copytree(pkg, dest, ignore=shutil.ignore_patterns(
        "tests", "__pycache__", "build", "*.egg-info"))


def setup(venv, pkg, stamp):
    py = os.path.join(venv, "bin", "python")
    pth = subprocess.run([py, "-c", "import sysconfig, os; print(os.path.exists(os.path.join("
                          "sysconfig.get_path('purelib'), 'dynemb-project-venv.pth')))"],
                         capture_output=True, text=True) if os.path.exists(py) else None
    if pth is None or pth.stdout.strip() != "True":
        shutil.rmtree(venv, ignore_errors=True)  # none yet, or one of an older layout
        py = _make_venv(venv)
    with tempfile.TemporaryDirectory(prefix="dynemb-pkg.") as tmp:
        src = os.path.join(tmp, "python")
        _copy_package(pkg, src)
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-index", "--no-deps", "--no-build-isolation", "--force-reinstall",
                        src], check=True, cwd=tmp)
    with open(stamp, "w") as f:
        f.write(py + "\n")


class _Outcomes:
    """pytest plugin: counts the tests that passed or failed (anything but a skip)."""

    def __init__(self):
        self.ran = 0

    def pytest_runtest_logreport(self, report):
        if report.failed or (report.when == "call" and report.passed):
            self.ran += 1


def run_pytest(args):
    import pytest
    outcomes = _Outcomes()
    rc = int(pytest.main(args, plugins=[outcomes]))
    if rc == 5 or (rc == 0 and outcomes.ran == 0):
        print("python_venv.py: no test ran (all skipped or none selected): SKIP")
        return 77
    return rc


def user(pkg, lib):
    with tempfile.TemporaryDirectory(prefix="dynemb-user.") as tmp:
        tree = os.path.join(tmp, "src")
        _copy_package(pkg, os.path.join(tree, "tf_op", "python"))
        venv = os.path.join(tmp, "venv")
        py = _make_venv(venv)
        env = {k: v for k, v in os.environ.items()
               if k not in ("DYNEMB_BUILD", "PYTHONPATH", "PYTHONHOME")}
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "./tf_op/python"], check=True, cwd=tree, env=env)
        env["DYNEMB_LIB"] = lib
        p = subprocess.run([py, "-c", "import dynemb; print(dynemb._native.lib_path); "
                            "print(dynemb.__file__)"],
                           cwd=tmp, env=env, capture_output=True, text=True, timeout=60)
        print(p.stdout + p.stderr)
        if p.returncode != 0:
            return 1
        loaded, where = p.stdout.split("\n")[:2]
        if loaded != lib or not where.startswith(venv):
            print(f"expected {lib} loaded by the venv's package, got {loaded} from {where}")
            return 1
    return 0


def main(argv):
    if len(argv) == 4 and argv[0] == "setup":
        setup(*argv[1:])
        return 0
    if len(argv) >= 2 and argv[0] == "pytest":
        return subprocess.run([argv[1], os.path.abspath(__file__), "_run"] + argv[2:]).returncode
    if argv and argv[0] == "_run":
        return run_pytest(argv[1:])
    if len(argv) == 3 and argv[0] == "user":
        return user(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
