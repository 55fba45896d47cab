"""dynemb.tensorflow's pure-Python part: the config mapping (DynamicEmbeddingConfig / dict ->
the ops' config text). TensorFlow is not needed: the module is loaded from its file with
DYNEMB_TF_CONFIG_ONLY=1, which skips the TensorFlow half. The expected texts follow the
rules in tf_op/de_tf.h; tests/tf_standin/test_tf_kernels.c (config suite) parses the
same canonical text in C."""
import importlib.util
import math
import os
import subprocess
import sys

import pytest

# the installed package's file (find_spec does not run dynemb/__init__.py, which needs
# libdynemb)
SRC = os.path.join(importlib.util.find_spec("dynemb").submodule_search_locations[0],
                   "tensorflow.py")

pytestmark = pytest.mark.tensorflow


def _load():
    old = os.environ.get("DYNEMB_TF_CONFIG_ONLY")
    os.environ["DYNEMB_TF_CONFIG_ONLY"] = "1"
    try:
        spec = importlib.util.spec_from_file_location("dynemb_tf_under_test", SRC)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:  # dynemb.tensorflow itself (test_tf_ops.py) loads the TensorFlow half
        if old is None:
            del os.environ["DYNEMB_TF_CONFIG_ONLY"]
        else:
            os.environ["DYNEMB_TF_CONFIG_ONLY"] = old
    return mod


detf = _load()
BASE = "keys=int64;init=uniform;init_a=-0.05;init_b=0.05;seed=0;nslots=0;slot_init=0.0"


def test_defaults_match_dynemb_client_open():
    # dynemb.Client.open's defaults: uniform in [-0.05, 0.05), no optimizer
    assert detf.config_text({"dim": 8}) == "dim=8;" + BASE


def test_optimizer_and_hyperparameters():
    t = detf.config_text(detf.DynamicEmbeddingConfig(
        16, optimizer="adam", lr=0.5, betas=(0.8, 0.95), eps=None))
    assert t == "dim=16;" + BASE + ";optimizer=adam;lr=0.5;beta1=0.8;beta2=0.95"
    t = detf.config_text(dict(dim=4, optimizer="ftrl", beta=0.25, l1=1e-3))
    assert t.endswith(";optimizer=ftrl;l1=0.001;ftrl_beta=0.25")


def test_keys_init_and_learning_settings():
    t = detf.config_text(dict(dim=4, keys="str", initializer="constant", init_a=0.5, seed=9,
                              admission={"min_count": 3, "mode": "count"},
                              eviction={"policy": "ttl", "ttl": 100, "ttl_unit": "seconds",
                                        "disk_tier": True},
                              durability="async"))
    items = dict(i.split("=") for i in t.split(";"))
    assert items["keys"] == "string" and items["init"] == "constant"
    assert float(items["init_a"]) == 0.5 and float(items["init_b"]) == 0.0
    assert items["seed"] == "9"
    assert items["admission"] == "count" and items["admission_min_count"] == "3"
    assert items["eviction"] == "ttl" and items["eviction_ttl"] == "100"
    assert items["eviction_ttl_unit"] == "seconds" and items["eviction_disk_tier"] == "1"
    assert items["durability"] == "async"


def test_floats_round_trip_exactly():
    x = 0.1 + 0.2  # not representable in a short decimal
    t = detf.config_text(dict(dim=2, optimizer="sgd", lr=x))
    assert float(dict(i.split("=") for i in t.split(";"))["lr"]) == x


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(dim=0), ValueError, "dim"),
    (dict(dim=-1), ValueError, "dim"),
    (dict(dim=2.5), ValueError, "dim"),
    (dict(dim=4, keys="bytes"), ValueError, "keys"),
    (dict(dim=4, initializer="gaussian"), ValueError, "initializer"),
    (dict(dim=4, lr=0.1), ValueError, "need an optimizer"),
    (dict(dim=4, optimizer="lamb"), ValueError, "optimizer"),
    (dict(dim=4, optimizer="sgd", lrate=0.1), ValueError, "unknown hyperparameters"),
    (dict(dim=4, optimizer="sgd", lr=math.nan), ValueError, "finite"),
    (dict(dim=4, optimizer="sgd", lr=True), ValueError, "finite"),
    (dict(dim=4, admission={"min_cnt": 3}), ValueError, "unknown settings"),
    (dict(dim=4, admission=3), TypeError, "admission"),
    (dict(dim=4, eviction={"disk_tier": 1}), ValueError, "bool"),
    (dict(dim=4, eviction="fifo"), ValueError, "eviction"),
    (dict(dim=4, durability={"window_ms": -1}), ValueError, "window_ms"),
])
def test_bad_configs_raise(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        detf.config_text(kw)


def test_text_passes_through_and_dim_is_read():
    assert detf.config_text("dim=3; optimizer=sgd") == "dim=3; optimizer=sgd"
    assert detf._dim("optimizer=sgd; dim = 7") == 7
    assert detf._dim({"dim": 5}) == 5
    with pytest.raises(ValueError, match="no dim"):
        detf._dim("optimizer=sgd")
    with pytest.raises(TypeError):
        detf.config_text(42)


def test_import_without_tensorflow_says_why():
    # TensorFlow hidden (the project venv has it): `import tensorflow` raises ImportError
    code = ("import importlib.util, sys; sys.modules['tensorflow'] = None; "
            "s = importlib.util.spec_from_file_location('m', "
            f"{SRC!r}); m = importlib.util.module_from_spec(s); s.loader.exec_module(m)")
    env = {k: v for k, v in os.environ.items() if k != "DYNEMB_TF_CONFIG_ONLY"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "dynemb.tensorflow needs TensorFlow 2" in r.stderr
