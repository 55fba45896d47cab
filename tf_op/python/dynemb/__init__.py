"""dynemb: NumPy access to the dynemb embedding-store sidecar (ctypes over libdynemb).

A :class:`Client` is one connection to the host's ``dynembd`` (a unix socket plus a
shared-memory channel). ``client.open(name, dim, ...)`` opens, or shares with every other
client of the daemon, a :class:`Table`; the same name with another config raises
:class:`DynembError` with ``errno.EEXIST``.

Zero-copy rules
---------------
Inputs
    * int64 tables: keys that are a C-contiguous NumPy array of dtype ``uint64`` or
      ``int64`` (native byte order) are passed to C by their buffer address, never copied.
      int64 values are reinterpreted bit for bit as uint64 (``-1`` is ``2**64 - 1``).
      Other integer arrays, non-contiguous arrays and Python sequences are converted first
      (one copy). Floats, bools, strings and objects raise ``TypeError``.
    * ``values`` for :meth:`Table.update` are passed without a copy when they are a
      C-contiguous native ``float32`` array of shape ``keys.shape + (dim,)``; other real
      dtypes are converted (one copy); any other shape raises ``ValueError``.
    * string tables take a ``str`` (or ``bytes``), a sequence of them, or a NumPy array of
      ``str``/``bytes``/object. Strings are UTF-8 encoded into one buffer plus the
      ``char *`` / length arrays the C API wants: that packing is the one copy made.
Outputs
    * :meth:`Table.lookup` returns ``keys.shape + (dim,)`` float32. With ``out=`` the
      caller's array (C-contiguous, writeable, float32, that shape) is filled in place and
      returned: no allocation, no copy.
    * :meth:`Request.result` of :meth:`Table.lookup_async` returns a read-only array that
      *wraps the channel's shared memory* (``dynemb_request_vals``): no copy at all, but it is
      valid only until the next request on the same client, and never after
      :meth:`Client.close`. Call ``.copy()`` on it to keep the values longer.

Training
--------
``client.open(name, dim, optimizer="adam", lr=1e-3, betas=(0.9, 0.999), ...)`` gives the
table a server-side optimizer (sgd, momentum, nesterov, adagrad, adam, adamw, ftrl,
rmsprop; torch.optim's names and defaults, FTRL as tf.keras). ``table.apply_gradients(keys,
grads, step, lr=None)`` pushes gradients (float32 of shape ``keys.shape + (dim,)`` pass
without a copy); the daemon sums duplicate keys and steps each distinct key once, per-key
("sparse") semantics. ``lr`` overrides the table's learning rate for that call (a
schedule). Trainers in several threads or processes may push to the same rows at once:
each row's step is atomic and none is lost. ``admission`` and ``eviction`` are enforced
by the daemon (a key earns a row on its Nth creating lookup, or with probability p; the
table is kept under its byte budget, evicted rows optionally go to a disk tier and come
back with their optimizer state); ``durability`` is part of the table's config
(validated and compared on open; acted on by a later daemon).

Sampling and retrieval
----------------------
``table.sample(num_sampled, positives, kind="log_uniform")`` draws negatives server side
(with TensorFlow's expected counts), ``table.topk(queries, k)`` is an exact top-k over
the table, ``table.key_strings(fingerprints)`` maps a string table's keys back to their
strings; ``dynemb.losses`` has ``sampled_softmax_loss`` / ``sampled_sigmoid_loss`` for
PyTorch with the output classes in a table.

Serving
-------
``client.serve_load(name, path)`` loads an export file into a new version of the serving
table ``name`` beside the one that serves, then switches to it (docs/serving.md);
``client.open_serving(name)`` gives a :class:`ServingTable`, read-only, whose
``lookup(keys)`` reads the version's memory directly: a batch is answered wholly from one
version (``with_version=True`` says which), and the handle follows a newer version
between two batches by itself.

Errors from the C library raise :class:`DynembError` (an ``OSError``: ``.errno`` is the
positive errno, the message comes from ``dynemb_strerror``, including the daemon's own
explanation when it sent one). Bad arguments raise ``TypeError`` / ``ValueError`` before
any C call.

A :class:`Client` serialises its calls with a lock (the C client is not thread-safe);
for parallel work use one client per thread. The library is found through
``$DYNEMB_LIB``, then ``ctypes.util.find_library('dynemb')``, then
``$DYNEMB_BUILD/src/client/libdynemb.so`` (see ``dynemb._native``).
"""

import ctypes
import errno as _errno
import operator
import os
import threading

import numpy as np

from . import _native
from ._native import (AdmissionSpec, ConnectOpts, DurabilitySpec, EvictionSpec,
                      OptimSpec, SampleSpec, Stats, TableSpec)
from ._native import ImportResult, ProgressCb, ServeInfo, ServeResult, SnapshotResult

__all__ = ["Client", "Table", "ServingTable", "Request", "GradRequest", "DynembError", "READONLY", "ST_MISSING",
           "ST_FOUND", "ST_CREATED", "strerror"]

READONLY = 0x1
ST_MISSING, ST_FOUND, ST_CREATED = 0, 1, 2

_INITS = {"zeros": 0, "constant": 1, "uniform": 2, "trunc_normal": 3}
# Defaults of (init_a, init_b) when the caller gives none. They are part of the table's
# config: two clients that open the same name must end up with the same values.
_INIT_DEFAULTS = {"zeros": (0.0, 0.0), "constant": (0.0, 0.0),
                  "uniform": (-0.05, 0.05), "trunc_normal": (0.0, 0.05)}
_KEY_KINDS = {"int64": 0, "str": 1}
_OPTIMIZERS = {None: 0, "none": 0, "sgd": 1, "momentum": 2, "nesterov": 3, "adagrad": 4,
               "adam": 5, "adamw": 6, "ftrl": 7, "rmsprop": 8}
_ADMISSION = {"none": 0, "count": 1, "probability": 2}
_REJECT = {"init": 0, "zeros": 1}
_EVICTION = {"none": 0, "lru": 1, "lfu": 2, "ttl": 3, "l2": 4}
_UNITS = {"steps": 0, "seconds": 1}
_DURABILITY = {"none": 0, "async": 1, "sync": 2}
_SAMPLERS = {"uniform": 0, "log_uniform": 1, "unigram": 2}
_METRICS = {"dot": 0, "cosine": 1}


def _choice(table, v, what):
    if v not in table:
        raise ValueError(f"{what} must be one of {sorted(k for k in table if k)}, not {v!r}")
    return table[v]


def _spec_dict(v, what, main, allowed):
    """None / a mode string / a dict -> dict with `main` set; unknown keys: ValueError."""
    if v is None:
        return {}
    if isinstance(v, str):
        return {main: v}
    if not isinstance(v, dict):
        raise TypeError(f"{what} must be None, a str or a dict, not {type(v).__name__}")
    bad = set(v) - set(allowed)
    if bad:
        raise ValueError(f"{what}: unknown settings {sorted(bad)}; known: {sorted(allowed)}")
    return v


def _optim_spec(optimizer, hp):
    """OptimSpec from the optimizer name and the keyword hyperparameters (None: default)."""
    kind = _choice(_OPTIMIZERS, optimizer, "optimizer")
    o = OptimSpec()
    _native.api.dynemb_optim_spec_defaults(kind, ctypes.byref(o))
    given = {k: v for k, v in hp.items() if v is not None}
    if not kind and given:
        raise ValueError(f"hyperparameters {sorted(given)} need an optimizer")
    betas = given.pop("betas", None)
    if betas is not None:
        b1, b2 = betas
        given["beta1"], given["beta2"] = b1, b2
    if "beta" in given:  # FTRL's beta (Keras' name)
        given["ftrl_beta"] = given.pop("beta")
    for k, v in given.items():
        setattr(o, k, float(v))
    return o


def _admission_spec(v):
    d = _spec_dict(v, "admission", "mode", ("mode", "min_count", "probability",
                                             "sketch_width", "sketch_depth", "reject_value"))
    mode = d.get("mode", "count" if "min_count" in d else
                 "probability" if "probability" in d else "none")
    return AdmissionSpec(_choice(_ADMISSION, mode, "admission mode"),
                         operator.index(d.get("min_count", 0)),
                         float(d.get("probability", 0.0)),
                         operator.index(d.get("sketch_width", 0)),
                         operator.index(d.get("sketch_depth", 0)),
                         _choice(_REJECT, d.get("reject_value", "init"), "reject_value"))


def _eviction_spec(v):
    d = _spec_dict(v, "eviction", "policy", ("policy", "budget_bytes", "ttl", "ttl_unit",
                                              "lru_clock", "lfu_decay", "disk_tier"))
    return EvictionSpec(_choice(_EVICTION, d.get("policy", "none"), "eviction policy"),
                        _u64(d.get("budget_bytes", 0), "budget_bytes"),
                        _u64(d.get("ttl", 0), "ttl"),
                        _choice(_UNITS, d.get("ttl_unit", "steps"), "ttl_unit"),
                        _choice(_UNITS, d.get("lru_clock", "steps"), "lru_clock"),
                        float(d.get("lfu_decay", 0.0)), bool(d.get("disk_tier", False)))


def _durability_spec(v):
    d = _spec_dict(v, "durability", "mode", ("mode", "window_ms"))
    return DurabilitySpec(_choice(_DURABILITY, d.get("mode", "none"), "durability mode"),
                          operator.index(d.get("window_ms", 0)))

_U64 = np.dtype(np.uint64)
_I64 = np.dtype(np.int64)
_F32 = np.dtype(np.float32)


class DynembError(OSError):
    """An error from libdynemb or the daemon: ``DynembError(errno, message)``.

    ``.errno`` is the positive errno (e.g. ``errno.EEXIST``), ``.strerror`` the text of
    ``dynemb_strerror``.
    """

    def __init__(self, err, message):
        super().__init__(err, message)


def strerror(err):
    """dynemb_strerror's text for an errno (positive or negative)."""
    return _native.api.dynemb_strerror(-abs(int(err))).decode("utf-8", "replace")


def _check(rc):
    """Raise DynembError for a negative return code (call on the thread that got it)."""
    if rc < 0:
        raise DynembError(-rc, _native.api.dynemb_strerror(rc).decode("utf-8", "replace"))
    return rc


def _u64(v, what):
    try:
        v = operator.index(v)
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(v).__name__}") from None
    if not 0 <= v < 1 << 64:
        raise ValueError(f"{what} must be in 0..2**64-1, got {v}")
    return v


def _int_keys(keys):
    """keys -> C-contiguous int64/uint64 ndarray; the input itself when no copy is needed."""
    if isinstance(keys, np.ndarray):
        a = keys
    else:
        if isinstance(keys, (str, bytes, float)):
            raise TypeError(f"int64 keys must be integers, not {type(keys).__name__}")
        a = np.asarray(keys)
        if a.size == 0 and a.dtype.kind == "f":  # [] -> float64 by default
            a = a.astype(np.uint64)
    if a.dtype == _U64 or a.dtype == _I64:
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)
    if a.dtype.kind == "i":
        return np.ascontiguousarray(a, dtype=np.int64)
    if a.dtype.kind == "u":
        return np.ascontiguousarray(a, dtype=np.uint64)
    raise TypeError(f"int64 keys must be an integer array (uint64/int64 for no copy), "
                    f"not dtype {a.dtype}")


class _StrKeys:
    """Strings packed for dynemb_*_str: one UTF-8 buffer, char* and size_t arrays."""

    __slots__ = ("shape", "n", "buf", "ptrs", "lens")

    def __init__(self, keys):
        if isinstance(keys, (str, bytes)):
            items, self.shape = [keys], ()
        elif isinstance(keys, np.ndarray):
            if keys.dtype.kind not in "USO":
                raise TypeError(f"string keys must be str/bytes, not dtype {keys.dtype}")
            items, self.shape = keys.ravel().tolist(), keys.shape
        else:
            try:
                a = np.array(keys, dtype=object)
            except ValueError as e:
                raise ValueError(f"string keys: {e}") from None
            items, self.shape = a.ravel().tolist(), a.shape
        enc = []
        for k in items:
            if isinstance(k, str):
                enc.append(k.encode("utf-8"))
            elif isinstance(k, bytes):
                enc.append(k)
            else:
                raise TypeError(f"string keys must be str or bytes, not {type(k).__name__}")
        self.n = len(enc)
        # The trailing NUL keeps the buffer non-empty, so every pointer is non-NULL.
        self.buf = np.frombuffer(b"".join(enc) + b"\0", dtype=np.uint8)
        self.lens = np.fromiter(map(len, enc), dtype=np.uintp, count=self.n)
        offs = np.cumsum(self.lens, dtype=np.uintp) - self.lens
        self.ptrs = (offs + np.uintp(self.buf.ctypes.data)).astype(np.uintp)


_PHASES = {1: "snapshot", 2: "export", 3: "import", 4: "serve_load"}


def _progress_cb(progress):
    """A C progress callback calling progress(done, total, phase, table), and a list that
    receives an exception it raised (the C side then stops waiting for progress)."""
    err = []
    if progress is None:
        return ctypes.cast(None, ProgressCb), err

    def call(_ctx, p):
        try:
            q = p.contents
            progress(q.done, q.total, _PHASES.get(q.phase, q.phase),
                     (q.table or b"").decode("utf-8", "replace"))
            return 0
        except BaseException as e:  # noqa: BLE001 - re-raised by the caller
            err.append(e)
            return 1

    return ProgressCb(call), err


def _progress_raise(err):
    if err:
        raise err[0]


class Client:
    """One connection to dynembd.

    ``Client(socket_path=None, name=None, timeout_ms=0)``: ``socket_path`` None is the
    daemon's default (``/run/dynemb/dynemb.sock``); ``name`` shows in the daemon's log;
    ``timeout_ms`` bounds each control request and blocking call (0: 10 s). ``sq_entries``
    and ``data_bytes`` (0: the daemon's defaults) size the shared-memory channel.

    Use as a context manager, or call :meth:`close`. Raises :class:`DynembError` with
    ``ENOENT`` / ``ECONNREFUSED`` when no daemon listens there.
    """

    def __init__(self, socket_path=None, name=None, timeout_ms=0, sq_entries=0,
                 data_bytes=0):
        self._c = None
        self._lock = threading.RLock()
        path = None if socket_path is None else os.fsencode(socket_path)
        opts = ConnectOpts(None if name is None else str(name).encode("utf-8"),
                           int(sq_entries), int(data_bytes), int(timeout_ms))
        out = ctypes.c_void_p()
        with self._lock:
            _check(_native.api.dynemb_connect(path, ctypes.byref(opts), ctypes.byref(out)))
        self._c = out.value
        self.socket_path = socket_path

    def _handle(self):
        if not self._c:
            raise ValueError("dynemb: operation on a closed Client")
        return self._c

    @property
    def closed(self):
        return not self._c

    def close(self):
        """Close the connection. Arrays from :meth:`Request.result` become invalid."""
        with self._lock:
            c, self._c = self._c, None
            if c:
                _native.api.dynemb_close(c)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def open(self, name, dim, nslots=0, init="uniform", init_a=None, init_b=None,
             slot_init=0.0, seed=0, keys="int64", optimizer=None, lr=None,
             weight_decay=None, momentum=None, dampening=None, betas=None, eps=None,
             initial_accumulator_value=None, alpha=None, l1=None, l2=None, lr_power=None,
             beta=None, admission=None, eviction=None, durability=None):
        """Open (or share) table ``name`` and return a :class:`Table`.

        ``init``: ``'zeros'``, ``'constant'`` (``init_a``), ``'uniform'`` ([``init_a``,
        ``init_b``), default [-0.05, 0.05)) or ``'trunc_normal'`` (mean ``init_a``, stddev
        ``init_b``, default 0, 0.05). ``keys``: ``'int64'`` or ``'str'``. Opening a name
        that exists with another config raises :class:`DynembError` (``EEXIST``, naming
        the field).

        ``optimizer``: None (no server optimizer: :meth:`Table.apply_gradients` raises
        ``EOPNOTSUPP``), ``'sgd'``, ``'momentum'``, ``'nesterov'``, ``'adagrad'``,
        ``'adam'``, ``'adamw'``, ``'ftrl'`` or ``'rmsprop'``. Hyperparameters left None take
        torch.optim's defaults (FTRL: Keras'): ``lr``, ``weight_decay``, ``momentum``,
        ``dampening``, ``betas`` (Adam), ``eps``, ``initial_accumulator_value`` (Adagrad,
        FTRL), ``alpha`` (RMSProp), ``l1``, ``l2``, ``lr_power``, ``beta`` (FTRL). With
        ``nslots=0`` the table gets the slots its optimizer needs.

        ``admission``: None, or a dict ``{"mode": "count", "min_count": 3,
        "sketch_width": 0, "sketch_depth": 0, "reject_value": "init"|"zeros"}`` or
        ``{"mode": "probability", "probability": 0.1}``.
        ``eviction``: None, or ``{"policy": "lru"|"lfu"|"ttl"|"l2", "budget_bytes": ...,
        "ttl": ..., "ttl_unit": "steps"|"seconds", "lru_clock": "steps"|"seconds",
        "lfu_decay": half-life in steps, "disk_tier": bool}``.
        ``durability``: None, ``'none'``, ``'sync'``, ``'async'`` or ``{"mode": "async",
        "window_ms": 10}``. The daemon validates every value (``EINVAL`` says why).
        """
        if init not in _INITS:
            raise ValueError(f"init must be one of {sorted(_INITS)}, not {init!r}")
        if keys not in _KEY_KINDS:
            raise ValueError(f"keys must be one of {sorted(_KEY_KINDS)}, not {keys!r}")
        if not isinstance(name, str):
            raise TypeError(f"table name must be a str, not {type(name).__name__}")
        dim, nslots = operator.index(dim), operator.index(nslots)
        if not 1 <= dim <= 4096:
            raise ValueError(f"dim must be in 1..4096, got {dim}")
        if not 0 <= nslots <= 8:
            raise ValueError(f"nslots must be in 0..8, got {nslots}")
        da, db = _INIT_DEFAULTS[init]
        a = da if init_a is None else float(init_a)
        b = db if init_b is None else float(init_b)
        optim = _optim_spec(optimizer, dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, dampening=dampening,
            betas=betas, eps=eps, initial_accumulator_value=initial_accumulator_value,
            alpha=alpha, l1=l1, l2=l2, lr_power=lr_power, beta=beta))
        spec = TableSpec(name.encode("utf-8"), dim, nslots, _INITS[init], a, b,
                         float(slot_init), _u64(seed, "seed"), _KEY_KINDS[keys], optim,
                         _admission_spec(admission), _eviction_spec(eviction),
                         _durability_spec(durability))
        h = ctypes.c_int()
        with self._lock:
            _check(_native.api.dynemb_open(self._handle(), ctypes.byref(spec), ctypes.byref(h)))
            got = _native.api.dynemb_table_dim(self._c, h.value)
        return Table(self, h.value, name, got or dim, keys)

    def snapshot(self, table=None, full=False, progress=None):
        """Checkpoint ``table`` (a name) or every persisted table (None) of the daemon:
        full snapshots with ``full``, else incremental where possible. Needs the daemon's
        ``[persistence] data_dir``. ``progress(done, total, phase, table)`` is called on
        the way (phase: "snapshot", "export" or "import"); raising in it re-raises here
        after the job ended. Returns ``{"tables", "lsn", "rows", "bytes"}``."""
        r = SnapshotResult()
        cb, err = _progress_cb(progress)
        with self._lock:
            rc = _native.api.dynemb_snapshot(self._handle(),
                                         None if table is None else str(table).encode("utf-8"),
                                         bool(full), cb, None, ctypes.byref(r))
        _progress_raise(err)
        _check(rc)
        return {"tables": r.tables, "lsn": r.lsn, "rows": r.rows, "bytes": r.bytes}

    def drop_table(self, name, force=False):
        """Drop the table ``name`` from the daemon (its rows, memory and files; durably with
        a data dir). Only a table no connection has open, this one included: close the
        clients that opened it first, or pass ``force=True``: the daemon then revokes every
        connection's handle to it (their later calls raise ``EIDRM``) and cancels the
        snapshot, export and import jobs that may use it. Returns the bytes given back to
        its creator's quota. Raises :class:`DynembError` with the daemon's text: ``ENOENT``
        no such table, ``EBUSY`` a connection has it open (the text names them) or a job
        runs, ``EACCES`` no drop right, ``EOPNOTSUPP`` a daemon without drop (or without
        forced drop), ``ETIMEDOUT`` (forced) a worker or job did not let go in time."""
        b = ctypes.c_uint64()
        with self._lock:
            rc = _native.api.dynemb_drop_table_flags(self._handle(), str(name).encode("utf-8"),
                                                 1 if force else 0, ctypes.byref(b))
        _check(rc)
        return b.value

    # ---- serving tables -------------------------------------------------------------

    def serve_load(self, name, path, miss_init=False, progress=None):
        """Load the export file ``path`` (absolute, under the daemon's ``export_dir``, read
        as this client's user) into a new version of serving table ``name`` beside the one
        that serves, then switch ``name`` to it. ``miss_init``: missing keys read the
        file's initializer instead of zeros. ``progress(done, total, "serve_load", name)``
        sees the load. Returns ``{"version", "records", "bytes", "previous"}``. On any
        error the current version serves on: ``EBADMSG`` / ``EPROTO`` a damaged or foreign
        file, ``ENOSPC`` / ``EDQUOT`` it does not fit beside the current version, ``EEXIST``
        ``name`` is an ordinary table, ``EBUSY`` a load of ``name`` runs, ``EPERM`` the
        path is outside ``export_dir`` (the message names the cause)."""
        if not isinstance(name, str):
            raise TypeError(f"serving table name must be a str, not {type(name).__name__}")
        r = ServeResult()
        cb, err = _progress_cb(progress)
        with self._lock:
            rc = _native.api.dynemb_serve_load(self._handle(), name.encode("utf-8"),
                                           os.fsencode(path), 1 if miss_init else 0, cb,
                                           None, ctypes.byref(r))
        _progress_raise(err)
        _check(rc)
        return {"version": r.version, "records": r.records, "bytes": r.bytes,
                "previous": r.previous}

    def open_serving(self, name):
        """Open serving table ``name`` for reading: a :class:`ServingTable`. ``ENOENT``: no
        such serving table; ``EAGAIN``: its first version is still loading."""
        if not isinstance(name, str):
            raise TypeError(f"serving table name must be a str, not {type(name).__name__}")
        h = ctypes.c_int()
        with self._lock:
            _check(_native.api.dynemb_open_serving(self._handle(), name.encode("utf-8"),
                                                   ctypes.byref(h)))
            dim = _native.api.dynemb_table_dim(self._c, h.value)
        return ServingTable(self, h.value, name, dim, "int64")

    # ---- the operator's view ------------------------------------------------------

    def status(self):
        """The daemon's state as a dict: version, pid, uptime_ms, workers, clients,
        tables (all of the daemon's), pages ("auto", "huge", "thp", "4k": configured) and
        pages_got (the kinds its tables got), numa_node (-1: not bound), peers, and wal:
        {"state": "none" | "ok" | "failed", "errno", "error", "last_lsn", "durable_lsn"}."""
        s = _native.Status()
        with self._lock:
            rc = _native.api.dynemb_status(self._handle(), ctypes.byref(s))
        _check(rc)
        pages = ("auto", "huge", "thp", "4k")
        return {
            "version": s.version.decode("utf-8", "replace"), "pid": s.pid,
            "uptime_ms": s.uptime_ms, "workers": s.workers, "clients": s.clients,
            "tables": s.tables, "peers": s.peers, "numa_node": s.numa_node,
            "pages": pages[s.pages_config] if s.pages_config < 4 else s.pages_config,
            "pages_got": [pages[k] for k in range(4) if s.pages_got & (1 << k)],
            "wal": {"state": ("none", "ok", "failed")[s.wal_state] if s.wal_state < 3
                    else s.wal_state, "errno": -s.wal_err,
                    "error": s.wal_error.decode("utf-8", "replace"),
                    "last_lsn": s.wal_last_lsn, "durable_lsn": s.wal_durable_lsn},
        }

    def tables(self):
        """The tables this uid may open (root: all), as a list of dicts: name, key_type
        ("int64" or "str"), dim, keys, resident_bytes, budget_bytes (0: none), read_only,
        owner_uid, eviction, durability, open_connections."""
        out, first, total = [], 0, None
        buf = (_native.TableInfo * 64)()
        evict = ("none", "lru", "lfu", "ttl", "l2")
        durable = ("none", "async", "sync")
        while total is None or first < total:
            n, tot = ctypes.c_size_t(), ctypes.c_size_t()
            with self._lock:
                rc = _native.api.dynemb_list_tables(self._handle(), first, buf, len(buf),
                                                    ctypes.byref(n), ctypes.byref(tot))
            _check(rc)
            total = tot.value
            for t in buf[:n.value]:
                out.append({
                    "name": t.name.decode("utf-8", "replace"),
                    "key_type": "str" if t.key_kind == 1 else "int64", "dim": t.dim,
                    "keys": t.keys, "resident_bytes": t.resident_bytes,
                    "budget_bytes": t.budget_bytes, "read_only": bool(t.read_only),
                    "owner_uid": t.owner_uid,
                    "eviction": evict[t.eviction] if t.eviction < 5 else t.eviction,
                    "durability": durable[t.durability] if t.durability < 3 else t.durability,
                    "open_connections": t.open_connections})
            if not n.value:
                break
            first += n.value
        return out

    def stats_by_name(self, name):
        """A table's counters (as :meth:`Table.stats`) by name, without opening it (the
        open right is needed). Raises :class:`DynembError`: ``ENOENT`` no such table,
        ``EACCES`` no right on it."""
        s = _native.Stats()
        with self._lock:
            rc = _native.api.dynemb_stats_by_name(self._handle(), str(name).encode("utf-8"),
                                                  ctypes.byref(s))
        _check(rc)
        return {f: getattr(s, f) for f, _ in _native.Stats._fields_ if f != "reserved"}

    _OPS = (None, "lookup", "update", "erase", "stats", "apply_grads", "sample", "topk",
            "key_strings")

    def op_stats(self):
        """Per-op counters since the daemon started (what ``dynembctl top`` shows), as
        ``{"ops": [...], "wal": {...} or None}``. Each of ``ops``, for every table this uid
        may open and every operation it has served: table, op ("lookup", "update",
        "erase", "stats", "apply_grads", "sample", "topk", "key_strings"), requests,
        errors, keys, sum_ns and le: the cumulative latency buckets (le[i]: requests that
        took at most 1 us << i; the last one, +Inf, is every request). ``wal`` (None
        without a data directory): last_lsn, durable_lsn, bytes_written, flushes, fsyncs,
        flush_ns_sum and flush_le, cumulative as le."""
        cap = 64
        for _ in range(8):  # each retry has room for twice what the last one counted
            buf = (_native.OpStat * cap)()
            n, w = ctypes.c_size_t(), _native.WalStats()
            with self._lock:
                rc = _native.api.dynemb_op_stats(self._handle(), buf, cap, ctypes.byref(n),
                                                 ctypes.byref(w))
            if rc != -_errno.ENOBUFS:
                break
            cap = 2 * n.value + 16  # tables and ops may come meanwhile
        _check(rc)
        ops = [{"table": e.table.decode("utf-8", "replace"),
                "op": self._OPS[e.op] if 0 < e.op < len(self._OPS) else e.op,
                "requests": e.requests, "errors": e.errors, "keys": e.keys,
                "sum_ns": e.sum_ns, "le": list(e.le)} for e in buf[:n.value]]
        wal = None
        if w.present:
            wal = {f: getattr(w, f) for f in ("last_lsn", "durable_lsn", "bytes_written",
                                              "flushes", "fsyncs", "flush_ns_sum")}
            wal["flush_le"] = list(w.flush_le)
        return {"ops": ops, "wal": wal}

    def zero_copy_counts(self):
        """(local_keys, remote_keys): read-only lookups served from this process's mapping
        of the table vs. keys that went to the daemon."""
        lo, re = ctypes.c_uint64(), ctypes.c_uint64()
        with self._lock:
            _native.api.dynemb_zero_copy_counts(self._handle(), ctypes.byref(lo), ctypes.byref(re))
        return lo.value, re.value


class Table:
    """A table opened by :meth:`Client.open`; ``.dim``, ``.name``, ``.key_type``."""

    def __init__(self, client, handle, name, dim, key_type):
        self.client, self.handle, self.name = client, handle, name
        self.dim, self.key_type = dim, key_type

    def __repr__(self):
        return f"<dynemb.Table {self.name!r} dim={self.dim} keys={self.key_type}>"

    def _keys(self, keys):
        """(packed keys, shape, n): an ndarray for int64 tables, _StrKeys for str tables."""
        if self.key_type == "str":
            k = _StrKeys(keys)
            return k, k.shape, k.n
        k = _int_keys(keys)
        return k, k.shape, k.size

    def _out(self, out, shape):
        want = shape + (self.dim,)
        if out is None:
            return np.empty(want, dtype=np.float32)
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy.ndarray, not {type(out).__name__}")
        if out.dtype != _F32:
            raise TypeError(f"out must be float32, not {out.dtype}")
        if out.shape != want:
            raise ValueError(f"out has shape {out.shape}, expected {want}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be C-contiguous and writeable")
        return out

    def lookup(self, keys, readonly=False, step=0, out=None, with_status=False):
        """Embeddings of ``keys``: float32 of shape ``keys.shape + (dim,)``.

        Without ``readonly`` missing keys are created with the table's initializer (``step``
        is recorded with each key); with it they read as zeros. ``out``: an array to fill
        in place (returned). ``with_status``: also return a uint8 array of ``keys.shape``
        with ST_MISSING / ST_FOUND / ST_CREATED per key.
        """
        k, shape, n = self._keys(keys)
        out = self._out(out, shape)
        status = np.empty(shape, dtype=np.uint8) if with_status else None
        flags = READONLY if readonly else 0
        step = _u64(step, "step")
        if n:
            sp = None if status is None else status.ctypes.data
            with self.client._lock:
                c = self.client._handle()
                if self.key_type == "str":
                    rc = _native.api.dynemb_lookup_str(c, self.handle, k.ptrs.ctypes.data,
                                                   k.lens.ctypes.data, n, out.ctypes.data,
                                                   sp, flags, step)
                else:
                    rc = _native.api.dynemb_lookup(c, self.handle, k.ctypes.data, n,
                                               out.ctypes.data, sp, flags, step)
                _check(rc)
        return (out, status) if with_status else out

    def update(self, keys, values, step=0):
        """Assign ``values`` (shape ``keys.shape + (dim,)``) to ``keys``, creating missing
        ones; returns how many were created. A NaN or infinite value raises ``EINVAL``
        (naming its row and column) and nothing is assigned."""
        k, shape, n = self._keys(keys)
        want = shape + (self.dim,)
        v = values if isinstance(values, np.ndarray) else np.asarray(values)
        if v.dtype.kind not in "fiu":
            raise TypeError(f"values must be real numbers (float32 for no copy), "
                            f"not dtype {v.dtype}")
        if v.shape != want:
            raise ValueError(f"values has shape {v.shape}, expected keys.shape + (dim,) "
                             f"= {want}")
        if v.dtype != _F32 or not v.flags.c_contiguous:
            v = np.ascontiguousarray(v, dtype=np.float32)
        step = _u64(step, "step")
        if not n:
            return 0
        created = ctypes.c_size_t()
        with self.client._lock:
            c = self.client._handle()
            if self.key_type == "str":
                rc = _native.api.dynemb_update_str(c, self.handle, k.ptrs.ctypes.data,
                                               k.lens.ctypes.data, n, v.ctypes.data, step,
                                               ctypes.byref(created))
            else:
                rc = _native.api.dynemb_update(c, self.handle, k.ctypes.data, n, v.ctypes.data,
                                           step, ctypes.byref(created))
            _check(rc)
        return created.value

    def _grad_args(self, keys, grads, step, lr):
        """The checked arguments of an apply: (packed keys, n, float32 grads, step, lr)."""
        k, shape, n = self._keys(keys)
        want = shape + (self.dim,)
        g = grads if isinstance(grads, np.ndarray) else np.asarray(grads)
        if g.dtype.kind not in "fiu":
            raise TypeError(f"grads must be real numbers (float32 for no copy), "
                            f"not dtype {g.dtype}")
        if g.shape != want:
            raise ValueError(f"grads has shape {g.shape}, expected keys.shape + (dim,) "
                             f"= {want}")
        if g.dtype != _F32 or not g.flags.c_contiguous:
            g = np.ascontiguousarray(g, dtype=np.float32)
        step = _u64(step, "step")
        if lr is None:
            lr = 0.0
        else:
            lr = float(lr)
            if not lr > 0:  # also NaN; infinities are the library's -EINVAL
                raise ValueError(f"lr must be > 0 (or None for the table's), got {lr}")
        return k, n, g, step, lr

    def apply_gradients(self, keys, grads, step=0, lr=None):
        """Push gradients to the table's optimizer; returns the distinct keys stepped.

        ``grads``: shape ``keys.shape + (dim,)``; a C-contiguous native float32 array is
        passed without a copy, other real dtypes are converted. Duplicate keys are summed
        and stepped once. ``step`` is recorded with the rows. ``lr``: None uses the table's
        learning rate; a float > 0 overrides it for this call. A non-finite gradient or
        lr raises ``EINVAL`` and nothing is applied; a table without an optimizer raises
        ``EOPNOTSUPP``.
        """
        k, n, g, step, lr = self._grad_args(keys, grads, step, lr)
        if not n:
            return 0
        applied = ctypes.c_size_t()
        with self.client._lock:
            c = self.client._handle()
            if self.key_type == "str":
                rc = _native.api.dynemb_apply_gradients_str(c, self.handle, k.ptrs.ctypes.data,
                                                        k.lens.ctypes.data, n, g.ctypes.data,
                                                        step, lr, ctypes.byref(applied))
            else:
                rc = _native.api.dynemb_apply_gradients(c, self.handle, k.ctypes.data, n,
                                                    g.ctypes.data, step, lr,
                                                    ctypes.byref(applied))
            _check(rc)
        return applied.value

    def erase(self, keys):
        """Erase ``keys``; returns how many existed."""
        k, _, n = self._keys(keys)
        if not n:
            return 0
        erased = ctypes.c_size_t()
        with self.client._lock:
            c = self.client._handle()
            if self.key_type == "str":
                rc = _native.api.dynemb_erase_str(c, self.handle, k.ptrs.ctypes.data,
                                              k.lens.ctypes.data, n, ctypes.byref(erased))
            else:
                rc = _native.api.dynemb_erase(c, self.handle, k.ctypes.data, n,
                                          ctypes.byref(erased))
            _check(rc)
        return erased.value

    # ---- persistence (the daemon's data_dir / export_dir) ------------------------------

    def snapshot(self, full=False, progress=None):
        """Snapshot this table now (see :meth:`Client.snapshot`)."""
        return self.client.snapshot(self.name, full=full, progress=progress)

    def export(self, path, progress=None):
        """The daemon writes this table to ``path`` (absolute, under its ``export_dir``;
        written as the daemon's user). Returns ``{"records", "bytes"}``."""
        records, nbytes = ctypes.c_uint64(), ctypes.c_uint64()
        cb, err = _progress_cb(progress)
        with self.client._lock:
            rc = _native.api.dynemb_export(self.client._handle(), self.name.encode("utf-8"),
                                       os.fsencode(path), cb, None, ctypes.byref(records),
                                       ctypes.byref(nbytes))
        _progress_raise(err)
        _check(rc)
        return {"records": records.value, "bytes": nbytes.value}

    def import_(self, path, salvage=False, progress=None):
        """The daemon reads ``path`` (an export; absolute, under its ``export_dir``) into
        this table, whose config must match the file's. ``salvage``: keep the verified
        prefix of a damaged file. A persisted table takes a full snapshot before this
        returns. Returns ``{"records", "imported", "dropped", "problem"}``."""
        r = ImportResult()
        cb, err = _progress_cb(progress)
        with self.client._lock:
            rc = _native.api.dynemb_import(self.client._handle(), self.name.encode("utf-8"),
                                       os.fsencode(path), 1 if salvage else 0, cb, None,
                                       ctypes.byref(r))
        _progress_raise(err)
        _check(rc)
        return {"records": r.records, "imported": r.imported, "dropped": r.dropped,
                "problem": r.problem.decode("utf-8", "replace") or None}

    import_file = import_

    def stats(self):
        """The table's counters (struct dynemb_stats) as a dict."""
        s = Stats()
        with self.client._lock:
            _check(_native.api.dynemb_stats(self.client._handle(), self.handle, ctypes.byref(s)))
        return {name: getattr(s, name) for name, _ in Stats._fields_ if name != "reserved"}

    # ---- sampling, top-k, key strings ------------------------------------------------

    def sample(self, num_sampled, positives=(), kind="log_uniform", unique=True, power=0.75,
               seed=None):
        """Draw ``num_sampled`` candidates from the table's live keys (server side).

        ``positives``: the true classes (keys of this table; may be empty), any shape.
        ``kind``: "uniform", "log_uniform" (keys ranked by how often they were looked up)
        or "unigram" (frequency ** ``power``). ``unique``: no repeated candidates.
        ``seed``: None draws a fresh one; the same seed and table state give the same draw.
        Returns ``(sampled, true_expected, sampled_expected, accidental)``: sampled is
        uint64 ``(num_sampled,)`` (string tables: a list of str), true_expected float32 of
        ``positives``' shape, sampled_expected float32 ``(num_sampled,)`` (expected counts
        as TensorFlow's candidate samplers define them), accidental bool ``(num_sampled,)``
        (the candidate is one of the positives). ENOENT: the table has no key.
        """
        k = _choice(_SAMPLERS, kind, "kind")
        n = operator.index(num_sampled)
        if n <= 0:
            raise ValueError(f"num_sampled must be > 0, got {n}")
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        spec = SampleSpec(k, n, 1 if unique else 0, float(power) if k == 2 else 0.0,
                          _u64(seed, "seed"))
        pk, shape, npos = self._keys(positives)
        sampled = np.empty(n, dtype=np.uint64)
        sexp = np.empty(n, dtype=np.float32)
        texp = np.empty(shape, dtype=np.float32)
        acc = np.empty(n, dtype=np.uint8)
        with self.client._lock:
            c = self.client._handle()
            if self.key_type == "str":
                rc = _native.api.dynemb_sample_str(c, self.handle, ctypes.byref(spec),
                                               pk.ptrs.ctypes.data if npos else None,
                                               pk.lens.ctypes.data if npos else None, npos,
                                               sampled.ctypes.data, sexp.ctypes.data,
                                               texp.ctypes.data, acc.ctypes.data)
            else:
                rc = _native.api.dynemb_sample(c, self.handle, ctypes.byref(spec),
                                           pk.ctypes.data if npos else None, npos,
                                           sampled.ctypes.data, sexp.ctypes.data,
                                           texp.ctypes.data, acc.ctypes.data)
            _check(rc)
        out = self.key_strings(sampled) if self.key_type == "str" else sampled
        return out, texp, sexp, acc.astype(bool)

    def topk(self, queries, k, metric="dot"):
        """Exact top-``k`` keys for each query (float32 ``(nq, dim)``; one query may be
        ``(dim,)``). ``metric``: "dot" or "cosine". Returns ``(keys, scores, found)``:
        uint64 ``(nq, k)`` (string tables: lists of str, "" past found), float32
        ``(nq, k)`` best first (ties by key), and int ``(nq,)`` valid entries per query
        (fewer when the table has fewer keys: the rest are key 0, score -inf)."""
        m = _choice(_METRICS, metric, "metric")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        single = q.ndim == 1
        if single:
            q = q.reshape(1, -1)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (nq, {self.dim}), not {q.shape}")
        k = operator.index(k)
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        nq = q.shape[0]
        keys = np.zeros((nq, k), dtype=np.uint64)
        scores = np.zeros((nq, k), dtype=np.float32)
        found = np.zeros(nq, dtype=np.uint32)
        if nq:
            with self.client._lock:
                _check(_native.api.dynemb_topk(self.client._handle(), self.handle, q.ctypes.data,
                                           nq, k, m, keys.ctypes.data, scores.ctypes.data,
                                           found.ctypes.data))
        found = found.astype(np.int64)
        if self.key_type == "str":
            flat = self.key_strings(keys.reshape(-1))
            keys = [[flat[i * k + j] if j < found[i] else "" for j in range(k)]
                    for i in range(nq)]
            if single:
                return keys[0], scores[0], found[0]
            return keys, scores, found
        if single:
            return keys[0], scores[0], found[0]
        return keys, scores, found

    def key_strings(self, keys):
        """String tables: the strings of fingerprints (uint64, e.g. from topk / sample) as
        a list of str; None for a key the table has no string for."""
        if self.key_type != "str":
            raise TypeError("key_strings needs a string table")
        k = np.ascontiguousarray(np.asarray(keys, dtype=np.uint64).reshape(-1))
        n = k.size
        lens = np.empty(n, dtype=np.uint32)
        cap = 64 * n + 64
        while True:
            buf = ctypes.create_string_buffer(cap)
            with self.client._lock:
                rc = _native.api.dynemb_key_strings(self.client._handle(), self.handle,
                                                k.ctypes.data, n, buf, cap, lens.ctypes.data)
            if rc == -_errno.ENOSPC:
                cap = int(lens[lens != 0xFFFFFFFF].sum()) + 1
                continue
            _check(rc)
            break
        out, off, raw = [], 0, buf.raw
        for ln in lens.tolist():
            if ln == 0xFFFFFFFF:
                out.append(None)
                continue
            out.append(raw[off:off + ln].decode("utf-8", "surrogateescape"))
            off += ln
        return out

    def string_key(self, s):
        """The uint64 fingerprint of string ``s`` in this table (as the daemon maps it)."""
        b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        out = ctypes.c_uint64()
        with self.client._lock:
            _check(_native.api.dynemb_string_key(self.client._handle(), self.handle, b, len(b),
                                             ctypes.byref(out)))
        return out.value

    def lookup_async(self, keys, readonly=False, step=0):
        """Submit a lookup of int64 ``keys`` without waiting; returns a :class:`Request`.

        The keys are copied into the channel at submit time, so ``keys`` may be reused at
        once. Several requests may be in flight (up to the channel's ring and data area).
        String tables have no async lookup (``TypeError``).
        """
        if self.key_type != "int64":
            raise TypeError("lookup_async needs an int64 table")
        k = _int_keys(keys)
        flags = READONLY if readonly else 0
        step = _u64(step, "step")
        req = ctypes.c_uint64()
        with self.client._lock:
            _check(_native.api.dynemb_submit_lookup(self.client._handle(), self.handle,
                                                k.ctypes.data, k.size, flags, step,
                                                ctypes.byref(req)))
        return Request(self, req.value, k.shape)

    def apply_gradients_async(self, keys, grads, step=0, lr=None):
        """Submit :meth:`apply_gradients` of int64 ``keys`` without waiting; returns a
        :class:`GradRequest` (``.result()``: the distinct keys stepped).

        Keys and gradients are copied into the channel at submit time (both arrays may be
        reused at once); a non-finite gradient or a bad ``lr`` raises here and nothing is
        submitted. One request holds at most the daemon's max batch keys (``E2BIG``: use
        :meth:`apply_gradients`, which splits). The daemon runs a channel's requests in
        the order they were submitted, so any later request of this client (a lookup of
        the same keys included) sees the update, completed or not. String tables have no
        async apply (``TypeError``).
        """
        if self.key_type != "int64":
            raise TypeError("apply_gradients_async needs an int64 table")
        k, n, g, step, lr = self._grad_args(keys, grads, step, lr)
        req = ctypes.c_uint64()
        with self.client._lock:
            _check(_native.api.dynemb_submit_apply_gradients(
                self.client._handle(), self.handle, k.ctypes.data, n, g.ctypes.data, step,
                lr, ctypes.byref(req)))
        return GradRequest(self, req.value)


class ServingTable(Table):
    """A serving table opened by :meth:`Client.open_serving`: read-only, int64 keys.
    Every write (update, apply_gradients, erase, ...) raises ``EROFS``."""

    def __repr__(self):
        return f"<dynemb.ServingTable {self.name!r} dim={self.dim}>"

    def lookup(self, keys, readonly=True, step=0, out=None, with_status=False,
               with_version=False):
        """Embeddings of ``keys`` (float32 of shape ``keys.shape + (dim,)``), read from the
        current version's memory without a daemon round trip; missing keys read the
        table's default (zeros, or the initializer with ``miss_init``) and are never
        created. ``out``, ``with_status`` as :meth:`Table.lookup` (ST_FOUND / ST_MISSING);
        ``with_version``: also return the version that answered the whole batch (last in
        the tuple). ``ESTALE``: the name's new version has another dim (open it again).
        ``readonly`` and ``step`` are accepted for :meth:`Table.lookup`'s signature and
        change nothing."""
        k, shape, n = self._keys(keys)
        out = self._out(out, shape)
        status = np.empty(shape, dtype=np.uint8) if with_status else None
        version = ctypes.c_uint64()
        with self.client._lock:
            c = self.client._handle()
            if n:
                rc = _native.api.dynemb_serve_lookup(
                    c, self.handle, k.ctypes.data, n, out.ctypes.data,
                    None if status is None else status.ctypes.data, ctypes.byref(version))
                _check(rc)
            else:
                info = ServeInfo()
                _check(_native.api.dynemb_serve_info(c, self.handle, ctypes.byref(info)))
                version.value = info.version
        res = (out,) + ((status,) if with_status else ()) + \
            ((version.value,) if with_version else ())
        return res if len(res) > 1 else out

    def info(self):
        """This handle's view: ``{"version", "found", "missing", "switches"}`` (the version
        it reads now, keys answered from a row and with the default, versions moved to)."""
        s = ServeInfo()
        with self.client._lock:
            _check(_native.api.dynemb_serve_info(self.client._handle(), self.handle,
                                                 ctypes.byref(s)))
        return {"version": s.version, "found": s.found, "missing": s.missing,
                "switches": s.switches}

    @property
    def version(self):
        """The version this handle reads now (it moves at the next lookup after a swap)."""
        return self.info()["version"]


class GradRequest:
    """An async apply_gradients in flight (from :meth:`Table.apply_gradients_async`)."""

    def __init__(self, table, req_id):
        self.table, self.id = table, req_id
        self._result = None

    def result(self, timeout_ms=-1):
        """Wait (``timeout_ms`` < 0: the client's timeout) and return how many distinct
        keys were stepped. The daemon's error (e.g. ``EOPNOTSUPP``: no optimizer) raises
        here. A timeout raises DynembError(ETIMEDOUT) and the request stays in flight."""
        if self._result is not None:
            return self._result
        client = self.table.client
        count = ctypes.c_uint64()
        with client._lock:
            c = client._handle()
            _check(_native.api.dynemb_complete(c, self.id, int(timeout_ms)))
            _check(_native.api.dynemb_request_counts(c, self.id, ctypes.byref(count), None))
        self._result = count.value
        return self._result


class Request:
    """An async lookup in flight (from :meth:`Table.lookup_async`)."""

    def __init__(self, table, req_id, shape):
        self.table, self.id, self.shape = table, req_id, shape
        self._result = None

    def result(self, timeout_ms=-1):
        """Wait (``timeout_ms`` < 0: the client's timeout) and return the embeddings.

        The array has shape ``keys.shape + (dim,)`` ((n, dim) for 1-D keys), is read-only,
        and WRAPS the channel's shared memory without a copy: it is valid until the next
        request on the same client and never after the client is closed. Use
        ``result().copy()`` to keep it. A timeout raises DynembError(ETIMEDOUT) and the
        request stays in flight: call ``result`` again.
        """
        if self._result is not None:
            return self._result
        client, dim = self.table.client, self.table.dim
        n = int(np.prod(self.shape, dtype=np.int64))
        with client._lock:
            c = client._handle()
            _check(_native.api.dynemb_complete(c, self.id, int(timeout_ms)))
            ptr = _native.api.dynemb_request_vals(c, self.id)
        if not ptr:
            raise DynembError(_errno.EBADMSG, "dynemb_request_vals gave no result")
        buf = (ctypes.c_float * (n * dim)).from_address(ptr)
        buf._dynemb_client = client  # the mapping lives as long as the client is open
        arr = np.ctypeslib.as_array(buf).reshape(self.shape + (dim,))
        arr.flags.writeable = False
        self._result = arr
        return arr
