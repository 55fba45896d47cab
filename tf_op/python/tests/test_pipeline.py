"""dynemb.torch's pipelined paths against independent references.

* Async pushes, DynamicEmbeddingCollection and strict prefetch train to the same rows as
  plain synchronous modules on the same data, and those match torch.optim.Adagrad with
  sparse (per-key) semantics: one Parameter per key, stepped only in the steps where the
  key has a gradient (as test_learn.py does for Adam).
* Non-strict prefetch is stale by exactly the documented amount: a key updated by batch i
  and prefetched for batch i + 1 reads its row from before the update; strict re-reads.
* Table.apply_gradients_async: its count and errors.
* A daemon killed mid-pipeline: the next call raises DynembError, bounded, no hang.
"""

import errno
import os
import signal
import subprocess
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dynemb  # noqa: E402
import dynemb.torch as det  # noqa: E402
from conftest import _dynembd_path, _wait_socket  # noqa: E402

DIM = 4
STEPS = 12
pytestmark = pytest.mark.torch


def adagrad_emb(daemon, name, mode=None, **kw):
    return det.DynamicEmbedding(name, DIM, socket_path=daemon, mode=mode, optimizer="adagrad",
                                lr=0.1, eps=1e-10, init="uniform", init_a=-0.5, init_b=0.5,
                                seed=5, **kw)


def batches():
    """STEPS batches of two fields: 'a' (16 keys in 1..30), 'b' (16 bags of 3 keys in
    0..20, 0 = padding), with repeats within and across batches."""
    rng = np.random.default_rng(3)
    return [{"a": rng.integers(1, 31, size=16).astype(np.int64),
             "b": rng.integers(0, 21, size=(16, 3)).astype(np.int64)} for _ in range(STEPS)]


W = torch.linspace(-1.0, 1.0, 2 * DIM)


def loss_of(out):
    """A loss whose gradient depends on the rows (squared error): stale rows change it."""
    z = torch.cat([out["a"], out["b"]], 1) @ W
    return ((z - 0.3) ** 2).sum()


def train_plain(daemon, tag):
    ea, eb = adagrad_emb(daemon, tag + "a"), adagrad_emb(daemon, tag + "b", mode="mean")
    for b in batches():
        loss_of({"a": ea(b["a"]), "b": eb(b["b"])}).backward()
    return ea, eb


def train_collection(daemon, tag, prefetch=None):
    ea = adagrad_emb(daemon, tag + "a", async_push=True)
    eb = adagrad_emb(daemon, tag + "b", mode="mean", async_push=True)
    coll = det.DynamicEmbeddingCollection({"a": ea, "b": eb}, strict=prefetch != "loose")
    bs = batches()
    for i, b in enumerate(bs):
        out = coll(b)
        if prefetch and i + 1 < len(bs):
            coll.prefetch(bs[i + 1])   # before this batch's pushes: the stale case
        loss_of(out).backward()
    coll.flush()
    return ea, eb


def rows(e, keys):
    return e.table.lookup(np.asarray(keys, dtype=np.int64), readonly=True).copy()


def torch_reference(init_a, init_b):
    """Per-key Parameters from the initial rows ({key: row}), torch.optim.Adagrad each."""
    pa = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in init_a.items()}
    pb = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in init_b.items()}
    opts = {(f, k): torch.optim.Adagrad([p], lr=0.1, eps=1e-10)
            for f, d in (("a", pa), ("b", pb)) for k, p in d.items()}
    for b in batches():
        xa = torch.stack([pa[int(k)] for k in b["a"]])
        bags = []
        for row in b["b"]:
            ks = [int(k) for k in row if k != 0]
            bags.append(torch.stack([pb[k] for k in ks]).mean(0) if ks
                        else torch.zeros(DIM))
        loss_of({"a": xa, "b": torch.stack(bags)}).backward()
        for f, d in (("a", pa), ("b", pb)):
            for k, p in d.items():
                if p.grad is not None:       # sparse semantics: only keys of the batch
                    opts[(f, k)].step()
                    p.grad = None
    return pa, pb


KA, KB = np.arange(1, 31), np.arange(1, 21)


def test_plain_modules_match_torch_adagrad(daemon, tname):
    fresh = adagrad_emb(daemon, tname[:50] + "i")             # same seed: the initial rows
    init_a = dict(zip(KA.tolist(), fresh.table.lookup(KA.astype(np.int64))))
    init_b = dict(zip(KB.tolist(), fresh.table.lookup(KB.astype(np.int64))))
    pa, pb = torch_reference(init_a, init_b)
    ea, eb = train_plain(daemon, tname)
    np.testing.assert_allclose(rows(ea, KA), np.stack([pa[k].detach().numpy() for k in KA]),
                               atol=2e-5, rtol=0)
    np.testing.assert_allclose(rows(eb, KB), np.stack([pb[k].detach().numpy() for k in KB]),
                               atol=2e-5, rtol=0)
    assert not np.allclose(rows(ea, KA), np.stack([init_a[k] for k in KA]))


@pytest.mark.parametrize("prefetch", [None, "strict"])
def test_collection_async_and_strict_prefetch_equal_plain(daemon, tname, prefetch):
    ra, rb = train_plain(daemon, tname[:50] + "s")
    ca, cb = train_collection(daemon, tname[:50] + "c", prefetch)
    np.testing.assert_allclose(rows(ca, KA), rows(ra, KA), atol=1e-6, rtol=0)
    np.testing.assert_allclose(rows(cb, KB), rows(rb, KB), atol=1e-6, rtol=0)


def test_loose_prefetch_differs(daemon, tname):
    """The reference above can fail: stale rows give other gradients, other rows."""
    ra, _ = train_plain(daemon, tname[:50] + "s")
    ca, _ = train_collection(daemon, tname[:50] + "c", "loose")
    assert np.abs(rows(ca, KA) - rows(ra, KA)).max() > 1e-4


def sgd_emb(daemon, name, **kw):
    return det.DynamicEmbedding(name, DIM, socket_path=daemon, optimizer="sgd", lr=1.0,
                                init="constant", init_a=0.0, **kw)


@pytest.mark.parametrize("strict", [False, True])
def test_prefetch_staleness_is_one_update(daemon, tname, strict):
    e = sgd_emb(daemon, tname[:50], async_push=True)
    coll = det.DynamicEmbeddingCollection({"k": e}, strict=strict)
    out = coll({"k": torch.tensor([1, 2])})["k"]         # rows 0
    coll.prefetch({"k": torch.tensor([2, 3])})           # before batch i's update
    (out * torch.tensor([[1.0], [2.0]])).sum().backward()  # key 1 -= 1, key 2 -= 2
    got = coll({"k": torch.tensor([2, 3])})["k"].detach().numpy()
    want_2 = np.zeros(DIM) if not strict else np.full(DIM, -2.0)
    np.testing.assert_array_equal(got[0], want_2)        # loose: the pre-update row
    np.testing.assert_array_equal(got[1], np.zeros(DIM))
    coll.flush()
    np.testing.assert_array_equal(rows(e, [1, 2]), [[-1.0] * DIM, [-2.0] * DIM])


def test_prefetch_of_other_keys_is_dropped(daemon, tname):
    e = sgd_emb(daemon, tname[:50], async_push=True)
    coll = det.DynamicEmbeddingCollection({"k": e}, strict=False)
    (coll({"k": torch.tensor([5])})["k"].sum()).backward()   # key 5 -= 1 (async)
    coll.prefetch({"k": torch.tensor([7])})
    got = coll({"k": torch.tensor([5])})["k"].detach().numpy()  # not the prefetched keys
    np.testing.assert_array_equal(got, [[-1.0] * DIM])
    with pytest.raises(KeyError):
        coll({"x": torch.tensor([5])})
    with pytest.raises(TypeError):
        det.DynamicEmbeddingCollection({"k": torch.nn.Linear(2, 2)})


def test_lookup_many_equals_modules(daemon, tname):
    a, b = sgd_emb(daemon, tname[:50] + "a"), sgd_emb(daemon, tname[:50] + "b", mode="sum")
    ka, kb = torch.tensor([3, 4, 3]), torch.tensor([[3, 0], [9, 9]])
    oa, ob = det.lookup_many([a, b], [ka, kb])
    assert torch.equal(oa, a(ka)) and torch.equal(ob, b(kb))
    with pytest.raises(ValueError):
        det.lookup_many([a, b], [ka])


def test_async_push_errors_surface_at_next_forward(daemon, tname):
    e = det.DynamicEmbedding(tname, DIM, socket_path=daemon, async_push=True)  # no optimizer
    e(torch.tensor([1, 2])).sum().backward()             # submitted: no wait, no error yet
    with pytest.raises(dynemb.DynembError) as ei:
        e(torch.tensor([1]))
    assert ei.value.errno == errno.EOPNOTSUPP
    e(torch.tensor([1]))                                 # drained: usable again
    e.close()


def test_apply_gradients_async(client, tname):
    t = client.open(tname, DIM, optimizer="sgd", lr=1.0, init="constant", init_a=0.0)
    keys = np.array([4, 5, 4], dtype=np.int64)
    g = np.ones((3, DIM), np.float32)
    r = t.apply_gradients_async(keys, g)
    g[:] = 100                                           # copied at submit
    assert r.result() == 2
    np.testing.assert_array_equal(t.lookup(np.array([4, 5])), [[-2.0] * DIM, [-1.0] * DIM])
    bad = np.ones((3, DIM), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(dynemb.DynembError) as ei:
        t.apply_gradients_async(keys, bad)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(ValueError):
        t.apply_gradients_async(keys, np.ones((2, DIM), np.float32))
    s = client.open(tname[:50] + "s", DIM, keys="str", optimizer="sgd")
    with pytest.raises(TypeError):
        s.apply_gradients_async(["x"], np.ones((1, DIM), np.float32))


@pytest.fixture
def own_daemon(tmp_path):
    sock = str(tmp_path / "d.sock")
    log = tmp_path / "log"
    with open(log, "wb") as lf:
        proc = subprocess.Popen([_dynembd_path(), "--foreground", "--socket", sock,
                                 "--allow-uid", str(os.geteuid())],
                                stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT)
    _wait_socket(sock, proc, log)
    yield sock, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.parametrize("where", ["pending_push", "prefetch"])
def test_daemon_gone_mid_pipeline_raises(own_daemon, tname, where):
    sock, proc = own_daemon
    c = dynemb.Client(sock, timeout_ms=5000)
    e = det.DynamicEmbedding(tname, DIM, client=c, optimizer="sgd", async_push=True)
    coll = det.DynamicEmbeddingCollection({"k": e})
    out = coll({"k": torch.tensor([1, 2])})["k"]
    if where == "prefetch":
        coll.prefetch({"k": torch.tensor([2, 3])})
    out.sum().backward()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    with pytest.raises(dynemb.DynembError):
        coll({"k": torch.tensor([2, 3])})
    assert time.monotonic() - t0 < 60                    # bounded: no hang
    c.close()


def test_over_max_batch_falls_back_to_blocking_calls(daemon, tname):
    """More keys than one async request holds (the daemon's max batch, 65536): the lookup
    and the push go through the blocking calls, which split; the rows are the same."""
    e = sgd_emb(daemon, tname, async_push=True)
    keys = torch.arange(1, 70002)
    out = e(keys)
    assert out.shape == (70001, DIM) and not out.detach().any()
    (out * 2.0).sum().backward()                         # every row -= 2 (lr 1)
    e.flush()
    got = rows(e, [1, 65537, 70001])
    np.testing.assert_array_equal(got, np.full((3, DIM), -2.0))
    np.testing.assert_array_equal(e(torch.tensor([70001])).detach().numpy(), [[-2.0] * DIM])
