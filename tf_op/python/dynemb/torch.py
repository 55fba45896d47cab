"""dynemb.torch: a PyTorch embedding layer whose rows live in the dynemb sidecar.

:class:`DynamicEmbedding` is an ``nn.Module`` like ``nn.Embedding`` / ``nn.EmbeddingBag``
with no vocabulary and no weight: keys (int64 or strings, any shape) are looked up in a
dynembd table, which creates the rows of keys it has never seen with the table's
initializer, and the backward pass sends the gradients to the daemon, which applies the
table's own optimizer (``Client.open(..., optimizer=..., lr=...)``). The paper's
DynamicEmbedding: the forward is a lookup, the backward is an update on the server.

    import torch, dynemb.torch as det
    emb = det.DynamicEmbedding("user", 16, socket_path=sock,
                               optimizer="adagrad", lr=0.05)   # server-side optimizer
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)          # the dense part only
    for keys, y in batches:
        loss = F.binary_cross_entropy_with_logits(mlp(emb(keys)).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()      # <- pushes the embedding gradients to dynembd (one apply)
        opt.step()           #    and fills the MLP's .grad for the torch optimizer

How it works. ``forward`` takes the unique keys of the call (padding removed), looks them
up (creating, in training mode), and gathers / bags the rows on the caller's side; the
unique keys and the inverse index are kept for backward. Autograd sums the output
gradient into one row per unique key (the index_add of a gather), and backward calls
``table.apply_gradients(unique_keys, grads, step=self.step, lr=self.lr)`` once. The
daemon applies the optimizer per key (src/learn/de_learn.h: torch.optim's formulas, with
"sparse" semantics: keys without a gradient are not stepped).

Pipelining (what TorchRec's train pipelines do, in three parts; each keeps the rows a
plain synchronous module reads unless said otherwise):

* **Async pushes** (``async_push=True``). Backward does not wait for its apply: the
  pushes of one ``loss.backward()`` are submitted together when it ends
  (``Table.apply_gradients_async``), and the daemon runs them while the MLP's optimizer
  step and the next batch's key preparation run. The next forward on the same Client
  submits its lookups, then completes the pushes (raising their errors, e.g.
  ``EOPNOTSUPP``), then its lookups. The daemon runs a channel's requests in the order
  they were submitted (one worker serves a channel, in ring order: src/server/worker.c),
  so a lookup submitted after a push reads the pushed rows: no stale row. What is not
  ordered with the channel: control requests (snapshot, export, import, drop) and other
  connections; call :func:`flush` (or ``module.flush()`` / ``close()``) first. A
  non-finite gradient still raises at backward (checked at submit).
* **Several tables in one round** (:func:`lookup_many`, :class:`DynamicEmbeddingCollection`,
  as TorchRec's EmbeddingBagCollection): the lookups of every module are submitted before
  the first is waited for.
* **Prefetch** (``DynamicEmbeddingCollection.prefetch(next_batch)``): the next batch's
  lookups are submitted while this one computes. ``strict=True`` (the default) re-reads,
  after this batch's pushes, the prefetched keys the collection's modules pushed since
  the prefetch, so results equal the plain modules'; ``strict=False`` skips that and a
  key updated by batch i and prefetched for batch i + 1 reads its pre-update row (one
  step stale). Strict is the default because the difference changes training results
  and is invisible otherwise; the re-read costs a lookup of the keys both batches share.
* **One copy.** An async lookup's rows are read straight from the channel's shared memory
  (valid until the next submit on that Client) and copied once, into the tensor that
  autograd sees (with the zero padding row appended).

Rules a caller must know:

* **No dense parameter.** ``parameters()`` and ``state_dict()`` are empty: the embeddings
  and their optimizer state live in the daemon. Give the module's *other* layers to a
  ``torch.optim`` optimizer as usual; ``zero_grad`` / ``step`` of that optimizer do not
  touch the embeddings, and there is nothing to clip or to put on a GPU.
* **One apply per forward, at backward.** Each forward call that reaches the loss makes
  exactly one ``apply_gradients`` when ``loss.backward()`` runs (with ``async_push``:
  submitted when it ends, completed by the next forward or :func:`flush`) (a module called twice in
  one step makes two). A forward whose output is never backpropagated applies nothing.
  Under ``torch.no_grad()`` nothing is recorded. Calling backward twice through the same
  graph (``retain_graph=True``) applies twice.
* **step.** ``self.step`` (an int, start with ``step=``) is passed with every lookup (the
  rows' last-seen step, used by eviction) and every apply. With ``auto_step=True`` (the
  default) it grows by one after each apply, so a training loop with one forward per
  step needs nothing else; set ``emb.step`` yourself to follow a global step instead.
* **lr.** ``self.lr`` is None (the table's configured lr) or a float that overrides it
  for the next applies (a schedule: ``emb.lr = sched(step)``).
* **eval mode.** With ``readonly_in_eval=True`` (the default) lookups after
  ``module.eval()`` do not create rows: keys the table does not hold read as zeros.
* **padding.** ``padding_key`` (default: the daemon's reserved empty key, 0 for int64
  tables and ``""`` for string tables; None to disable) gives a zero vector, is excluded
  from sum/mean bags (a mean divides by the number of other keys; an all-padding bag is
  zeros), and gets no gradient, as ``padding_idx`` does in ``nn.EmbeddingBag``.
* **processes.** A :class:`dynemb.Client` is not fork-safe. Without ``client=`` the
  module connects lazily to ``socket_path``, one Client per process shared by all its
  modules: build the model in the parent, fork or spawn trainers, and each opens its own
  connection on its first forward. A connection inherited through ``fork`` is left alone,
  never used or closed from the child. Pickling (``spawn``) drops the connection. Threads
  of one process share the Client (it serialises calls with a lock); for parallel
  trainer threads give each module its own ``client=`` (needed with ``async_push``,
  collections and prefetch: an async lookup's rows live in the channel only until the
  Client's next submit, which another thread could make). DataLoader workers should only
  produce keys; the module runs in the trainer.
"""

import errno as _errno
import os
import threading
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import dynemb as _dynemb

__all__ = ["DynamicEmbedding", "DynamicEmbeddingCollection", "lookup_many", "flush",
           "close_clients"]

# Errors of an async submit that the blocking call handles (it waits for room, or splits
# a batch larger than one request): the caller falls back to it.
_FALLBACK = (_errno.EAGAIN, _errno.E2BIG, _errno.ENOBUFS)
# Async gradient pushes not completed yet, per Client: {client: (pid, [GradRequest])}.
_pending = weakref.WeakKeyDictionary()

_DEFAULT = object()
# One Client per (process, socket), shared by the modules of that process (a Client has a
# lock; each has a shared-memory channel, so one per module would waste them). Entries of
# another pid are what a forked child inherited from its parent: they stay referenced, so
# that their __del__ never runs dynemb_close on the parent's connection from the child.
_clients = {}


def _client_for(socket_path):
    key = (os.getpid(), socket_path)
    c = _clients.get(key)
    if c is None or c.closed:
        c = _clients[key] = _dynemb.Client(socket_path, name=f"torch:{os.getpid()}")
    return c


def close_clients():
    """Close this process's shared connections (modules reconnect on their next use).
    Async pushes in flight are completed first (their errors raise)."""
    flush()
    pid = os.getpid()
    for key in [k for k in _clients if k[0] == pid]:
        _clients.pop(key).close()


def _add_pending(client, req):
    ent = _pending.get(client)
    if ent is None or ent[0] != os.getpid():
        ent = _pending[client] = (os.getpid(), [])
    ent[1].append(req)


def _submit_push(t, ukeys, grads, step, lr):
    """Submit one async push (or, without room or over the max batch, wait for the pushes
    in flight and apply it blocking)."""
    try:
        _add_pending(t.client, t.apply_gradients_async(ukeys, grads, step=step, lr=lr))
        return
    except _dynemb.DynembError as e:
        if e.errno not in _FALLBACK:
            raise
    _drain(t.client)
    t.apply_gradients(ukeys, grads, step=step, lr=lr)


_tls = threading.local()   # .queued: the async pushes of this thread's running backward


def _queue():
    q = getattr(_tls, "queued", None)
    if q is None:
        q = _tls.queued = []
    return q


def _submit_queued():
    queued = _queue()
    q = queued[:]
    queued.clear()
    first = None
    for args in q:                 # all of them, even after an error: none is lost
        try:
            _submit_push(*args)
        except _dynemb.DynembError as e:
            first = first or e
    if first is not None:
        raise first


def _queue_push(t, ukeys, grads, step, lr):
    """An async push from a backward: queued, and the queue submitted back to back when
    the backward ends (the daemon's worker wakes once for them, not once per module)."""
    queued = _queue()
    if not queued:
        try:
            torch.autograd.Variable._execution_engine.queue_callback(_submit_queued)
        except RuntimeError:       # not inside autograd's engine: submit now
            _submit_push(t, ukeys, grads, step, lr)
            return
    queued.append((t, ukeys, grads, step, lr))


def _drain(client):
    """Complete the async pushes of ``client`` (this process's), oldest first; each wait is
    bounded by the client's timeout. All are completed; the first error raises."""
    ent = _pending.get(client)
    if ent is None or ent[0] != os.getpid() or not ent[1]:
        return
    reqs = ent[1][:]
    ent[1].clear()
    first = None
    for r in reqs:
        try:
            if not client.closed:
                r.result()
        except _dynemb.DynembError as e:
            first = first or e
    if first is not None:
        raise first


def flush():
    """Wait for every async gradient push of this process (``async_push=True`` modules)
    and raise the first error. Lookups and other calls on the same Client need no flush
    (the daemon runs a channel's requests in order); call it before a snapshot, an
    export or a read through another connection, and at the end of training."""
    pid = os.getpid()
    first = None
    for c, ent in list(_pending.items()):
        if ent[0] == pid:
            try:
                _drain(c)
            except _dynemb.DynembError as e:
                first = first or e
    if first is not None:
        raise first


def _padded(rows, dim):
    """rows (n, dim), possibly a view of channel memory -> a new [n + 1, dim] tensor whose
    last row is zeros (padding): the one copy out of the channel."""
    n = len(rows)
    w = torch.empty(n + 1, dim)
    wn = w.numpy()
    wn[:n] = rows
    wn[n] = 0
    return w


class _LookupPush(torch.autograd.Function):
    """forward: the looked-up rows of the unique keys plus a padding row; backward: one
    apply_gradients of the unique keys' rows of the gradient.

    ``dummy`` is a fresh tensor with requires_grad=True: the module has no parameter, and
    autograd only runs a backward whose function has an input that requires grad.
    """

    @staticmethod
    def forward(ctx, dummy, owner, ukeys, rows):
        ctx.owner, ctx.ukeys, ctx.n = owner, ukeys, len(rows)
        return _padded(rows, owner.dim)

    @staticmethod
    def backward(ctx, grad):
        g = grad[:ctx.n].detach().to(dtype=torch.float32, device="cpu").contiguous().numpy()
        ctx.owner._push(ctx.ukeys, g)
        return None, None, None, None


class _Plan:
    """One forward call of a module between its submit and its finish: the unique keys,
    the index into their rows, the layout, and the lookup in flight (or None: blocking)."""

    __slots__ = ("owner", "uniq", "idx", "shape", "offsets", "psw", "ilo", "train", "req",
                 "rows", "keys")

    def __init__(self, owner):
        self.owner, self.req, self.rows, self.keys = owner, None, None, None

    def abandon(self):
        """Complete a lookup left in flight by an error (its slot and data area come back);
        its own error is dropped: the caller raises the first one."""
        r, self.req = self.req, None
        _settle([r])


def _settle(reqs):
    """Complete requests left in flight by an error, dropping their own errors."""
    for r in reqs:
        if r is not None and not r.table.client.closed:
            try:
                r.result()
            except _dynemb.DynembError:
                pass


def _run(plans):
    """Submit the lookups of plans (all before waiting for any), complete the async pushes
    of their clients, then complete each lookup and build its output. On any error every
    submitted lookup is completed before it raises (nothing stays in flight)."""
    try:
        for p in plans:
            p.owner._submit(p)
        seen = []
        for p in plans:
            c = p.owner.table.client
            if not any(c is x for x in seen):
                seen.append(c)
                _drain(c)
        return [p.owner._finish(p) for p in plans]
    except BaseException:
        for p in plans:
            p.abandon()
        raise


def lookup_many(modules, keys):
    """The outputs of ``modules[i](keys[i])`` for each i, with all the lookups submitted
    before the first is waited for (the daemon works on them together): one round of
    waits instead of one per module. Bag modules take 2-D keys here (one bag per row)."""
    modules, keys = list(modules), list(keys)
    if len(modules) != len(keys):
        raise ValueError(f"{len(modules)} modules but {len(keys)} key sets")
    return _run([m._plan(k) for m, k in zip(modules, keys)])


class DynamicEmbedding(nn.Module):
    """``DynamicEmbedding(name, dim, *, client=None, socket_path=None, keys='int64',
    mode=None, padding_key=<empty key>, step=0, auto_step=True, readonly_in_eval=True,
    async_push=False, **table_config)``

    ``name``, ``dim``, ``keys`` and ``table_config`` (``optimizer``, ``lr``, ``init``,
    ``init_a``, ``init_b``, ``seed``, ``nslots``, the optimizer's hyperparameters) go to
    ``Client.open``: modules (or processes) that open the same name with the same config
    share the table. ``client``: a :class:`dynemb.Client` to use (this process only);
    else the module connects to ``socket_path`` (None: the daemon's default socket).

    ``mode``: None (output ``keys.shape + (dim,)``), ``'sum'`` or ``'mean'`` (bags, as
    ``nn.EmbeddingBag``: a 2-D input is one bag per row, a 1-D input needs ``offsets``).

    ``async_push``: backward submits the apply without waiting for it; the next forward
    on the same Client completes it (see "Pipelining" in the module docs).

    Attributes: ``step`` (see the module docs), ``lr`` (None: the table's lr; a float
    overrides it for the following applies), ``async_push``, ``table`` (this process's
    Table).
    """

    def __init__(self, name, dim, *, client=None, socket_path=None, keys="int64", mode=None,
                 padding_key=_DEFAULT, step=0, auto_step=True, readonly_in_eval=True,
                 async_push=False, **table_config):
        super().__init__()
        if mode not in (None, "sum", "mean"):
            raise ValueError(f"mode must be None, 'sum' or 'mean', not {mode!r}")
        if keys not in ("int64", "str"):
            raise ValueError(f"keys must be 'int64' or 'str', not {keys!r}")
        if padding_key is _DEFAULT:
            padding_key = 0 if keys == "int64" else ""
        self.name, self.dim, self.key_type, self.mode = name, int(dim), keys, mode
        self.padding_key = padding_key
        self.step, self.auto_step, self.lr = int(step), bool(auto_step), None
        self.readonly_in_eval = bool(readonly_in_eval)
        self.async_push = bool(async_push)
        self._pushed_log = None    # keys pushed since a prefetch (a collection's strict mode)
        self._table_config = dict(table_config)
        self._socket_path = socket_path
        self._given_client = client
        self._conn = None          # (pid, Client or None, Table)
        self.table                 # open now: a bad config fails here, not mid-training

    # -- connection -------------------------------------------------------------------
    @property
    def table(self):
        """The :class:`dynemb.Table` of this process (connecting on first use)."""
        pid = os.getpid()
        conn = self._conn
        if conn is not None and conn[0] == pid and not conn[1].closed:
            return conn[2]
        if self._given_client is not None:
            c = self._given_client
        else:
            c = _client_for(self._socket_path)
        t = c.open(self.name, self.dim, keys=self.key_type, **self._table_config)
        if t.dim != self.dim:
            raise ValueError(f"table {self.name!r} has dim {t.dim}, not {self.dim}")
        self._conn = (pid, c, t)
        return t

    def close(self):
        """Forget this process's table handle; the connection is shared by the process's
        modules and stays open (:func:`close_clients` closes it). A later forward
        reopens the table. Async pushes of the connection are completed first."""
        conn = self._conn
        self._conn = None
        if conn is not None and conn[0] == os.getpid() and not conn[1].closed:
            _drain(conn[1])

    def flush(self):
        """Complete this module's connection's async pushes (their errors raise)."""
        conn = self._conn
        if conn is not None and conn[0] == os.getpid() and not conn[1].closed:
            _drain(conn[1])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_conn"] = None
        if state.get("_given_client") is not None:
            raise TypeError("a DynamicEmbedding built with client= cannot be pickled; "
                            "give it socket_path= instead")
        return state

    def extra_repr(self):
        return (f"{self.name!r}, {self.dim}, keys={self.key_type}, mode={self.mode}, "
                f"padding_key={self.padding_key!r}, step={self.step}")

    # -- the two calls to the daemon ---------------------------------------------------
    def _readonly(self):
        return self.readonly_in_eval and not self.training

    def _lookup(self, ukeys):
        return self.table.lookup(ukeys, readonly=self._readonly(), step=self.step)

    def _push(self, ukeys, grads):
        t = self.table
        if not hasattr(t, "apply_gradients"):
            raise RuntimeError("dynemb.Table has no apply_gradients: this dynemb package "
                               "predates server-side optimizers")
        if len(ukeys):
            if self._pushed_log is not None:
                self._pushed_log.append(np.asarray(ukeys))
            if self.async_push and self.key_type == "int64":
                _queue_push(t, ukeys, grads, self.step, self.lr)
            else:
                t.apply_gradients(ukeys, grads, step=self.step, lr=self.lr)
        if self.auto_step:
            self.step += 1

    # -- keys --------------------------------------------------------------------------
    def _keys(self, keys):
        """keys -> a numpy array (int64/uint64, or object of str/bytes) and its shape."""
        if isinstance(keys, torch.Tensor):
            if self.key_type == "str":
                raise TypeError("a string table takes str keys, not a tensor")
            if keys.dtype.is_floating_point or keys.dtype.is_complex or \
                    keys.dtype == torch.bool:
                raise TypeError(f"keys must be an integer tensor, not {keys.dtype}")
            return keys.detach().cpu().to(torch.int64).numpy()
        if self.key_type == "str":
            if isinstance(keys, (str, bytes)):
                return np.array([keys], dtype=object).reshape(())
            a = np.array(keys, dtype=object)
            return a
        a = np.asarray(keys)
        if a.dtype.kind not in "iu":
            if a.size == 0:
                return a.astype(np.int64)
            raise TypeError(f"int64 keys must be integers, not dtype {a.dtype}")
        return a if a.dtype in (np.int64, np.uint64) else a.astype(np.int64)

    def _is_pad(self, flat):
        if self.padding_key is None:
            return None
        if self.key_type == "str":
            pk = self.padding_key
            alt = pk.encode("utf-8") if isinstance(pk, str) else pk.decode("utf-8")
            return np.fromiter((k == pk or k == alt for k in flat), dtype=bool,
                               count=len(flat))
        pk = self.padding_key
        if flat.dtype == np.uint64 and pk < 0:
            pk += 1 << 64
        elif flat.dtype == np.int64 and pk >= 1 << 63:
            pk -= 1 << 64
        return flat == pk

    def _unique(self, flat):
        """(unique keys, index of each key into rows [n_unique + 1, dim] whose last row is
        the zero row of padding)."""
        pad = self._is_pad(flat)
        if pad is not None and pad.any():
            uniq, inv = np.unique(flat[~pad], return_inverse=True)
            idx = np.full(len(flat), len(uniq), dtype=np.int64)
            idx[~pad] = inv
        else:
            uniq, inv = np.unique(flat, return_inverse=True)
            idx = inv.astype(np.int64, copy=False)
        if self.key_type == "str":
            uniq = uniq.tolist()
        return uniq, idx

    # -- one call in three parts: plan (keys), submit (the lookup), finish (output) -----
    def _plan(self, keys, offsets=None, per_sample_weights=None, include_last_offset=False):
        p = _Plan(self)
        k = self._keys(keys)
        shape = k.shape
        flat = k.reshape(-1)
        if self.mode is None:
            if offsets is not None or per_sample_weights is not None:
                raise ValueError("offsets / per_sample_weights need mode='sum' or 'mean'")
        elif len(shape) == 2:
            if offsets is not None:
                raise ValueError("offsets go with 1-D keys; 2-D keys are one bag per row")
        elif len(shape) == 1:
            if offsets is None:
                raise ValueError("1-D keys in a bag mode need offsets")
            offsets = torch.as_tensor(offsets, dtype=torch.int64)
            if offsets.dim() != 1:
                raise ValueError("offsets must be 1-D")
        else:
            raise ValueError(f"bag modes take 1-D keys with offsets or 2-D keys, not "
                             f"{len(shape)}-D")
        p.keys = flat
        p.uniq, p.idx = self._unique(flat)
        p.shape, p.offsets, p.ilo = shape, offsets, include_last_offset
        p.psw = None
        if per_sample_weights is not None:
            p.psw = torch.as_tensor(per_sample_weights, dtype=torch.float32).reshape(-1)
        p.train = torch.is_grad_enabled() and self.training
        return p

    def _submit(self, p):
        """Submit p's lookup without waiting (int64 tables); else p.req stays None and
        _finish makes a blocking lookup."""
        if self.key_type != "int64" or not len(p.uniq) or p.rows is not None:
            return
        try:
            p.req = self.table.lookup_async(p.uniq, readonly=self._readonly(), step=self.step)
        except _dynemb.DynembError as e:
            if e.errno not in _FALLBACK:
                raise

    def _finish(self, p):
        rows = p.rows
        if rows is None:
            if p.req is not None:
                rows = p.req.result()        # a view of channel memory: copied just below
                p.req = None
            else:
                rows = self._lookup(p.uniq)
        if p.train:
            dummy = torch.empty(0, requires_grad=True)
            w = _LookupPush.apply(dummy, self, p.uniq, rows)
        else:
            w = _padded(rows, self.dim)
        idx = torch.from_numpy(p.idx)
        shape = p.shape
        if self.mode is None:
            return w.index_select(0, idx).reshape(tuple(shape) + (self.dim,))
        psw = p.psw
        if len(shape) == 2:
            idx = idx.reshape(shape)
            if psw is not None:
                psw = psw.reshape(shape)
        return F.embedding_bag(idx, w, p.offsets, mode=self.mode, per_sample_weights=psw,
                               include_last_offset=p.ilo, padding_idx=w.shape[0] - 1)

    # -- forward -----------------------------------------------------------------------
    def forward(self, keys, offsets=None, per_sample_weights=None, include_last_offset=False):
        """Embeddings of ``keys`` (``mode=None``: ``keys.shape + (dim,)``) or of bags
        (``'sum'``/``'mean'``: ``[n_bags, dim]``; ``offsets`` for 1-D keys, as in
        ``nn.EmbeddingBag``; ``per_sample_weights`` with ``'sum'`` only)."""
        return _run([self._plan(keys, offsets, per_sample_weights, include_last_offset)])[0]


class DynamicEmbeddingCollection(nn.Module):
    """``DynamicEmbeddingCollection(modules, strict=True)``: several DynamicEmbeddings
    looked up together, as TorchRec's EmbeddingBagCollection groups its tables.

    ``modules``: a dict ``{name: DynamicEmbedding}`` (kept as ``self.embs``, an
    ``nn.ModuleDict``). ``forward(batch)`` takes a dict ``{name: keys}`` (every name; bag
    modules take 2-D keys, one bag per row) and returns ``{name: output}``: all the
    lookups are submitted before the first is waited for (:func:`lookup_many`).

    ``prefetch(batch)`` submits the lookups of a later batch now, so that the daemon
    serves them while this batch's MLP, backward and optimizer step run; the next
    ``forward`` of a batch with the same keys uses them (other keys: the prefetch is
    dropped and looked up again). Consistency: a prefetched lookup runs before the
    gradient pushes submitted after it, so on its own it misses them. With ``strict``
    (the default) ``forward`` looks up again, after those pushes, the keys this
    collection's modules pushed since the prefetch, and uses those rows: the output is
    what a plain forward would have read. ``strict=False`` skips that re-read: a key
    updated by batch i and prefetched for batch i + 1 reads its row from before batch
    i's update (one step stale; pushes of other modules or processes are never
    tracked). A prefetch also records the step of the time of the prefetch with the
    rows it creates. A prefetch in flight holds its region of the channel's data area,
    and the client's FIFO allocator does not reuse the requests after it until it is
    completed: consume it with the next forward; many other requests on the same Client
    meanwhile run out of request slots (``EAGAIN``).

    Measured on the CTR demo (2 loaded cores), prefetch did not pay: the daemon's work
    for batch i + 1 competes for the cores with batch i's backward, and strict mode adds
    a lookup of the re-read keys; async pushes and the grouped lookups did. It is off
    unless called.
    """

    def __init__(self, modules, strict=True):
        super().__init__()
        for n, m in modules.items():
            if not isinstance(m, DynamicEmbedding):
                raise TypeError(f"module {n!r} is a {type(m).__name__}, not a "
                                f"DynamicEmbedding")
        self.embs = nn.ModuleDict(modules)
        self.strict = bool(strict)
        self._prefetched = None    # {name: _Plan}, submitted

    def _keys_of(self, batch):
        missing = [n for n in self.embs if n not in batch]
        if missing:
            raise KeyError(f"batch has no keys for {missing}")
        return [batch[n] for n in self.embs]

    def prefetch(self, batch):
        """Submit the lookups of ``batch`` (a later forward's) now; see the class docs."""
        self._drop_prefetch()
        mods = list(self.embs.values())
        plans = [m._plan(k) for m, k in zip(mods, self._keys_of(batch))]
        try:
            for p in plans:
                p.owner._submit(p)
        except BaseException:
            for p in plans:
                p.abandon()
            raise
        for m in mods:
            m._pushed_log = [] if self.strict else None
        self._prefetched = dict(zip(self.embs, plans))

    def _drop_prefetch(self):
        pre, self._prefetched = self._prefetched, None
        for m in self.embs.values():
            m._pushed_log = None
        if pre:
            for p in pre.values():
                p.abandon()

    def _take_prefetch(self, plans):
        """Rows for plans from the prefetch, if it was of the same keys (else None):
        completed, copied out of the channel and, in strict mode, re-read where pushed."""
        pre = self._prefetched
        if pre is None:
            return False
        same = all(np.array_equal(pre[n].keys, p.keys) and
                   pre[n].train == p.train and pre[n].owner.training == p.owner.training
                   for n, p in zip(self.embs, plans))
        if not same:
            self._drop_prefetch()
            return False
        self._prefetched = None
        pres = list(pre.values())
        logs = [q.owner._pushed_log for q in pres]
        for q in pres:
            q.owner._pushed_log = None
        try:
            for q in pres:                 # complete all, copying, before any submit
                if q.req is not None:
                    q.rows = np.array(q.req.result())
                    q.req = None
        except BaseException:
            for q in pres:
                q.abandon()
            raise
        reread = []
        for p, q, log in zip(plans, pres, logs):
            p.rows = q.rows                # None: no async lookup, _run looks up afresh
            if p.rows is None or not log:
                continue
            stale = np.isin(p.uniq, np.concatenate(log))
            if stale.any():                # strict: read them again, after the pushes
                m, r = p.owner, None
                try:
                    r = m.table.lookup_async(p.uniq[stale], readonly=m._readonly(),
                                             step=m.step)
                except _dynemb.DynembError as e:
                    if e.errno not in _FALLBACK:
                        _settle(x for _, _, x in reread)
                        raise
                reread.append((p, stale, r))
        for i, (p, stale, r) in enumerate(reread):
            try:
                p.rows[stale] = r.result() if r is not None else p.owner._lookup(p.uniq[stale])
            except BaseException:
                _settle(x for _, _, x in reread[i + 1:])
                raise
        return True

    def forward(self, batch):
        mods = list(self.embs.values())
        plans = [m._plan(k) for m, k in zip(mods, self._keys_of(batch))]
        self._take_prefetch(plans)
        return dict(zip(self.embs, _run(plans)))

    def flush(self):
        """Complete the async pushes of the modules' connections (errors raise)."""
        for m in self.embs.values():
            m.flush()
