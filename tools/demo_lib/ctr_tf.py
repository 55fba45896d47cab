"""The click-through demo in TensorFlow: the same stream, model and three embeddings as
ctr.py's PyTorch version (see its docstring), in Keras.

  * ``dynemb``: :class:`dynemb.tensorflow.DynamicEmbedding` per field (tags:
    :class:`~dynemb.tensorflow.DynamicEmbeddingBag`, mean over the bag), server-side
    Adagrad, rows created on first sight; the gradients reach the daemon in the lookup's
    registered gradient;
  * ``hashed`` / ``fixed_vocab``: ``tf.keras.layers.Embedding`` over the same bucket or
    vocabulary index ctr.py computes (the same mix64 salt, the same OOV rule), Keras
    Adagrad with torch's and dynemb's accumulator start (0) and epsilon (1e-10);
  * ``full`` (the benchmark's upper bound): ``tf.keras.layers.Embedding`` holding every key
    of the stream.
The MLP (hidden ReLU layer, one logit) is trained with Keras Adam in all three. One
eager-compiled ``tf.function`` step per batch; evaluation is read-only (training=False:
keys the dynemb table does not hold read as zeros, as in the PyTorch version).
"""

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

from .ctr_data import (FIELDS, Stream, dynemb_bytes, evaluate as evaluate_on,  # noqa: E402,F401
                       hashed_rows_for, mix64, oracle_auc, result, train_loop)


class IndexEmb(tf.keras.layers.Layer):
    """A Keras Embedding over an index the numpy side computes from the keys (``index``:
    keys -> int64 rows; a bag's padding keys map to ``pad``, whose row is masked out of
    the mean)."""

    def __init__(self, rows, dim, bag, index, init, seed, pad=None):
        super().__init__()
        self.bag, self.index, self.pad = bag, index, pad
        self.e = tf.keras.layers.Embedding(
            rows, dim, embeddings_initializer=tf.keras.initializers.RandomUniform(
                -init, init, seed=seed))

    def prepare(self, keys):
        return self.index(keys)

    def call(self, idx, training=None):
        v = self.e(idx)
        if not self.bag:
            return v
        m = tf.cast(tf.not_equal(idx, self.pad), v.dtype)[..., None]
        return tf.math.divide_no_nan(tf.reduce_sum(v * m, 1), tf.reduce_sum(m, 1))


def hashed_index(rows, salt, bag):
    def index(keys):
        idx = (mix64(keys.astype(np.uint64) ^ salt) % np.uint64(rows)).astype(np.int64)
        if bag:
            idx[keys == 0] = rows
        return idx
    return index


def vocab_index(vocab, bag):
    vocab = np.asarray(vocab, dtype=np.int64)
    oov, pad = len(vocab), len(vocab) + 1

    def index(keys):
        pos = np.minimum(np.searchsorted(vocab, keys), len(vocab) - 1)
        idx = np.where(vocab[pos] == keys, pos, oov).astype(np.int64)
        if bag:
            idx[keys == 0] = pad
        return idx
    return index


class DynembField(tf.keras.layers.Layer):
    """A dynemb table for one field: keys straight to the daemon (tags: a ragged bag,
    the padding 0s dropped, mean-combined)."""

    def __init__(self, name, cfg, seed, sock, bag):
        super().__init__()
        import dynemb.tensorflow as detf
        self.bag = bag
        self.var_name = name
        # the table's spec, as dynemb.Client.open takes it (train_eval reads its stats)
        self.spec = dict(dim=cfg["dim"], optimizer="adagrad", lr=cfg["lr_emb"], init="uniform",
                         init_a=-cfg["init"], init_b=cfg["init"], seed=seed)
        c = detf.DynamicEmbeddingConfig(cfg["dim"], optimizer="adagrad", lr=cfg["lr_emb"],
                                        initializer="uniform", init_a=-cfg["init"],
                                        init_b=cfg["init"], seed=seed)
        self.e = (detf.DynamicEmbeddingBag(c, name, combiner="mean", service_address=sock)
                  if bag else detf.DynamicEmbedding(c, name, service_address=sock))

    def prepare(self, keys):
        return keys

    def call(self, keys, training=None):
        if self.bag:
            keys = tf.RaggedTensor.from_tensor(keys, padding=0)
        return self.e(keys, training=training)


class CTRModel(tf.keras.Model):
    """One embedding per field, concatenated, then an MLP to one logit."""

    def __init__(self, embs, hidden):
        super().__init__()
        self.embs = embs
        self.mlp = tf.keras.Sequential([tf.keras.layers.Dense(hidden, activation="relu"),
                                        tf.keras.layers.Dense(1)])

    def call(self, xs, training=None):
        return tf.squeeze(self.mlp(tf.concat(
            [self.embs[f](xs[f], training=training) for f in FIELDS], 1)), 1)

    def inputs_of(self, batch):
        return {f: tf.constant(self.embs[f].prepare(batch[f])) for f in FIELDS}


def build_embeddings(variant, stream, cfg, seed, socket_path=None, hashed_rows=None,
                     run_tag=""):
    """The per-field layers of a variant and a callable giving their memory (bytes)."""
    dim, init = cfg["dim"], cfg["init"]
    embs = {}
    if variant == "dynemb":
        for f in FIELDS:
            embs[f] = DynembField(f"demotf{run_tag}_{seed}_{f}", cfg, seed, socket_path,
                                  f == "tags")
        return embs, None
    for fno, f in enumerate(FIELDS):
        bag = f == "tags"
        if variant == "hashed":
            rows = max(1, int(hashed_rows[f]))
            embs[f] = IndexEmb(rows + bag, dim, bag,
                               hashed_index(rows, mix64(np.uint64(seed * 31 + fno)), bag),
                               init, seed * 7 + fno, pad=rows)
        elif variant == "fixed_vocab":
            vocab = stream.vocab(f, int(stream.n_train * cfg["vocab_frac"]))
            embs[f] = IndexEmb(len(vocab) + 1 + bag, dim, bag, vocab_index(vocab, bag),
                               init, seed * 7 + fno, pad=len(vocab) + 1)
        elif variant == "full":
            embs[f] = IndexEmb(stream.max_key(f) + 1, dim, bag, lambda k: k, init,
                               seed * 7 + fno, pad=0)
        else:
            raise ValueError(f"unknown variant {variant!r}")
    nbytes = 2 * 4 * sum(e.e.input_dim * dim for e in embs.values())  # weight + accumulator
    return embs, (lambda: nbytes)


def train_eval(variant, stream, cfg, seed, socket_path=None, hashed_rows=None,
               progress=True, run_tag="", evaluate=True):
    """As ctr.train_eval, in TensorFlow: the same result keys."""
    tf.keras.utils.set_random_seed(seed + 1)  # the MLP's init: the same in every variant
    embs, mem = build_embeddings(variant, stream, cfg, seed, socket_path, hashed_rows,
                                 run_tag)
    model = CTRModel(embs, cfg["hidden"])
    dense = tf.keras.optimizers.Adam(cfg["lr_mlp"])
    sparse = (None if variant == "dynemb" else
              tf.keras.optimizers.Adagrad(cfg["lr_emb"], initial_accumulator_value=0.0,
                                          epsilon=1e-10))

    @tf.function
    def step(xs, y):
        with tf.GradientTape() as tape:
            logit = model(xs, training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, logit))
        ew = [w for f in FIELDS for w in embs[f].trainable_weights]
        hw = model.mlp.trainable_weights
        g = tape.gradient(loss, ew + hw)
        dense.apply_gradients(zip(g[len(ew):], hw))
        if sparse is not None:
            sparse.apply_gradients(zip(g[:len(ew)], ew))
            return logit, []
        return logit, g[:len(ew)]  # dynemb: the triggers' gradients, made by the pushes

    def one(batch, y):
        logit, _ = step(model.inputs_of(batch), tf.constant(y))
        return logit.numpy()

    if variant == "dynemb":  # the same tables, by (name, spec), to read their stats
        import dynemb
        client = dynemb.Client(socket_path)
        tables = {f: client.open(embs[f].var_name, **embs[f].spec) for f in FIELDS}
        rows = (lambda: sum(tables[f].stats()["keys"] for f in FIELDS))
        mem = (lambda: sum(dynemb_bytes(tables[f].stats()) for f in FIELDS))
    else:
        rows = (lambda: sum(e.e.input_dim for e in embs.values()))
    steps, train_s, curve = train_loop(f"tf {variant} seed {seed}", stream, cfg, one, rows,
                                       mem, progress)
    res = result(variant, seed, cfg, steps, train_s, curve, rows(), mem())
    if variant == "dynemb":
        res["rows_per_field"] = {f: tables[f].stats()["keys"] for f in FIELDS}
        res["bytes_per_field"] = {f: dynemb_bytes(tables[f].stats()) for f in FIELDS}
    if evaluate:
        predict = tf.function(lambda xs: model(xs, training=False))
        res["auc"], res["logloss"] = evaluate_on(
            stream, lambda b: predict(model.inputs_of(b)).numpy())
    if variant == "dynemb":
        client.close()
    return res

