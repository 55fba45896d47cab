"""sgns_tf.py — the word2vec learners for ``--framework tf``: the same skip-gram model,
corpus, negatives and lockstep as sgns.py, in TensorFlow.

    TFDynembLearner: both tables in dynembd through the TensorFlow ops
        (dynemb.tensorflow.dynamic_embedding_lookup under a tf.GradientTape; the lookup's
        registered gradient pushes the per-unique-key sums to the daemon's optimizer, with
        the batch's step). The tables are also opened with the NumPy client under the same
        (name, config), so a config the TF side maps differently fails at once (-EEXIST);
        rows the TF lookup creates are checked against the reference's initial values.
    KerasLearner: two tf.keras.layers.Embedding sized for the whole final vocabulary,
        input rows initialized with dynemb's initial values (sgns.init_rows), outputs
        zeros. Optimizers: Keras' SGD on the IndexedSlices gradient (duplicates summed by
        its scatter), Keras' Adagrad (epsilon 1e-24 inside its square root, where dynemb and
        torch add 1e-10 outside; initial accumulator 0) on the dense
        gradient — Keras' sparse Adagrad squares each duplicate's slice apart, while dense
        Adagrad leaves a row with a zero gradient as it is, which is dynemb's lazy rule —
        and a lazy per-row momentum in TF ops (Keras' SGD momentum moves every row every
        step, dynemb only rows in the batch).
Both learners have sgns.py's interface (step, rows; the dynemb one also vocab_keys, tin,
tout, key), so sgns.run drives them unchanged.
"""

import numpy as np

from .sgns import DynembLearner, OPTIMIZERS, _hparams

tf = None
detf = None


def _tf():
    global tf, detf
    if tf is None:
        import tensorflow
        import dynemb.tensorflow
        tf, detf = tensorflow, dynemb.tensorflow
    return tf


def sgns_loss_tf(v, u):
    """v [B, d], u [B, 1+K, d] (positive first): mean SGNS logistic loss, as sgns_loss."""
    logits = tf.einsum("bkd,bd->bk", u, v)
    sign = tf.concat([tf.ones_like(logits[:, :1]), -tf.ones_like(logits[:, 1:])], axis=1)
    return -tf.reduce_mean(tf.reduce_sum(tf.math.log_sigmoid(sign * logits), axis=1))


class TFDynembLearner(DynembLearner):
    """DynembLearner whose lookups and gradient pushes go through the TensorFlow ops."""

    def __init__(self, client, prefix, vocab, dim, optimizer, lr, momentum=0.9, seed=0,
                 keys="int64", ref_init=None, service_address=""):
        _tf()
        super().__init__(client, prefix, vocab, dim, optimizer, lr, momentum, seed, keys,
                         ref_init)
        hp = _hparams(optimizer, lr, momentum)
        kt = "string" if keys == "str" else "int64"
        self.cin = detf.DynamicEmbeddingConfig(dim, keys=kt, initializer="uniform",
                                               init_a=-0.5 / dim, init_b=0.5 / dim,
                                               seed=seed, **hp)
        self.cout = detf.DynamicEmbeddingConfig(dim, keys=kt, initializer="zeros", **hp)
        self.nin, self.nout = prefix + "_in", prefix + "_out"
        self.addr = service_address
        self.trig_in = detf.trigger_variable(self.nin)
        self.trig_out = detf.trigger_variable(self.nout)

    def step(self, centers, ctx, step):
        kc, kx = self.key(centers), self.key(ctx)
        missing = None
        if self.ref_init is not None:
            _, st = self.tin.lookup(kc, readonly=True, with_status=True)
            missing = st == 0  # dynemb.ST_MISSING: the TF lookup below creates these
        tkc = tf.constant(kc.tolist() if self.key.kind == "str" else kc)
        tkx = tf.constant(kx.tolist() if self.key.kind == "str" else kx)
        s = tf.constant(step, tf.int64)
        with tf.GradientTape() as tape:
            v = detf.dynamic_embedding_lookup(tkc, self.cin, self.nin, self.addr,
                                              trigger=self.trig_in, step=s)
            u = detf.dynamic_embedding_lookup(tkx, self.cout, self.nout, self.addr,
                                              trigger=self.trig_out, step=s)
            loss = sgns_loss_tf(v, u)
        tape.gradient(loss, [self.trig_in, self.trig_out])  # pushes both tables' gradients
        if missing is not None and missing.any():
            if not np.array_equal(v.numpy()[missing], self.ref_init[centers[missing]]):
                raise AssertionError("the TF lookup created a row whose value differs from "
                                     "the probe table's (init not a function of key)")
            self.created_checked += int(np.unique(centers[missing]).size)
        return float(loss)


class _LazyMomentumTF:
    """Per-row momentum as sgns.LazyMomentum, in TF ops: b = g at a row's first step,
    then b = m*b + g; p -= lr*b; only rows with a gradient change."""

    def __init__(self, variables, lr, momentum):
        self.lr, self.m = lr, momentum
        self.bufs = [tf.Variable(tf.zeros_like(v)) for v in variables]
        self.seen = [tf.Variable(tf.zeros([v.shape[0]], tf.bool)) for v in variables]

    def apply(self, grads_and_vars):
        for (g, p), buf, seen in zip(grads_and_vars, self.bufs, self.seen):
            idx, pos = tf.unique(tf.cast(g.indices, tf.int32))
            gv = tf.math.unsorted_segment_sum(g.values, pos, tf.size(idx))
            old = tf.gather(buf, idx)
            b = tf.where(tf.gather(seen, idx)[:, None], old * self.m + gv, gv)
            buf.scatter_nd_update(idx[:, None], b)
            seen.scatter_nd_update(idx[:, None], tf.ones_like(idx, tf.bool))
            # p is a Keras variable (no scatter methods): one assign of the scattered rows
            p.assign(tf.tensor_scatter_nd_sub(tf.convert_to_tensor(p), idx[:, None],
                                              self.lr * b))


class KerasLearner:
    """tf.keras.layers.Embedding for the whole final vocabulary (see the file's top)."""

    def __init__(self, vocab, dim, optimizer, lr, momentum=0.9, in_init=None):
        _tf()
        self.ein = tf.keras.layers.Embedding(
            vocab, dim, embeddings_initializer=tf.keras.initializers.Constant(in_init))
        self.eout = tf.keras.layers.Embedding(vocab, dim, embeddings_initializer="zeros")
        self.ein.build((None,))
        self.eout.build((None,))
        self.vars = [self.ein.embeddings, self.eout.embeddings]
        self.kind = optimizer
        if optimizer == "sgd":
            self.opt = tf.keras.optimizers.SGD(learning_rate=lr)
        elif optimizer == "adagrad":
            # Keras divides by sqrt(acc + eps), torch and dynemb by sqrt(acc) + eps (1e-10
            # here): a tiny eps inside the root is the same for every acc > 1e-18
            self.opt = tf.keras.optimizers.Adagrad(learning_rate=lr, epsilon=1e-24,
                                                   initial_accumulator_value=0.0)
        elif optimizer == "momentum":
            self.opt = _LazyMomentumTF(self.vars, lr, momentum)
        else:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")

    def step(self, centers, ctx, step):
        with tf.GradientTape() as tape:
            loss = sgns_loss_tf(self.ein(tf.constant(centers)), self.eout(tf.constant(ctx)))
        grads = tape.gradient(loss, self.vars)
        if self.kind == "momentum":
            self.opt.apply(zip(grads, self.vars))
        else:
            if self.kind == "adagrad":
                grads = [tf.convert_to_tensor(g) for g in grads]
            self.opt.apply_gradients(zip(grads, self.vars))
        return float(loss)

    def rows(self, ids):
        return (tf.gather(self.vars[0], ids).numpy(), tf.gather(self.vars[1], ids).numpy())
