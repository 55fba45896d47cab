"""sgns.py — skip-gram with negative sampling, trained through dynemb and through a plain
nn.Embedding in lockstep, on a generated corpus whose vocabulary grows.

The corpus (``Corpus``, deterministic from a seed)
    A final vocabulary of V word ids ranked by a Zipf(s) law (P(rank r) ~ 1/(r+1)^s).
    Words are revealed progressively: sentence i (of S) may only use the first
    V(i) = V0 + (V - V0) * (i + 1) // S ranks (V0 = start_frac * V), so new, rare words keep
    appearing until the end. Co-occurrence structure: word r belongs to topic r mod T;
    each sentence has a topic, and each of its tokens is, with probability topic_p, drawn
    from that topic's words (Zipf restricted to them and to the revealed ranks), otherwise
    from the whole revealed vocabulary. Skip-gram pairs (center, context) are every pair
    of tokens at most `window` apart inside a sentence, in stream order (no shuffling:
    growth stays in training order). Batches are consecutive runs of `batch` pairs.

Negatives
    For each pair, `negatives` words drawn (numpy, seeded) from the unigram^0.75 of the
    token counts of every sentence the stream has reached so far (the batch's sentences
    included). They are drawn once per batch and given to every learner.

Model and loss
    Input embedding v (table "<prefix>_in", init uniform [-0.5/dim, 0.5/dim) with a seed)
    and output embedding u (table "<prefix>_out", zeros), both keyed by word: int64 key
    id + 1 (key 0 means "no key" in dynemb), or the string "w<id>" with --keys str.
    loss = mean over the batch's pairs of -log s(u_pos . v) - sum_k log s(-u_neg_k . v).

Learners (both step every batch, same pairs, same negatives; sgns_tf.py has the same two
in TensorFlow for ``framework="tf"``: the TF ops against tf.keras.layers.Embedding)
    DynembLearner: lookups create missing words; torch autograd on leaf tensors made from
        the lookup results gives d loss / d rows; one apply_gradients per table per batch
        (duplicates summed and stepped once by the daemon, its optimizer applied there).
    TorchLearner: nn.Embedding(V, dim, sparse=True) twice, for the whole final vocabulary,
        input rows initialized with the SAME values dynemb's initializer gives (read from
        a probe table opened with the same init config and seed: dynemb's initial value is
        a function of (seed, key) only; each learner checks, when dynemb creates a row, that
        it equals the reference's untouched row), output rows zeros. Optimizers:
          sgd       torch.optim.SGD on the sparse gradients (exact reference),
          adagrad   torch.optim.Adagrad, eps 1e-10, initial_accumulator_value 0, no weight
                    decay (torch's sparse path updates the accumulator and the rows of the
                    gradient's indices only: the same lazy semantics as de_learn.h),
          momentum  LazyMomentum below: torch.optim.SGD(momentum>0) rejects sparse
                    gradients, and a dense momentum keeps moving rows that are not in the
                    batch, which dynemb never does (de_learn.h, "Caveats"). LazyMomentum
                    keeps a buffer per row, updated only for rows in the batch
                    (b = g on the row's first step, then b = m*b + g; p -= lr*b).
"""

import os
import time

import numpy as np
import torch
import torch.nn.functional as F

OPTIMIZERS = ("sgd", "adagrad", "momentum")

# The small version (tests) and the full one (tools/word2vec). lr per optimizer is for
# the batch-mean loss (so SGD needs a large one).
SMALL = dict(vocab=4000, sentences=5000, sent_len=16, window=2, topics=24, zipf_s=1.0,
             topic_p=0.85, start_frac=0.1, dim=16, batch=512, negatives=5, seed=1,
             lr={"sgd": 4.0, "adagrad": 0.3, "momentum": 0.4}, momentum=0.9, window_ma=40,
             checkpoints=6)
FULL = dict(vocab=50000, sentences=60000, sent_len=16, window=2, topics=64, zipf_s=1.0,
            topic_p=0.85, start_frac=0.1, dim=32, batch=512, negatives=5, seed=1,
            lr={"sgd": 4.0, "adagrad": 0.3, "momentum": 0.4}, momentum=0.9, window_ma=100,
            checkpoints=10)


class Corpus:
    """The generated stream (see the top of this file). Attributes: tokens [S, L] int64,
    vocab_at [S] (revealed ranks per sentence), centers / contexts (pairs in order),
    pairs_per_sentence, nbatches."""

    def __init__(self, seed, vocab, sentences, sent_len=16, window=2, topics=24, zipf_s=1.0,
                 topic_p=0.85, start_frac=0.1, batch=512, **_):
        if not (vocab >= 2 * topics >= 2 and sentences >= 1 and sent_len >= 2 and window >= 1):
            raise ValueError("corpus: need vocab >= 2*topics >= 2, sentences >= 1, "
                             "sent_len >= 2, window >= 1")
        rng = np.random.default_rng([seed, 0x77])
        V, T, S, L = vocab, topics, sentences, sent_len
        w = 1.0 / (np.arange(V, dtype=np.float64) + 1.0) ** zipf_s
        gcdf = np.cumsum(w)
        per = -(-V // T)
        tw = np.zeros((T, per))
        for t in range(T):
            r = np.arange(t, V, T)
            tw[t, :r.size] = w[r]
        tcdf = np.cumsum(tw, axis=1)
        v0 = max(T, int(start_frac * V))
        vs = v0 + (V - v0) * (np.arange(S, dtype=np.int64) + 1) // S
        topic = rng.integers(0, T, S)
        from_topic = rng.random((S, L)) < topic_p
        u = rng.random((S, L))
        g = np.searchsorted(gcdf, u * gcdf[vs - 1][:, None], side="right")
        tokens = np.minimum(g, (vs - 1)[:, None]).astype(np.int64)
        n_t = (vs - 1 - topic) // T + 1  # words of the sentence's topic revealed (>= 1)
        for t in range(T):
            sel = topic == t
            if not sel.any():
                continue
            n = n_t[sel][:, None]
            j = np.searchsorted(tcdf[t], u[sel] * tcdf[t][n - 1], side="right")
            j = np.minimum(j, n - 1)
            tokens[sel] = np.where(from_topic[sel], t + j * T, tokens[sel])
        ci, cj = [], []
        for i in range(L):
            for off in range(-window, window + 1):
                if off and 0 <= i + off < L:
                    ci.append(i)
                    cj.append(i + off)
        self.tokens, self.vocab_at, self.vocab, self.seed = tokens, vs, V, seed
        self.pairs_per_sentence = len(ci)
        self.centers = tokens[:, ci].reshape(-1)
        self.contexts = tokens[:, cj].reshape(-1)
        self.batch = batch
        self.nbatches = self.centers.size // batch
        if self.nbatches < 1:
            raise ValueError("corpus: fewer pairs than one batch")

    def batch_pairs(self, b):
        s = slice(b * self.batch, (b + 1) * self.batch)
        return self.centers[s], self.contexts[s]

    def last_sentence(self, b):
        """Index of the last sentence batch b reaches."""
        return ((b + 1) * self.batch - 1) // self.pairs_per_sentence


class Negatives:
    """unigram^0.75 of the counts of the sentences reached so far; seeded draws."""

    def __init__(self, corpus, k, seed):
        self.c, self.k = corpus, k
        self.rng = np.random.default_rng([seed, 0x6e6567])
        self.counts = np.zeros(corpus.vocab, dtype=np.float64)
        self.done = 0  # sentences counted

    def draw(self, b):
        last = self.c.last_sentence(b)
        if last >= self.done:
            np.add.at(self.counts, self.c.tokens[self.done:last + 1].ravel(), 1.0)
            self.done = last + 1
            self.cdf = np.cumsum(self.counts ** 0.75)
        u = self.rng.random((self.c.batch, self.k)) * self.cdf[-1]
        return np.minimum(np.searchsorted(self.cdf, u, side="right"),
                          self.c.vocab - 1).astype(np.int64)


def sgns_loss(v, u):
    """v [B, d] centers, u [B, 1+K, d] (positive first): mean SGNS logistic loss."""
    logits = torch.bmm(u, v.unsqueeze(2)).squeeze(2)
    sign = torch.ones_like(logits)
    sign[:, 1:] = -1.0
    return -F.logsigmoid(sign * logits).sum(dim=1).mean()


def _hparams(optimizer, lr, momentum):
    if optimizer == "sgd":
        return dict(optimizer="sgd", lr=lr)
    if optimizer == "adagrad":
        return dict(optimizer="adagrad", lr=lr, eps=1e-10, initial_accumulator_value=0.0)
    if optimizer == "momentum":
        return dict(optimizer="momentum", lr=lr, momentum=momentum, dampening=0.0)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")


class _Keys:
    def __init__(self, kind, vocab):
        if kind not in ("int64", "str"):
            raise ValueError(f"keys must be 'int64' or 'str', not {kind!r}")
        self.kind = kind
        self.names = (np.array([f"w{i}" for i in range(vocab)], dtype=object)
                      if kind == "str" else None)

    def __call__(self, ids):
        return self.names[ids] if self.kind == "str" else ids.astype(np.int64) + 1


def init_rows(client, prefix, vocab, dim, seed, keys="int64"):
    """The values dynemb's input-table initializer gives each word: a probe table with the
    same init config and seed (another name), looked up once, then erased."""
    k = _Keys(keys, vocab)(np.arange(vocab))
    t = client.open(prefix + "_probe", dim, init="uniform", init_a=-0.5 / dim,
                    init_b=0.5 / dim, seed=seed, keys=keys)
    out = np.empty((vocab, dim), dtype=np.float32)
    for s in range(0, vocab, 8192):
        t.lookup(k[s:s + 8192], out=out[s:s + 8192])
    t.erase(k)
    return out


class DynembLearner:
    """Both tables in dynembd; gradients pushed with apply_gradients."""

    def __init__(self, client, prefix, vocab, dim, optimizer, lr, momentum=0.9, seed=0,
                 keys="int64", ref_init=None):
        hp = _hparams(optimizer, lr, momentum)
        self.key = _Keys(keys, vocab)
        self.tin = client.open(prefix + "_in", dim, init="uniform", init_a=-0.5 / dim,
                               init_b=0.5 / dim, seed=seed, keys=keys, **hp)
        self.tout = client.open(prefix + "_out", dim, init="zeros", keys=keys, **hp)
        self.ref_init = ref_init
        self.created_checked = 0

    def step(self, centers, ctx, step):
        kc, kx = self.key(centers), self.key(ctx)
        vin, st = self.tin.lookup(kc, step=step, with_status=True)
        uout = self.tout.lookup(kx, step=step)
        if self.ref_init is not None:  # a created row must hold the reference's init
            new = st == 2  # dynemb.ST_CREATED
            if new.any():
                if not np.array_equal(vin[new], self.ref_init[centers[new]]):
                    raise AssertionError("dynemb created a row whose value differs from "
                                         "the probe table's (init not a function of key)")
                self.created_checked += int(new.sum())
        v = torch.from_numpy(vin).requires_grad_()
        u = torch.from_numpy(uout).requires_grad_()
        loss = sgns_loss(v, u)
        loss.backward()
        self.tin.apply_gradients(kc, v.grad.numpy(), step=step)
        self.tout.apply_gradients(kx, u.grad.numpy(), step=step)
        return float(loss)

    def vocab_keys(self):
        return self.tin.stats()["keys"], self.tout.stats()["keys"]

    def rows(self, ids):
        k = self.key(ids)
        return (self.tin.lookup(k, readonly=True), self.tout.lookup(k, readonly=True))


class LazyMomentum:
    """SGD with momentum, per-row ("sparse", lazy) semantics as dynemb's: a row's buffer
    and value change only in steps where the row has a gradient; b = g at the row's first
    step, then b = momentum*b + (1-dampening)*g; p += -lr*b."""

    def __init__(self, params, lr, momentum, dampening=0.0):
        self.params, self.lr, self.m, self.d = list(params), lr, momentum, dampening
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.seen = [torch.zeros(p.shape[0], dtype=torch.bool) for p in self.params]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p, buf, seen in zip(self.params, self.bufs, self.seen):
            if p.grad is None:
                continue
            g = p.grad.coalesce()  # sums duplicate rows
            idx, gv = g.indices()[0], g.values()
            b = torch.where(seen[idx].unsqueeze(1), buf[idx] * self.m + (1 - self.d) * gv, gv)
            buf[idx] = b
            seen[idx] = True
            p[idx] = p[idx] + (-self.lr) * b


class TorchLearner:
    """nn.Embedding(sparse=True) for the whole final vocabulary, torch.optim (SGD,
    Adagrad) or LazyMomentum."""

    def __init__(self, vocab, dim, optimizer, lr, momentum=0.9, in_init=None):
        self.ein = torch.nn.Embedding(vocab, dim, sparse=True)
        self.eout = torch.nn.Embedding(vocab, dim, sparse=True)
        with torch.no_grad():
            self.ein.weight.copy_(torch.from_numpy(in_init))
            self.eout.weight.zero_()
        params = [self.ein.weight, self.eout.weight]
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr)
        elif optimizer == "adagrad":
            self.opt = torch.optim.Adagrad(params, lr=lr, eps=1e-10,
                                           initial_accumulator_value=0.0)
        elif optimizer == "momentum":
            self.opt = LazyMomentum(params, lr, momentum)
        else:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")

    def step(self, centers, ctx, step):
        v = self.ein(torch.from_numpy(centers))
        u = self.eout(torch.from_numpy(ctx))
        loss = sgns_loss(v, u)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss)

    def rows(self, ids):
        t = torch.from_numpy(ids)
        return self.ein.weight.detach()[t].numpy(), self.eout.weight.detach()[t].numpy()


def moving_average(x, w):
    """Trailing mean over the last w batches (fewer at the start)."""
    x = np.asarray(x, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, x.size + 1)
    lo = np.maximum(0, i - w)
    return (c[i] - c[lo]) / (i - lo)


def compare(loss_d, loss_r, w):
    """final: mean of the last w batch losses; rel = |d - r| / r; max_rel_dev: the largest
    |ma_d - ma_r| / ma_r along the moving averages."""
    fd = float(np.mean(loss_d[-w:]))
    fr = float(np.mean(loss_r[-w:]))
    ma_d, ma_r = moving_average(loss_d, w), moving_average(loss_r, w)
    return dict(final_dynemb=fd, final_torch=fr, rel_diff=abs(fd - fr) / fr,
                max_rel_dev=float(np.max(np.abs(ma_d - ma_r) / ma_r)),
                first_torch=float(np.mean(loss_r[:w])))


_run_ids = iter(range(1 << 30))


def run(client, cfg, optimizers=OPTIMIZERS, keys="int64", controls=None, progress=None,
        batches=None, framework="torch", service_address=""):
    """Train each optimizer's DynembLearner and TorchLearner in lockstep on the same data
    (framework "tf": sgns_tf's TFDynembLearner, through the TensorFlow ops at
    service_address, and KerasLearner; the results' "torch" fields then hold Keras').

    controls: {optimizer: lr multiplier} adds a reference learner with a different lr (a
    negative control, compared against the dynemb learner). batches: limit (default all).
    Returns {"config", "framework", "corpus", "results": {opt: {...}}}.
    """
    if framework == "tf":
        from .sgns_tf import KerasLearner as Ref, TFDynembLearner

        def Dyn(*a, **kw):
            return TFDynembLearner(*a, service_address=service_address, **kw)
    elif framework == "torch":
        Dyn, Ref = DynembLearner, TorchLearner
    else:
        raise ValueError(f"framework must be 'torch' or 'tf', not {framework!r}")
    t0 = time.monotonic()
    corpus = Corpus(**cfg)
    nb = corpus.nbatches if batches is None else min(batches, corpus.nbatches)
    V, dim, K = cfg["vocab"], cfg["dim"], cfg["negatives"]
    ckpts = sorted(set(int(x) for x in np.linspace(0, nb - 1, cfg["checkpoints"])))
    controls = controls or {}
    results = {}
    for opt in optimizers:
        lr = cfg["lr"][opt]
        prefix = f"w2v{os.getpid()}_{next(_run_ids)}_{opt}"
        ref_init = init_rows(client, prefix, V, dim, cfg["seed"], keys)
        d = Dyn(client, prefix, V, dim, opt, lr, cfg["momentum"], cfg["seed"], keys,
                ref_init=ref_init)
        r = Ref(V, dim, opt, lr, cfg["momentum"], in_init=ref_init)
        ctrl = (Ref(V, dim, opt, lr * controls[opt], cfg["momentum"], in_init=ref_init)
                if opt in controls else None)
        neg = Negatives(corpus, K, cfg["seed"])
        seen_in = np.zeros(V, dtype=bool)
        seen_out = np.zeros(V, dtype=bool)
        ld, lref, lctrl, vocab = [], [], [], []
        t1 = time.monotonic()
        td = tr = 0.0
        for b in range(nb):
            centers, pos = corpus.batch_pairs(b)
            ctx = np.concatenate([pos[:, None], neg.draw(b)], axis=1)
            seen_in[centers] = True
            seen_out[ctx.ravel()] = True
            s0 = time.monotonic()
            ld.append(d.step(centers, ctx, b + 1))
            s1 = time.monotonic()
            lref.append(r.step(centers, ctx, b + 1))
            tr += time.monotonic() - s1
            td += s1 - s0
            if ctrl is not None:
                lctrl.append(ctrl.step(centers, ctx, b + 1))
            if b in ckpts:
                kin, kout = d.vocab_keys()
                vocab.append(dict(batch=b + 1, sentence=int(corpus.last_sentence(b)),
                                  revealed=int(corpus.vocab_at[corpus.last_sentence(b)]),
                                  keys_in=int(kin), keys_out=int(kout),
                                  seen_in=int(seen_in.sum()), seen_out=int(seen_out.sum())))
            if progress and (b + 1) % max(1, nb // 10) == 0:
                progress(f"{opt}: batch {b + 1}/{nb}  loss dynemb {np.mean(ld[-50:]):.4f}  "
                         f"torch {np.mean(lref[-50:]):.4f}")
        w = cfg["window_ma"]
        res = compare(ld, lref, w)
        ids_in, ids_out = np.flatnonzero(seen_in), np.flatnonzero(seen_out)
        din, _ = d.rows(ids_in)
        _, dout = d.rows(ids_out)
        rin, _ = r.rows(ids_in)
        _, rout = r.rows(ids_out)
        res.update(optimizer=opt, lr=lr, batches=nb, loss_dynemb=ld, loss_torch=lref,
                   vocab=vocab, created_checked=d.created_checked,
                   max_abs_param_diff=float(max(np.max(np.abs(din - rin)),
                                                np.max(np.abs(dout - rout)))),
                   # rows (input and output tables) with an element more than 1e-3 apart:
                   # Adagrad's g/sqrt(sum g^2) is scale-free, so an element whose whole
                   # gradient history is ~1e-9 (cancellations) turns fp32 rounding of its
                   # gradient into O(lr) steps; a handful of such rows is expected
                   rows_over_1e3=int(np.sum(np.abs(din - rin).max(1) > 1e-3)
                                     + np.sum(np.abs(dout - rout).max(1) > 1e-3)),
                   rows_compared=int(ids_in.size + ids_out.size),
                   seconds=time.monotonic() - t1, seconds_dynemb=td, seconds_torch=tr)
        if ctrl is not None:
            c = compare(ld, lctrl, w)
            res["control"] = dict(lr=lr * controls[opt], loss=lctrl, final=c["final_torch"],
                                  rel_diff=c["rel_diff"], max_rel_dev=c["max_rel_dev"])
        for t in (d.tin, d.tout):  # free the rows in a shared daemon
            t.erase(d.key(np.arange(V)))
        results[opt] = res
    return dict(config=cfg, keys=keys, framework=framework, seconds=time.monotonic() - t0,
                corpus=dict(pairs=int(corpus.centers.size), batches=nb,
                            tokens=int(corpus.tokens.size),
                            distinct_words=int(np.unique(corpus.tokens).size)),
                results=results)
