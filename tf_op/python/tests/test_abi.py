"""The package's copies of libdynemb's structs against the library's sizes.

dynemb._native compares ctypes.sizeof of every Structure it declares with
dynemb_struct_size at load and refuses to load (ImportError naming the struct and both
sizes) when they differ. These tests need no daemon.
"""

import ctypes

import pytest

from dynemb import _native


def test_every_struct_matches_the_library():
    for name, cls in _native.STRUCTS.items():
        assert _native.lib.dynemb_struct_size(name.encode()) == ctypes.sizeof(cls), name
    _native.check_struct_sizes(_native.lib, _native.lib_path)


def test_unknown_struct_name_is_zero():
    assert _native.lib.dynemb_struct_size(b"dynemb_no_such_struct") == 0
    assert _native.lib.dynemb_struct_size(b"struct dynemb_stats") == 0


def test_a_struct_of_another_size_refuses_to_load(monkeypatch):
    class ShortStats(ctypes.Structure):
        _fields_ = [(f, ctypes.c_uint64) for f, _ in _native.Stats._fields_[:10]]

    monkeypatch.setitem(_native.STRUCTS, "dynemb_stats", ShortStats)
    lib_size = _native.lib.dynemb_struct_size(b"dynemb_stats")
    with pytest.raises(ImportError) as e:
        _native.check_struct_sizes(_native.lib, _native.lib_path)
    msg = str(e.value)
    assert "struct dynemb_stats" in msg
    assert f"{lib_size} bytes in {_native.lib_path}" in msg
    assert f"but {ctypes.sizeof(ShortStats)} bytes in this Python package" in msg


def test_a_struct_the_library_does_not_know_refuses_to_load(monkeypatch):
    monkeypatch.setitem(_native.STRUCTS, "dynemb_future_spec", _native.SampleSpec)
    with pytest.raises(ImportError, match=r"struct dynemb_future_spec is 0 bytes .* does "
                                          r"not know this struct"):
        _native.check_struct_sizes(_native.lib, _native.lib_path)
