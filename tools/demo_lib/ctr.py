"""The click-through demo of dynemb: a generated stream, three ways to embed its ids, metrics.

The stream and the metrics are in ctr_data.py (re-exported here). The stream
(:class:`Stream`). Each example has four sparse fields: ``user`` and ``item``
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
  * ``dynemb``: :class:`dynemb.torch.DynamicEmbedding` tables with server-side Adagrad
    (async gradient pushes, the four lookups grouped in a DynamicEmbeddingCollection);
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
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ctr_data import (FIELDS, TAGS_WIDTH, Progress, Stream, auc, default_threads,  # noqa: F401
                       dynemb_bytes, evaluate as evaluate_on, fmt_bytes, hashed_rows_for,
                       logloss, mix64, oracle_auc, result, train_loop)


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
    """One embedding per field, concatenated, then an MLP to one logit. dynemb's fields
    go through one DynamicEmbeddingCollection (``collection``): the four lookups are
    submitted together, and each waits first for the async gradient pushes of the step
    before (the same rows a module-by-module forward would read)."""

    def __init__(self, embs, dim, hidden, collection=None):
        super().__init__()
        self.embs = nn.ModuleDict(embs)
        self.coll = collection
        self.mlp = nn.Sequential(nn.Linear(len(FIELDS) * dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, batch):
        if self.coll is not None:
            out = self.coll(batch)
            return self.mlp(torch.cat([out[f] for f in FIELDS], 1)).squeeze(1)
        return self.mlp(torch.cat([self.embs[f](batch[f]) for f in FIELDS], 1)).squeeze(1)


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
                mode="mean" if f == "tags" else None, optimizer="adagrad", async_push=True,
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
    coll = None
    if variant == "dynemb":
        from dynemb.torch import DynamicEmbeddingCollection
        coll = DynamicEmbeddingCollection(embs)
    model = CTRModel(embs, cfg["dim"], cfg["hidden"], coll)
    dense = torch.optim.Adam(model.mlp.parameters(), lr=cfg["lr_mlp"])
    sparse_params = [p for f in FIELDS for p in embs[f].parameters()]
    sparse = torch.optim.Adagrad(sparse_params, lr=cfg["lr_emb"]) if sparse_params else None

    def step(batch, y):
        logit = model(batch)
        loss = F.binary_cross_entropy_with_logits(logit, torch.from_numpy(y))
        dense.zero_grad(set_to_none=True)
        if sparse is not None:
            sparse.zero_grad(set_to_none=True)
        loss.backward()          # dynemb: the embedding gradients go to the daemon here
        dense.step()
        if sparse is not None:
            sparse.step()
        return logit.detach().numpy()

    def rows():
        if variant == "dynemb":
            return sum(e.table.stats()["keys"] for e in embs.values())
        return sum(e.e.weight.shape[0] for e in embs.values())

    model.train()
    steps, train_s, curve = train_loop(f"{variant} seed {seed}", stream, cfg, step, rows,
                                       mem, progress)
    res = result(variant, seed, cfg, steps, train_s, curve, rows(), mem())
    if variant == "dynemb":
        coll.flush()             # the last step's pushes, before reading the tables
        res["rows_per_field"] = {f: embs[f].table.stats()["keys"] for f in FIELDS}
        res["bytes_per_field"] = {f: dynemb_bytes(embs[f].table.stats()) for f in FIELDS}
    if evaluate:
        model.eval()
        with torch.no_grad():
            res["auc"], res["logloss"] = evaluate_on(stream, lambda b: model(b).numpy())
    if variant == "dynemb":
        for e in embs.values():
            e.close()
    return res
