"""word2vec_lib — the paper's word2vec claim: skip-gram through dynemb vs. nn.Embedding.

Owns: a deterministic Zipf corpus whose vocabulary grows during training (``Corpus``),
the skip-gram negative-sampling loss (``sgns_loss``), two learners that train the same
model on the same pairs and negatives in lockstep (``DynembLearner``: both embedding
tables in dynembd, gradients pushed with ``apply_gradients``; ``TorchLearner``: two
``nn.Embedding(sparse=True)`` sized for the final vocabulary with torch.optim or, for
Momentum, an explicit lazy (per-row) momentum), and the comparison of their loss curves
(``run``, ``compare``); ``sgns_tf`` has the two learners in TensorFlow (``run(...,
framework="tf")``: dynemb's TF ops vs tf.keras.layers.Embedding). Used by tools/word2vec and tf_op/python/tests/test_word2vec.py.

Never: depends on dynemb's server-side sampling (negatives are drawn here, in numpy, from
the unigram^0.75 of the words seen so far); changes the dynemb package.
"""

from .sgns import (Corpus, DynembLearner, TorchLearner, LazyMomentum, compare, moving_average,
                   run, sgns_loss, SMALL, FULL)

__all__ = ["Corpus", "DynembLearner", "TorchLearner", "LazyMomentum", "compare",
           "moving_average", "run", "sgns_loss", "SMALL", "FULL"]
