"""Server-side optimizers through the Python package, against independent references.

* Adam: torch.optim.Adam with sparse (per-key) semantics, as tests/learn/test_optim.py
  does it: one torch Parameter of shape [dim] per key, each with its own optimizer,
  stepped only in the steps where the key is in the batch, with the batch's summed
  gradient for that key and that step's lr (set through param_groups). 50 steps,
  duplicate keys in every batch, the lr changed halfway (per-call override). 1e-5.
* FTRL: a numpy float64 transcription of FTRL-Proximal with TF's conventions (torch has
  no FTRL), written here.
* Concurrency: two threads, a client each, push integer gradients to the same rows with
  SGD lr=1 from zeros: the result must be the exact sum.
* Every error the package or the daemon reports for the learning config and gradients.
"""

import errno
import threading

import numpy as np
import pytest

import dynemb

torch = pytest.importorskip("torch")

DIM = 4
STEPS = 50


def _stream(seed, pool, batch, keys_kind="int64"):
    """STEPS batches: (keys, grads) with duplicate keys drawn from pool keys."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        idx = rng.integers(0, pool, size=batch)
        g = rng.standard_normal((batch, DIM)).astype(np.float32)
        if keys_kind == "str":
            keys = np.array([f"k{i}" for i in idx], dtype=object)
        else:
            keys = (idx + 1000).astype(np.int64)
        out.append((idx, keys, g))
    return out


def _summed(idx, g):
    """{pool index: float32 sum of its gradients, in batch order} (as the daemon sums)."""
    sums = {}
    for i, k in enumerate(idx):
        k = int(k)
        sums[k] = g[i].copy() if k not in sums else sums[k] + g[i]
    return sums


@pytest.mark.parametrize("keys_kind", ["int64", "str"])
def test_adam_matches_torch(client, tname, keys_kind):
    pool, lr0, lr1 = 12, 0.01, 0.003
    t = client.open(tname, DIM, init="constant", init_a=0.5, keys=keys_kind,
                    optimizer="adam", lr=lr0, betas=(0.9, 0.999), eps=1e-8)
    params = [torch.nn.Parameter(torch.full((DIM,), 0.5)) for _ in range(pool)]
    opts = [torch.optim.Adam([p], lr=lr0, betas=(0.9, 0.999), eps=1e-8) for p in params]
    for step, (idx, keys, g) in enumerate(_stream(1, pool, 20, keys_kind)):
        lr = lr0 if step < STEPS // 2 else lr1
        applied = t.apply_gradients(keys, g, step=step, lr=None if step < STEPS // 2 else lr)
        sums = _summed(idx, g)
        assert applied == len(sums)
        for k, s in sums.items():
            for group in opts[k].param_groups:
                group["lr"] = lr
            params[k].grad = torch.from_numpy(s)
            opts[k].step()
    keys = ([f"k{i}" for i in range(pool)] if keys_kind == "str"
            else np.arange(1000, 1000 + pool, dtype=np.int64))
    got = t.lookup(keys, readonly=True)
    want = np.stack([p.detach().numpy() for p in params])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _ftrl_reference(w, n, z, g, lr, l1, l2, lr_power, beta):
    """One FTRL-Proximal step (TF convention: l2 penalty l2*|w|^2), float64, in place."""
    n2 = n + g * g
    sigma = (n2 ** -lr_power - n ** -lr_power) / lr
    z += g - sigma * w
    n[:] = n2
    denom = n2 ** -lr_power / lr + beta / lr + 2 * l2
    w[:] = np.where(np.abs(z) <= l1, 0.0, (np.sign(z) * l1 - z) / denom)


def test_ftrl_matches_numpy_reference(client, tname):
    pool, lr0, lr1, l1, l2, acc = 10, 0.1, 0.05, 0.001, 0.01, 0.1
    t = client.open(tname, DIM, init="constant", init_a=0.2, optimizer="ftrl", lr=lr0,
                    l1=l1, l2=l2, initial_accumulator_value=acc)
    w = np.full((pool, DIM), 0.2)
    n = np.full((pool, DIM), acc)
    z = np.zeros((pool, DIM))
    for step, (idx, keys, g) in enumerate(_stream(2, pool, 16)):
        lr = lr0 if step < STEPS // 2 else lr1
        t.apply_gradients(keys, g, step=step, lr=lr)
        for k, s in _summed(idx, g).items():
            _ftrl_reference(w[k], n[k], z[k], s.astype(np.float64), lr, l1, l2, -0.5, 0.0)
    got = t.lookup(np.arange(1000, 1000 + pool), readonly=True)
    np.testing.assert_allclose(got, w, atol=1e-5, rtol=0)


def test_concurrent_trainers_exact_sum(daemon, tname):
    rounds, nkeys = 300, 32
    keys = np.arange(1, nkeys + 1, dtype=np.uint64)
    errors = []

    def push(tid):
        try:
            with dynemb.Client(daemon, name=f"trainer{tid}") as c:
                t = c.open(tname, DIM, init="zeros", optimizer="sgd", lr=1.0)
                for r in range(rounds):
                    g = np.full((nkeys, DIM), float((r % 5) + tid), dtype=np.float32)
                    t.apply_gradients(keys, g, step=r)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=push, args=(i,)) for i in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    with dynemb.Client(daemon) as c:
        t = c.open(tname, DIM, init="zeros", optimizer="sgd", lr=1.0)
        got = t.lookup(keys, readonly=True)
    want = -sum((r % 5) + tid for tid in (1, 2) for r in range(rounds))
    assert np.array_equal(got, np.full((nkeys, DIM), want, dtype=np.float32))


def test_grads_without_copy(client, tname, monkeypatch):
    t = client.open(tname, DIM, init="zeros", optimizer="sgd", lr=1.0)
    keys = np.array([5, 6, 5], dtype=np.int64)
    g = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    seen = {}
    real = dynemb._native.api.dynemb_apply_gradients

    def spy(c, h, kp, n, gp, step, lr, applied):
        seen.update(kp=kp, gp=gp, lr=lr)
        return real(c, h, kp, n, gp, step, lr, applied)

    monkeypatch.setattr(dynemb._native.api, "dynemb_apply_gradients", spy)
    assert t.apply_gradients(keys, g, step=3) == 2
    assert seen["kp"] == keys.ctypes.data and seen["gp"] == g.ctypes.data
    assert seen["lr"] == 0.0
    got = t.lookup([5, 6], readonly=True)
    np.testing.assert_array_equal(got, -np.stack([g[0] + g[2], g[1]]))


def test_learning_errors(client, tname):
    plain = client.open(tname + "p", DIM, init="zeros")
    with pytest.raises(dynemb.DynembError) as ei:
        plain.apply_gradients([1], np.ones((1, DIM), np.float32))
    assert ei.value.errno == errno.EOPNOTSUPP
    t = client.open(tname, DIM, init="zeros", optimizer="sgd", lr=0.5)
    bad = np.ones((2, DIM), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(dynemb.DynembError) as ei:
        t.apply_gradients([1, 2], bad)
    assert ei.value.errno == errno.EINVAL
    _, st = t.lookup([1, 2], readonly=True, with_status=True)
    assert list(st) == [dynemb.ST_MISSING] * 2, "a rejected call applies nothing"
    with pytest.raises(ValueError):
        t.apply_gradients([1], np.ones((2, DIM), np.float32))  # length mismatch
    with pytest.raises(ValueError):
        t.apply_gradients([1], np.ones((1, DIM), np.float32), lr=float("nan"))
    with pytest.raises(ValueError):
        t.apply_gradients([1], np.ones((1, DIM), np.float32), lr=-1)
    with pytest.raises(dynemb.DynembError) as ei:
        t.apply_gradients([1], np.ones((1, DIM), np.float32), lr=float("inf"))
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(TypeError):
        t.apply_gradients([1], np.array([["a"] * DIM]))
    # config errors: names and modes here, values by the daemon (with its reason)
    with pytest.raises(ValueError):
        client.open(tname + "x", DIM, optimizer="adamax")
    with pytest.raises(ValueError):
        client.open(tname + "x", DIM, lr=0.1)  # a hyperparameter without an optimizer
    with pytest.raises(ValueError):
        client.open(tname + "x", DIM, optimizer="sgd", eviction={"policy": "lru", "size": 1})
    with pytest.raises(ValueError):
        client.open(tname + "x", DIM, optimizer="sgd", durability="fast")
    cases = [dict(optimizer="adam", betas=(1.0, 0.999)),
             dict(optimizer="ftrl", lr_power=0.5),
             dict(optimizer="adam", nslots=1),
             dict(optimizer="sgd", admission={"mode": "probability", "probability": 0}),
             dict(optimizer="sgd", admission={"min_count": 2, "sketch_width": 100}),
             dict(optimizer="sgd", eviction={"policy": "lru"}),
             dict(optimizer="sgd", eviction={"policy": "ttl", "ttl": 0}),
             dict(optimizer="sgd", durability={"mode": "async", "window_ms": 10 ** 6})]
    for kw in cases:
        with pytest.raises(dynemb.DynembError) as ei:
            client.open(tname + "x", DIM, **kw)
        assert ei.value.errno == errno.EINVAL, kw
    # the full config opens, and any differing field is EEXIST naming it
    full = dict(optimizer="adagrad", lr=0.1, admission={"min_count": 3, "reject_value": "zeros"},
                eviction={"policy": "lfu", "budget_bytes": 1 << 30, "lfu_decay": 1000.0,
                          "disk_tier": True},
                durability={"mode": "async", "window_ms": 20})
    client.open(tname + "f", DIM, **full)
    client.open(tname + "f", DIM, **full)
    with pytest.raises(dynemb.DynembError) as ei:
        client.open(tname + "f", DIM, **dict(full, lr=0.2))
    assert ei.value.errno == errno.EEXIST and "optimizer.lr" in str(ei.value)
    with pytest.raises(dynemb.DynembError) as ei:
        client.open(tname + "f", DIM, **dict(full, durability="sync"))
    assert ei.value.errno == errno.EEXIST and "durability.mode" in str(ei.value)
