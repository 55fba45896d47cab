"""Client.drop_table: a dropped table is gone (reopened, it is a fresh one: its keys read
the initializer's values again), and a drop the daemon refuses names why."""

import errno

import numpy as np
import pytest

import dynemb

DIM = 4


def test_drop_then_reopen_is_fresh(daemon, tname):
    keys = np.arange(1, 9, dtype=np.int64)
    vals = np.full((8, DIM), 7.5, dtype=np.float32)
    with dynemb.Client(daemon, name="dropper-a") as a:
        t = a.open(tname, DIM, init="constant", init_a=0.25)
        t.update(keys, vals)
        np.testing.assert_array_equal(t.lookup(keys, readonly=True), vals)
    with dynemb.Client(daemon, name="dropper-b") as b:
        assert b.drop_table(tname) > 0
        with pytest.raises(dynemb.DynembError) as ei:
            b.drop_table(tname)
        assert ei.value.errno == errno.ENOENT
        t = b.open(tname, DIM, init="constant", init_a=0.25)
        np.testing.assert_array_equal(t.lookup(keys, readonly=True),
                                      np.zeros((8, DIM), np.float32))
        np.testing.assert_array_equal(t.lookup(keys), np.full((8, DIM), 0.25, np.float32))


def test_drop_while_another_holds_it_names_the_holder(daemon, tname):
    with dynemb.Client(daemon, name="holder") as a, dynemb.Client(daemon, name="other") as b:
        a.open(tname, DIM)
        with pytest.raises(dynemb.DynembError) as ei:
            b.drop_table(tname)
        assert ei.value.errno == errno.EBUSY
        assert tname in ei.value.strerror and "open" in ei.value.strerror, ei.value.strerror
    with dynemb.Client(daemon, name="after") as c:
        c.drop_table(tname)


def test_forced_drop_revokes_the_holder(daemon, tname):
    keys = np.arange(1, 9, dtype=np.int64)
    vals = np.full((8, DIM), 3.5, dtype=np.float32)
    with dynemb.Client(daemon, name="holder") as a, dynemb.Client(daemon, name="forcer") as b:
        t = a.open(tname, DIM)
        t.update(keys, vals)
        with pytest.raises(dynemb.DynembError) as ei:
            b.drop_table(tname)
        assert ei.value.errno == errno.EBUSY
        assert "'holder'" in ei.value.strerror, ei.value.strerror
        assert b.drop_table(tname, force=True) > 0
        for call in (lambda: t.lookup(keys), lambda: t.lookup(keys, readonly=True),
                     lambda: t.update(keys, vals)):
            with pytest.raises(dynemb.DynembError) as ei:
                call()
            assert ei.value.errno == errno.EIDRM
            assert f"table '{tname}' was dropped" in ei.value.strerror, ei.value.strerror
        t2 = a.open(tname, DIM)  # a new, empty table of that name
        np.testing.assert_array_equal(t2.lookup(keys, readonly=True),
                                      np.zeros((8, DIM), np.float32))
    with dynemb.Client(daemon, name="after") as c:
        c.drop_table(tname)
