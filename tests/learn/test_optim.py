"""
test_optim.py — dynemb's optimizers (src/learn/optim.c) against independent references.

For each optimizer a seeded random stream (200 steps; batches of 1..32 keys drawn from
50 keys, with duplicates and the odd key 0; normal gradients; the lr changes halfway) is
written in the format of tests/learn/learn_driver.c, run by that driver (path in env
LEARN_DRIVER) on a fresh table, and compared with:

  * torch.optim, sparse semantics: one torch.nn.Parameter of shape [dim] per key, with
    its own optimizer instance, stepped only in the steps where the key appears, with
    that step's summed gradient and lr. This is what dynemb promises (rows not in a batch
    are not touched, Adam's step count is per key), so it is the reference for every
    torch optimizer. The optimizer state (momentum buffer, sums, moments) and the step
    count are compared too.
  * torch.optim on a dense nn.Embedding, where the semantics coincide (SGD without weight
    decay, Adagrad without weight decay), and once where they do not (Adam: a dense
    optimizer keeps moving rows that had gradients before; we assert our rows differ
    from it and equal the sparse reference).
  * FTRL-Proximal, which torch lacks: a numpy float64 transcription of McMahan et al.
    2013, Algorithm 1 (per coordinate: sigma, z, n, then the closed-form w), with TF's
    conventions mapped onto it (see ftrl_reference).

Tolerance: 1e-5 absolute on the row values (torch runs in float32; the FTRL reference in
float64); 1e-5 relative (to max(1, |x|)) on optimizer state, whose accumulators grow past
where float32 resolves 1e-5 absolute.
"""
import os
import struct
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the project venv's (tools/python-requirements.txt)

DRIVER = os.environ.get("LEARN_DRIVER")
pytestmark = pytest.mark.skipif(not DRIVER, reason="LEARN_DRIVER (path of learn_driver) not set")

KIND = dict(sgd=1, momentum=2, nesterov=3, adagrad=4, adam=5, adamw=6, ftrl=7, rmsprop=8)
SLOTS = dict(sgd=0, momentum=1, nesterov=1, adagrad=1, adam=2, adamw=2, ftrl=2, rmsprop=1)
DIM = 16
NKEYS = 50        # keys the batches draw from
NEXPLICIT = 40    # of those, given explicit initial values; the rest come from the
INIT_C = 0.25     # table's DE_INIT_CONSTANT initializer, on their first update
NUNTOUCHED = 10   # keys with initial values that no batch contains
STEPS = 200
LR_FACTOR = 0.3   # lr from step STEPS // 2 on (a schedule changing it at run time)
SLOT_INIT = 7.0   # the table's slot_init: must not leak into optimizer state
TOL = 1e-5

CFG_FIELDS = ("lr", "weight_decay", "momentum", "dampening", "beta1", "beta2", "eps",
              "initial_accumulator_value", "alpha", "l1", "l2", "lr_power", "ftrl_beta")


# ---- the stream ---------------------------------------------------------------------------

class Stream:
    def __init__(self, seed, base_lr):
        rng = np.random.default_rng(seed)
        allk = rng.choice(2**62, size=NKEYS + NUNTOUCHED, replace=False).astype(np.uint64) + 1
        self.active = allk[:NKEYS]
        self.untouched = allk[NKEYS:]
        self.init_keys = np.concatenate([self.active[:NEXPLICIT], self.untouched])
        self.init_vals = rng.normal(0.0, 0.5, (len(self.init_keys), DIM)).astype(np.float32)
        self.steps = []  # (lr, keys uint64[n], grads float32[n, DIM])
        for s in range(STEPS):
            n = int(rng.integers(1, 33))
            keys = self.active[rng.integers(0, NKEYS, n)].copy()
            if rng.random() < 0.1:
                keys[rng.integers(0, n)] = 0
            grads = rng.normal(size=(n, DIM)).astype(np.float32)
            lr = base_lr if s < STEPS // 2 else base_lr * LR_FACTOR
            self.steps.append((lr, keys, grads))
        self.out_keys = np.concatenate([self.active, self.untouched])

    def initial(self):
        """key -> float32 row before any step"""
        init = {int(k): np.full(DIM, INIT_C, np.float32) for k in self.active}
        for k, v in zip(self.init_keys, self.init_vals):
            init[int(k)] = v.copy()
        return init

    @staticmethod
    def summed(keys, grads):
        """distinct nonzero keys in first-occurrence order -> float32 sum in batch order"""
        out = {}
        for k, g in zip(keys, grads):
            k = int(k)
            if k == 0:
                continue
            out[k] = g.copy() if k not in out else (out[k] + g).astype(np.float32)
        return out

    def counts(self):
        c = {int(k): 0 for k in self.out_keys}
        for _, keys, grads in self.steps:
            for k in self.summed(keys, grads):
                c[k] += 1
        return c

    def write(self, path, kind, cfg):
        b = [struct.pack("<IIIIII", 0x534C4544, 1, DIM, 0, KIND[kind], 0)]
        b.append(struct.pack("<13d", *(float(cfg.get(f, 0.0)) for f in CFG_FIELDS)))
        b.append(struct.pack("<ff", INIT_C, SLOT_INIT))
        b.append(struct.pack("<I", len(self.init_keys)))
        b.append(self.init_keys.astype("<u8").tobytes() + self.init_vals.astype("<f4").tobytes())
        b.append(struct.pack("<I", len(self.steps)))
        for lr, keys, grads in self.steps:
            b.append(struct.pack("<dI", lr, len(keys)))
            b.append(keys.astype("<u8").tobytes() + grads.astype("<f4").tobytes())
        b.append(struct.pack("<I", len(self.out_keys)))
        b.append(self.out_keys.astype("<u8").tobytes())
        with open(path, "wb") as f:
            f.write(b"".join(b))


def run_driver(tmp_path, stream, kind, cfg):
    sp, op = tmp_path / f"{kind}.stream", tmp_path / f"{kind}.out"
    stream.write(sp, kind, cfg)
    r = subprocess.run([DRIVER, str(sp), str(op)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = op.read_bytes()
    (rf,) = struct.unpack_from("<I", data)
    assert rf == DIM * (1 + SLOTS[kind])
    rec = np.dtype([("aux", "<u8"), ("row", "<f4", (rf,))])
    recs = np.frombuffer(data, rec, offset=4)
    assert len(recs) == len(stream.out_keys)
    return {int(k): (int(r["aux"]), r["row"][:DIM].copy(), r["row"][DIM:].reshape(-1, DIM).copy())
            for k, r in zip(stream.out_keys, recs)}


# ---- references ----------------------------------------------------------------------------

def torch_factory(kind, cfg):
    c = cfg
    if kind in ("sgd", "momentum", "nesterov"):
        return lambda ps: torch.optim.SGD(ps, lr=c["lr"], momentum=c.get("momentum", 0.0),
                                          dampening=c.get("dampening", 0.0),
                                          weight_decay=c.get("weight_decay", 0.0),
                                          nesterov=kind == "nesterov", foreach=False)
    if kind == "adagrad":
        return lambda ps: torch.optim.Adagrad(ps, lr=c["lr"], weight_decay=c.get("weight_decay", 0.0),
                                              initial_accumulator_value=c["initial_accumulator_value"],
                                              eps=c["eps"], foreach=False)
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return lambda ps: cls(ps, lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"],
                              weight_decay=c.get("weight_decay", 0.0), foreach=False)
    if kind == "rmsprop":
        return lambda ps: torch.optim.RMSprop(ps, lr=c["lr"], alpha=c["alpha"], eps=c["eps"],
                                              weight_decay=c.get("weight_decay", 0.0), foreach=False)
    raise ValueError(kind)


def torch_state(kind, st):
    """the optimizer state of one parameter, in dynemb's slot order"""
    if not st:  # never stepped
        return []
    if kind in ("momentum", "nesterov"):
        return [st["momentum_buffer"]]
    if kind == "adagrad":
        return [st["sum"]]
    if kind in ("adam", "adamw"):
        return [st["exp_avg"], st["exp_avg_sq"]]
    if kind == "rmsprop":
        return [st["square_avg"]]
    return []


def sparse_torch_reference(stream, kind, cfg):
    """one Parameter and one optimizer per key, stepped only when the key has a gradient"""
    make = torch_factory(kind, cfg)
    params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in stream.initial().items()}
    opts = {k: make([p]) for k, p in params.items()}
    for lr, keys, grads in stream.steps:
        for k, g in Stream.summed(keys, grads).items():
            o = opts[k]
            for grp in o.param_groups:
                grp["lr"] = lr
            params[k].grad = torch.from_numpy(g)
            o.step()
    out = {}
    for k, p in params.items():
        st = opts[k].state.get(p, {})
        slots = [s.detach().numpy().copy() for s in torch_state(kind, st)]
        step = int(st["step"]) if "step" in st else None
        out[k] = (p.detach().numpy().copy(), slots, step)
    return out


def dense_torch_reference(stream, kind, cfg):
    """torch.optim on one nn.Embedding holding every key: every row is stepped every step"""
    keys = [int(k) for k in stream.out_keys]
    index = {k: i for i, k in enumerate(keys)}
    init = stream.initial()
    emb = torch.nn.Embedding(len(keys), DIM)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(np.stack([init[k] for k in keys])))
    opt = torch_factory(kind, cfg)(emb.parameters())
    for lr, bkeys, grads in stream.steps:
        keep = bkeys != 0
        idx = torch.tensor([index[int(k)] for k in bkeys[keep]], dtype=torch.long)
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.zero_grad()
        emb(idx).backward(torch.from_numpy(grads[keep]))  # duplicates summed by autograd
        opt.step()
    w = emb.weight.detach().numpy()
    return {k: w[index[k]].copy() for k in keys}


def ftrl_reference(stream, cfg):
    """
    FTRL-Proximal, McMahan et al. 2013 ("Ad Click Prediction: a View from the Trenches"),
    Algorithm 1, per coordinate i, for a gradient g_i at the current w_i:
        sigma_i = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha
        z_i    += g_i - sigma_i * w_i
        n_i    += g_i^2
        w_i     = 0                                             if |z_i| <= lambda1
                  -(z_i - sgn(z_i) lambda1) / ((beta + sqrt(n_i)) / alpha + lambda2)  else
    Mapping of TensorFlow's Ftrl (what dynemb follows) onto the paper: alpha = lr (the
    current one); lambda1 = l1; lambda2 = 2 * l2 (TF penalizes l2 * |w|^2, the paper
    lambda2/2 * |w|^2); beta = Keras' beta; n starts at initial_accumulator_value instead
    of 0; and w starts at the row's initial value instead of the w the paper derives from
    z = 0 (TF keeps w in the variable). lr_power != -0.5 replaces sqrt(x) by x^-lr_power
    (TF's generalization). Computed in float64 from the float32 inputs.
    """
    p = -cfg["lr_power"]
    l1, lam2, beta = cfg["l1"], 2.0 * cfg["l2"], cfg.get("ftrl_beta", 0.0)
    w = {k: v.astype(np.float64) for k, v in stream.initial().items()}
    z = {k: np.zeros(DIM) for k in w}
    n = {k: np.full(DIM, cfg["initial_accumulator_value"]) for k in w}
    for alpha, keys, grads in stream.steps:
        for k, g in Stream.summed(keys, grads).items():
            g = g.astype(np.float64)
            sigma = ((n[k] + g * g) ** p - n[k] ** p) / alpha
            z[k] = z[k] + g - sigma * w[k]
            n[k] = n[k] + g * g
            zk = z[k]
            w[k] = np.where(np.abs(zk) <= l1, 0.0,
                            -(zk - np.sign(zk) * l1) / ((beta + n[k] ** p) / alpha + lam2))
    return {k: (w[k], [n[k], z[k]]) for k in w}


# ---- the cases -------------------------------------------------------------------------------

CASES = {
    "sgd": ("sgd", dict(lr=0.05)),
    "sgd_wd": ("sgd", dict(lr=0.05, weight_decay=0.01)),
    "momentum": ("momentum", dict(lr=0.02, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "nesterov": ("nesterov", dict(lr=0.02, momentum=0.9, weight_decay=0.01)),
    "adagrad": ("adagrad", dict(lr=0.1, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-10)),
    "adam": ("adam", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)),
    "adamw": ("adamw", dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=0.1)),
    "rmsprop": ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.01)),
}

FTRL_CASES = {
    "ftrl": dict(lr=0.1, l1=0.01, l2=0.01, lr_power=-0.5, initial_accumulator_value=0.1),
    "ftrl_sparse": dict(lr=0.05, l1=1.0, l2=0.1, ftrl_beta=1.0, lr_power=-0.5,
                        initial_accumulator_value=0.1),
    "ftrl_power": dict(lr=0.1, l1=0.05, l2=0.0, lr_power=-0.7, initial_accumulator_value=0.5),
}


def assert_close(got, want, what, scaled=False):
    """max abs error <= TOL; scaled: error / max(1, |want|), for optimizer state such as
    Adagrad's and FTRL's accumulators, which grow past 100 where one float32 ulp is
    already 1.5e-5"""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want)
    if scaled:
        err = err / np.maximum(1.0, np.abs(want))
    err = float(np.max(err))
    assert err <= TOL, f"{what}: max {'scaled ' if scaled else ''}error {err:.3g} > {TOL}"
    return err


def check_untouched(stream, ours):
    init = stream.initial()
    for k in stream.untouched:
        aux, vals, _ = ours[int(k)]
        assert aux == 0
        assert np.array_equal(vals, init[int(k)])  # bit-identical: never stepped


def test_driver_selftest():
    r = subprocess.run([DRIVER, "--selftest"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_against_torch_per_key(tmp_path, case):
    kind, cfg = CASES[case]
    stream = Stream(seed=sum(map(ord, case)), base_lr=cfg["lr"])
    ours = run_driver(tmp_path, stream, kind, cfg)
    ref = sparse_torch_reference(stream, kind, cfg)
    counts = stream.counts()
    for k in stream.active:
        k = int(k)
        aux, vals, slots = ours[k]
        rvals, rslots, rstep = ref[k]
        assert aux == counts[k] > 0
        if rstep is not None:
            assert aux == rstep  # Adam/AdamW/Adagrad: torch's per-parameter step count
        assert_close(vals, rvals, f"{case} key {k} values")
        for i, s in enumerate(rslots):
            assert_close(slots[i], s, f"{case} key {k} slot {i}", scaled=True)
    check_untouched(stream, ours)


@pytest.mark.parametrize("case", sorted(FTRL_CASES))
def test_ftrl_against_paper(tmp_path, case):
    cfg = FTRL_CASES[case]
    stream = Stream(seed=sum(map(ord, case)), base_lr=cfg["lr"])
    ours = run_driver(tmp_path, stream, "ftrl", cfg)
    ref = ftrl_reference(stream, cfg)
    zeros = 0
    for k in stream.active:
        k = int(k)
        aux, vals, slots = ours[k]
        w, (n, z) = ref[k]
        assert aux == stream.counts()[k]
        assert_close(vals, w, f"{case} key {k} w")
        assert_close(slots[0], n, f"{case} key {k} n", scaled=True)
        assert_close(slots[1], z, f"{case} key {k} z", scaled=True)
        zeros += int(np.sum(vals == 0))
    if cfg["l1"] >= 1.0:
        assert zeros > 0  # L1 made some weights exactly 0
    check_untouched(stream, ours)


@pytest.mark.parametrize("kind,cfg", [("sgd", dict(lr=0.05)),
                                      ("adagrad", dict(lr=0.1, initial_accumulator_value=0.1, eps=1e-10))])
def test_dense_embedding_coincides(tmp_path, kind, cfg):
    """Without weight decay a zero gradient leaves an SGD or Adagrad row where it is, so
    torch's dense nn.Embedding path and dynemb's sparse one agree."""
    stream = Stream(seed=11, base_lr=cfg["lr"])
    ours = run_driver(tmp_path, stream, kind, cfg)
    dense = dense_torch_reference(stream, kind, cfg)
    for k in stream.out_keys:
        assert_close(ours[int(k)][1], dense[int(k)], f"{kind} dense key {k}")
    check_untouched(stream, ours)


def test_dense_adam_differs(tmp_path):
    """Dense Adam on nn.Embedding steps every row every step: a row with a zero gradient
    in this step still moves by lr * m / (sqrt(v) + eps) with its old moments, and the
    bias correction uses the global step. dynemb leaves such rows alone and counts steps
    per key, which is the per-key reference."""
    cfg = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
    stream = Stream(seed=12, base_lr=cfg["lr"])
    ours = run_driver(tmp_path, stream, "adam", cfg)
    dense = dense_torch_reference(stream, "adam", cfg)
    sparse = sparse_torch_reference(stream, "adam", cfg)
    diffs = []
    for k in stream.active:
        k = int(k)
        assert_close(ours[k][1], sparse[k][0], f"adam key {k} vs per-key reference")
        diffs.append(float(np.max(np.abs(ours[k][1] - dense[k]))))
    assert min(diffs) > 1e-3, "every active row should differ from dense Adam"
    # rows never given a gradient have m = v = 0 and stay put in both
    init = stream.initial()
    for k in stream.untouched:
        assert np.array_equal(dense[int(k)], init[int(k)])
    check_untouched(stream, ours)
