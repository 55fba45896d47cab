"""dynemb.tensorflow in real TensorFlow (the project venv's tensorflow-cpu): the op library
libdynemb_tf.so loaded with tf.load_op_library, against the session's dynembd (conftest).

* Forward: lookup values equal the rows the NumPy client reads (and rows it assigned),
  for any key shape and for string keys; dynamic_embedding_update assigns rows.
* Gradient: the registered gradient pushes the per-unique-key sums of the incoming
  gradient; checked against SGD steps computed here in NumPy, eagerly and in tf.function.
* Training: rows after several SGD / Adagrad steps equal a reference trained by TensorFlow
  itself (Keras' optimizer on a dense tf.Variable holding the same initial rows); Adam
  rows equal a lazy per-key Adam written in TF ops.
* Keras: the DynamicEmbedding layer in eager, in tf.function and in model.fit.
  A learning-rate schedule given to the layer reaches the daemon with each push.
  Two layers (two models) with the same (var_name, config) share the table.
* Zero-copy lifetime: an output kept alive across many later lookups and row changes
  keeps its values; a tf.data map with parallel calls returns the rows.
* Errors: TensorFlow errors carrying the daemon's reason (UnavailableError with no daemon,
  InvalidArgumentError for a config mismatch), and the process goes on.

Skipped (with the reason) where meson did not build libdynemb_tf.so.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

from conftest import tf_op_library  # noqa: E402

_LIB, tf = tf_op_library()

import dynemb  # noqa: E402
import dynemb.tensorflow as detf  # noqa: E402


def _rows(client, name, keys, **spec):
    """Rows of keys as the NumPy client reads them (same config as the TF side)."""
    return client.open(name, **spec).lookup(np.asarray(keys), readonly=True)


def test_lookup_values_equal_the_tables_rows_any_key_shape(daemon, client, tname):
    cfg = detf.DynamicEmbeddingConfig(4, seed=7)
    for shape in ([5], [2, 3], [2, 2, 2]):
        keys = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) * 11 + 3
        out = detf.dynamic_embedding_lookup(tf.constant(keys), cfg, tname,
                                            service_address=daemon)
        assert out.dtype == tf.float32 and out.shape == tuple(shape) + (4,)
        np.testing.assert_array_equal(out.numpy(), _rows(client, tname, keys, dim=4, seed=7))
    # rows the NumPy client assigned come back through TensorFlow unchanged
    t = client.open(tname, 4, seed=7)
    want = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    t.update(np.array([100, 200, 300], np.int64), want)
    got = detf.dynamic_embedding_lookup(tf.constant([[300, 100], [200, 300]], tf.int64),
                                        cfg, tname, service_address=daemon).numpy()
    np.testing.assert_array_equal(got, want[[[2, 0], [1, 2]]])


def test_string_keys_and_update_assigns_rows(daemon, client, tname):
    cfg = dict(dim=3, keys="string")
    vals = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    n = detf.dynamic_embedding_update(tf.constant(["ab", "c"]), vals, cfg, tname,
                                      service_address=daemon)
    assert int(n) >= 0
    got = detf.dynamic_embedding_lookup(tf.constant([["c", "ab"]]), cfg, tname,
                                        service_address=daemon).numpy()
    np.testing.assert_array_equal(got, vals[[[1, 0]]])
    # the empty string is key 0, "no feature": zeros
    np.testing.assert_array_equal(
        detf.dynamic_embedding_lookup(tf.constant(["", "c"]), cfg, tname,
                                      service_address=daemon).numpy(),
        np.stack([np.zeros(3, np.float32), vals[1]]))
    np.testing.assert_array_equal(
        client.open(tname, 3, keys="str").lookup(np.array(["ab", "c"], object),
                                                 readonly=True), vals)


def _sgd_case(tname, lr=0.5):
    cfg = detf.DynamicEmbeddingConfig(4, initializer="zeros", optimizer="sgd", lr=lr)
    keys = np.array([[1, 2, 1], [3, 1, 2]], np.int64)     # key 1 three times, 2 twice
    w = np.random.default_rng(3).standard_normal(keys.shape + (4,)).astype(np.float32)
    init = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    # expected rows after one step: row_k - lr * sum of w over k's positions
    want = init.copy()
    for pos, k in np.ndenumerate(keys):
        want[k - 1] -= lr * w[pos]
    return cfg, keys, w, init, want


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
def test_gradient_pushes_summed_gradients_of_unique_keys(daemon, client, tname, graph):
    cfg, keys, w, init, want = _sgd_case(tname)
    client.open(tname, 4, init="zeros", optimizer="sgd", lr=0.5).update(
        np.array([1, 2, 3], np.int64), init)
    trig = detf.trigger_variable(tname)

    def step(k):
        with tf.GradientTape() as tape:
            out = detf.dynamic_embedding_lookup(k, cfg, tname, service_address=daemon)
            loss = tf.reduce_sum(out * w)
        return tape.gradient(loss, trig)

    if graph:
        step = tf.function(step)
    g = step(tf.constant(keys))
    assert float(g) == 0.0  # the trigger's own gradient: nothing for Keras to step
    got = _rows(client, tname, [1, 2, 3], dim=4, init="zeros", optimizer="sgd", lr=0.5)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_skip_gradient_update_pushes_nothing(daemon, client, tname):
    cfg, keys, w, init, _ = _sgd_case(tname)
    client.open(tname, 4, init="zeros", optimizer="sgd", lr=0.5).update(
        np.array([1, 2, 3], np.int64), init)
    with tf.GradientTape() as tape:
        out = detf.dynamic_embedding_lookup(tf.constant(keys), cfg, tname,
                                            service_address=daemon,
                                            skip_gradient_update=True)
        loss = tf.reduce_sum(out * w)
    assert tape.gradient(loss, detf.trigger_variable(tname)) is None
    np.testing.assert_array_equal(
        _rows(client, tname, [1, 2, 3], dim=4, init="zeros", optimizer="sgd", lr=0.5), init)


# ---- training against TensorFlow's own optimizers on a dense variable -------------------

_VOCAB, _DIM = 12, 4


def _batches(n=6, seed=5):
    rng = np.random.default_rng(seed)
    # keys 1.._VOCAB (key 0 is "no feature": zeros, never stored); dense row = key - 1
    return [(rng.integers(1, _VOCAB + 1, size=(8, 3)).astype(np.int64),
             rng.standard_normal((8,)).astype(np.float32)) for _ in range(n)]


def _loss(emb, proj, y):
    # a loss whose gradient depends on the rows, so that a wrong step compounds
    pred = tf.reduce_sum(tf.tanh(emb) * proj, axis=[1, 2])
    return tf.reduce_mean(tf.square(pred - y))


@pytest.mark.parametrize("opt", ["sgd", "adagrad"])
def test_training_rows_equal_a_dense_tf_variable_reference(daemon, client, tname, opt):
    init = np.random.default_rng(6).uniform(-0.5, 0.5, (_VOCAB, _DIM)).astype(np.float32)
    proj = tf.constant(np.random.default_rng(7).standard_normal((3, _DIM)), tf.float32)
    lr = 0.3
    # Keras' Adagrad: acc += g^2; var -= lr g / sqrt(acc + eps); dynemb's (torch's):
    # var -= lr g / (sqrt(acc) + eps): the same with the accumulator started at 0.1 and a
    # tiny eps
    if opt == "sgd":
        hp, ref_opt = dict(lr=lr), tf.keras.optimizers.SGD(lr)
    else:
        hp = dict(lr=lr, initial_accumulator_value=0.1, eps=1e-10)
        ref_opt = tf.keras.optimizers.Adagrad(lr, initial_accumulator_value=0.1,
                                              epsilon=1e-10)
    cfg = detf.DynamicEmbeddingConfig(_DIM, initializer="zeros", optimizer=opt, **hp)
    client.open(tname, _DIM, init="zeros", optimizer=opt, **hp).update(
        np.arange(1, _VOCAB + 1, dtype=np.int64), init)
    dense = tf.Variable(init)
    trig = detf.trigger_variable(tname)

    @tf.function
    def dyn_step(k, y):
        with tf.GradientTape() as tape:
            loss = _loss(detf.dynamic_embedding_lookup(k, cfg, tname, service_address=daemon),
                         proj, y)
        tape.gradient(loss, trig)
        return loss

    @tf.function
    def ref_step(k, y):
        with tf.GradientTape() as tape:
            loss = _loss(tf.gather(dense, k - 1), proj, y)
        # dense: Keras' update of IndexedSlices squares each duplicate's slice apart
        # (Adagrad's accumulator then differs from the summed gradient's square)
        g = tf.convert_to_tensor(tape.gradient(loss, dense))
        ref_opt.apply_gradients([(g, dense)])
        return loss

    for k, y in _batches():
        l_dyn = dyn_step(tf.constant(k), tf.constant(y))
        l_ref = ref_step(tf.constant(k), tf.constant(y))
        np.testing.assert_allclose(float(l_dyn), float(l_ref), rtol=1e-4, atol=1e-6)
    got = _rows(client, tname, np.arange(1, _VOCAB + 1), dim=_DIM, init="zeros", optimizer=opt, **hp)
    assert np.abs(got - init).max() > 1e-3  # it trained
    np.testing.assert_allclose(got, dense.numpy(), rtol=1e-4, atol=1e-5)


def test_adam_rows_equal_a_lazy_per_key_reference_in_tf_ops(daemon, client, tname):
    """Adam: dynemb steps a key only when it is in the batch, with its own step count
    (lazy Adam, torch's formulas). Keras' Adam on a dense variable would move every row
    every step (its moments decay and its step count is global), so the reference here
    is that per-key rule written in TF ops."""
    init = np.random.default_rng(9).uniform(-0.5, 0.5, (_VOCAB, _DIM)).astype(np.float32)
    proj = tf.constant(np.random.default_rng(10).standard_normal((3, _DIM)), tf.float32)
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    hp = dict(lr=lr, betas=(b1, b2), eps=eps)
    cfg = detf.DynamicEmbeddingConfig(_DIM, initializer="zeros", optimizer="adam", **hp)
    client.open(tname, _DIM, init="zeros", optimizer="adam", **hp).update(
        np.arange(1, _VOCAB + 1, dtype=np.int64), init)
    trig = detf.trigger_variable(tname)
    w, m, v = (tf.Variable(init), tf.Variable(tf.zeros_like(init)),
               tf.Variable(tf.zeros_like(init)))
    t = tf.Variable(tf.zeros([_VOCAB], tf.float32))

    @tf.function
    def ref_step(k, y):
        with tf.GradientTape() as tape:
            loss = _loss(tf.gather(w, k - 1), proj, y)
        g = tf.convert_to_tensor(tape.gradient(loss, w))
        rows, _ = tf.unique(tf.reshape(k - 1, [-1]))
        idx = rows[:, None]
        tk = tf.gather(t, rows) + 1.0
        gk = tf.gather(g, rows)
        mk = b1 * tf.gather(m, rows) + (1 - b1) * gk
        vk = b2 * tf.gather(v, rows) + (1 - b2) * gk * gk
        bc1, bc2 = 1 - tf.pow(b1, tk), 1 - tf.pow(b2, tk)
        pk = tf.gather(w, rows) - (lr / bc1)[:, None] * mk / (
            tf.sqrt(vk) / tf.sqrt(bc2)[:, None] + eps)
        for var, val in ((t, tk), (m, mk), (v, vk), (w, pk)):
            var.scatter_nd_update(idx, val)
        return loss

    @tf.function
    def dyn_step(k, y):
        with tf.GradientTape() as tape:
            loss = _loss(detf.dynamic_embedding_lookup(k, cfg, tname, service_address=daemon),
                         proj, y)
        tape.gradient(loss, trig)
        return loss

    for k, y in _batches(n=8, seed=11):
        l_dyn = dyn_step(tf.constant(k), tf.constant(y))
        l_ref = ref_step(tf.constant(k), tf.constant(y))
        np.testing.assert_allclose(float(l_dyn), float(l_ref), rtol=1e-4, atol=1e-6)
    got = _rows(client, tname, np.arange(1, _VOCAB + 1), dim=_DIM, init="zeros",
                optimizer="adam", **hp)
    assert np.abs(got - init).max() > 1e-2  # it trained
    np.testing.assert_allclose(got, w.numpy(), rtol=1e-4, atol=1e-5)


# ---- Keras ---------------------------------------------------------------------------------

class TinyModel(tf.keras.Model):
    def __init__(self, cfg, name, sock):
        super().__init__()
        self.emb = detf.DynamicEmbedding(cfg, name, service_address=sock)
        self.out = tf.keras.layers.Dense(1)

    def call(self, keys, training=None):
        e = self.emb(keys, training=training)
        return tf.squeeze(self.out(tf.reshape(e, [-1, 3 * _DIM])), 1)


def test_keras_layer_eager_tf_function_and_fit(daemon, client, tname):
    cfg = detf.DynamicEmbeddingConfig(_DIM, initializer="uniform", init_a=-0.1, init_b=0.1,
                                      seed=3, optimizer="adagrad", lr=0.5)
    spec = dict(dim=_DIM, init="uniform", init_a=-0.1, init_b=0.1, seed=3,
                optimizer="adagrad", lr=0.5)
    model = TinyModel(cfg, tname, daemon)
    keys = tf.constant([[1, 2, 3], [4, 5, 1]], tf.int64)
    eager = model(keys, training=False).numpy()
    graph = tf.function(lambda k: model(k, training=False))(keys).numpy()
    np.testing.assert_allclose(eager, graph, rtol=1e-6)
    # the layer's output is the table's rows
    np.testing.assert_array_equal(model.emb(keys, training=False).numpy(),
                                  _rows(client, tname, keys.numpy(), **spec))

    # model.fit over a tf.data pipeline: a learnable target (a key's label is fixed)
    rng = np.random.default_rng(8)
    k = rng.integers(1, 21, size=(256, 3)).astype(np.int64)
    label = rng.standard_normal(21).astype(np.float32)
    y = label[k].sum(1)
    ds = tf.data.Dataset.from_tensor_slices((k, y)).batch(32)
    before = _rows(client, tname, np.arange(1, 21), **spec)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="mse")
    hist = model.fit(ds, epochs=6, verbose=0).history["loss"]
    after = _rows(client, tname, np.arange(1, 21), **spec)
    assert np.abs(after - before).max() > 1e-2, "fit pushed no gradient to the table"
    assert hist[-1] < 0.5 * hist[0], f"fit did not converge: {hist}"


def test_two_keras_models_share_one_table_by_name_and_config(daemon, client, tname):
    cfg, keys, w, init, want = _sgd_case(tname)
    client.open(tname, 4, init="zeros", optimizer="sgd", lr=0.5).update(
        np.array([1, 2, 3], np.int64), init)
    a = detf.DynamicEmbedding(cfg, tname, service_address=daemon)
    b = detf.DynamicEmbedding(detf.config_text(cfg), tname, service_address=daemon)
    k = tf.constant(keys)
    np.testing.assert_array_equal(a(k, training=False).numpy(), b(k, training=False).numpy())
    with tf.GradientTape() as tape:   # one SGD step through model a ...
        loss = tf.reduce_sum(a(k, training=True) * w)
    tape.gradient(loss, a.trainable_weights)
    # ... is what model b reads
    np.testing.assert_allclose(b(tf.constant([[1, 2, 3]], tf.int64), training=False)
                               .numpy()[0], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
def test_keras_learning_rate_schedule_reaches_the_daemon(daemon, client, tname, graph):
    cfg, keys, w, init, _ = _sgd_case(tname, lr=0.5)   # the table's lr 0.5: overridden
    client.open(tname, 4, init="zeros", optimizer="sgd", lr=0.5).update(
        np.array([1, 2, 3], np.int64), init)
    sched = tf.keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1,
                                                           decay_rate=0.5, staircase=True)
    layer = detf.DynamicEmbedding(cfg, tname, service_address=daemon, learning_rate=sched)

    def step(k):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(k, training=True) * w)
        return tape.gradient(loss, layer.trainable_weights)

    if graph:
        step = tf.function(step)
    want = init.copy()
    for s in range(3):
        step(tf.constant(keys))
        for pos, k in np.ndenumerate(keys):   # lr of step s: 0.1 * 0.5^s
            want[k - 1] -= 0.1 * 0.5 ** s * w[pos]
    assert int(layer.step.numpy()) == 3
    got = _rows(client, tname, [1, 2, 3], dim=4, init="zeros", optimizer="sgd", lr=0.5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---- errors --------------------------------------------------------------------------------

def test_no_daemon_is_unavailable_error(tmp_path, tname):
    sock = str(tmp_path / "nobody.sock")
    with pytest.raises(tf.errors.UnavailableError, match="nobody.sock"):
        detf.dynamic_embedding_lookup(tf.constant([1], tf.int64), dict(dim=2), tname,
                                      service_address=sock, timeout_ms=200)


def test_config_mismatch_is_invalid_argument_error(daemon, tname):
    detf.dynamic_embedding_lookup(tf.constant([1], tf.int64), dict(dim=2), tname,
                                  service_address=daemon)
    with pytest.raises(tf.errors.InvalidArgumentError, match="another config"):
        detf.dynamic_embedding_lookup(tf.constant([1], tf.int64), dict(dim=3), tname,
                                      service_address=daemon)
    # the process and the table go on
    out = detf.dynamic_embedding_lookup(tf.constant([1], tf.int64), dict(dim=2), tname,
                                        service_address=daemon)
    assert out.shape == (1, 2)


def test_bad_keys_and_no_optimizer_are_tf_errors(daemon, tname):
    with pytest.raises(tf.errors.InvalidArgumentError, match="int64"):
        detf.dynamic_embedding_lookup(tf.constant([1.5]), dict(dim=2), tname,
                                      service_address=daemon)
    with pytest.raises(tf.errors.FailedPreconditionError, match="no optimizer"):
        detf.dynamic_embedding_update(tf.constant([1], tf.int64), np.ones((1, 2)),
                                      dict(dim=2), tname, service_address=daemon,
                                      gradients=True)


# ---- zero-copy outputs and parallel calls ----------------------------------------------------

def test_an_output_kept_alive_across_many_lookups_stays_valid(daemon, client, tname):
    cfg = dict(dim=8, seed=2)
    keys = tf.constant([5, 6, 7], tf.int64)
    kept = detf.dynamic_embedding_lookup(keys, cfg, tname, service_address=daemon)
    want = kept.numpy().copy()
    t = client.open(tname, 8, seed=2)
    # later lookups (more than the connections an output may hold, so later ones are
    # copies) and new rows for the same keys must not change the kept tensor: it holds
    # the lookup's result, not the table
    for i in range(40):
        t.update(np.array([5, 6, 7], np.int64), np.full((3, 8), float(i), np.float32))
        detf.dynamic_embedding_lookup(tf.constant([5, 6, 7, 100 + i], tf.int64), cfg, tname,
                                      service_address=daemon)
    np.testing.assert_array_equal(kept.numpy(), want)
    np.testing.assert_allclose(tf.reduce_sum(kept, 1).numpy(), want.sum(1), rtol=1e-6)
    del kept


def test_tf_data_map_with_parallel_calls(daemon, client, tname):
    cfg = dict(dim=4, seed=4)
    keys = np.arange(1, 257, dtype=np.int64).reshape(64, 4)
    ds = tf.data.Dataset.from_tensor_slices(keys).map(
        lambda k: detf.dynamic_embedding_lookup(k, cfg, tname, service_address=daemon,
                                                skip_gradient_update=True),
        num_parallel_calls=4, deterministic=True)
    got = np.stack([x.numpy() for x in ds])
    np.testing.assert_array_equal(got, _rows(client, tname, keys, dim=4, seed=4))
