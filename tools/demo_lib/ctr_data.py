"""The click-through demo's data and metrics, framework-neutral (tools/demo_lib/ctr.py
trains in PyTorch, ctr_tf.py in TensorFlow, both over what is here).

The stream (:class:`Stream`). Each example has four sparse fields: ``user`` and ``item``
(vocabularies that keep growing: ``rate`` new ids per example, on top of ``n0`` at the
start), ``cat`` (a small fixed vocabulary) and ``tags`` (a multi-hot bag of 1..4 ids from
a slowly growing vocabulary, padded with 0 to a fixed width). An id is drawn either from
a Zipf law over creation order (an evergreen head: ids created early stay popular) or from
a Zipf law over recency (the newest ids are the hottest: the vocabulary drifts), so new
ids keep appearing and the popular ones keep changing. Every id has a hidden true effect,
a Gaussian drawn from a hash of (seed, field, id); the click probability is
``sigmoid(bias + effect_user + effect_item + effect_cat + mean(effect_tags))``. Keys are
``id + 1`` (0 is padding, and the daemon's reserved empty key).

Metrics: :func:`auc` (rank-based Mann-Whitney U, ties get average ranks) and
:func:`logloss`, both on held-out data: the examples right after the training stream.
The training loop (:func:`train_loop`, :func:`evaluate`) takes a framework's step.
"""

import os
import sys
import time

import numpy as np

FIELDS = ("user", "item", "cat", "tags")
TAGS_WIDTH = 4
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def mix64(x):
    """splitmix64's finalizer, vectorized over uint64 (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _gauss(seed, field_no, ids):
    """A standard normal per (seed, field, id), from a hash: no state, any order."""
    base = np.uint64((seed * 1000003 + field_no * 7919) & 0xFFFFFFFFFFFFFFFF)
    h1 = mix64(np.asarray(ids, dtype=np.uint64) ^ mix64(base))
    h2 = mix64(h1)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


# -- the stream -------------------------------------------------------------------------
class Stream:
    """A generated click stream: ``n_train`` examples to train on, then ``n_test`` later
    examples held out. Arrays: ``keys[field]`` (int64; tags are [n, TAGS_WIDTH]), ``y``
    (float32 0/1), ``logit`` (the true logit, for the oracle AUC)."""

    # field: (n0 ids at the start, new ids per example, effect stddev)
    SPEC = {"user": (500, 0.03, 1.0), "item": (300, 0.02, 1.0),
            "cat": (30, 0.0, 0.5), "tags": (100, 0.005, 0.8)}

    def __init__(self, seed, n_train, n_test, p_recent=0.7, zipf_a=1.1, bias=-1.0):
        self.seed, self.n_train, self.n_test = seed, n_train, n_test
        n = n_train + n_test
        rng = np.random.default_rng(seed)
        t = np.arange(n, dtype=np.float64)
        self.keys, logit = {}, np.full(n, bias)
        for fno, f in enumerate(FIELDS):
            n0, rate, sd = self.SPEC[f]
            if f == "tags":
                cnt = rng.integers(1, TAGS_WIDTH + 1, size=n)
                ids = np.stack([self._ids(rng, t, n0, rate, p_recent, zipf_a)
                                for _ in range(TAGS_WIDTH)], 1)
                present = np.arange(TAGS_WIDTH)[None, :] < cnt[:, None]
                eff = _gauss(seed, fno, ids) * sd
                logit += (eff * present).sum(1) / cnt
                self.keys[f] = np.where(present, ids + 1, 0).astype(np.int64)
            else:
                ids = self._ids(rng, t, n0, rate, p_recent, zipf_a)
                logit += _gauss(seed, fno, ids) * sd
                self.keys[f] = (ids + 1).astype(np.int64)
        self.logit = logit
        self.y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)

    @staticmethod
    def _ids(rng, t, n0, rate, p_recent, a):
        live = (n0 + np.floor(rate * t)).astype(np.int64)      # ids existing at time t
        head = (rng.zipf(a, size=len(t)) - 1) % live           # Zipf over creation order
        recent = live - 1 - (rng.zipf(a, size=len(t)) - 1) % live   # Zipf over recency
        return np.where(rng.random(len(t)) < p_recent, recent, head)

    def batch(self, lo, hi):
        return {f: self.keys[f][lo:hi] for f in FIELDS}, self.y[lo:hi]

    def vocab(self, field, upto):
        """The keys of ``field`` seen in examples [0, upto), sorted (padding excluded)."""
        k = np.unique(self.keys[field][:upto])
        return k[k != 0]

    def max_key(self, field):
        return int(self.keys[field].max())


# -- metrics ----------------------------------------------------------------------------
def auc(y, score):
    """ROC AUC by the Mann-Whitney U statistic: the probability that a random positive
    scores above a random negative, ties counting one half. NaN without both classes."""
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    _, inv, cnt = np.unique(s[order], return_inverse=True, return_counts=True)
    first = np.concatenate(([0], np.cumsum(cnt)[:-1]))        # 0-based rank of each tie group
    avg_rank = first + (cnt + 1) / 2.0                         # 1-based average rank
    ranks = np.empty(len(s))
    ranks[order] = avg_rank[inv]
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def logloss(y, logit):
    """Mean binary cross-entropy of logits (stable form: softplus(z) - y z)."""
    z = np.asarray(logit, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def dynemb_bytes(stats):
    """Memory a dynemb table holds: its rows (values, optimizer slots, metadata, in whole
    slabs) plus its index."""
    return stats["row_bytes"] + stats["index_bytes"]


# -- training, framework-neutral ---------------------------------------------------------------------------
class Progress:
    """A progress bar on a terminal; plain lines every ``every_s`` seconds otherwise."""

    def __init__(self, label, total, stream=None, every_s=2.0, enabled=True):
        self.label, self.total, self.every_s = label, total, every_s
        self.out = stream or sys.stderr
        self.tty = self.out.isatty()
        self.enabled = enabled
        self.last = 0.0

    def update(self, step, force=False, **kv):
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.1 if self.tty else self.every_s):
            return
        self.last = now
        info = "  ".join(f"{k} {v}" for k, v in kv.items())
        if self.tty:
            w = 24
            fill = int(w * step / max(self.total, 1))
            self.out.write(f"\r{self.label:<18} [{'#' * fill}{'.' * (w - fill)}] "
                           f"{step}/{self.total}  {info}\033[K")
        else:
            self.out.write(f"{self.label}: step {step}/{self.total}  {info}\n")
        self.out.flush()

    def done(self):
        if self.enabled and self.tty:
            self.out.write("\n")
            self.out.flush()


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024.0


def train_loop(label, stream, cfg, step_fn, rows_fn, mem_fn, progress=True):
    """One pass over the stream's training part, batch by batch: ``step_fn(batch, y)``
    trains on one batch (keys by field, labels as float32 numpy) and returns the logits it
    scored the batch with before learning from it (numpy). Progressive validation: the
    AUC of the last 40 batches every 20 steps. -> (steps, train_s, curve)."""
    B = cfg["batch"]
    steps = stream.n_train // B
    bar = Progress(label, steps, enabled=progress)
    window, curve = [], []
    t0 = time.perf_counter()
    for step in range(steps):
        batch, y = stream.batch(step * B, (step + 1) * B)
        logit = step_fn(batch, y)
        window.append((y, logit))
        if len(window) > 40:
            window.pop(0)
        if (step + 1) % 20 == 0 or step + 1 == steps:
            ra = auc(np.concatenate([w[0] for w in window]),
                     np.concatenate([w[1] for w in window]))
            curve.append((step + 1, ra))
            el = time.perf_counter() - t0
            bar.update(step + 1, force=step + 1 == steps,
                       **{"steps/s": f"{(step + 1) / el:.0f}", "rows": f"{rows_fn():,}",
                          "mem": fmt_bytes(mem_fn()), "auc": f"{ra:.3f}"})
    train_s = time.perf_counter() - t0
    bar.done()
    return steps, train_s, curve


def evaluate(stream, predict_fn, chunk=8192):
    """(AUC, log-loss) of ``predict_fn(batch)`` (logits, numpy) on the held-out part."""
    outs = []
    for lo in range(stream.n_train, stream.n_train + stream.n_test, chunk):
        hi = min(lo + chunk, stream.n_train + stream.n_test)
        b, _ = stream.batch(lo, hi)
        outs.append(predict_fn(b))
    z = np.concatenate(outs)
    yt = stream.y[stream.n_train:]
    return auc(yt, z), logloss(yt, z)


def result(variant, seed, cfg, steps, train_s, curve, rows, nbytes):
    """A run's result dict, the same keys in both frameworks."""
    return {"variant": variant, "seed": seed, "steps": steps, "train_s": train_s,
            "steps_per_s": steps / train_s, "rows": int(rows), "bytes": int(nbytes),
            "emb_bytes": int(rows) * cfg["dim"] * 4 * 2, "curve": curve}


def hashed_rows_for(dynemb_res, ratio=1.0):
    """Buckets per field of the hashed variant: ``ratio`` times the rows the dynemb table
    of that field ended with. With ratio 1 both hold the same embedding memory (weights
    and Adagrad state: rows x dim x 4 bytes x 2); the daemon's own overhead (row
    metadata, slab rounding, index) is not given to the hashed tables."""
    return {f: max(1, int(round(ratio * dynemb_res["rows_per_field"][f]))) for f in FIELDS}


def oracle_auc(stream):
    """The AUC of the true logit on the held-out part (the ceiling of any model)."""
    return auc(stream.y[stream.n_train:], stream.logit[stream.n_train:])


def default_threads():
    return max(1, min(2, os.cpu_count() or 1))
