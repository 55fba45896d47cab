"""Client.status, Client.tables, Client.stats_by_name: the daemon's state and its tables
by name, checked against what this test created (names, dims, the keys it inserted, a
budget it set) and the daemon it talks to."""

import errno

import numpy as np
import pytest

import dynemb

DIM = 4


def test_status_counts_this_test(daemon, tname):
    with dynemb.Client(daemon, name="status-a") as a:
        before = a.status()
        assert before["version"] and before["pid"] > 0
        assert before["peers"] == 0
        assert before["wal"]["state"] == "ok", before  # the fixture gives a data dir
        assert before["wal"]["durable_lsn"] <= before["wal"]["last_lsn"]
        with dynemb.Client(daemon, name="status-b") as b:
            b.open(tname, DIM)
            now = a.status()
            assert now["clients"] == before["clients"] + 1
            assert now["tables"] == before["tables"] + 1
            assert now["pages_got"], now


def test_tables_and_stats_by_name(daemon, tname):
    keys = np.arange(1, 301, dtype=np.int64)
    with dynemb.Client(daemon, name="tables") as c:
        t = c.open(tname, DIM, eviction={"policy": "lru", "budget_bytes": 64 << 20})
        t.update(keys, np.ones((300, DIM), np.float32))
        mine = [x for x in c.tables() if x["name"] == tname]
        assert len(mine) == 1, c.tables()
        m = mine[0]
        assert (m["keys"], m["dim"], m["budget_bytes"], m["eviction"]) == \
            (300, DIM, 64 << 20, "lru")
        assert m["open_connections"] == 1 and m["read_only"] is False
        st = c.stats_by_name(tname)
        assert st["keys"] == 300 and st["dim"] == DIM
        assert st == t.stats()
        with pytest.raises(dynemb.DynembError) as ei:
            c.stats_by_name(tname + "-missing")
        assert ei.value.errno == errno.ENOENT
        assert "no table" in ei.value.strerror, ei.value.strerror
