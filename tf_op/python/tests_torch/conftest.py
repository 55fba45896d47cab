"""pytest fixtures for dynemb.torch: the Python package's own (a private dynembd per session,
a client, unique table names), loaded from ../tests/conftest.py so both suites start the
daemon the same way (DYNEMBD / DYNEMB_BUILD, see there)."""

import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(_here, "..")))   # this tree's dynemb

_spec = importlib.util.spec_from_file_location(
    "dynemb_tests_conftest", os.path.join(_here, "..", "tests", "conftest.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

daemon = _base.daemon
client = _base.client
tname = _base.tname
