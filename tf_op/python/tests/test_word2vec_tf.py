"""The paper's word2vec claim in TensorFlow (tools/word2vec --framework tf, small corpus,
first 300 batches): skip-gram through dynemb's TF ops (lookups under a GradientTape, the
registered gradient pushing to the daemon's optimizer) against tf.keras.layers.Embedding
sized for the whole final vocabulary, Keras' SGD and Adagrad and a lazy momentum in TF
ops (tools/word2vec_lib/sgns_tf.py).

* Final losses and the moving averages within 2% for each optimizer, and the loss fell.
* SGD and Momentum rows agree (at most 1 row in 1000 with an element 1e-3 apart); Adagrad's
  rows are not compared: Keras' Adagrad divides by sqrt(acc + eps), not sqrt(acc) + eps, and
  Adagrad's scale-free step turns that into O(lr) element gaps for tiny gradient histories
  (against torch's Adagrad the same TF path agreed row for row, largest gap 9e-6:
  BENCHMARKS.md).
* Every row the TF lookups created held the reference's initial value; the vocabulary grew.
"""

import pytest

pytestmark = pytest.mark.tensorflow

from conftest import tf_op_library, tool_lib  # noqa: E402

tf_op_library()
pytest.importorskip("torch")

import dynemb  # noqa: E402

W = tool_lib("word2vec_lib")


@pytest.fixture(scope="module")
def tf_run(daemon):
    with dynemb.Client(daemon, name="w2v-tf-test") as c:
        return W.run(c, W.SMALL, batches=300, framework="tf", service_address=daemon)


@pytest.mark.parametrize("opt", W.sgns.OPTIMIZERS)
def test_tf_loss_curves_match_keras_embedding(tf_run, opt):
    r = tf_run["results"][opt]
    assert tf_run["framework"] == "tf" and r["batches"] == 300
    assert r["rel_diff"] < 0.02, r["rel_diff"]
    assert r["max_rel_dev"] < 0.02, r["max_rel_dev"]
    assert r["final_torch"] < r["first_torch"] * 0.95  # it learned
    if opt != "adagrad":
        assert r["rows_over_1e3"] <= r["rows_compared"] // 1000, r["rows_over_1e3"]
    assert r["created_checked"] == r["vocab"][-1]["keys_in"]
    keys_in = [v["keys_in"] for v in r["vocab"]]
    assert keys_in[-1] > 5 * keys_in[0], keys_in
