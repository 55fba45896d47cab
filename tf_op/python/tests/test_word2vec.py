"""The paper's word2vec claim, small version: skip-gram (SGNS) trained through dynemb with
SGD, Adagrad and Momentum has the loss curve of the same model on a plain nn.Embedding
sized for the whole final vocabulary (tools/word2vec_lib/sgns.py; tools/word2vec runs the
full version).

* Final losses (mean of the last 40 batches) within 2% relative, and the moving averages
  within 2% all along, for each optimizer; training must actually lower the loss; at most
  one trained row in 1000 differs by more than 1e-3 between dynemb and the reference.
* The vocabulary grows: the dynemb input table's key count, read at checkpoints, rises,
  and equals the number of distinct center words of the pairs trained so far, counted here
  from the corpus.
* Negative control: a reference with half the SGD lr ends > 2% away (the bound can fail).
* The references themselves: LazyMomentum against torch.optim.SGD(momentum) with one
  parameter per row stepped only when the row has a gradient; the corpus is deterministic,
  Zipf-like and topical.
* String keys (Adagrad) and the tools/word2vec script (--json, PNG, JSON file).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dynemb  # noqa: E402

from conftest import ROOT, tool_lib  # noqa: E402

W = tool_lib("word2vec_lib")

pytestmark = pytest.mark.slow

BOUND = 0.02


@pytest.fixture(scope="module")
def small(daemon):
    torch.set_num_threads(1)
    with dynemb.Client(daemon, name="w2v-test") as c:
        return W.run(c, W.SMALL, controls={"sgd": 0.5})


@pytest.mark.parametrize("opt", W.sgns.OPTIMIZERS)
def test_loss_curves_match(small, opt):
    r = small["results"][opt]
    assert r["batches"] == W.Corpus(**W.SMALL).nbatches
    assert r["rel_diff"] < BOUND, r["rel_diff"]
    assert r["max_rel_dev"] < BOUND, r["max_rel_dev"]
    # it learned: the loss fell well below its start (random SGNS loss is 6 log 2 = 4.16)
    assert r["final_torch"] < 0.8 * 6 * np.log(2), r["final_torch"]
    assert r["final_torch"] < r["first_torch"] * 0.95
    # the parameters agree too: at most 1 row in 1000 has an element 1e-3 apart (Adagrad
    # can turn fp32 rounding of a ~1e-9 gradient history into an O(lr) step)
    assert r["rows_over_1e3"] <= r["rows_compared"] // 1000, r["rows_over_1e3"]
    # every row dynemb created held the reference's initial value (checked as created)
    assert r["created_checked"] == r["vocab"][-1]["keys_in"]


@pytest.mark.parametrize("opt", W.sgns.OPTIMIZERS)
def test_vocabulary_grew(small, opt):
    cfg = W.SMALL
    corpus = W.Corpus(**cfg)
    vocab = small["results"][opt]["vocab"]
    assert len(vocab) >= 5
    keys_in = [v["keys_in"] for v in vocab]
    assert all(a < b for a, b in zip(keys_in, keys_in[1:])), keys_in
    assert keys_in[-1] > 10 * keys_in[0]
    for v in vocab:
        distinct = np.unique(corpus.centers[:v["batch"] * cfg["batch"]]).size
        assert v["keys_in"] == distinct, v
        ctx = np.unique(corpus.contexts[:v["batch"] * cfg["batch"]]).size
        reached = np.unique(corpus.tokens[:v["sentence"] + 1]).size
        assert ctx <= v["keys_out"] <= reached, v
    # words that did not exist at the start were trained
    first_v = corpus.vocab_at[0]
    assert (corpus.centers[-cfg["batch"]:] >= first_v).any()
    revealed = [v["revealed"] for v in vocab]
    assert revealed[0] <= cfg["vocab"] * cfg["start_frac"] + cfg["vocab"] // 100
    assert revealed[-1] >= 0.99 * cfg["vocab"]


def test_negative_control_fails_bound(small):
    c = small["results"]["sgd"]["control"]
    assert c["lr"] == W.SMALL["lr"]["sgd"] * 0.5
    assert c["rel_diff"] > BOUND, c


def test_string_keys(daemon):
    with dynemb.Client(daemon, name="w2v-str") as c:
        out = W.run(c, W.SMALL, ["adagrad"], keys="str", batches=200)
    r = out["results"]["adagrad"]
    assert r["batches"] == 200
    assert r["rel_diff"] < BOUND and r["max_rel_dev"] < BOUND, r
    assert r["vocab"][-1]["keys_in"] > 5 * r["vocab"][0]["keys_in"]


def test_lazy_momentum_is_per_row_torch_sgd():
    """LazyMomentum == torch.optim.SGD(momentum) on one parameter per row, each stepped
    only in the steps where its row has a gradient (summed over duplicates)."""
    rng = np.random.default_rng(3)
    rows, dim, lr, m = 7, 3, 0.1, 0.9
    w0 = rng.standard_normal((rows, dim)).astype(np.float32)
    emb = torch.nn.Embedding(rows, dim, sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(w0))
    lazy = W.LazyMomentum([emb.weight], lr, m)
    params = [torch.nn.Parameter(torch.from_numpy(w0[i].copy())) for i in range(rows)]
    opts = [torch.optim.SGD([p], lr=lr, momentum=m) for p in params]
    for _ in range(30):
        idx = rng.integers(0, 4 if _ < 10 else rows, size=5)  # some rows start late
        g = rng.standard_normal((5, dim)).astype(np.float32)
        lazy.zero_grad()
        (emb(torch.from_numpy(idx)) * torch.from_numpy(g)).sum().backward()
        lazy.step()
        for k in np.unique(idx):
            params[k].grad = torch.from_numpy(g[idx == k].sum(0))
            opts[k].step()
    want = torch.stack([p.detach() for p in params]).numpy()
    np.testing.assert_allclose(emb.weight.detach().numpy(), want, atol=1e-5, rtol=0)


def test_corpus():
    a, b = W.Corpus(**W.SMALL), W.Corpus(**W.SMALL)
    assert np.array_equal(a.tokens, b.tokens)
    c = W.Corpus(**dict(W.SMALL, seed=2))
    assert not np.array_equal(a.tokens, c.tokens)
    # no sentence uses a word not yet revealed; the vocabulary revealed grows
    assert (a.tokens < a.vocab_at[:, None]).all()
    assert np.all(np.diff(a.vocab_at) >= 0) and a.vocab_at[-1] == W.SMALL["vocab"]
    # Zipf-like: log frequency against log rank falls with a slope near -1 (top ranks)
    f = np.bincount(a.tokens.ravel(), minlength=W.SMALL["vocab"])[:100]
    slope = np.polyfit(np.log(np.arange(1, 101)), np.log(f + 1), 1)[0]
    assert -1.4 < slope < -0.6, slope
    # topical: pairs share a topic far more often than chance (1/T)
    T = W.SMALL["topics"]
    same = np.mean(a.centers % T == a.contexts % T)
    assert same > 0.5 > 5.0 / T, same


def test_tool_json(daemon, tmp_path):
    build = os.environ.get("DYNEMB_BUILD", "build")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "word2vec"), "--small",
                        "--socket", daemon, "--build", build, "--json", "--quiet",
                        "--optimizers", "sgd,momentum", "--batches", "60", "--seed", "5",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["ok"] and out["seed"] == 5 and "--seed 5" in out["command"]
    assert set(out["results"]) == {"sgd", "momentum"}
    for r in out["results"].values():
        assert r["batches"] == 60 and r["rel_diff"] < BOUND
    assert os.path.getsize(tmp_path / "word2vec.png") > 1000
    with open(tmp_path / "word2vec.json") as f:
        full = json.load(f)
    assert len(full["results"]["sgd"]["loss_dynemb"]) == 60
