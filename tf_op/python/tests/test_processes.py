"""Several trainer processes on one table, and a DataLoader whose workers produce keys.

SGD with lr=1 on a zeros table and integer-valued gradients is exact in float32, so the
final rows must equal minus the sum of every gradient every process pushed, which each
process computes on its own side (numpy) from the keys and upstream gradients it used.
"""

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dynemb  # noqa: E402
import dynemb.torch as det  # noqa: E402

DIM = 4
NKEYS = 30

pytestmark = [pytest.mark.torch,
              pytest.mark.skipif(not hasattr(dynemb.Table, "apply_gradients"),
                                 reason="dynemb.Table.apply_gradients not available yet")]


def _open(sock, name):
    return det.DynamicEmbedding(name, DIM, socket_path=sock, optimizer="sgd", lr=1.0,
                                init="zeros")


def _train(emb, seed, steps):
    """Train on random keys with integer upstream grads; returns the expected total
    gradient per key 1..NKEYS as computed here (numpy, int64)."""
    rng = np.random.default_rng(seed)
    total = np.zeros((NKEYS + 1, DIM), dtype=np.int64)
    for _ in range(steps):
        keys = rng.integers(1, NKEYS + 1, size=16)
        up = rng.integers(-3, 4, size=(16, DIM))
        (emb(torch.from_numpy(keys)) * torch.from_numpy(up).float()).sum().backward()
        np.add.at(total, keys, up)
    return total


def _forked_trainer(emb, seed, steps, conn):
    try:
        conn.send(("ok", _train(emb, seed, steps)))   # emb reconnects in this process
    except BaseException as e:                         # report, don't hang the parent
        conn.send(("error", repr(e)))
    finally:
        conn.close()


def test_two_forked_trainers_share_a_table(daemon, tname):
    # Built (and connected) in the parent; each forked child opens its own Client on its
    # first forward and never touches the parent's.
    emb = _open(daemon, tname)
    emb(torch.tensor([1]))                             # the parent's connection is live
    ctx = mp.get_context("fork")
    pipes, procs = [], []
    for seed in (1, 2):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_forked_trainer, args=(emb, seed, 40, w))
        p.start()
        w.close()
        pipes.append(r)
        procs.append(p)
    results = []
    for r, p in zip(pipes, procs):
        assert r.poll(120), "trainer did not report"
        results.append(r.recv())
        p.join(30)
        assert p.exitcode == 0
    for status, payload in results:
        assert status == "ok", payload
    want = -(results[0][1] + results[1][1])[1:]
    got = emb.table.lookup(np.arange(1, NKEYS + 1), readonly=True)
    assert np.array_equal(got, want.astype(np.float32))
    emb.close()


def test_two_trainer_subprocesses_share_a_table(daemon, tname, tmp_path):
    """Two independent interpreters (no fork), each with its own Client."""
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from test_processes import _open, _train
        emb = _open(sys.argv[1], sys.argv[2])
        np.save(sys.argv[4], _train(emb, int(sys.argv[3]), 40))
    """)
    # the same interpreter (it has the installed dynemb) with this folder on PYTHONPATH
    # for test_processes itself
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    procs = [subprocess.Popen([sys.executable, "-c", script, daemon, tname, str(seed),
                               str(tmp_path / f"t{seed}.npy")], env=env)
             for seed in (3, 4)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    total = np.load(tmp_path / "t3.npy") + np.load(tmp_path / "t4.npy")
    with dynemb.Client(daemon) as c:
        t = c.open(tname, DIM, optimizer="sgd", lr=1.0, init="zeros")
        got = t.lookup(np.arange(1, NKEYS + 1), readonly=True)
    assert np.array_equal(got, (-total[1:]).astype(np.float32))


class _KeyBatches(torch.utils.data.Dataset):
    """Batches of keys and integer upstream grads, made in the workers (no Client)."""

    def __len__(self):
        return 24

    def __getitem__(self, i):
        rng = np.random.default_rng(1000 + i)
        return (torch.from_numpy(rng.integers(1, NKEYS + 1, size=(8, 2))),
                torch.from_numpy(rng.integers(-2, 3, size=(8, DIM))).float())


def test_dataloader_workers_produce_keys(daemon, tname):
    emb = det.DynamicEmbedding(tname, DIM, socket_path=daemon, optimizer="sgd", lr=1.0,
                               init="zeros", mode="sum")
    emb(torch.tensor([[1, 2]]))                        # connected before the workers fork
    loader = torch.utils.data.DataLoader(_KeyBatches(), batch_size=None, num_workers=2)
    total = np.zeros((NKEYS + 1, DIM), dtype=np.int64)
    seen = 0
    for keys, up in loader:
        (emb(keys) * up).sum().backward()              # a bag: each key gets its bag's grad
        for b in range(keys.shape[0]):
            for k in keys[b].tolist():
                total[k] += up[b].numpy().astype(np.int64)
        seen += 1
    assert seen == 24
    got = emb.table.lookup(np.arange(1, NKEYS + 1), readonly=True)
    assert np.array_equal(got, (-total[1:]).astype(np.float32))
    emb.close()
