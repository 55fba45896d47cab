"""The click-through demo of dynemb: a generated stream, three ways to embed its ids, metrics.

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

The three embeddings of the comparison (the paper's: a dictionary that grows vs. one
fixed before training), all trained with Adagrad at the same lr, the MLP with the same
torch.optim.Adam in all three:
  * ``dynemb``: :class:`dynemb.torch.DynamicEmbedding` tables with server-side Adagrad;
  * ``hashed``: ``nn.Embedding(sparse=True)`` with ``rows`` buckets (the hashing trick),
    as many buckets as the dynemb table ended with rows (:func:`hashed_rows_for`: the
    same embedding memory);
  * ``fixed_vocab``: a vocabulary of the ids seen in the first ``vocab_frac`` of the
    training stream; every other id shares one OOV row;
  * ``full`` (the benchmark's upper bound, not in the comparison): ``nn.Embedding``
    already holding the whole vocabulary of the stream.

Metrics: :func:`auc` (rank-based Mann-Whitney U, ties get average ranks) and
:func:`logloss`, both on held-out data: the examples right after the training stream.
"""

import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
        return {f: self.keys[f][lo:hi] for f in FIELDS}, torch.from_numpy(self.y[lo:hi])

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


# -- embeddings -------------------------------------------------------------------------
def _uniform_(w, a, gen):
    with torch.no_grad():
        w.uniform_(-a, a, generator=gen)


class HashedEmb(nn.Module):
    """The hashing trick: key -> mix64(key ^ salt) % rows; collisions share a row."""

    def __init__(self, rows, dim, bag, salt, init, gen):
        super().__init__()
        self.rows, self.bag, self.salt = int(rows), bag, np.uint64(salt)
        self.e = (nn.EmbeddingBag(self.rows + 1, dim, mode="mean", sparse=True,
                                  padding_idx=self.rows) if bag
                  else nn.Embedding(self.rows, dim, sparse=True))
        _uniform_(self.e.weight, init, gen)

    def forward(self, keys):
        idx = (mix64(keys.astype(np.uint64) ^ self.salt) % np.uint64(self.rows)).astype(np.int64)
        if self.bag:
            idx[keys == 0] = self.rows
        return self.e(torch.from_numpy(idx))


class VocabEmb(nn.Module):
    """A fixed vocabulary (sorted keys): known keys get their row, the rest one OOV row."""

    def __init__(self, vocab, dim, bag, init, gen):
        super().__init__()
        self.vocab, self.bag = np.asarray(vocab, dtype=np.int64), bag
        v = len(self.vocab)
        self.oov, self.pad = v, v + 1
        self.e = (nn.EmbeddingBag(v + 2, dim, mode="mean", sparse=True, padding_idx=v + 1)
                  if bag else nn.Embedding(v + 1, dim, sparse=True))
        _uniform_(self.e.weight, init, gen)

    def forward(self, keys):
        pos = np.searchsorted(self.vocab, keys)
        pos = np.minimum(pos, len(self.vocab) - 1)
        idx = np.where(self.vocab[pos] == keys, pos, self.oov).astype(np.int64)
        if self.bag:
            idx[keys == 0] = self.pad
        return self.e(torch.from_numpy(idx))


class DenseEmb(nn.Module):
    """In-process nn.Embedding holding every key of the stream (row = key; 0 = padding)."""

    def __init__(self, rows, dim, bag, init, gen):
        super().__init__()
        self.bag = bag
        self.e = (nn.EmbeddingBag(rows, dim, mode="mean", sparse=True, padding_idx=0) if bag
                  else nn.Embedding(rows, dim, sparse=True))
        _uniform_(self.e.weight, init, gen)

    def forward(self, keys):
        return self.e(torch.from_numpy(keys))


class CTRModel(nn.Module):
    """One embedding per field, concatenated, then an MLP to one logit."""

    def __init__(self, embs, dim, hidden):
        super().__init__()
        self.embs = nn.ModuleDict(embs)
        self.mlp = nn.Sequential(nn.Linear(len(FIELDS) * dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, batch):
        return self.mlp(torch.cat([self.embs[f](batch[f]) for f in FIELDS], 1)).squeeze(1)


def dynemb_bytes(stats):
    """Memory a dynemb table holds: its rows (values, optimizer slots, metadata, in whole
    slabs) plus its index."""
    return stats["row_bytes"] + stats["index_bytes"]


# -- training ---------------------------------------------------------------------------
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


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024.0


def build_embeddings(variant, stream, cfg, seed, socket_path=None, hashed_rows=None,
                     run_tag=""):
    """The per-field embedding modules of a variant, and their memory (bytes, or a
    callable giving it now for dynemb)."""
    dim, init = cfg["dim"], cfg["init"]
    gen = torch.Generator().manual_seed(seed)
    embs = {}
    if variant == "dynemb":
        from dynemb.torch import DynamicEmbedding
        for f in FIELDS:
            embs[f] = DynamicEmbedding(
                f"demo{run_tag}_{seed}_{f}", dim, socket_path=socket_path,
                mode="mean" if f == "tags" else None, optimizer="adagrad",
                lr=cfg["lr_emb"], init="uniform", init_a=-init, init_b=init, seed=seed)
        return embs, lambda: sum(dynemb_bytes(e.table.stats()) for e in embs.values())
    nbytes = 0
    for fno, f in enumerate(FIELDS):
        bag = f == "tags"
        if variant == "hashed":
            rows = max(1, int(hashed_rows[f]))
            embs[f] = HashedEmb(rows, dim, bag, mix64(np.uint64(seed * 31 + fno)), init, gen)
        elif variant == "fixed_vocab":
            upto = int(stream.n_train * cfg["vocab_frac"])
            embs[f] = VocabEmb(stream.vocab(f, upto), dim, bag, init, gen)
        elif variant == "full":
            embs[f] = DenseEmb(stream.max_key(f) + 1, dim, bag, init, gen)
        else:
            raise ValueError(f"unknown variant {variant!r}")
        # the weight and Adagrad's accumulator of the same size
        nbytes += 2 * embs[f].e.weight.numel() * 4
    return embs, (lambda: nbytes)


def train_eval(variant, stream, cfg, seed, socket_path=None, hashed_rows=None,
               progress=True, run_tag="", evaluate=True):
    """Train ``variant`` on the stream's training part, one pass, batch by batch, then
    evaluate on the held-out part. Returns a dict of results."""
    torch.manual_seed(seed)
    embs, mem = build_embeddings(variant, stream, cfg, seed, socket_path, hashed_rows,
                                 run_tag)
    torch.manual_seed(seed + 1)                       # the same MLP init in every variant
    model = CTRModel(embs, cfg["dim"], cfg["hidden"])
    dense = torch.optim.Adam(model.mlp.parameters(), lr=cfg["lr_mlp"])
    sparse_params = [p for f in FIELDS for p in embs[f].parameters()]
    sparse = torch.optim.Adagrad(sparse_params, lr=cfg["lr_emb"]) if sparse_params else None
    B = cfg["batch"]
    steps = stream.n_train // B
    bar = Progress(f"{variant} seed {seed}", steps, enabled=progress)
    window, curve = [], []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        batch, y = stream.batch(step * B, (step + 1) * B)
        logit = model(batch)
        loss = F.binary_cross_entropy_with_logits(logit, y)
        dense.zero_grad(set_to_none=True)
        if sparse is not None:
            sparse.zero_grad(set_to_none=True)
        loss.backward()          # dynemb: the embedding gradients go to the daemon here
        dense.step()
        if sparse is not None:
            sparse.step()
        # progressive validation: each batch is scored before the model learns from it
        window.append((y.numpy(), logit.detach().numpy()))
        if len(window) > 40:
            window.pop(0)
        if (step + 1) % 20 == 0 or step + 1 == steps:
            ra = auc(np.concatenate([w[0] for w in window]),
                     np.concatenate([w[1] for w in window]))
            curve.append((step + 1, ra))
            el = time.perf_counter() - t0
            rows = (sum(e.table.stats()["keys"] for e in embs.values())
                    if variant == "dynemb" else
                    sum(e.e.weight.shape[0] for e in embs.values()))
            bar.update(step + 1, force=step + 1 == steps,
                       **{"steps/s": f"{(step + 1) / el:.0f}", "rows": f"{rows:,}",
                          "mem": _fmt_bytes(mem()), "auc": f"{ra:.3f}"})
    train_s = time.perf_counter() - t0
    bar.done()
    if variant == "dynemb":
        rows = sum(e.table.stats()["keys"] for e in embs.values())
    else:
        rows = sum(e.e.weight.shape[0] for e in embs.values())
    res = {"variant": variant, "seed": seed, "steps": steps, "train_s": train_s,
           "steps_per_s": steps / train_s, "rows": int(rows), "bytes": int(mem()),
           "emb_bytes": int(rows) * cfg["dim"] * 4 * 2, "curve": curve}
    if variant == "dynemb":
        res["rows_per_field"] = {f: embs[f].table.stats()["keys"] for f in FIELDS}
        res["bytes_per_field"] = {f: dynemb_bytes(embs[f].table.stats()) for f in FIELDS}
    if evaluate:
        model.eval()
        outs = []
        with torch.no_grad():
            for lo in range(stream.n_train, stream.n_train + stream.n_test, 8192):
                hi = min(lo + 8192, stream.n_train + stream.n_test)
                b, _ = stream.batch(lo, hi)
                outs.append(model(b).numpy())
        z = np.concatenate(outs)
        yt = stream.y[stream.n_train:]
        res["auc"], res["logloss"] = auc(yt, z), logloss(yt, z)
    if variant == "dynemb":
        for e in embs.values():
            e.close()
    return res


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
