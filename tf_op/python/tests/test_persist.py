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


def _rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/PID/status")


def test_recovery_returns_the_wal_segment_buffer(pdaemon):
    """Recovery reads a whole WAL segment into one buffer; the daemon's private memory
    after recovering a ~30 MB segment must not keep it (glibc keeps a freed heap buffer
    resident unless large blocks come from mmap)."""
    import dynemb
    with dynemb.Client(pdaemon.sock) as c:
        t = c.open("big", 64, durability="sync")
        vals = np.ones((1000, 64), np.float32)
        for i in range(110):  # 110k rows of 64 floats: ~30 MB of WAL records
            t.update(np.arange(i * 1000 + 1, i * 1000 + 1001, dtype=np.uint64), vals)
    pdaemon.kill()
    wal = sum(os.path.getsize(pdaemon.dir / f) for f in os.listdir(pdaemon.dir)
              if f.startswith("wal-"))
    assert wal > 28 << 20, wal
    pdaemon.start()
    with dynemb.Client(pdaemon.sock) as c:  # recovered: the rows are back
        t = c.open("big", 64, durability="sync")
        got = t.lookup(np.array([1, 55_000, 110_000], np.uint64), readonly=True)
        assert np.array_equal(got, np.ones((3, 64), np.float32))
        anon = _rss_anon_kib(pdaemon.proc.pid)
    # measured: ~30 MiB with the buffer kept, ~3 MiB without; the table's rows are shared
    # memory (RssShmem), not counted here
    assert anon < 16 * 1024, f"RssAnon {anon} KiB after recovering a {wal >> 20} MiB WAL"
