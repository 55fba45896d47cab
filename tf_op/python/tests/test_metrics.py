"""dynembd's Prometheus endpoint ([metrics] listen, src/server/metrics.c) against a live
daemon: work done through the dynemb package, then /metrics scraped over HTTP and parsed
with prometheus_client's own parser (an independent reader of the exposition format).

The references: the number of requests this test made, the keys it inserted, the table
names it chose, the error it provoked; the exposition format's rules (types, cumulative
buckets, +Inf = _count). Startup refusals: a bad listen value (exit 2, the key and the
value named) and a port already taken (exit 1, the address named).
"""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import dynemb

from conftest import _dynembd_path, _wait_socket

prom_parser = pytest.importorskip("prometheus_client.parser")

DIM = 4


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp, *extra):
    sock = str(tmp / "d.sock")
    log = tmp / "dynembd.log"
    with open(log, "wb") as lf:
        proc = subprocess.Popen([_dynembd_path(), "--foreground", "--socket", sock,
                                 "--segment-bytes", "4M", "--allow-uid", str(os.geteuid()),
                                 *extra],
                                stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT)
    return proc, sock, log


def _stop(proc, log):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"dynembd ignored SIGTERM:\n{log.read_text()}")
    assert proc.returncode == 0, f"dynembd exited {proc.returncode}:\n{log.read_text()}"


@pytest.fixture(scope="module")
def mdaemon(tmp_path_factory):
    """A dynembd with a data dir (so the WAL families exist) and /metrics on a free
    loopback port given as ':PORT' (no host: loopback). Yields (socket, base URL)."""
    tmp = tmp_path_factory.mktemp("metrics")
    port = _free_port()
    proc, sock, log = _start(tmp, "--data-dir", str(tmp / "data"),
                             "--metrics-listen", f":{port}")
    try:
        _wait_socket(sock, proc, log)
        yield sock, f"http://127.0.0.1:{port}"
    finally:
        _stop(proc, log)


def _get(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def scrape(base):
    status, headers, body = _get(base + "/metrics")
    assert status == 200, body
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return body, {f.name: f for f in prom_parser.text_string_to_metric_families(body)}


def value(fams, family, sample_name=None, **labels):
    """The one sample of family whose labels include labels (None: no such sample)."""
    want = sample_name or family
    got = [s.value for s in fams[family].samples
           if s.name == want and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(got) <= 1, (family, labels, got)
    return got[0] if got else None


def test_types_and_histograms(mdaemon):
    sock, base = mdaemon
    with dynemb.Client(sock, name="metrics") as c:
        t = c.open("m_types", DIM, durability="sync")
        t.lookup(np.arange(1, 9, dtype=np.uint64))
        t.update(np.arange(1, 5, dtype=np.uint64), np.ones((4, DIM), np.float32))
        text, fams = scrape(base)
        # the client is connected while we scrape
        assert value(fams, "dynemb_clients_connected") >= 1
    expect = {
        "dynemb_build_info": "gauge",
        "dynemb_uptime_seconds": "gauge",
        "dynemb_start_time_seconds": "gauge",
        "dynemb_clients_connected": "gauge",
        "dynemb_tables": "gauge",
        "dynemb_requests": "counter",  # the parser drops _total from a counter's name
        "dynemb_request_errors": "counter",
        "dynemb_request_duration_seconds": "histogram",
        "dynemb_table_rows": "gauge",
        "dynemb_table_arena_bytes": "gauge",
        "dynemb_table_budget_bytes": "gauge",
        "dynemb_table_pages_info": "gauge",
        "dynemb_table_admission_filtered": "counter",
        "dynemb_table_evictions": "counter",
        "dynemb_table_evictions_to_tier": "counter",
        "dynemb_table_tier_restores": "counter",
        "dynemb_wal_last_lsn": "gauge",
        "dynemb_wal_durable_lsn": "gauge",
        "dynemb_wal_written_bytes": "counter",
        "dynemb_wal_flush_duration_seconds": "histogram",
    }
    for name, typ in expect.items():
        assert name in fams, f"{name} missing from:\n{text}"
        assert fams[name].type == typ, (name, fams[name].type)
    # every name of the format's own rules: prefix, counters end in _total
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split()
            assert name.startswith("dynemb_"), line
            assert (typ == "counter") == name.endswith("_total"), line
    assert value(fams, "dynemb_build_info", version="0.1.0") == 1
    assert value(fams, "dynemb_uptime_seconds") > 0
    pages = [s.labels["pages"] for s in fams["dynemb_table_pages_info"].samples
             if s.labels["table"] == "m_types"]
    assert len(pages) == 1 and pages[0] in ("hugetlb", "thp", "small"), pages

    # histograms: buckets cumulative and increasing in le, +Inf == _count
    for hname in ("dynemb_request_duration_seconds", "dynemb_wal_flush_duration_seconds"):
        series = {}
        for s in fams[hname].samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"b": [], "count": None, "sum": None})
            if s.name.endswith("_bucket"):
                series[key]["b"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
            elif s.name.endswith("_sum"):
                series[key]["sum"] = s.value
        assert series, hname
        for key, h in series.items():
            les = [le for le, _ in h["b"]]
            counts = [n for _, n in h["b"]]
            assert les == sorted(les) and les[-1] == float("inf"), (hname, key)
            assert les[0] <= 1e-6 * 1.01 and 0.5 <= les[-2] <= 2.0, (hname, les)
            assert all(a <= b for a, b in zip(counts, counts[1:])), (hname, key, counts)
            assert counts[-1] == h["count"], (hname, key)
            assert h["sum"] >= 0
    lookups = [s for s in fams["dynemb_request_duration_seconds"].samples
               if s.name.endswith("_count") and s.labels == {"table": "m_types", "op": "lookup"}]
    assert [s.value for s in lookups] == [1]
    # the WAL took the sync update: some bytes, a flush that made it durable
    assert value(fams, "dynemb_wal_written_bytes", "dynemb_wal_written_bytes_total") > 0
    assert value(fams, "dynemb_wal_last_lsn") >= 1
    assert value(fams, "dynemb_wal_durable_lsn") >= 1
    assert value(fams, "dynemb_wal_flush_duration_seconds",
                 "dynemb_wal_flush_duration_seconds_count") >= 1


def test_counts_follow_the_work(mdaemon):
    sock, base = mdaemon
    n_lookups, n_keys = 7, 50
    with dynemb.Client(sock, name="metrics") as c:
        t = c.open("m_counts", DIM)
        nopt = c.open("m_noopt", DIM)  # no optimizer: APPLY_GRADS is refused
        _, before = scrape(base)
        req = ("dynemb_requests", "dynemb_requests_total")
        err = ("dynemb_request_errors", "dynemb_request_errors_total")
        b_look = value(before, *req, table="m_counts", op="lookup")
        b_err = value(before, *err, table="m_noopt", op="apply_grads")
        keys = np.arange(1000, 1000 + n_keys, dtype=np.uint64)
        for _ in range(n_lookups):
            t.lookup(keys)
        # a lookup larger than a worker's slice of a pass (worker.c: served in chunks of
        # at most 4096 / (DIM + 1) keys, pass after pass) is one request per descriptor:
        # libdynemb sends a blocking batch as up to 4 descriptors, the worker would make
        # about 25 chunks of them
        big = c.open("m_chunked", DIM)
        slices = ("dynemb_dataplane_slices", "dynemb_dataplane_slices_total")
        s0 = value(scrape(base)[1], *slices)
        big.lookup(np.arange(1, 20001, dtype=np.uint64))
        s1 = value(scrape(base)[1], *slices)
        # an UPDATE that large is served in slices too (each slice a WAL record)
        big.update(np.arange(1, 20001, dtype=np.uint64),
                   np.full((20000, DIM), 0.25, np.float32))
        s2 = value(scrape(base)[1], *slices)
        assert np.all(big.lookup(np.arange(1, 20001, dtype=np.uint64)) == 0.25)
        with pytest.raises(dynemb.DynembError):
            nopt.apply_gradients(keys[:3], np.ones((3, DIM), np.float32))
        _, after = scrape(base)
    assert b_look == 0 and b_err == 0
    # one request per call, never per key
    assert value(after, *req, table="m_counts", op="lookup") == n_lookups
    assert value(after, *req, table="m_counts", op="update") == 0
    assert value(after, *err, table="m_counts", op="lookup") == 0
    keys_total = ("dynemb_request_keys", "dynemb_request_keys_total")
    assert value(after, *keys_total, table="m_counts", op="lookup") == n_lookups * n_keys
    assert value(after, *keys_total, table="m_noopt", op="apply_grads") == 3
    assert value(after, *keys_total, table="m_chunked", op="lookup") == 40000  # two calls
    assert value(after, *req, table="m_noopt", op="apply_grads") == 1
    assert value(after, *err, table="m_noopt", op="apply_grads") == 1
    assert value(after, "dynemb_table_rows", table="m_counts") == n_keys
    assert 2 <= value(after, *req, table="m_chunked", op="lookup") <= 8
    assert value(after, "dynemb_table_rows", table="m_chunked") == 20000
    fit = 4096 // (DIM + 1)  # keys per slice
    assert s1 - s0 >= 20000 // fit and s2 - s1 >= 20000 // fit, (s0, s1, s2)
    assert 1 <= value(after, *req, table="m_chunked", op="update") <= 4
    assert value(after, "dynemb_table_arena_bytes", table="m_counts") > 0
    hist_count = value(after, "dynemb_request_duration_seconds",
                       "dynemb_request_duration_seconds_count", table="m_counts", op="lookup")
    assert hist_count == n_lookups


def test_label_values_escaped_and_dropped_tables_go(mdaemon):
    sock, base = mdaemon
    name = 'q"uo\\te'
    with dynemb.Client(sock, name="metrics") as c:
        t = c.open(name, DIM)
        t.lookup(np.arange(1, 4, dtype=np.uint64))
        text, fams = scrape(base)
        assert 'table="q\\"uo\\\\te"' in text
        assert value(fams, "dynemb_table_rows", table=name) == 3
    with dynemb.Client(sock, name="metrics") as c:
        c.drop_table(name)
        _, fams = scrape(base)
    assert value(fams, "dynemb_table_rows", table=name) is None


def test_drops_counted(mdaemon):
    """DROPs, plain and forced, refusals and revoked handles are counted."""
    sock, base = mdaemon
    _, fams = scrape(base)

    def get(fams, fam, **labels):
        return value(fams, fam, fam + "_total", **labels)

    before = (get(fams, "dynemb_table_drops", forced="false"),
              get(fams, "dynemb_table_drops", forced="true"),
              get(fams, "dynemb_table_drops_refused"), get(fams, "dynemb_table_handles_revoked"))
    with dynemb.Client(sock, name="holder") as a, dynemb.Client(sock, name="dropper") as b:
        a.open("counted_f", DIM)
        b.open("counted_f", DIM)
        with pytest.raises(dynemb.DynembError):
            b.drop_table("counted_f")
        b.drop_table("counted_f", force=True)  # two handles: a's and b's
        a.open("counted_p", DIM)
    with dynemb.Client(sock, name="dropper") as c:
        c.drop_table("counted_p")
        _, fams = scrape(base)
    after = (get(fams, "dynemb_table_drops", forced="false"),
             get(fams, "dynemb_table_drops", forced="true"),
             get(fams, "dynemb_table_drops_refused"), get(fams, "dynemb_table_handles_revoked"))
    assert [y - x for x, y in zip(before, after)] == [1, 1, 1, 2], (before, after)


def test_scrapes_while_tables_come_and_go(mdaemon):
    """Scrapes in a loop on another thread while tables are created, used and dropped: a
    scrape reads each table under the registry's lock, so it never sees one half freed
    (an ASan daemon, DYNEMBD=build-asan/..., turns a use after free into a failure)."""
    import threading
    sock, base = mdaemon
    stop = threading.Event()
    bad = []
    scrapes = [0]

    def scraper():
        while not stop.is_set():
            try:
                _, fams = scrape(base)
                assert "dynemb_table_rows" in fams
                scrapes[0] += 1
            except Exception as e:  # reported below
                bad.append(repr(e))
                return

    th = threading.Thread(target=scraper)
    th.start()
    try:
        for i in range(20):
            name = f"m_churn{i % 3}"
            with dynemb.Client(sock, name="churn") as c:
                t = c.open(name, DIM, durability="async" if i % 2 else "none",
                           optimizer="sgd" if i % 2 else None)
                t.lookup(np.arange(1, 65, dtype=np.uint64))
            with dynemb.Client(sock, name="churn") as c:
                c.drop_table(name)
    finally:
        stop.set()
        th.join(timeout=30)
    assert not bad, bad
    assert scrapes[0] > 0
    _, fams = scrape(base)
    assert not any(s.labels.get("table", "").startswith("m_churn")
                   for s in fams["dynemb_table_rows"].samples)


def test_not_found_and_method_not_allowed(mdaemon):
    _, base = mdaemon
    status, _, _ = _get(base + "/")
    assert status == 404
    status, _, _ = _get(base + "/metricsx")
    assert status == 404
    status, headers, _ = _get(base + "/metrics", method="POST")
    assert status == 405 and "GET" in headers.get("Allow", "")
    status, _, _ = _get(base + "/metrics", method="DELETE")
    assert status == 405
    status, _, body = _get(base + "/metrics?x=1")
    assert status == 200 and "dynemb_build_info" in body


def test_slow_scrapers_are_timed_out(mdaemon):
    """As many connections as the endpoint takes (MAX_CONN, metrics.c), each sending half
    a request line and then nothing: the daemon closes them after its connection timeout
    (10 s; waited for up to 60 s), and a scrape gets through afterwards."""
    _, base = mdaemon
    port = int(base.rsplit(":", 1)[1])
    idle = []
    try:
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metr")  # never finished
            idle.append(s)
        end = time.monotonic() + 60
        for s in idle:
            s.settimeout(max(0.1, end - time.monotonic()))
            assert s.recv(4096) == b"", "the daemon answered half a request line"
        # libmicrohttpd frees a timed-out connection's slot just after closing its socket:
        # a scrape in that instant may find the endpoint still full (reset); within 5 s
        # one gets through
        deadline = time.monotonic() + 5
        while True:
            try:
                status, _, body = _get(base + "/metrics")
                break
            except ConnectionResetError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert status == 200 and "dynemb_build_info" in body
    finally:
        for s in idle:
            s.close()


def _refused(tmp, listen):
    proc, _, log = _start(tmp, "--metrics-listen", listen)
    try:
        rc = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"dynembd started with --metrics-listen {listen}:\n{log.read_text()}")
    return rc, log.read_text()


@pytest.mark.parametrize("listen,why", [
    ("127.0.0.1:99999", "port '99999' is not a number in 1..65535"),
    ("127.0.0.1:", "port '' is not a number"),
    ("1.2.3:9464", "'1.2.3' is not an IPv4 address"),
    ("::1:9464", "an IPv6 address goes in brackets"),
    ("[::1:9464", "is not [IPV6]:PORT"),
    ("example.com:9464", "names are not resolved"),
    ("h" * 70 + ":9464", "the host is too long"),
    ("[fe80::zz]:9464", "'fe80::zz' is not an IPv6 address"),
])
def test_bad_listen_value_refused(tmp_path, listen, why):
    rc, out = _refused(tmp_path, listen)
    assert rc == 2, out
    assert f"[metrics] listen '{listen}'" in out and why in out, out


def test_bad_listen_in_config_file_names_line(tmp_path):
    conf = tmp_path / "d.conf"
    conf.write_text("[metrics]\nlisten = 127.0.0.1:0\n")
    proc = subprocess.run([_dynembd_path(), "--config", str(conf), "--print-config"],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2
    assert f"{conf}:2: [metrics] listen '127.0.0.1:0'" in proc.stderr, proc.stderr


def test_unknown_metrics_key_refused(tmp_path):
    conf = tmp_path / "d.conf"
    conf.write_text("[metrics]\nlisten = 9464\nport = 9464\n")
    proc = subprocess.run([_dynembd_path(), "--config", str(conf), "--print-config"],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2
    assert f"{conf}:3: unknown key 'port' in [metrics]" in proc.stderr, proc.stderr


def test_print_config_shows_metrics(tmp_path):
    def show(*args):
        p = subprocess.run([_dynembd_path(), "--print-config", *args], capture_output=True,
                           text=True, timeout=10)
        assert p.returncode == 0, p.stderr
        sect = p.stdout.split("[metrics]\n", 1)[1]
        return sect.split("\n", 1)[0]
    assert show() == "listen = "
    assert show("--metrics-listen", "9464") == "listen = 127.0.0.1:9464"
    assert show("--metrics-listen", "localhost:80") == "listen = 127.0.0.1:80"
    assert show("--metrics-listen", "0.0.0.0:9464") == "listen = 0.0.0.0:9464"
    assert show("--metrics-listen", "[::1]:9464") == "listen = [::1]:9464"


def test_port_in_use_refused(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc, out = _refused(tmp_path, f"127.0.0.1:{port}")
    assert rc == 1, out
    assert f"[metrics] listen 127.0.0.1:{port}: cannot bind: Address already in use" in out
    # refused before the control socket stayed behind
    assert not (tmp_path / "d.sock").exists(), out


def test_off_by_default(tmp_path):
    """No [metrics] listen: nothing listens (the daemon logs no metrics address)."""
    proc, sock, log = _start(tmp_path)
    try:
        _wait_socket(sock, proc, log)
        assert "metrics:" not in log.read_text()
    finally:
        _stop(proc, log)
