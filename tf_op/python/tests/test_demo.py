"""tools/demo: its metrics against brute force, and the paper's claim on a small run:
dynemb beats a hashed table of the same embedding memory and a vocabulary fixed early by
more than the AUC spread between seeds."""

import json
import math
import os
import subprocess
import sys

import importlib

import numpy as np
import pytest

pytest.importorskip("torch")

import dynemb  # noqa: E402

from conftest import ROOT, tool_lib  # noqa: E402

DEMO = os.path.join(ROOT, "tools", "demo")
tool_lib("demo_lib")
ctr = importlib.import_module("demo_lib.ctr")

pytestmark = pytest.mark.torch

needs_apply = pytest.mark.skipif(not hasattr(dynemb.Table, "apply_gradients"),
                                 reason="dynemb.Table.apply_gradients not available yet")


def brute_auc(y, s):
    pos = [a for a, t in zip(s, y) if t]
    neg = [a for a, t in zip(s, y) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    y = rng.random(n) < 0.3
    y[0], y[1] = True, False
    s = rng.integers(0, 12, size=n).astype(np.float32)    # many ties
    if seed % 2:
        s = rng.standard_normal(n)                         # no ties
    assert math.isclose(ctr.auc(y, s), brute_auc(y, s), rel_tol=0, abs_tol=1e-12)


def test_auc_edge_cases():
    assert ctr.auc([1, 0], [0.9, 0.1]) == 1.0
    assert ctr.auc([1, 0], [0.1, 0.9]) == 0.0
    assert ctr.auc([1, 0, 1, 0], [3, 3, 3, 3]) == 0.5
    assert math.isnan(ctr.auc([1, 1], [0.1, 0.2]))


def test_logloss_matches_formula():
    rng = np.random.default_rng(0)
    z = rng.standard_normal(50) * 3
    y = (rng.random(50) < 0.5).astype(float)
    p = 1 / (1 + np.exp(-z))
    ref = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert math.isclose(ctr.logloss(y, z), ref, rel_tol=1e-9)


def test_stream_grows_and_drifts():
    s = ctr.Stream(5, 20000, 5000)
    for f in ("user", "item"):
        early, late = s.vocab(f, 5000), s.vocab(f, 25000)
        assert len(late) > len(early) * 1.3                # new ids keep arriving
        test_keys = s.keys[f][20000:]
        unseen = ~np.isin(test_keys, early)
        assert unseen.mean() > 0.3                         # later traffic: many new ids
    assert s.keys["tags"].min() == 0 and s.keys["user"].min() >= 1
    assert 0.1 < s.y.mean() < 0.6


def _env():
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return env


@needs_apply
def test_small_demo_dynemb_beats_hashed_and_fixed_vocab(daemon, tmp_path):
    p = subprocess.run([sys.executable, DEMO, "--small", "--json", "--quiet",
                        "--socket", daemon, "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=240, env=_env())
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    for k in ("auc_dynemb", "auc_hashed", "auc_fixed_vocab", "auc_spread"):
        assert k in r
    assert len(r["auc_dynemb_per_seed"]) >= 3
    spread = r["auc_spread"]
    # the spread is the largest max-min over seeds of one variant, recomputed here
    assert math.isclose(spread, max(max(r[f"auc_{v}_per_seed"]) - min(r[f"auc_{v}_per_seed"])
                                    for v in ("dynemb", "hashed", "fixed_vocab")))
    assert r["auc_dynemb"] - r["auc_hashed"] > spread
    assert r["auc_dynemb"] - r["auc_fixed_vocab"] > spread
    assert r["auc_dynemb"] < r["auc_oracle"]
    assert r["rows_hashed"] <= r["rows_dynemb"] + 1        # no more rows than dynemb had
    with open(r["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.dirname(r["plot"]) == str(tmp_path)
    assert r["command"].startswith("tools/demo --small")


@needs_apply
def test_bench_starts_its_own_daemon(tmp_path):
    if not os.environ.get("DYNEMB_BUILD") and not os.environ.get("DYNEMBD"):
        pytest.skip("needs DYNEMB_BUILD or DYNEMBD")
    p = subprocess.run([sys.executable, DEMO, "--bench", "--steps", "20", "--bench-reps",
                        "1", "--json", "--quiet"],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["bench_steps_per_s_dynemb"] > 0 and r["bench_steps_per_s_full"] > 0
    assert math.isclose(r["bench_ratio"],
                        r["bench_steps_per_s_dynemb"] / r["bench_steps_per_s_full"])
    assert "listening on" in p.stderr                     # it started dynembd itself
