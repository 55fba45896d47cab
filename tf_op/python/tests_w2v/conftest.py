"""Fixtures for the word2vec reproduction: the private dynembd of ../tests/conftest.py
(loaded from there, not copied), and tools/ on sys.path for word2vec_lib."""

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))

_spec = importlib.util.spec_from_file_location(
    "dynemb_tests_conftest", os.path.join(HERE, "..", "tests", "conftest.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)  # also puts tf_op/python first on sys.path

daemon = _base.daemon
client = _base.client
