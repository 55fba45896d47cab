"""tools/demo --framework tf: the click-through comparison in TensorFlow (Keras layers,
dynemb.tensorflow's DynamicEmbedding and DynamicEmbeddingBag, Keras Adagrad and Adam).

* The hashed and fixed-vocabulary variants index the keys exactly as the PyTorch version
  does (its nn.Embedding modules are the reference): the same buckets, OOV row and
  padding, so both frameworks compare the same three embeddings.
* The paper's claim on the small run, in TensorFlow: dynemb beats a hashed table of the
  same embedding memory and a vocabulary fixed early by more than the AUC spread between
  seeds; the dynemb tables hold as many rows as the stream has distinct keys.
* --bench --framework tf starts its own daemon and reports both step rates.
"""

import importlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

from conftest import ROOT, tf_op_library, tool_lib  # noqa: E402

tf_op_library()
torch = pytest.importorskip("torch")

DEMO = os.path.join(ROOT, "tools", "demo")
tool_lib("demo_lib")
ctr = importlib.import_module("demo_lib.ctr")
ctr_tf = importlib.import_module("demo_lib.ctr_tf")


def _run(args, timeout):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run([sys.executable, DEMO, "--framework", "tf"] + args,
                       capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout), p.stderr


@pytest.mark.parametrize("bag", [False, True])
def test_indices_match_the_torch_version(bag):
    rng = np.random.default_rng(7)
    keys = rng.integers(1, 5000, size=(64, 4) if bag else 64).astype(np.int64)
    if bag:
        keys[:, 2:] = 0                                     # padding, as the stream has
    salt = ctr.mix64(np.uint64(31 * 3 + 1))
    h = ctr.HashedEmb(97, 4, bag, salt, 0.05, torch.Generator().manual_seed(0))
    got = ctr_tf.hashed_index(97, np.uint64(salt), bag)(keys)
    ref = (ctr.mix64(keys.astype(np.uint64) ^ np.uint64(salt)) % np.uint64(97)).astype(np.int64)
    if bag:
        ref[keys == 0] = 97                                 # torch's padding_idx row
        assert h.e.padding_idx == 97
    assert np.array_equal(got, ref)
    vocab = np.unique(keys[keys != 0])[::2]                 # half the keys known
    v = ctr.VocabEmb(vocab, 4, bag, 0.05, torch.Generator().manual_seed(0))
    got = ctr_tf.vocab_index(vocab, bag)(keys)
    known = {int(k): i for i, k in enumerate(vocab)}
    ref = np.array([known.get(int(k), v.oov) for k in keys.ravel()]).reshape(keys.shape)
    if bag:
        ref[keys == 0] = v.pad
    assert np.array_equal(got, ref)


def test_small_demo_in_tf_dynemb_beats_hashed_and_fixed_vocab(daemon, tmp_path):
    r, _ = _run(["--small", "--json", "--quiet", "--socket", daemon, "--out", str(tmp_path)],
                300)
    assert r["framework"] == "tf"
    assert len(r["auc_dynemb_per_seed"]) >= 3
    spread = r["auc_spread"]
    assert math.isclose(spread, max(max(r[f"auc_{v}_per_seed"]) - min(r[f"auc_{v}_per_seed"])
                                    for v in ("dynemb", "hashed", "fixed_vocab")))
    assert r["auc_dynemb"] - r["auc_hashed"] > spread
    assert r["auc_dynemb"] - r["auc_fixed_vocab"] > spread
    assert r["auc_dynemb"] < r["auc_oracle"]
    # the daemon created one row per distinct key of the training stream (seed 1 here)
    with open(os.path.join(str(tmp_path), "results.json")) as f:
        runs = json.load(f)["runs"]
    d = next(x for x in runs if x["variant"] == "dynemb" and x["seed"] == r["seeds"][0])
    s = ctr.Stream(r["seeds"][0], r["steps"] * r["batch"], r["steps"] * r["batch"] // 4)
    for fld in ctr.FIELDS:
        assert d["rows_per_field"][fld] == len(s.vocab(fld, s.n_train)), fld
    with open(r["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bench_in_tf_starts_its_own_daemon():
    if not os.environ.get("DYNEMB_BUILD") and not os.environ.get("DYNEMBD"):
        pytest.skip("needs DYNEMB_BUILD or DYNEMBD")
    r, err = _run(["--bench", "--steps", "20", "--bench-reps", "1", "--json", "--quiet"], 240)
    assert r["framework"] == "tf"
    assert r["steps_per_s_dynemb"] > 0 and r["steps_per_s_inprocess"] > 0
    assert math.isclose(r["bench_ratio"], r["steps_per_s_dynemb"] / r["steps_per_s_inprocess"])
    assert "listening on" in err
