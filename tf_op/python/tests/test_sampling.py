"""Table.sample / Table.topk / key strings and dynemb.losses against references computed
here: numpy brute force for top-k, TF's expected-count formulas for sampling, and plain
torch (full softmax over [true, sampled] with the same corrections, autograd for the row
gradients) for the sampled losses."""

import math

import numpy as np
import pytest

import dynemb

torch = pytest.importorskip("torch")
from dynemb import losses  # noqa: E402


def _fill(table, n, seed=0, first=1):
    rng = np.random.default_rng(seed)
    keys = np.arange(first, first + n, dtype=np.uint64)
    vals = rng.standard_normal((n, table.dim)).astype(np.float32)
    table.update(keys, vals)
    return keys, vals


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_topk_vs_numpy(client, tname, metric):
    t = client.open(tname, 6, init="zeros")
    keys, vals = _fill(t, 300, seed=1)
    q = np.random.default_rng(2).standard_normal((9, 6)).astype(np.float32)
    got_k, got_s, found = t.topk(q, 12, metric=metric)
    sc = q.astype(np.float64) @ vals.astype(np.float64).T
    if metric == "cosine":
        sc /= np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(vals, axis=1)[None, :]
    assert found.tolist() == [12] * 9
    for i in range(9):
        order = np.argsort(-sc[i], kind="stable")[:12]
        np.testing.assert_allclose(got_s[i], sc[i, order], rtol=1e-5, atol=1e-5)
        idx = {int(k): j for j, k in enumerate(keys)}
        np.testing.assert_allclose([sc[i, idx[int(k)]] for k in got_k[i]], sc[i, order],
                                   rtol=1e-5, atol=1e-5)
    # one query as a vector; more k than keys
    k1, s1, f1 = t.topk(q[0], 500)
    assert f1 == 300 and (k1[300:] == 0).all() and np.isneginf(s1[300:]).all()


def test_topk_errors(client, tname):
    t = client.open(tname, 4)
    with pytest.raises(ValueError):
        t.topk(np.zeros((2, 5), np.float32), 3)
    with pytest.raises(ValueError):
        t.topk(np.zeros((2, 4), np.float32), 0)
    with pytest.raises(ValueError):
        t.topk(np.zeros((2, 4), np.float32), 3, metric="l1")
    with pytest.raises(dynemb.DynembError) as e:
        t.topk(np.full((1, 4), np.nan, np.float32), 3)
    assert e.value.errno == 22


def test_sample_uniform_probabilities(client, tname):
    t = client.open(tname, 2)
    keys, _ = _fill(t, 50)
    s, te, se, acc = t.sample(20, [3, 7, 1000], kind="uniform", unique=False, seed=4)
    assert s.shape == (20,) and se.shape == (20,) and te.shape == (3,) and acc.shape == (20,)
    assert set(s.tolist()) <= set(keys.tolist())
    np.testing.assert_allclose(se, 20 / 50, rtol=1e-6)      # n * P, T == n
    np.testing.assert_allclose(te, 20 / 50, rtol=1e-6)
    assert acc.tolist() == [int(k) in (3, 7) for k in s]
    s2 = t.sample(20, [3, 7, 1000], kind="uniform", unique=False, seed=4)[0]
    assert (s == s2).all()
    su, _, seu, _ = t.sample(40, [], kind="uniform", unique=True, seed=5)
    assert len(set(su.tolist())) == 40
    tries = math.log1p(-float(seu[0])) / math.log1p(-1 / 50)  # 1 - (1 - p)^T
    assert tries >= 40 - 1e-3 and abs(tries - round(tries)) < 1e-2
    with pytest.raises(dynemb.DynembError) as e:
        t.sample(51, [], kind="uniform", unique=True)
    assert e.value.errno == 34  # ERANGE


def test_sample_unigram_follows_frequency(client, tname):
    t = client.open(tname, 2)
    freq = {100 + i: i + 1 for i in range(8)}
    for k, f in freq.items():
        for _ in range(f):
            t.lookup(np.array([k], dtype=np.uint64))
    # the first unigram sample of this table builds its snapshot now: no wait needed
    n = 20000
    s, te, se, _ = t.sample(n, [100, 107], kind="unigram", unique=False, power=0.5, seed=9)
    w = np.array([freq[k] ** 0.5 for k in sorted(freq)])
    p = w / w.sum()
    counts = np.array([(s == k).sum() for k in sorted(freq)])
    assert (np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p)) + 1).all(), (counts, n * p)
    np.testing.assert_allclose(te, [n * p[0], n * p[7]], rtol=1e-4)


def test_string_tables_give_strings(client, tname):
    t = client.open(tname, 3, keys="str")
    words = [f"w{i}" for i in range(20)]
    vals = np.zeros((20, 3), np.float32)
    vals[:, 0] = np.arange(20)
    t.update(words, vals)
    k, s, f = t.topk(np.array([1, 0, 0], np.float32), 3)
    assert k == ["w19", "w18", "w17"]
    assert t.key_strings([t.string_key("w5"), 12345]) == ["w5", None]
    sampled, te, se, acc = t.sample(20, ["w4"], kind="uniform", unique=True, seed=1)
    assert sorted(sampled) == sorted(words) and acc.sum() == 1
    assert sampled[int(np.flatnonzero(acc)[0])] == "w4"


# ---- sampled losses ------------------------------------------------------------------------

def _reference(rows_by_key, x, labels, sampled, te, se, num_true, bias, kind):
    """Plain torch: logits over [true, sampled] with -log(expected) and per-row accidental
    hits masked; returns (loss per example, {key: grad of its row})."""
    keys = sorted(rows_by_key)
    W = torch.tensor(np.stack([rows_by_key[k] for k in keys]), requires_grad=True)
    pos = {k: i for i, k in enumerate(keys)}
    d = x.shape[1]
    xr = x.detach().clone().requires_grad_(True)
    b = x.shape[0]
    out = []
    for i in range(b):
        lg = []
        for t in range(num_true):
            w = W[pos[int(labels[i, t])]]
            v = xr[i] @ w[:d] + (w[d] if bias else 0) - math.log(float(te[i * num_true + t]))
            lg.append(v)
        for j, sk in enumerate(sampled):
            w = W[pos[int(sk)]]
            v = xr[i] @ w[:d] + (w[d] if bias else 0) - math.log(float(se[j]))
            if int(sk) in [int(z) for z in labels[i]]:
                v = v - float(np.finfo(np.float32).max)
            lg.append(v)
        lg = torch.stack(lg)
        if kind == "softmax":
            out.append(-torch.log_softmax(lg, 0)[:num_true].sum() / num_true)
        else:
            tgt = torch.zeros_like(lg)
            tgt[:num_true] = 1.0 / num_true
            out.append(torch.nn.functional.binary_cross_entropy_with_logits(
                lg, tgt, reduction="sum"))
    loss = torch.stack(out)
    loss.sum().backward()
    return loss.detach(), xr.grad, {k: W.grad[pos[k]].numpy() for k in keys}


@pytest.mark.parametrize("kind,bias,num_true", [("softmax", False, 1), ("softmax", True, 2),
                                                ("sigmoid", True, 1)])
def test_sampled_loss_matches_reference(client, tname, kind, bias, num_true):
    d, ncls, b, ns = 5, 40, 6, 8
    t = client.open(tname, d + (1 if bias else 0), init="uniform", optimizer="sgd", lr=1.0)
    ids = np.arange(1, ncls + 1, dtype=np.uint64)
    t.lookup(ids)  # every class has a row (and a lookup count for log-uniform)
    rng = np.random.default_rng(3)
    labels = rng.integers(1, ncls + 1, size=(b, num_true)).astype(np.int64)
    x = torch.tensor(rng.standard_normal((b, d)).astype(np.float32), requires_grad=True)
    sampled, te, se, _ = t.sample(ns, labels.reshape(-1).astype(np.uint64), kind="uniform",
                                  unique=True, seed=11)
    before = {int(k): r for k, r in zip(ids, t.lookup(ids, readonly=True))}
    fn = losses.sampled_softmax_loss if kind == "softmax" else losses.sampled_sigmoid_loss
    loss = fn(t, x, labels, ns, num_true=num_true, bias=bias, step=1,
              sampled_values=(sampled, te, se))
    ref_loss, ref_gx, ref_gw = _reference(before, x, labels, sampled, te, se, num_true, bias,
                                          kind)
    np.testing.assert_allclose(loss.detach().numpy(), ref_loss.numpy(), rtol=1e-5, atol=1e-5)
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), ref_gx.numpy(), rtol=1e-4, atol=1e-5)
    after = {int(k): r for k, r in zip(ids, t.lookup(ids, readonly=True))}
    for k in before:  # SGD lr 1: new row = old row - pushed gradient
        np.testing.assert_allclose(before[k] - after[k], ref_gw[k], rtol=1e-4, atol=1e-5,
                                   err_msg=f"class {k}")


def test_sampled_softmax_draws_with_seed(client, tname):
    t = client.open(tname, 4, init="uniform", optimizer="sgd", lr=0.1)
    t.lookup(np.arange(1, 30, dtype=np.uint64))
    x = torch.randn(3, 4)
    labels = np.array([1, 2, 3])
    a = losses.sampled_softmax_loss(t, x, labels, 5, sampler="uniform", seed=7)
    s, te, se, _ = t.sample(5, labels.astype(np.uint64), kind="uniform", unique=True, seed=7)
    b = losses.sampled_softmax_loss(t, x, labels, 5, sampler="uniform",
                                    sampled_values=(s, te, se))
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6)
    with pytest.raises(ValueError):
        losses.sampled_softmax_loss(t, x, labels, 5, bias=True)


def test_admission_and_eviction_settings_reach_the_daemon(client, tname):
    t = client.open(tname, 4, init="constant", init_a=0.5,
                    # the sketch counts in the 3 MiB budget: 2^16 x 4 counters, 512 KiB
                    admission={"mode": "count", "min_count": 2, "reject_value": "zeros",
                               "sketch_width": 1 << 16},
                    eviction={"policy": "lru", "budget_bytes": 3 << 20})
    k = np.array([7], dtype=np.uint64)
    v, st = t.lookup(k, with_status=True)
    assert st[0] == dynemb.ST_MISSING and (v == 0).all()   # first sighting: zeros
    v, st = t.lookup(k, with_status=True)
    assert st[0] == dynemb.ST_CREATED and (v == 0.5).all()  # second: admitted
    s = t.stats()
    assert (s["admitted"], s["filtered"], s["budget_bytes"]) == (1, 1, 3 << 20)
    assert 0 < s["resident_bytes"] <= 3 << 20
