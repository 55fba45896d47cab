#!/usr/bin/python3
"""tools/bench/bench_tf.py — dynemb in TensorFlow against the in-process Keras Embedding and
TensorFlow Recommenders-Addons (TFRA), in one run.

Measures, with the same Keras click-through model (one embedding table shared by F sparse
fields, concatenated, an MLP of 64-32-1, sigmoid cross-entropy; Adagrad lr 0.05 for the
embeddings) and the same Zipf(1.05) stream of ids over a vocabulary of V:
  steps_per_s_dynemb            dynemb.tensorflow.DynamicEmbedding (server-side Adagrad,
                                rows created on first sight), eager GradientTape steps
  steps_per_s_keras_embedding   tf.keras.layers.Embedding holding the whole vocabulary in
                                process, Keras Adagrad, the same steps
  steps_per_s_tfra              tfra.dynamic_embedding.keras.layers.Embedding (CPU cuckoo
                                hash table) with de.DynamicEmbeddingOptimizer(Adagrad)
  lookup_rows_per_s_dynemb      dynamic_embedding_lookup of a 4096-key batch at dim 64
                                (read-only, existing keys)
  lookup_rows_per_s_tfra        tfra.dynamic_embedding.embedding_lookup of the same batch
  lookup_rows_per_s_gather      tf.gather from a tf.Variable (the floor, in-process)
  steps_per_s_no_embedding      the same step with a constant in place of the embedding
                                (the ceiling any embedding can reach)
  ..._dynemb_tfra_venv          dynemb's steps and lookups again in TFRA's TensorFlow, with
                                an op library built for it (--tfra-build), so that dynemb and
                                TFRA are compared in one TensorFlow
TFRA runs in a second virtual environment (--tfra-python; TFRA 0.8.1 is built for one
TensorFlow, 2.16.2 with Keras 2, while the project venv has 2.21.0): this script runs itself there
with --tfra-part and reads its JSON. Where that venv is missing or TFRA fails, its figures
are null with the reason. Prints a table with ratios, the command and the machine; --json
prints one JSON object.

Usage: tools/bench/bench_tf.py [--build DIR] [--steps N] [--json]
                               [--tfra-python PATH] [--tfra-build DIR] [--lookup-reps N]
"""

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

V, F, DIM, BATCH, LOOKUP_KEYS, LOOKUP_DIM = 100_000, 8, 16, 512, 4096, 64


def stream(seed, steps):
    import numpy as np
    rng = np.random.default_rng(seed)
    ids = (rng.zipf(1.05, (steps, BATCH, F)) % V + 1).astype(np.int64)
    # a label the first field's id decides (a learnable signal; the figures are speed)
    y = (ids[..., 0] * 2654435761 % 64 < 24).astype(np.float32)
    return ids, y[..., None]


def mlp(tf):
    return tf.keras.Sequential([tf.keras.layers.Dense(64, activation="relu"),
                                tf.keras.layers.Dense(32, activation="relu"),
                                tf.keras.layers.Dense(1)])


def time_steps(step, ids, y, warm=5):
    for i in range(warm):
        step(ids[i], y[i])
    t0 = time.perf_counter()
    for i in range(warm, len(ids)):
        step(ids[i], y[i])
    return (len(ids) - warm) / (time.perf_counter() - t0)


def train_steps_per_s(tf, emb, opt_e, ids, y, **call_kw):
    """Steps/s of the CTR model over emb (MLP head, Adam) on the stream; opt_e steps emb's
    trainable weights (None: the layer steps itself, as dynemb's pushes do)."""
    head = mlp(tf)
    opt_h = tf.keras.optimizers.Adam(1e-3)

    @tf.function
    def step(x, t):
        with tf.GradientTape() as tape:
            z = head(tf.reshape(emb(x, **call_kw), [BATCH, F * DIM]))
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(t, z))
        g = tape.gradient(loss, emb.trainable_weights + head.trainable_weights)
        n = len(emb.trainable_weights)
        if opt_e is not None:
            opt_e.apply_gradients(zip(g[:n], emb.trainable_weights))
        opt_h.apply_gradients(zip(g[n:], head.trainable_weights))
        # dynemb: g[:n] is the trigger's zero gradient, computed from the push: an output
        return loss, (g[:n] if opt_e is None else [])
    return time_steps(step, ids, y)


class NoEmbedding:
    """The step's ceiling: the same model and step with the embedding replaced by a
    constant [BATCH, F, DIM] tensor (no lookup, no embedding gradient)."""
    trainable_weights = []

    def __init__(self, tf):
        self.out = tf.constant(0.01, tf.float32, [BATCH, F, DIM])

    def __call__(self, x):
        return self.out


def keras_part(tf, ids, y):
    return train_steps_per_s(tf, tf.keras.layers.Embedding(V + 1, DIM),
                             tf.keras.optimizers.Adagrad(0.05), ids, y)


def lookup_keys(tf):
    import numpy as np
    return tf.constant(np.random.default_rng(3).integers(1, V + 1, LOOKUP_KEYS))


def rows_per_s(f, keys, reps):
    """Rows per second of f(keys) (a tf.function; its result fetched), after 5 warm calls."""
    for _ in range(5):
        f(keys).numpy()
    t0 = time.perf_counter()
    for _ in range(reps):
        f(keys).numpy()
    return reps * LOOKUP_KEYS / (time.perf_counter() - t0)


def gather_rows_per_s(tf, reps):
    var = tf.Variable(tf.random.uniform([V + 1, LOOKUP_DIM]))
    return rows_per_s(tf.function(lambda k: tf.gather(var, k)), lookup_keys(tf), reps)


def dynemb_model(tf, a, sock, ids, y, suffix=""):
    """dynemb's training steps/s and lookup rows/s in this TensorFlow (keys ..._suffix)."""
    import dynemb.tensorflow as detf
    cfg = detf.DynamicEmbeddingConfig(DIM, optimizer="adagrad", lr=0.05)
    emb = detf.DynamicEmbedding(cfg, f"bench_tf_{os.getpid()}", service_address=sock)
    out = {"steps_per_s_dynemb" + suffix: train_steps_per_s(tf, emb, None, ids, y,
                                                             training=True)}
    lcfg = detf.DynamicEmbeddingConfig(LOOKUP_DIM, seed=2)
    name = f"bench_tf_lookup_{os.getpid()}"
    keys = lookup_keys(tf)
    detf.dynamic_embedding_lookup(keys, lcfg, name, sock, skip_gradient_update=True)
    f = tf.function(lambda k: detf.dynamic_embedding_lookup(
        k, lcfg, name, sock, skip_gradient_update=True, readonly=True))
    out["lookup_rows_per_s_dynemb" + suffix] = rows_per_s(f, keys, a.lookup_reps)
    return out


def dynemb_part(a, sock):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    ids, y = stream(1, a.steps)
    out = dict(tensorflow=tf.__version__)
    out["steps_per_s_keras_embedding"] = keras_part(tf, ids, y)
    out["steps_per_s_no_embedding"] = train_steps_per_s(tf, NoEmbedding(tf), None, ids, y)
    out.update(dynemb_model(tf, a, sock, ids, y))
    out["lookup_rows_per_s_gather"] = gather_rows_per_s(tf, a.lookup_reps)
    return out


def tfra_part(a):
    """Runs in the TFRA venv: prints one JSON object. With --sock (and DYNEMB_TF_LIB: an op
    library built against this venv's TensorFlow), dynemb's model runs here too."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_recommenders_addons as tfra
    de = tfra.dynamic_embedding
    ids, y = stream(1, a.steps)
    out = dict(tensorflow=tf.__version__, tfra=tfra.__version__)
    out["steps_per_s_keras_embedding_tfra_venv"] = keras_part(tf, ids, y)
    if a.sock:
        out.update(dynemb_model(tf, a, a.sock, ids, y, suffix="_tfra_venv"))
    emb = de.keras.layers.Embedding(DIM, initializer=tf.keras.initializers.RandomUniform(
        -0.05, 0.05), name="tfra_emb")
    opt_e = de.DynamicEmbeddingOptimizer(tf.keras.optimizers.Adagrad(0.05))
    out["steps_per_s_tfra"] = train_steps_per_s(tf, emb, opt_e, ids, y)
    var = de.get_variable("tfra_lookup", dim=LOOKUP_DIM,
                          initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05))
    f = tf.function(lambda k: de.embedding_lookup(var, k, name="lk"))
    out["lookup_rows_per_s_tfra"] = rows_per_s(f, lookup_keys(tf), a.lookup_reps)
    print(json.dumps(out))


def start_daemon(build):
    d = tempfile.mkdtemp(prefix="dynemb-bench-tf.")
    sock = os.path.join(d, "s")
    proc = subprocess.Popen([os.path.join(build, "src", "server", "dynembd"), "--foreground",
                             "--socket", sock, "--allow-uid", str(os.geteuid())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        if os.path.exists(sock):
            return proc, sock
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    sys.exit("bench_tf: dynembd did not start")


def tfra_run(a, sock):
    """This script's --tfra-part in the TFRA venv, with dynemb's model when a.tfra_build
    has an op library for that venv's TensorFlow."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")  # TFRA's layers are Keras 2's
    cmd = [a.tfra_python, os.path.abspath(__file__), "--tfra-part", "--steps", str(a.steps),
           "--lookup-reps", str(a.lookup_reps)]
    lib = os.path.join(os.path.abspath(a.tfra_build), "tf_op", "libdynemb_tf.so")
    out = {}
    if os.path.exists(lib):
        env.update(DYNEMB_TF_LIB=lib, DYNEMB_BUILD=os.path.abspath(a.tfra_build))
        cmd += ["--sock", sock]
    else:
        out["dynemb_tfra_venv_reason"] = (f"no {lib}: meson setup {a.tfra_build} "
                                          "-Dtf_python=.venv-tfra/bin/python (BENCHMARKS.md)")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if r.returncode == 0:
        t = json.loads(r.stdout.strip().splitlines()[-1])
        t["tensorflow_tfra_venv"] = t.pop("tensorflow")
        out.update(t)
    else:
        out["tfra_reason"] = f"TFRA run failed ({r.returncode}): {r.stderr[-800:]}"
    return out


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default="build-release")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lookup-reps", type=int, default=300)
    p.add_argument("--tfra-python", default=os.path.join(ROOT, ".venv-tfra", "bin", "python"))
    p.add_argument("--tfra-build", default=os.path.join(ROOT, "build-tf216"),
                   help="a dynemb build whose op library links the TFRA venv's TensorFlow "
                        "(meson setup DIR -Dtf_python=.venv-tfra/bin/python): dynemb's model "
                        "runs in that TensorFlow too, beside TFRA's")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tfra-part", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sock", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "tf_op", "python"))
    if a.tfra_part:
        return tfra_part(a)
    build = os.path.abspath(a.build)
    os.environ.setdefault("DYNEMB_BUILD", build)
    proc, sock = start_daemon(build)
    try:
        res = dynemb_part(a, sock)
        res.update(steps_per_s_tfra=None, lookup_rows_per_s_tfra=None, tfra_reason=None,
                   steps_per_s_dynemb_tfra_venv=None, lookup_rows_per_s_dynemb_tfra_venv=None,
                   dynemb_tfra_venv_reason=None)
        if not os.access(a.tfra_python, os.X_OK):
            res["tfra_reason"] = f"no TFRA venv at {a.tfra_python} (see BENCHMARKS.md)"
        else:
            res.update(tfra_run(a, sock))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    res["command"] = " ".join(shlex.quote(x) for x in ["tools/bench/bench_tf.py"] + argv)
    res["machine"] = f"{platform.node()} {os.cpu_count()} CPUs {platform.processor()}"
    if a.json:
        print(json.dumps(res))
        return 0

    def ratio(x, y):
        return "n/a" if x is None or y is None else f"{x / y:.2f}"

    def num(x, f):
        return "n/a" if x is None else format(x, f)
    print(f"bench_tf: V {V:,}, {F} fields, dim {DIM}, batch {BATCH}, {a.steps} steps; "
          f"lookup {LOOKUP_KEYS} keys at dim {LOOKUP_DIM}, {a.lookup_reps} reps")
    print(f"  steps/s dynemb {res['steps_per_s_dynemb']:.1f}, Keras Embedding "
          f"{res['steps_per_s_keras_embedding']:.1f} (ratio "
          f"{ratio(res['steps_per_s_dynemb'], res['steps_per_s_keras_embedding'])}), TFRA "
          f"{num(res['steps_per_s_tfra'], '.1f')} (dynemb/TFRA "
          f"{ratio(res['steps_per_s_dynemb'], res['steps_per_s_tfra'])})")
    print(f"  steps/s with no embedding at all (the ceiling) "
          f"{res['steps_per_s_no_embedding']:.1f}: TFRA x2 would need "
          f"{num(None if res['steps_per_s_tfra'] is None else 2 * res['steps_per_s_tfra'], '.1f')}")
    ld, lt = res["lookup_rows_per_s_dynemb"], res["lookup_rows_per_s_tfra"]
    print(f"  lookup rows/s dynemb {ld:.3g}, tf.gather {res['lookup_rows_per_s_gather']:.3g}, "
          f"TFRA {num(lt, '.3g')} (dynemb/TFRA {ratio(ld, lt)})")
    dv, tv = res["steps_per_s_dynemb_tfra_venv"], res.get("tensorflow_tfra_venv")
    if dv is not None:
        print(f"  in TFRA's TensorFlow {tv}: steps/s dynemb {dv:.1f}, TFRA "
              f"{num(res['steps_per_s_tfra'], '.1f')} (dynemb/TFRA "
              f"{ratio(dv, res['steps_per_s_tfra'])}), Keras Embedding "
              f"{num(res.get('steps_per_s_keras_embedding_tfra_venv'), '.1f')}; lookup rows/s "
              f"dynemb {res['lookup_rows_per_s_dynemb_tfra_venv']:.3g} (dynemb/TFRA "
              f"{ratio(res['lookup_rows_per_s_dynemb_tfra_venv'], lt)})")
    for k in ("tfra_reason", "dynemb_tfra_venv_reason"):
        if res[k]:
            print(f"  {k}: {res[k]}")
    print(f"command: {res['command']}\nmachine: {res['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
