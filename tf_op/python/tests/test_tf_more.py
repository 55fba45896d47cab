"""dynemb.tensorflow in real TensorFlow, beyond the lookup: bags, sampled losses, top-k,
the zero-copy proof and a SavedModel served by another process.

* Bags: embedding_lookup_sparse (SparseTensor and RaggedTensor keys, weights, combiners
  sum / mean / sqrtn) equals tf.nn.embedding_lookup_sparse over a dense tf.Variable
  holding the table's rows; an example without keys gives zeros as
  tf.nn.safe_embedding_lookup_sparse does; DynamicEmbeddingBag trained with the daemon's
  SGD ends with the rows Keras' SGD gives the dense variable.
* Sampled losses: with the candidates the NumPy client draws for the same seed,
  sampled_softmax_loss and sampled_sigmoid_loss equal tf.nn.sampled_softmax_loss and
  tf.nn.nce_loss given those candidates (sampled_values), their gradient w.r.t. the inputs
  equals TensorFlow's, and the rows after the push equal the dense variable after
  TensorFlow's SGD step.
* top_k equals a brute-force NumPy top-k over the table's rows.
* Zero-copy: an int64 lookup's output lies inside the connection's channel mapping
  (memfd "dynemb-channel" in /proc/self/maps), a string lookup's does not.
* Serving: a tf.Module around a trained Keras model with the layer, saved with
  tf.saved_model.save, loaded in a fresh Python process (the op library loaded, no
  dynemb Python import) serves the trained rows with read-only lookups: unseen keys are
  not created.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

from conftest import tf_op_library  # noqa: E402

_LIB, tf = tf_op_library()

import dynemb  # noqa: E402
import dynemb.tensorflow as detf  # noqa: E402

_V, _D = 10, 4  # keys 1.._V (key 0 is "no feature"); dense row index = key


def _dense(client, name, **spec):
    """[_V + 1, _D] rows of keys 0.._V as the NumPy client reads them (row 0 zeros)."""
    t = client.open(name, _D, **spec)
    rows = t.lookup(np.arange(1, _V + 1, dtype=np.int64))
    return np.vstack([np.zeros((1, _D), np.float32), rows]), t


# ---- bags -----------------------------------------------------------------------------

_BAG = [[1, 2, 3], [4], [2, 2, 5, 9]]
_BAGW = [[0.5, 1.0, 2.0], [3.0], [1.0, -1.0, 0.25, 4.0]]


def _sparse(rows, dtype):
    idx = [[i, j] for i, r in enumerate(rows) for j in range(len(r))]
    vals = [v for r in rows for v in r]
    return tf.SparseTensor(idx, tf.constant(vals, dtype), [len(rows), max(map(len, rows))])


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_bag_equals_tf_embedding_lookup_sparse(daemon, client, tname, combiner):
    cfg = dict(dim=_D, seed=11)
    params, _ = _dense(client, tname, seed=11)
    sp, spw = _sparse(_BAG, tf.int64), _sparse(_BAGW, tf.float32)
    for w_sp in (None, spw):
        want = tf.nn.embedding_lookup_sparse(tf.constant(params), sp, w_sp,
                                             combiner=combiner).numpy()
        got = detf.embedding_lookup_sparse(sp, cfg, tname, sp_weights=w_sp,
                                           combiner=combiner, service_address=daemon)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)
        rg = tf.ragged.constant(_BAG, tf.int64)
        rw = None if w_sp is None else tf.ragged.constant(_BAGW, tf.float32)
        got = detf.embedding_lookup_sparse(rg, cfg, tname, sp_weights=rw, combiner=combiner,
                                           service_address=daemon)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_bag_example_without_keys_is_zeros_and_bad_input_is_named(daemon, client, tname):
    cfg = dict(dim=_D, seed=12)
    params, _ = _dense(client, tname, seed=12)
    rows = [[3, 1], [], [7]]
    want = tf.nn.safe_embedding_lookup_sparse(tf.constant(params), _sparse(rows, tf.int64),
                                              combiner="mean").numpy()
    got = detf.embedding_lookup_sparse(tf.ragged.constant(rows, tf.int64), cfg, tname,
                                       service_address=daemon).numpy()
    assert got.shape == (3, _D)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[1], np.zeros(_D))
    with pytest.raises(ValueError, match="combiner must be one of"):
        detf.embedding_lookup_sparse(tf.ragged.constant(rows, tf.int64), cfg, tname,
                                     combiner="max", service_address=daemon)
    with pytest.raises(TypeError, match="tf.SparseTensor or a tf.RaggedTensor"):
        detf.embedding_lookup_sparse(tf.constant([[1, 2]], tf.int64), cfg, tname,
                                     service_address=daemon)


def test_bag_layer_training_equals_keras_sgd_on_a_dense_variable(daemon, client, tname):
    lr = 0.3
    cfg = detf.DynamicEmbeddingConfig(_D, seed=13, optimizer="sgd", lr=lr)
    params, _ = _dense(client, tname, seed=13, optimizer="sgd", lr=lr)
    ref = tf.Variable(params)
    ref_opt = tf.keras.optimizers.SGD(learning_rate=lr)
    bag = detf.DynamicEmbeddingBag(cfg, tname, combiner="mean", service_address=daemon)
    proj = tf.constant(np.random.default_rng(2).standard_normal((_D, 1)), tf.float32)
    rng = np.random.default_rng(3)
    for _ in range(4):
        rows = [list(rng.integers(1, _V + 1, rng.integers(1, 5))) for _ in range(6)]
        y = tf.constant(rng.standard_normal((6, 1)), tf.float32)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((bag(tf.ragged.constant(rows, tf.int64), training=True)
                                  @ proj - y) ** 2)
        tape.gradient(loss, bag.trainable_weights)
        with tf.GradientTape() as tape:
            e = tf.nn.embedding_lookup_sparse(ref, _sparse(rows, tf.int64), None,
                                              combiner="mean")
            loss_ref = tf.reduce_sum((e @ proj - y) ** 2)
        ref_opt.apply_gradients([(tape.gradient(loss_ref, ref), ref)])
        np.testing.assert_allclose(float(loss), float(loss_ref), rtol=1e-5)
    got, _ = _dense(client, tname, seed=13, optimizer="sgd", lr=lr)
    np.testing.assert_allclose(got[1:], ref.numpy()[1:], rtol=1e-5, atol=1e-6)


# ---- sampled losses and top-k ---------------------------------------------------------------

_B, _T, _S = 5, 2, 4


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_sampled_losses_equal_tf_nn_given_the_same_candidates(daemon, client, tname, loss):
    lr, seed = 0.2, 17
    cfg = detf.DynamicEmbeddingConfig(_D, seed=21, optimizer="sgd", lr=lr)
    params, t = _dense(client, tname, seed=21, optimizer="sgd", lr=lr)
    rng = np.random.default_rng(5)
    labels = rng.integers(1, _V + 1, (_B, _T)).astype(np.int64)
    x = tf.Variable(rng.standard_normal((_B, _D)).astype(np.float32))
    # the candidates the daemon draws for this seed (same seed and table state, same draw)
    sampled, true_exp, samp_exp, _ = t.sample(_S, positives=labels, kind="uniform",
                                              unique=True, seed=seed)
    ref = tf.Variable(params)
    sv = (tf.constant(sampled.astype(np.int64)), tf.constant(true_exp),
          tf.constant(samp_exp))
    tf_loss = tf.nn.sampled_softmax_loss if loss == "softmax" else tf.nn.nce_loss
    with tf.GradientTape() as tape:
        want = tf_loss(weights=ref, biases=tf.zeros([_V + 1]), labels=labels, inputs=x,
                       num_sampled=_S, num_classes=_V + 1, num_true=_T, sampled_values=sv,
                       remove_accidental_hits=True)
        total = tf.reduce_sum(want)
    gx_ref, gw_ref = tape.gradient(total, [x, ref])
    ours = detf.sampled_softmax_loss if loss == "softmax" else detf.sampled_sigmoid_loss
    with tf.GradientTape() as tape:
        got = ours(labels, x, _S, cfg, tname, num_true=_T, sampler="uniform", unique=True,
                   seed=seed, service_address=daemon)
        total = tf.reduce_sum(got)
    gx = tape.gradient(total, x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx.numpy(), gx_ref.numpy(), rtol=1e-4, atol=1e-5)
    tf.keras.optimizers.SGD(learning_rate=lr).apply_gradients([(gw_ref, ref)])
    after, _ = _dense(client, tname, seed=21, optimizer="sgd", lr=lr)
    np.testing.assert_allclose(after[1:], ref.numpy()[1:], rtol=1e-4, atol=1e-5)
    assert not np.allclose(after, params)  # the push changed rows


def test_top_k_equals_brute_force_over_the_rows(daemon, client, tname):
    cfg = dict(dim=_D, seed=31)
    params, _ = _dense(client, tname, seed=31)
    q = np.random.default_rng(6).standard_normal((3, _D)).astype(np.float32)
    for metric in ("dot", "cosine"):
        keys, scores, found = detf.top_k(q, 4, cfg, tname, metric=metric,
                                         service_address=daemon)
        rows = params[1:]
        s = q @ rows.T
        if metric == "cosine":
            s = s / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(rows, axis=1)[None]
        order = np.argsort(-s, axis=1, kind="stable")[:, :4]
        np.testing.assert_array_equal(found.numpy(), [4, 4, 4])
        np.testing.assert_array_equal(keys.numpy(), order + 1)
        np.testing.assert_allclose(scores.numpy(), np.take_along_axis(s, order, 1),
                                   rtol=1e-5, atol=1e-6)


# ---- zero-copy ------------------------------------------------------------------------------

def _channel_ranges():
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if "dynemb-channel" in line:
                lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
                out.append((lo, hi))
    return out


def test_int64_lookup_output_is_the_channels_memory(daemon, client, tname):
    keys = tf.constant(np.arange(1, 65, dtype=np.int64))
    out = detf.dynamic_embedding_lookup(keys, dict(dim=16, seed=3), tname,
                                        service_address=daemon, skip_gradient_update=True)
    # numpy() copies (its docstring says so); _numpy(), which it copies, is the tensor's
    # own buffer for a CPU EagerTensor
    a = out._numpy()
    ptr = a.__array_interface__["data"][0]
    ranges = _channel_ranges()
    assert ranges, "no dynemb-channel mapping in this process"
    assert any(lo <= ptr and ptr + a.nbytes <= hi for lo, hi in ranges), \
        f"output at {ptr:#x} is outside the channel mappings {ranges}"
    np.testing.assert_array_equal(a, client.open(tname, 16, seed=3).lookup(
        keys.numpy(), readonly=True))
    # string lookups are copied out of the channel (the control: the check can fail)
    s = detf.dynamic_embedding_lookup(tf.constant(["a", "b"]), dict(dim=16, keys="string"),
                                      tname + "_s", service_address=daemon,
                                      skip_gradient_update=True)._numpy()
    sp = s.__array_interface__["data"][0]
    assert not any(lo <= sp < hi for lo, hi in _channel_ranges())


# ---- serving: a SavedModel in another process -----------------------------------------------

_SERVE = r"""
import os, sys
import numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
tf.load_op_library(sys.argv[1])
m = tf.saved_model.load(sys.argv[2])
keys = tf.constant(np.array([[1, 2], [3, 999]], np.int64))
np.save(sys.argv[3], m.serve(keys).numpy())
print("served", "dynemb" in sys.modules)
"""


def test_saved_model_serves_the_trained_rows_in_another_process(daemon, client, tname,
                                                                 tmp_path):
    cfg = detf.DynamicEmbeddingConfig(_D, seed=41, optimizer="adagrad", lr=0.5)
    emb = detf.DynamicEmbedding(cfg, tname, service_address=daemon)
    model = tf.keras.Sequential([tf.keras.Input(shape=(2,), dtype="int64"), emb,
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(7)
    x = rng.integers(1, 4, (64, 2)).astype(np.int64)
    y = rng.standard_normal((64, 1)).astype(np.float32)
    before = client.open(tname, _D, seed=41, optimizer="adagrad", lr=0.5).lookup(
        np.array([1, 2, 3], np.int64), readonly=True)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)

    class Serve(tf.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int64)])
        def serve(self, keys):
            return self.m(keys, training=False)

    path = str(tmp_path / "saved")
    tf.saved_model.save(Serve(model), path)
    out = str(tmp_path / "out.npy")
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", _SERVE, _LIB, path, out], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "served False" in r.stdout  # served without the dynemb package
    t = client.open(tname, _D, seed=41, optimizer="adagrad", lr=0.5)
    rows = t.lookup(np.array([1, 2, 3], np.int64), readonly=True)
    assert not np.allclose(rows, before)  # training changed them
    want = model(tf.constant([[1, 2], [3, 999]], tf.int64), training=False).numpy()
    np.testing.assert_allclose(np.load(out), want, rtol=1e-5, atol=1e-6)
    # the serving process looked up read-only: key 999 was not created
    _, status = t.lookup(np.array([999], np.int64), readonly=True, with_status=True)
    assert status[0] == dynemb.ST_MISSING


def test_layer_config_round_trips_with_a_learning_rate_schedule(daemon, tname):
    sched = tf.keras.optimizers.schedules.ExponentialDecay(0.5, decay_steps=3, decay_rate=0.5)
    for lr, at in ((sched, lambda l, s: float(l(s))), (0.25, lambda l, s: l)):
        a = detf.DynamicEmbedding(dict(dim=3, optimizer="sgd", lr=0.1), tname,
                                  service_address=daemon, learning_rate=lr)
        cfg = a.get_config()
        b = detf.DynamicEmbedding.from_config(cfg)
        assert (b.config_text, b.var_name, b.service_address) == (a.config_text, tname, daemon)
        for step in (0, 3, 7):
            assert at(b.learning_rate, step) == pytest.approx(at(lr, step))
    bag = detf.DynamicEmbeddingBag(dict(dim=3), tname + "_b", combiner="sqrtn",
                                   service_address=daemon)
    assert detf.DynamicEmbeddingBag.from_config(bag.get_config()).combiner == "sqrtn"
    with pytest.raises(ValueError, match="cannot be saved in get_config"):
        detf.DynamicEmbedding(dict(dim=3), tname, learning_rate=lambda s: 0.1).get_config()
