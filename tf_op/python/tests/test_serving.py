"""Serving tables through the Python package: Client.serve_load, Client.open_serving and
ServingTable.lookup against a daemon of its own with an export_dir. Every expected row is
a NumPy array kept here (row of key k in version v: vals(keys, v)), so a value read says
which version it came from independently of the daemon's bookkeeping."""

import errno

import numpy as np
import pytest

import dynemb
from test_persist import Daemon

DIM = 8


def vals(keys, v):
    k = np.asarray(keys, dtype=np.uint64)
    j = np.arange(DIM, dtype=np.float32)
    return ((v * 1000003 % 9973) + (k % 1000).astype(np.float32)[:, None] * 0.001
            + j[None, :] * 0.0001).astype(np.float32)


@pytest.fixture
def served(tmp_path):
    d = Daemon(tmp_path)
    d.start()
    try:
        with dynemb.Client(d.sock, name="serve-py") as c:
            yield d, c
    finally:
        d.stop()


def export_version(c, d, trainer, keys, v):
    trainer.update(keys, vals(keys, v))
    path = str(d.exports / f"v{v}.dexp")
    trainer.export(path)
    return path


def test_load_lookup_swap(served):
    d, c = served
    trainer = c.open("trainer", DIM, init="uniform", seed=5)
    keys = np.arange(1, 2001, dtype=np.uint64) * 7
    p1 = export_version(c, d, trainer, keys, 1)
    with pytest.raises(dynemb.DynembError) as e:
        c.open_serving("srv")
    assert e.value.errno == errno.ENOENT

    seen = []
    r = c.serve_load("srv", p1, progress=lambda done, total, phase, name:
                     seen.append((phase, done, total)))
    assert r["version"] == 1 and r["previous"] == 0 and r["records"] == len(keys)
    assert seen and all(p == "serve_load" for p, _, _ in seen)
    t = c.open_serving("srv")
    assert isinstance(t, dynemb.ServingTable) and t.dim == DIM

    q = np.array([7, 14, 99999, 21], dtype=np.uint64)  # 99999: never written
    out, st, v = t.lookup(q, with_status=True, with_version=True)
    assert v == 1
    np.testing.assert_array_equal(out[[0, 1, 3]], vals(q[[0, 1, 3]], 1))
    np.testing.assert_array_equal(out[2], np.zeros(DIM, np.float32))
    assert list(st) == [dynemb.ST_FOUND, dynemb.ST_FOUND, dynemb.ST_MISSING, dynemb.ST_FOUND]
    assert t.info()["found"] == 3 and t.info()["missing"] == 1
    # the plain signature works too, and reads the same
    np.testing.assert_array_equal(t.lookup(q), out)

    for write in (lambda: t.update(q[:1], vals(q[:1], 9)),
                  lambda: t.erase(q[:1]),
                  lambda: t.apply_gradients(q[:1], np.ones((1, DIM), np.float32))):
        with pytest.raises(dynemb.DynembError) as e:
            write()
        assert e.value.errno == errno.EROFS

    # version 2: the same handle moves to it at its next batch
    p2 = export_version(c, d, trainer, keys, 2)
    r = c.serve_load("srv", p2)
    assert r["version"] == 2 and r["previous"] == 1
    out, v = t.lookup(keys, with_version=True)
    assert v == 2
    np.testing.assert_array_equal(out, vals(keys, 2))
    assert t.version == 2 and t.info()["switches"] == 1


def test_damaged_file_keeps_serving(served):
    d, c = served
    trainer = c.open("trainer", DIM)
    keys = np.arange(1, 1001, dtype=np.uint64)
    p1 = export_version(c, d, trainer, keys, 1)
    c.serve_load("srv", p1)
    t = c.open_serving("srv")
    p2 = export_version(c, d, trainer, keys, 2)
    b = bytearray(open(p2, "rb").read())
    b[len(b) // 2] ^= 0x40
    open(p2, "wb").write(bytes(b))
    with pytest.raises(dynemb.DynembError) as e:
        c.serve_load("srv", p2)
    assert e.value.errno in (errno.EBADMSG, errno.EPROTO), e.value
    out, v = t.lookup(keys, with_version=True)
    assert v == 1
    np.testing.assert_array_equal(out, vals(keys, 1))


def test_miss_init_and_errors(served):
    d, c = served
    trainer = c.open("trainer", DIM, init="uniform", init_a=-1, init_b=1, seed=77)
    keys = np.arange(1, 101, dtype=np.uint64)
    p1 = export_version(c, d, trainer, keys, 1)
    c.serve_load("srv", p1, miss_init=True)
    t = c.open_serving("srv")
    k = np.array([424242], dtype=np.uint64)
    got, st = t.lookup(k, with_status=True)
    assert st[0] == dynemb.ST_MISSING
    want = trainer.lookup(k)  # creates the row with the trainer's initializer
    np.testing.assert_array_equal(got, want)
    with pytest.raises(dynemb.DynembError) as e:
        c.serve_load("trainer", p1)
    assert e.value.errno == errno.EEXIST and "ordinary table" in str(e.value)
    with pytest.raises(dynemb.DynembError) as e:
        c.serve_load("srv", "/etc/passwd")
    assert e.value.errno == errno.EPERM
    with pytest.raises(TypeError):
        c.serve_load(7, p1)
