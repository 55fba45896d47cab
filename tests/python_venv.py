#!/usr/bin/python3
"""tests/python_venv.py: the Python package (tf_op/python) installed the way a user
installs it, for meson's tests (tests/meson.build and tests/install/meson.build call it).

  python_venv.py setup VENV PKG STAMP
      The meson custom target 'python-venv': creates VENV once with
      `/usr/bin/python3 -m venv --system-site-packages` (Debian's numpy, torch, pytest and
      matplotlib stay visible) and `pip install --no-deps --no-build-isolation` PKG into it,
      not editable, from a copy (setuptools' build/ and egg-info stay out of the source
      tree); then touches STAMP. Re-run by meson when the package's files change.

  python_venv.py pytest PYTHON ARGS...
      Runs `PYTHON -m pytest ARGS` (with the working directory meson gives, outside
      tf_op/python) and exits 77, meson's SKIP, when no test ran: pytest's exit 5 (nothing
      collected, or every test deselected by -m) or every test skipped.

  python_venv.py user PKG LIB
      What a user does: a fresh venv in a temporary directory (system site packages, for
      Debian's numpy), `pip install PKG` from a copy of the tree (build isolation: pip
      fetches setuptools from PyPI), then `python -c "import dynemb"` from outside the tree
      with DYNEMB_LIB=LIB; checks the package loaded LIB.
"""

import os
import shutil
import subprocess
import sys
import tempfile

BASE_PYTHON = "/usr/bin/python3"


def _copy_package(pkg, dest):
    shutil.copytree(pkg, dest, ignore=shutil.ignore_patterns(
        "tests", "__pycache__", "build", "*.egg-info"))


def setup(venv, pkg, stamp):
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([BASE_PYTHON, "-m", "venv", "--system-site-packages", venv], check=True)
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
        subprocess.run([BASE_PYTHON, "-m", "venv", "--system-site-packages", venv], check=True)
        py = os.path.join(venv, "bin", "python")
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
