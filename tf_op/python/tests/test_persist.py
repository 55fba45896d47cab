"""Persistence through the Python package: a daemon of its own on a data dir, killed with
SIGKILL and restarted; Client.snapshot, Table.export / Table.import_ with progress
callbacks. Expected values come from NumPy arrays kept here."""

import os
import signal
import subprocess

import numpy as np
import pytest

from conftest import _dynembd_path, _wait_socket


class Daemon:
    def __init__(self, tmp):
        self.dir = tmp / "data"
        self.exports = tmp / "exports"
        self.exports.mkdir()
        self.sock = str(tmp / "p.sock")
        self.log = tmp / "dynembd.log"
        self.proc = None

    def start(self):
        with open(self.log, "ab") as lf:
            self.proc = subprocess.Popen(
                [_dynembd_path(), "--foreground", "--socket", self.sock, "--segment-bytes",
                 "2M", "--pages", "small", "--data-dir", str(self.dir), "--export-dir",
                 str(self.exports), "--allow-uid", str(os.geteuid())], stdin=subprocess.DEVNULL, stdout=lf,
                stderr=subprocess.STDOUT)
        _wait_socket(self.sock, self.proc, self.log)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture
def pdaemon(tmp_path):
    d = Daemon(tmp_path)
    d.start()
    yield d
    d.stop()


def test_sync_updates_survive_kill(pdaemon):
    import dynemb
    keys = np.arange(1, 501, dtype=np.int64)
    vals = np.random.default_rng(3).standard_normal((500, 8)).astype(np.float32)
    with dynemb.Client(pdaemon.sock) as c:
        t = c.open("emb", 8, durability="sync")
        for i in range(0, 500, 50):
            t.update(keys[i:i + 50], vals[i:i + 50])
        t.erase(keys[:10])
        st = t.stats()
        assert st["durable_lsn"] == st["wal_lsn"] >= 11
    pdaemon.kill()
    pdaemon.start()
    with dynemb.Client(pdaemon.sock) as c:
        t = c.open("emb", 8, durability="sync")
        out, status = t.lookup(keys, readonly=True, with_status=True)
        assert (status[:10] == dynemb.ST_MISSING).all()
        assert (status[10:] == dynemb.ST_FOUND).all()
        np.testing.assert_array_equal(out[10:], vals[10:])


def test_snapshot_export_import_with_progress(pdaemon):
    import dynemb
    n = 4000
    keys = np.arange(10, 10 + n, dtype=np.int64)
    vals = np.linspace(-1, 1, n * 4, dtype=np.float32).reshape(n, 4)
    seen = []
    with dynemb.Client(pdaemon.sock) as c:
        t = c.open("src", 4, durability="none")
        t.update(keys, vals)
        r = c.snapshot(progress=lambda *a: seen.append(a))
        assert r["tables"] == 1 and r["rows"] == n
        assert seen and seen[-1][0] == n and seen[-1][2] == "snapshot" and seen[-1][3] == "src"
        path = str(pdaemon.exports / "src.dexp")
        seen.clear()
        e = t.export(path, progress=lambda *a: seen.append(a))
        assert e["records"] == n and e["bytes"] == os.path.getsize(path)
        assert seen[-1][:3] == (n, n, "export")
        dst = c.open("dst", 4, durability={"mode": "async", "window_ms": 5})
        r = dst.import_(path)
        assert r["imported"] == n and r["dropped"] == 0 and r["problem"] is None
        out = dst.lookup(keys, readonly=True)
        np.testing.assert_array_equal(out, vals)
        with pytest.raises(dynemb.DynembError) as ei:
            t.export("/etc/not-allowed.dexp")
        assert "export_dir" in str(ei.value)

        def stop(*a):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            c.snapshot("src", full=True, progress=stop)
    pdaemon.kill()
    pdaemon.start()
    with dynemb.Client(pdaemon.sock) as c:
        dst = c.open("dst", 4, durability={"mode": "async", "window_ms": 5})
        np.testing.assert_array_equal(dst.lookup(keys, readonly=True), vals)
