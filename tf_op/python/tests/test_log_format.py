"""dynembd's structured log (src/server/log.c) as a log shipper reads it: a daemon of its
own with `[log] format = json`, a few events (start, table open and drop, a refused open,
a refused connection, SIGTERM), then every stderr line parsed with the json module.

Table and client names chosen to break a naive formatter (quotes, '=', braces, U+2028
which str.splitlines treats as a line break, a newline the daemon refuses) must leave every
line one JSON object with the keys time, level, component, msg, and come back intact in
the fields that carry them. The logfmt default is checked for the same events with a
small parser.
"""

import errno
import json
import os
import re
import signal
import subprocess
import time

import pytest

import dynemb
from conftest import _dynembd_path, _wait_socket

DIM = 4
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HOSTILE = 'tbl "q" x=1 {"level":"error"}\u2028line2 \\ end'
EVIL_CLIENT = 'cli "q"\u2029 x=1'


def connect(sock, name):
    """A client, retried while the daemon still counts connections just closed
    (_wait_socket's probe, the clients of a block that ended)."""
    for _ in range(100):
        try:
            return dynemb.Client(sock, name=name)
        except dynemb.DynembError as e:
            if e.errno != errno.EUSERS:
                raise
            time.sleep(0.05)
    return dynemb.Client(sock, name=name)


def run_daemon(tmp_path, fmt):
    """Starts dynembd with [log] format = fmt (from a config file, level debug), runs the
    events, stops it; returns its stderr bytes."""
    sock = str(tmp_path / "d.sock")
    conf = tmp_path / "dynembd.ini"
    conf.write_text(f"[log]\nlevel = debug\nformat = {fmt}\n"
                    "[server]\nmax_connections_per_uid = 2\n")
    log = tmp_path / "stderr.log"
    with open(log, "wb") as lf:
        proc = subprocess.Popen([_dynembd_path(), "--foreground", "--config", str(conf),
                                 "--socket", sock, "--segment-bytes", "4M",
                                 "--data-dir", str(tmp_path / "data"),
                                 "--allow-uid", str(os.geteuid())],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=lf)
    try:
        _wait_socket(sock, proc, log)
        with connect(sock, EVIL_CLIENT) as c, connect(sock, "second"):
            c.open(HOSTILE, DIM).lookup([1, 2, 3])
            with pytest.raises(dynemb.DynembError):
                c.open("bad\nname level=error", DIM)     # refused: a control character
            with pytest.raises(dynemb.DynembError):
                dynemb.Client(sock, name="third")        # over max_connections_per_uid
        with connect(sock, "dropper") as c:  # the two above may still count
            for _ in range(100):  # EBUSY while the daemon still counts their opens
                try:
                    c.drop_table(HOSTILE)
                    break
                except dynemb.DynembError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text(errors="replace")
    return log.read_bytes()


def lines_of(raw):
    """The stderr lines, split only at b'\\n' (what a shipper does), decoded as UTF-8."""
    assert raw.endswith(b"\n"), raw[-200:]
    out = [ln.decode("utf-8") for ln in raw[:-1].split(b"\n")]
    # nothing in a line that another reader would take for a line break
    for ln in out:
        assert len(ln.splitlines()) == 1, ln
    return out


def check_common(recs):
    for r in recs:
        assert TIME_RE.match(r["time"]), r
        assert r["level"] in ("error", "warn", "info", "debug"), r
        assert r["component"] and isinstance(r["component"], str), r
        assert isinstance(r["msg"], str), r
        assert "injected" not in r and "x" not in r, r


def check_events(recs):
    comps = {r["component"] for r in recs}
    assert {"main", "control", "persist"} <= comps, comps
    starts = [r for r in recs if r["component"] == "main" and r["msg"].startswith("started")]
    assert len(starts) == 1 and int(starts[0]["pid"]) > 0, starts
    # the table's lines carry its name, intact, in the table field
    persisted = [r for r in recs if r.get("table") == HOSTILE and "table_id" in r]
    assert persisted, "no persistence line with the hostile table name as its table field"
    dropped = [r for r in recs if r.get("table") == HOSTILE and "dropped" in r["msg"]]
    assert dropped, [r["msg"] for r in recs]
    assert any(HOSTILE in r["msg"] for r in recs)
    # the client's name (the daemon replaces what it does not print), in msg
    assert any("'cli \"q\"" in r["msg"] and " x=1'" in r["msg"] for r in recs)
    assert any("max_connections_per_uid" in r["msg"] and r["level"] == "warn"
               for r in recs), "the refused connection"
    assert recs[-1]["msg"] == "stopped", recs[-1]


def test_json_lines_parse(tmp_path):
    raw = run_daemon(tmp_path, "json")
    recs = []
    for ln in lines_of(raw):
        r = json.loads(ln)
        assert isinstance(r, dict), ln
        assert list(r)[:4] == ["time", "level", "component", "msg"], ln
        recs.append(r)
    check_common(recs)
    check_events(recs)
    errs = [r for r in recs if "errno" in r]
    for r in errs:
        assert isinstance(r["errno"], int) and r["err"].startswith("E"), r


LOGFMT_PAIR = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^\s"=\\]*)(?: |$)')


def parse_logfmt(line):
    """key=value pairs, values bare or JSON-style quoted; the whole line must match."""
    rec, pos = {}, 0
    while pos < len(line):
        m = LOGFMT_PAIR.match(line, pos)
        assert m, f"not logfmt at {pos}: {line!r}"
        k, v = m.group(1), m.group(2)
        assert k not in rec, f"{k} twice: {line!r}"
        rec[k] = json.loads(v) if v.startswith('"') else v
        pos = m.end()
    return rec


def test_logfmt_lines_parse(tmp_path):
    raw = run_daemon(tmp_path, "logfmt")
    recs = [parse_logfmt(ln) for ln in lines_of(raw)]
    for ln, r in zip(lines_of(raw), recs):
        assert ln.startswith("time="), ln
    check_common(recs)
    check_events(recs)
