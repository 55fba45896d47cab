"""dynemb.tensorflow: the paper's DynamicEmbedding ops for TensorFlow 2.

Wrappers over the ops of ``libdynemb_tf.so`` (tf_op/kernels.c, TensorFlow's stable C
API; built by meson against the project venv's TensorFlow), with the paper's names and
argument order::

    import dynemb.tensorflow as detf
    cfg = detf.DynamicEmbeddingConfig(16, optimizer="adagrad", lr=0.05)
    emb = detf.DynamicEmbedding(cfg, "user_emb", service_address=sock)   # Keras layer
    x = emb(tf.constant([[1, 2], [3, 4]], tf.int64))                     # (2, 2, 16)

* ``dynamic_embedding_lookup(keys, config, var_name, service_address='',
  skip_gradient_update=False, timeout_ms=-1)``: keys (int64, or tf.string for
  ``keys="string"`` tables) of any shape -> float32 ``keys.shape + [dim]``. Missing keys
  are created with the table's initializer.
* Gradients: the lookup's registered gradient sums the incoming gradient per unique key
  (``tf.unique`` + ``tf.math.unsorted_segment_sum``) and sends it with
  ``DynamicEmbeddingUpdate(gradients=1)`` (``dynemb_apply_gradients``): the daemon runs the
  table's optimizer. The trigger's gradient (always 0) is computed from the push's
  output, so graph rewrites (Keras' train function) cannot drop the push. The gradient hangs on a scalar float *trigger* input: TensorFlow
  only computes gradients towards variables, so a lookup pushes when the trigger variable
  is among the sources of ``tape.gradient`` / the model's trainable weights. The Keras
  layer owns one (its only weight; Keras' optimizer steps it with a zero gradient, which
  changes nothing); with the functional form pass ``trigger=trigger_variable(var_name)``
  and include it in the tape's sources. ``skip_gradient_update=True`` stops the gradient.
  Step and learning rate of the push: step 0 and the table's configured lr, unless the
  lookup is given ``lr=`` / ``step=`` (then a ``tf.custom_gradient`` pushes with them), as
  the layer does with ``learning_rate=`` (a float or a Keras LearningRateSchedule, at the
  layer's own training-call count ``layer.step``; saved by ``get_config``, a schedule
  serialized by Keras and rebuilt by ``from_config``).
* ``dynamic_embedding_update(keys, values, config, var_name, ...)``: assign rows (or
  push gradients with ``gradients=True``); returns the count (created / stepped).
* ``top_k(queries, k, config, var_name, metric='dot', ...)`` -> (keys, scores, found).
* ``compute_sampled_logits`` / ``sampled_softmax_loss`` / ``sampled_sigmoid_loss``:
  TensorFlow's ``_compute_sampled_logits`` with candidates drawn by the daemon (the losses
  as ``tf.nn.sampled_softmax_loss`` and, for the sigmoid one, ``tf.nn.nce_loss``: per-row
  sums of sigmoid cross-entropies against labels 1/num_true and 0); the gradient w.r.t.
  ``inputs`` flows back and the embedding rows' gradients go to the daemon. No biases.
  int64 tables only for training (sampled keys of string tables are fingerprints).
* ``embedding_lookup_sparse(sp_ids, config, var_name, sp_weights=None, combiner='mean')``
  and the Keras layer ``DynamicEmbeddingBag``: ``tf.nn.embedding_lookup_sparse`` over a
  dynemb table (a tf.SparseTensor or tf.RaggedTensor of keys per example; combiners sum,
  mean, sqrtn; optional weights) -> ``[batch, dim]``, an example without keys gives zeros
  (``dense_shape[0]`` / ``nrows()`` rows, as ``safe_embedding_lookup_sparse``). The
  gradient goes through the one lookup of all the bag's keys.

config: a :class:`DynamicEmbeddingConfig` or a dict of its arguments; both map to the
config text the ops take (:func:`config_text`), which tf_op/de_tf.c parses into
``struct dynemb_table_spec``. Two processes that open the same ``var_name`` must use the same
config (``-EEXIST`` otherwise, as ``tf.errors.InvalidArgumentError`` naming the field).
No daemon at the address, or none answering within ``timeout_ms``:
``tf.errors.UnavailableError``. Key 0 and the empty string read as zeros (no feature).

Tested in real TensorFlow (tf_op/python/tests/test_tf_ops.py, marker tensorflow): values
vs the table's rows, the pushed gradients, SGD / Adagrad training vs Keras' optimizers on
a dense tf.Variable, the Keras layer in eager, tf.function and model.fit, the errors;
test_tf_more.py: bags vs tf.nn.embedding_lookup_sparse, the sampled losses vs
tf.nn.sampled_softmax_loss / nce_loss on the same candidates, top_k vs brute force, the
output inside the channel mapping (no copy), a SavedModel served by another process.
The kernels' fault paths are tested in C through a stand-in of TensorFlow's C API
(tests/tf_standin).

The op library is found through ``$DYNEMB_TF_LIB``, then
``$DYNEMB_BUILD/tf_op/libdynemb_tf.so``.
"""

import math
import numbers
import os

__all__ = ["DynamicEmbeddingConfig", "config_text", "dynamic_embedding_lookup",
           "dynamic_embedding_update", "top_k", "compute_sampled_logits",
           "sampled_softmax_loss", "sampled_sigmoid_loss", "embedding_lookup_sparse",
           "DynamicEmbedding", "DynamicEmbeddingBag", "trigger_variable"]

# ---- config mapping (pure Python: tested without TensorFlow) --------------------------

_INITS = ("zeros", "constant", "uniform", "trunc_normal")
# as dynemb.Client.open, so that a TF and a NumPy/torch client agree on a table's config
_INIT_DEFAULTS = {"zeros": (0.0, 0.0), "constant": (0.0, 0.0),
                  "uniform": (-0.05, 0.05), "trunc_normal": (0.0, 0.05)}
_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adam", "adamw", "ftrl", "rmsprop")
_HYPER = ("lr", "weight_decay", "momentum", "dampening", "beta1", "beta2", "eps",
          "initial_accumulator_value", "alpha", "l1", "l2", "lr_power", "ftrl_beta")
_ADMISSION = {"mode": ("admission", ("none", "count", "probability")),
              "min_count": ("admission_min_count", int),
              "probability": ("admission_probability", float),
              "sketch_width": ("admission_sketch_width", int),
              "sketch_depth": ("admission_sketch_depth", int),
              "reject_value": ("admission_reject", ("init", "zeros"))}
_EVICTION = {"policy": ("eviction", ("none", "lru", "lfu", "ttl", "l2")),
             "budget_bytes": ("eviction_budget_bytes", int),
             "ttl": ("eviction_ttl", int),
             "ttl_unit": ("eviction_ttl_unit", ("steps", "seconds")),
             "lru_clock": ("eviction_lru_clock", ("steps", "seconds")),
             "lfu_decay": ("eviction_lfu_decay", float),
             "disk_tier": ("eviction_disk_tier", bool)}
_DURABILITY = {"mode": ("durability", ("none", "async", "sync")),
               "window_ms": ("durability_window_ms", int)}


def _num(v, what):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, not {v!r}")
    return repr(float(v))


def _uint(v, what, bits=64):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < 2 ** bits:
        raise ValueError(f"{what} must be an integer in [0, 2^{bits}), not {v!r}")
    return str(int(v))


def _choice(v, allowed, what):
    if v not in allowed:
        raise ValueError(f"{what} must be one of {list(allowed)}, not {v!r}")
    return v


def _sub(items, v, what, main, table):
    """admission / eviction / durability: None, a mode string, or a dict."""
    if v is None:
        return
    if isinstance(v, str):
        v = {main: v}
    if not isinstance(v, dict):
        raise TypeError(f"{what} must be None, a str or a dict, not {type(v).__name__}")
    bad = set(v) - set(table)
    if bad:
        raise ValueError(f"{what}: unknown settings {sorted(bad)}; known: {sorted(table)}")
    for k, x in v.items():
        key, kind = table[k]
        if isinstance(kind, tuple):
            items[key] = _choice(x, kind, f"{what} {k}")
        elif kind is bool:
            if not isinstance(x, bool):
                raise ValueError(f"{what} {k} must be a bool, not {x!r}")
            items[key] = "1" if x else "0"
        elif kind is int:
            items[key] = _uint(x, f"{what} {k}", 64 if k in ("budget_bytes", "ttl") else 32)
        else:
            items[key] = _num(x, f"{what} {k}")


class DynamicEmbeddingConfig:
    """A table's config (the paper's DynamicEmbeddingConfig): dim, key type, initializer,
    server-side optimizer and its hyperparameters (torch.optim's names; ``betas=(b1, b2)``
    and FTRL's ``beta`` accepted), admission, eviction, durability (as
    ``dynemb.Client.open``)."""

    def __init__(self, dim, keys="int64", initializer="uniform", init_a=None, init_b=None,
                 seed=0, nslots=0, slot_init=0.0, optimizer=None, admission=None,
                 eviction=None, durability=None, **hyperparameters):
        self.dim, self.keys, self.initializer = dim, keys, initializer
        self.init_a, self.init_b, self.seed = init_a, init_b, seed
        self.nslots, self.slot_init, self.optimizer = nslots, slot_init, optimizer
        self.admission, self.eviction, self.durability = admission, eviction, durability
        self.hyperparameters = dict(hyperparameters)
        self.text = config_text(self)  # validates now

    @property
    def dimension(self):
        return self.dim

    def __repr__(self):
        return f"DynamicEmbeddingConfig({self.text!r})"


def config_text(config):
    """The op attribute for a DynamicEmbeddingConfig or a dict of its arguments:
    "key=value;..." in a fixed order (tf_op/de_tf.h lists the keys). A str is taken as
    config text already (the kernels validate it)."""
    if isinstance(config, str):
        return config
    if isinstance(config, dict):
        config = DynamicEmbeddingConfig(**config)
    if not isinstance(config, DynamicEmbeddingConfig):
        raise TypeError(f"config must be a DynamicEmbeddingConfig or a dict, "
                        f"not {type(config).__name__}")
    c = config
    items = {"dim": _uint(c.dim, "dim", 32)}
    if c.dim == 0:
        raise ValueError("dim must be >= 1")
    items["keys"] = {"int64": "int64", "str": "string", "string": "string"}.get(c.keys)
    if items["keys"] is None:
        raise ValueError(f"keys must be 'int64' or 'string', not {c.keys!r}")
    _choice(c.initializer, _INITS, "initializer")
    a, b = _INIT_DEFAULTS[c.initializer]
    items["init"] = c.initializer
    items["init_a"] = _num(a if c.init_a is None else c.init_a, "init_a")
    items["init_b"] = _num(b if c.init_b is None else c.init_b, "init_b")
    items["seed"] = _uint(c.seed, "seed")
    items["nslots"] = _uint(c.nslots, "nslots", 32)
    items["slot_init"] = _num(c.slot_init, "slot_init")
    hp = {k: v for k, v in c.hyperparameters.items() if v is not None}
    if "betas" in hp:
        b1, b2 = hp.pop("betas")
        hp["beta1"], hp["beta2"] = b1, b2
    if "beta" in hp:
        hp["ftrl_beta"] = hp.pop("beta")
    bad = set(hp) - set(_HYPER)
    if bad:
        raise ValueError(f"unknown hyperparameters {sorted(bad)}; known: {list(_HYPER)}")
    if c.optimizer in (None, "none"):
        if hp:
            raise ValueError(f"hyperparameters {sorted(hp)} need an optimizer")
    else:
        items["optimizer"] = _choice(c.optimizer, _OPTIMIZERS, "optimizer")
        for k in _HYPER:
            if k in hp:
                items[k] = _num(hp[k], k)
    _sub(items, c.admission, "admission", "mode", _ADMISSION)
    _sub(items, c.eviction, "eviction", "policy", _EVICTION)
    _sub(items, c.durability, "durability", "mode", _DURABILITY)
    return ";".join(f"{k}={v}" for k, v in items.items())


# ---- TensorFlow ------------------------------------------------------------------------

if os.environ.get("DYNEMB_TF_CONFIG_ONLY") == "1":
    tf = None  # the config half only (its tests), even where TensorFlow is installed
else:
    try:
        import tensorflow as tf
    except ImportError as _e:  # pragma: no cover - depends on the machine
        raise ImportError("dynemb.tensorflow needs TensorFlow 2 (`import tensorflow` "
                          f"failed: {_e}); dynemb and dynemb.torch work without it") from _e

_lib = None
_triggers = {}


def _ops():
    global _lib
    if _lib is None:
        path = os.environ.get("DYNEMB_TF_LIB")
        if not path:
            path = os.path.join(os.environ.get("DYNEMB_BUILD", ""), "tf_op", "libdynemb_tf.so")
        if not os.path.exists(path):
            raise ImportError(f"libdynemb_tf.so not found at {path!r}: build dynemb where "
                              "TensorFlow is installed and set DYNEMB_TF_LIB or DYNEMB_BUILD")
        _lib = tf.load_op_library(path)
    return _lib


def _attrs(config, var_name, service_address, timeout_ms):
    return dict(var_name=var_name, config=config_text(config),
                service_address=service_address, timeout_ms=int(timeout_ms))


def _dim(config):
    """dim from a config (text: the last dim= item; the kernels reject repeats)."""
    dim = None
    for item in config_text(config).split(";"):
        k, _, v = item.partition("=")
        if k.strip() == "dim":
            dim = int(v)
    if dim is None:
        raise ValueError("config has no dim")
    return dim


def trigger_variable(var_name):
    """The scalar variable the gradient of var_name's functional lookups hangs on."""
    if var_name not in _triggers:
        _triggers[var_name] = tf.Variable(0.0, name=f"{var_name}_dynemb_trigger")
    return _triggers[var_name]


def dynamic_embedding_lookup(keys, config, var_name, service_address="",
                             skip_gradient_update=False, timeout_ms=-1, trigger=None,
                             readonly=False, lr=None, step=None):
    """lr, step (scalars or tensors, evaluated when the gradient is computed): sent with
    the pushed gradients (the daemon's lr for this push instead of the table's; the step
    the table's step-based settings count). Without them, the registered gradient pushes
    with the table's lr and step 0."""
    keys = tf.convert_to_tensor(keys)
    if trigger is None:
        trigger = tf.constant(0.0) if skip_gradient_update else trigger_variable(var_name)
    attrs = _attrs(config, var_name, service_address, timeout_ms)
    if skip_gradient_update or (lr is None and step is None):
        out = _ops().dynamic_embedding_lookup(keys=keys, trigger=trigger,
                                              readonly=int(readonly), **attrs)
    else:
        lr_t = tf.cast(-1.0 if lr is None else lr, tf.float32)
        step_t = tf.cast(0 if step is None else step, tf.int64)

        @tf.custom_gradient
        def _lookup(trig):
            o = _ops().dynamic_embedding_lookup(keys=keys, trigger=trig,
                                                readonly=int(readonly), **attrs)

            def grad(dy):
                push = _push_to(attrs, keys, dy, lr_t, step_t)
                return tf.zeros_like(trig) * tf.cast(tf.minimum(push, 0), tf.float32)
            return o, grad
        out = _lookup(tf.convert_to_tensor(trigger))
    out.set_shape(keys.shape.concatenate([_dim(config)]))
    return tf.stop_gradient(out) if skip_gradient_update else out


def dynamic_embedding_update(keys, values, config, var_name, service_address="",
                             timeout_ms=-1, gradients=False, lr=-1.0, step=0):
    return _ops().dynamic_embedding_update(
        keys=tf.convert_to_tensor(keys), values=tf.convert_to_tensor(values, tf.float32),
        lr=tf.constant(lr, tf.float32), step=tf.constant(step, tf.int64),
        gradients=int(bool(gradients)), **_attrs(config, var_name, service_address, timeout_ms))


def _str_attr(op, name):
    v = op.get_attr(name)
    return v.decode() if isinstance(v, bytes) else v


def _push_to(attrs, keys, grads, lr, step):
    """Send grads (rows for keys) to the table of attrs, summed per unique key."""
    flat = tf.reshape(keys, [-1])
    g = tf.reshape(grads, [tf.size(flat), -1])
    ukeys, idx = tf.unique(flat)
    ug = tf.math.unsorted_segment_sum(g, idx, tf.size(ukeys))
    return _ops().dynamic_embedding_update(keys=ukeys, values=ug, lr=lr, step=step,
                                           gradients=1, **attrs)


def _push(op, keys, grads):
    """_push_to the table of op (its attributes), with the table's lr and step 0."""
    attrs = dict(var_name=_str_attr(op, "var_name"), config=_str_attr(op, "config"),
                 service_address=_str_attr(op, "service_address"),
                 timeout_ms=op.get_attr("timeout_ms"))
    return _push_to(attrs, keys, grads, tf.constant(-1.0), tf.constant(0, tf.int64))


if tf is not None:
    @tf.RegisterGradient("DynamicEmbeddingLookup")
    def _lookup_grad(op, grad):
        push = _push(op, op.inputs[0], grad)
        # the trigger's gradient is 0 computed from the push's count: a data dependency,
        # so no graph rewrite (Keras' train function, grappler) can drop the push the way
        # a control dependency on a constant zero can be dropped
        return [None, tf.zeros_like(op.inputs[1]) * tf.cast(tf.minimum(push, 0), tf.float32)]

    @tf.RegisterGradient("DynamicEmbeddingSampledLogits")
    def _sampled_grad(op, g_logits, *unused):
        x, labels = op.inputs[0], op.inputs[1]
        sampled, w = op.outputs[2], op.outputs[3]
        b, t = tf.shape(labels)[0], tf.shape(labels)[1]
        wt = tf.reshape(w[:b * t], [b, t, -1])
        ws = w[b * t:]
        gt, gs = g_logits[:, :t], g_logits[:, t:]
        dx = tf.einsum("bt,btd->bd", gt, wt) + tf.matmul(gs, ws)
        dwt = tf.reshape(gt[:, :, None] * x[:, None, :], [b * t, -1])
        dws = tf.matmul(gs, x, transpose_a=True)
        push = _push(op, tf.concat([tf.reshape(labels, [-1]), sampled], 0),
                     tf.concat([dwt, dws], 0))
        # dx carries the push as a data dependency (see _lookup_grad)
        return [dx + tf.cast(tf.minimum(push, 0), dx.dtype), None]


def top_k(queries, k, config, var_name, metric="dot", service_address="", timeout_ms=-1):
    return _ops().dynamic_embedding_top_k(
        queries=tf.convert_to_tensor(queries, tf.float32), k=int(k), metric=metric,
        **_attrs(config, var_name, service_address, timeout_ms))


def compute_sampled_logits(inputs, labels, num_sampled, config, var_name, num_true=1,
                           sampler="log_uniform", unique=True, power=0.75, seed=0,
                           remove_accidental_hits=True, subtract_log_q=True,
                           service_address="", timeout_ms=-1):
    labels = tf.reshape(tf.convert_to_tensor(labels), [-1, num_true])
    logits, out_labels, _, _ = _ops().dynamic_embedding_sampled_logits(
        inputs=tf.convert_to_tensor(inputs, tf.float32), labels=labels,
        num_sampled=int(num_sampled), sampler=sampler, unique=int(bool(unique)),
        power=float(power), seed=int(seed), remove_accidental_hits=int(bool(remove_accidental_hits)),
        subtract_log_q=int(bool(subtract_log_q)),
        **_attrs(config, var_name, service_address, timeout_ms))
    return logits, out_labels


def sampled_softmax_loss(labels, inputs, num_sampled, config, var_name, num_true=1, **kw):
    logits, out_labels = compute_sampled_logits(inputs, labels, num_sampled, config, var_name,
                                                num_true=num_true, **kw)
    return tf.nn.softmax_cross_entropy_with_logits(labels=tf.stop_gradient(out_labels),
                                                   logits=logits)


def sampled_sigmoid_loss(labels, inputs, num_sampled, config, var_name, num_true=1, **kw):
    """tf.nn.nce_loss's loss over the daemon's candidates: per example, the sum of the
    sigmoid cross-entropies of the true logits (label 1/num_true) and the sampled ones
    (label 0); -> [batch]."""
    logits, out_labels = compute_sampled_logits(inputs, labels, num_sampled, config, var_name,
                                                num_true=num_true, **kw)
    xent = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.stop_gradient(out_labels),
                                                   logits=logits)
    return tf.reduce_sum(xent, axis=1)


_COMBINERS = ("sum", "mean", "sqrtn")


def embedding_lookup_sparse(sp_ids, config, var_name, sp_weights=None, combiner="mean",
                            service_address="", timeout_ms=-1, **lookup_kw):
    """tf.nn.embedding_lookup_sparse over a dynemb table: sp_ids a tf.SparseTensor
    ([batch, n], values the keys) or a tf.RaggedTensor ([batch, None]); sp_weights None or
    of the same structure (float). -> float32 [batch, dim]; rows without keys are zeros.
    combiner: 'sum', 'mean' (sum / sum of weights) or 'sqrtn' (sum / sqrt of the sum of
    squared weights). lookup_kw: dynamic_embedding_lookup's (trigger, lr, step, ...)."""
    if combiner not in _COMBINERS:
        raise ValueError(f"combiner must be one of {list(_COMBINERS)}, not {combiner!r}")
    if isinstance(sp_ids, tf.RaggedTensor):
        if sp_ids.ragged_rank != 1:
            raise ValueError(f"sp_ids: a RaggedTensor of rank 2 ([batch, None]), not ragged "
                             f"rank {sp_ids.ragged_rank}")
        keys, rows, nrows = sp_ids.values, sp_ids.value_rowids(), sp_ids.nrows()
        w = None if sp_weights is None else sp_weights.values
    elif isinstance(sp_ids, tf.SparseTensor):
        keys, rows = sp_ids.values, sp_ids.indices[:, 0]
        nrows = sp_ids.dense_shape[0]
        w = None if sp_weights is None else sp_weights.values
    else:
        raise TypeError(f"sp_ids must be a tf.SparseTensor or a tf.RaggedTensor, not "
                        f"{type(sp_ids).__name__}")
    emb = dynamic_embedding_lookup(keys, config, var_name, service_address,
                                   timeout_ms=timeout_ms, **lookup_kw)
    rows = tf.cast(rows, tf.int32)
    nrows = tf.cast(nrows, tf.int32)
    if w is None:
        w = tf.ones_like(rows, tf.float32)
    else:
        w = tf.cast(w, tf.float32)
        emb = emb * w[:, None]
    out = tf.math.unsorted_segment_sum(emb, rows, nrows)
    if combiner == "mean":
        den = tf.math.unsorted_segment_sum(w, rows, nrows)
    elif combiner == "sqrtn":
        den = tf.sqrt(tf.math.unsorted_segment_sum(w * w, rows, nrows))
    else:
        return out
    return tf.math.divide_no_nan(out, den[:, None])


if tf is not None:
    class DynamicEmbedding(tf.keras.layers.Layer):
        """Keras layer: keys -> keys.shape + [dim]; training pushes gradients to the
        daemon (its one weight is the gradient trigger, see the module docstring)."""

        def __init__(self, config, var_name, service_address="", timeout_ms=-1,
                     skip_gradient_update=False, learning_rate=None, **kwargs):
            """learning_rate: None (the table's lr), a float, or a Keras
            LearningRateSchedule evaluated at the layer's training-call count (its
            non-trainable ``step``, which the pushes also carry)."""
            super().__init__(**kwargs)
            self.learning_rate = learning_rate
            self.step = self.add_weight(name="dynemb_step", shape=(), dtype="int64",
                                        initializer="zeros", trainable=False)
            self.config_text = config_text(config)
            self.var_name, self.service_address = var_name, service_address
            self.timeout_ms, self.skip_gradient_update = timeout_ms, skip_gradient_update
            self.trigger = self.add_weight(name="dynemb_trigger", shape=(),
                                           initializer="zeros",
                                           trainable=not skip_gradient_update)

        def _lr_step(self, training):
            """(lr, step) for this call's pushes: (None, None) unless a learning_rate is
            set and the call trains; a schedule is evaluated at the step, which then
            counts this call."""
            if self.learning_rate is None or not training:
                return None, None
            step = self.step.value if hasattr(self.step, "value") else self.step
            step = tf.convert_to_tensor(step)
            lr = self.learning_rate
            if callable(lr):  # a schedule: its value at this call's step
                lr = lr(step)
            self.step.assign_add(1)
            return lr, step

        def call(self, keys, training=None):
            lr, step = self._lr_step(training)
            return dynamic_embedding_lookup(
                keys, self.config_text, self.var_name, self.service_address,
                self.skip_gradient_update, self.timeout_ms, trigger=self.trigger,
                readonly=training is False, lr=lr, step=step)

        def get_config(self):
            lr = self.learning_rate
            if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule):
                lr = tf.keras.optimizers.schedules.serialize(lr)
            elif lr is not None and not isinstance(lr, numbers.Real):
                raise ValueError(f"learning_rate {lr!r} cannot be saved in get_config: use "
                                 "a float or a Keras LearningRateSchedule")
            return dict(super().get_config(), config=self.config_text,
                        var_name=self.var_name, service_address=self.service_address,
                        timeout_ms=self.timeout_ms,
                        skip_gradient_update=self.skip_gradient_update, learning_rate=lr)

        @classmethod
        def from_config(cls, config):
            config = dict(config)
            if isinstance(config.get("learning_rate"), dict):
                config["learning_rate"] = tf.keras.optimizers.schedules.deserialize(
                    config["learning_rate"])
            return cls(**config)

    class DynamicEmbeddingBag(DynamicEmbedding):
        """Keras layer: a tf.RaggedTensor or tf.SparseTensor of keys per example ->
        [batch, dim], combined as embedding_lookup_sparse (sum / mean / sqrtn); call it
        with weights= for weighted bags. Trains as DynamicEmbedding."""

        def __init__(self, config, var_name, combiner="mean", **kwargs):
            if combiner not in _COMBINERS:
                raise ValueError(f"combiner must be one of {list(_COMBINERS)}, "
                                 f"not {combiner!r}")
            super().__init__(config, var_name, **kwargs)
            self.combiner = combiner

        def call(self, keys, weights=None, training=None):
            lr, step = self._lr_step(training)
            return embedding_lookup_sparse(
                keys, self.config_text, self.var_name, sp_weights=weights,
                combiner=self.combiner, service_address=self.service_address,
                timeout_ms=self.timeout_ms, skip_gradient_update=self.skip_gradient_update,
                trigger=self.trigger, readonly=training is False, lr=lr, step=step)

        def get_config(self):
            return dict(super().get_config(), combiner=self.combiner)
