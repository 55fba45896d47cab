"""Tests of the dynemb Python package against a live dynembd (see conftest.py).

The references are independent of the library: constants the initializer must produce,
values the test itself wrote, zeros for absent keys, and the caller's own buffers.
"""

import errno
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import dynemb
from dynemb import _native

DIM = 8


def rand_vals(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_constant_init_and_status(client, tname):
    t = client.open(tname, DIM, init="constant", init_a=0.25)
    assert t.dim == DIM
    keys = np.array([11, 12, 13], dtype=np.uint64)
    v, st = t.lookup(keys, with_status=True)
    assert v.dtype == np.float32 and v.shape == (3, DIM)
    assert np.all(v == np.float32(0.25))
    assert st.tolist() == [dynemb.ST_CREATED] * 3
    _, st = t.lookup(keys, with_status=True)
    assert st.tolist() == [dynemb.ST_FOUND] * 3
    assert t.stats()["keys"] == 3 and t.stats()["dim"] == DIM


def test_uniform_init_in_range(client, tname):
    t = client.open(tname, DIM, init="uniform", init_a=-0.5, init_b=0.5, seed=7)
    v = t.lookup(np.arange(1, 201, dtype=np.int64))
    assert np.all(v >= -0.5) and np.all(v < 0.5) and v.std() > 0.1


def test_update_then_lookup_exact(client, tname):
    t = client.open(tname, DIM, init="zeros")
    keys = np.array([5, 1 << 40, 2**64 - 2, 77], dtype=np.uint64)
    vals = rand_vals((4, DIM))
    assert t.update(keys, vals, step=3) == 4
    assert np.array_equal(t.lookup(keys), vals)
    assert np.array_equal(t.lookup(keys, readonly=True), vals)  # zero-copy read path
    assert t.update(keys, vals * 2) == 0                         # nothing new created
    assert np.array_equal(t.lookup(keys[::-1]), (vals * 2)[::-1])


def test_int64_reinterpreted_as_uint64(client, tname):
    t = client.open(tname, DIM, init="zeros")
    vals = rand_vals((2, DIM), 1)
    t.update(np.array([-1, -2], dtype=np.int64), vals)
    got = t.lookup(np.array([2**64 - 1, 2**64 - 2], dtype=np.uint64), readonly=True)
    assert np.array_equal(got, vals)


def test_erase_then_readonly_zeros(client, tname):
    t = client.open(tname, DIM, init="constant", init_a=1.5)
    keys = np.array([21, 22, 23], dtype=np.uint64)
    t.update(keys, rand_vals((3, DIM), 2))
    assert t.erase(keys[:2]) == 2
    assert t.erase(keys[:2]) == 0
    v, st = t.lookup(keys, readonly=True, with_status=True)
    assert np.all(v[:2] == 0) and st.tolist()[:2] == [dynemb.ST_MISSING] * 2
    assert st[2] == dynemb.ST_FOUND
    # a readonly lookup does not create: still missing
    _, st = t.lookup(keys[:2], readonly=True, with_status=True)
    assert st.tolist() == [dynemb.ST_MISSING] * 2


def test_key_shapes(client, tname):
    t = client.open(tname, DIM, init="zeros")
    keys = np.arange(100, 112, dtype=np.int64).reshape(3, 4)
    vals = rand_vals((3, 4, DIM), 3)
    t.update(keys, vals)
    got = t.lookup(keys)
    assert got.shape == (3, 4, DIM) and np.array_equal(got, vals)
    # each element matches a 1-D lookup of that key alone
    assert np.array_equal(t.lookup(np.array([keys[2, 1]])), vals[2, 1][None])
    assert t.lookup(105).shape == (DIM,)                       # scalar key
    assert np.array_equal(t.lookup([[104, 105]]), vals[1, :2][None])  # nested list
    assert t.lookup(np.zeros((0, 4), np.uint64)).shape == (0, 4, DIM)
    assert np.array_equal(t.lookup(keys.T), vals.transpose(1, 0, 2))  # non-contiguous


def test_string_keys(client, tname):
    t = client.open(tname, DIM, init="constant", init_a=0.5, keys="str")
    keys = ["apple", "héllo", "日本語", "🙂", "a\0b"]
    vals = rand_vals((len(keys), DIM), 4)
    assert t.update(keys, vals) == len(keys)
    assert np.array_equal(t.lookup(keys), vals)
    # a NumPy str array and UTF-8 bytes name the same keys
    assert np.array_equal(t.lookup(np.array(keys[:4])), vals[:4])
    assert np.array_equal(t.lookup([k.encode() for k in keys]), vals)
    assert np.array_equal(t.lookup([keys[:2], keys[2:4]]), vals[:4].reshape(2, 2, DIM))
    # the empty string reads as zeros, readonly or not
    assert np.all(t.lookup([""]) == 0) and np.all(t.lookup("", readonly=True) == 0)
    # absent: zeros readonly, the initializer otherwise
    assert np.all(t.lookup(["absent"], readonly=True) == 0)
    assert np.all(t.lookup(["absent"]) == 0.5)
    assert t.erase(["apple", "nope"]) == 1
    assert np.all(t.lookup("apple", readonly=True) == 0)
    with pytest.raises(TypeError):
        t.lookup([1, 2])
    with pytest.raises(TypeError):
        t.lookup_async(["x"])


def test_out_in_place(client, tname):
    t = client.open(tname, DIM, init="zeros")
    keys = np.array([[31, 32], [33, 34]], dtype=np.uint64)
    vals = rand_vals((2, 2, DIM), 5)
    t.update(keys, vals)
    out = np.full((2, 2, DIM), np.nan, dtype=np.float32)
    ret = t.lookup(keys, out=out)
    assert ret is out and np.shares_memory(ret, out)
    assert np.array_equal(out, vals)
    with pytest.raises(ValueError):
        t.lookup(keys, out=np.empty((4, DIM), np.float32))
    with pytest.raises(TypeError):
        t.lookup(keys, out=np.empty((2, 2, DIM), np.float64))
    with pytest.raises(ValueError):
        t.lookup(keys, out=np.empty((2, 2, 2 * DIM), np.float32)[..., ::2])


class Spy:
    """Wraps one C function of dynemb._native.api and records its arguments."""

    def __init__(self, monkeypatch, name):
        self.fn, self.calls = getattr(_native.api, name), []
        monkeypatch.setattr(_native.api, name, self)

    def __call__(self, *args):
        self.calls.append(args)
        return self.fn(*args)


def test_zero_copy_inputs(client, tname, monkeypatch):
    t = client.open(tname, DIM, init="zeros")
    lk, up, sub = (Spy(monkeypatch, n) for n in ("dynemb_lookup", "dynemb_update", "dynemb_submit_lookup"))
    keys = np.arange(1, 1001, dtype=np.uint64)
    vals = rand_vals((1000, DIM), 6)
    t.update(keys, vals)
    assert up.calls[-1][2] == keys.ctypes.data   # keys pointer: the caller's buffer
    assert up.calls[-1][4] == vals.ctypes.data   # values pointer: the caller's buffer
    out = t.lookup(keys)
    assert lk.calls[-1][2] == keys.ctypes.data and lk.calls[-1][4] == out.ctypes.data
    ikeys = keys.view(np.int64)
    t.lookup(ikeys)
    assert lk.calls[-1][2] == ikeys.ctypes.data
    t.lookup_async(keys).result()
    assert sub.calls[-1][2] == keys.ctypes.data
    # a strided view has to be copied: the pointer differs (and the answer is right)
    strided = keys[::2]
    assert np.array_equal(t.lookup(strided), vals[::2])
    assert lk.calls[-1][2] != strided.ctypes.data


def test_async_result_wraps_shared_memory(client, tname):
    t = client.open(tname, DIM, init="constant", init_a=-1.0)
    keys = np.array([41, 42, 43], dtype=np.uint64)
    vals = rand_vals((3, DIM), 7)
    t.update(keys, vals)
    for readonly in (False, True):
        r = t.lookup_async(keys, readonly=readonly)
        res = r.result()
        assert res.shape == (3, DIM) and res.dtype == np.float32
        assert np.array_equal(res, vals)
        assert not res.flags.owndata and res.base is not None
        assert not res.flags.writeable
        assert not np.shares_memory(res, keys) and not np.shares_memory(res, vals)
        assert r.result() is res
    # several in flight, 2-D keys, a new key created with the initializer
    r1 = t.lookup_async(keys[:2])
    r2 = t.lookup_async(np.array([[43, 44]], dtype=np.int64))
    a1, a2 = r1.result().copy(), r2.result().copy()
    assert np.array_equal(a1, vals[:2])
    assert a2.shape == (1, 2, DIM)
    assert np.array_equal(a2[0, 0], vals[2]) and np.all(a2[0, 1] == -1.0)


def test_two_clients_share_a_table(daemon, client, tname):
    t1 = client.open(tname, DIM, init="uniform", init_a=0.0, init_b=1.0, seed=9)
    keys = np.array([51, 52], dtype=np.uint64)
    vals = rand_vals((2, DIM), 8)
    t1.update(keys, vals)
    with dynemb.Client(daemon, name="second") as c2:
        t2 = c2.open(tname, DIM, init="uniform", init_a=0.0, init_b=1.0, seed=9)
        assert np.array_equal(t2.lookup(keys, readonly=True), vals)
        t2.update(keys[:1], vals[:1] + 1)
        created = t2.lookup([53])
    assert np.array_equal(t1.lookup(keys, readonly=True), np.stack([vals[0] + 1, vals[1]]))
    assert np.array_equal(t1.lookup([53], readonly=True), created)


def test_config_mismatch_eexist(client, tname):
    client.open(tname, DIM, init="zeros")
    for kw in (dict(dim=DIM + 1, init="zeros"), dict(dim=DIM, init="constant", init_a=1.0),
               dict(dim=DIM, init="zeros", keys="str")):
        with pytest.raises(dynemb.DynembError) as ei:
            client.open(tname, **kw)
        assert ei.value.errno == errno.EEXIST
        assert isinstance(ei.value, OSError)
        assert "different config" in str(ei.value)


def test_bad_arguments_raise_before_c(client, tname, monkeypatch):
    t = client.open(tname, DIM, init="zeros")
    spies = [Spy(monkeypatch, n) for n in ("dynemb_lookup", "dynemb_update", "dynemb_erase",
                                          "dynemb_submit_lookup")]
    with pytest.raises(TypeError):
        t.lookup(np.array([1.0, 2.0]))
    with pytest.raises(TypeError):
        t.lookup([1.5])
    with pytest.raises(TypeError):
        t.lookup(np.array([True]))
    with pytest.raises(TypeError):
        t.lookup(["a"])
    with pytest.raises(TypeError):
        t.erase(np.array([1.0]))
    with pytest.raises(TypeError):
        t.lookup_async(np.array([1.0]))
    keys = np.array([1, 2], dtype=np.uint64)
    with pytest.raises(ValueError):
        t.update(keys, np.zeros((2, DIM + 1), np.float32))
    with pytest.raises(ValueError):
        t.update(keys, np.zeros((2 * DIM,), np.float32))
    with pytest.raises(ValueError):
        t.update(keys, np.zeros((1, DIM), np.float32))
    with pytest.raises(TypeError):
        t.update(keys, np.array([["x"] * DIM] * 2))
    with pytest.raises(ValueError):
        t.lookup(keys, step=-1)
    with pytest.raises(ValueError):
        client.open(tname + "x", 0)
    with pytest.raises(ValueError):
        client.open(tname + "x", DIM, init="gaussian")
    assert all(not s.calls for s in spies)
    # float64 values of the right shape are converted, not refused
    t.update(keys, np.ones((2, DIM)))
    assert np.all(t.lookup(keys) == 1.0)


def test_bad_spec_is_dynemb_error(client):
    with pytest.raises(dynemb.DynembError) as ei:
        client.open("x" * 64, DIM)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(dynemb.DynembError) as ei:
        client.open("bad_uniform", DIM, init="uniform", init_a=1.0, init_b=0.0)
    assert ei.value.errno == errno.EINVAL and "init_a < init_b" in str(ei.value)


def test_no_daemon(tmp_path):
    with pytest.raises(dynemb.DynembError) as ei:
        dynemb.Client(str(tmp_path / "none.sock"), timeout_ms=1000)
    assert ei.value.errno in (errno.ENOENT, errno.ECONNREFUSED)
    # a socket file nobody listens on
    path = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(path)
    s.close()
    with pytest.raises(dynemb.DynembError) as ei:
        dynemb.Client(path, timeout_ms=1000)
    assert ei.value.errno in (errno.ENOENT, errno.ECONNREFUSED)


def test_closed_client(daemon, tname):
    c = dynemb.Client(daemon)
    t = c.open(tname, DIM)
    c.close()
    c.close()
    assert c.closed
    with pytest.raises(ValueError):
        t.lookup([1])


def test_missing_library_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DYNEMB_LIB", "DYNEMB_BUILD")}
    env["DYNEMB_LIB"] = str(tmp_path / "libnothere.so")
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(dynemb.__file__))
    code = ("import ctypes.util, sys\n"
            "if ctypes.util.find_library('dynemb'): sys.exit(3)\n"
            "try:\n import dynemb\nexcept ImportError as e:\n print(e); sys.exit(0)\n"
            "sys.exit(1)\n")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=30)
    if p.returncode == 3:
        pytest.skip("an installed libdynemb is found by find_library")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "DYNEMB_LIB" in p.stdout and "DYNEMB_BUILD" in p.stdout
