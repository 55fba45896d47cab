"""dynemb.torch.DynamicEmbedding against independent references: a numpy gather of the
table's own lookups, nn.EmbeddingBag given the same rows, and gradient sums computed here
with torch/numpy, checked through the rows of an SGD (lr=1) table: after one step
row_after = row_before - grad_sum, and rows not in the batch do not move.
"""

import errno

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import dynemb  # noqa: E402
import dynemb.torch as det  # noqa: E402

DIM = 6

pytestmark = [pytest.mark.torch,
              pytest.mark.skipif(not hasattr(dynemb.Table, "apply_gradients"),
                                 reason="dynemb.Table.apply_gradients not available yet")]


def sgd_emb(daemon, name, **kw):
    kw.setdefault("optimizer", "sgd")
    kw.setdefault("lr", 1.0)
    kw.setdefault("init", "uniform")
    kw.setdefault("init_a", -1.0)
    kw.setdefault("init_b", 1.0)
    kw.setdefault("seed", 11)
    return det.DynamicEmbedding(name, DIM, socket_path=daemon, **kw)


def rows_of(emb, keys, create=False):
    """The table's current rows of keys (read-only unless create: then missing keys get
    their initial rows, which is what a training forward would see)."""
    return emb.table.lookup(np.asarray(keys), readonly=not create).copy()


def test_no_dense_parameter(daemon, tname):
    emb = sgd_emb(daemon, tname)
    assert list(emb.parameters()) == [] and emb.state_dict() == {}
    emb.close()


def test_forward_equals_numpy_gather(daemon, tname):
    emb = sgd_emb(daemon, tname)
    keys = torch.tensor([[5, 9, 5, 77], [1 << 40, 9, 3, 3], [2, 77, 77, 5]])
    out = emb(keys)
    assert out.shape == (3, 4, DIM) and out.dtype == torch.float32
    uniq = np.unique(keys.numpy())
    rows = emb.table.lookup(uniq)                       # the table's own values
    ref = rows[np.searchsorted(uniq, keys.numpy())]     # plain numpy gather
    assert np.array_equal(out.detach().numpy(), ref)
    assert np.abs(ref).max() > 0                        # uniform init: not all zeros
    # 1-D and 0-D inputs, numpy and list inputs
    assert np.array_equal(emb(np.array([9, 5])).detach().numpy(), rows[[3, 2]])
    assert emb(torch.tensor(77)).shape == (DIM,)
    assert np.array_equal(emb([3]).detach().numpy(), rows[[1]])
    emb.close()


def test_padding_key_is_zero_and_gets_no_gradient(daemon, tname):
    emb = sgd_emb(daemon, tname, padding_key=4)
    keys = torch.tensor([4, 8, 4, 9])
    before = rows_of(emb, [8, 9], create=True)
    out = emb(keys)
    assert torch.all(out[0] == 0) and torch.all(out[2] == 0)
    out.sum().backward()
    _, st = emb.table.lookup(np.array([4]), readonly=True, with_status=True)
    assert st[0] == dynemb.ST_MISSING                  # never looked up, never stepped
    assert np.allclose(rows_of(emb, [8, 9]), before - 1.0, atol=1e-6)
    emb.close()


def test_backward_pushes_summed_gradients_of_unique_keys(daemon, tname):
    emb = sgd_emb(daemon, tname)
    calls = []
    real = emb.table.apply_gradients

    def spy(keys, grads, step=0, lr=None):
        calls.append((np.array(keys), np.array(grads), step, lr))
        return real(keys, grads, step=step, lr=lr)

    emb.table.apply_gradients = spy
    keys = torch.tensor([[7, 3, 7], [3, 3, 100]])
    bystander = 555
    emb(torch.tensor([bystander]))
    before = rows_of(emb, [3, 7, 100, bystander], create=True)
    calls.clear()
    step0 = emb.step
    up = torch.randn(2, 3, DIM, generator=torch.Generator().manual_seed(1))
    (emb(keys) * up).sum().backward()
    # independent reference: index_add of the upstream gradient per distinct key
    uk = torch.tensor([3, 7, 100])
    pos = torch.searchsorted(uk, keys.reshape(-1))
    gsum = torch.zeros(3, DIM).index_add_(0, pos, up.reshape(-1, DIM))
    assert len(calls) == 1                               # one apply per backward
    k, g, step, lr = calls[0]
    assert sorted(k.tolist()) == [3, 7, 100]             # unique keys, once each
    order = np.argsort(k)
    assert np.allclose(g[order], gsum.numpy(), atol=1e-6)
    assert step == step0 and emb.step == step0 + 1 and lr is None
    after = rows_of(emb, [3, 7, 100, bystander])
    assert np.allclose(after[:3], before[:3] - gsum.numpy(), atol=1e-5)
    assert np.array_equal(after[3], before[3])           # not in the batch: untouched
    emb.close()


@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("layout", ["offsets", "padded"])
def test_bags_match_embeddingbag(daemon, tname, mode, layout):
    emb = sgd_emb(daemon, tname, mode=mode)
    if layout == "offsets":
        keys = torch.tensor([10, 20, 10, 30, 40, 20, 20, 50])
        offsets = torch.tensor([0, 3, 3, 5])             # bags of 3, 0 (empty), 2, 3
        args = (keys, offsets)
    else:
        keys = torch.tensor([[10, 20, 10, 0], [0, 0, 0, 0], [30, 0, 40, 0], [20, 20, 50, 60]])
        args = (keys,)
    uniq = np.unique(keys.numpy())
    uniq = uniq[uniq != 0]
    rows = torch.from_numpy(emb.table.lookup(uniq))
    # nn.EmbeddingBag with the same rows; row len(uniq) is the padding row
    ref = nn.EmbeddingBag(len(uniq) + 1, DIM, mode=mode, padding_idx=len(uniq))
    with torch.no_grad():
        ref.weight[:len(uniq)] = rows
    idx = torch.from_numpy(np.where(keys.numpy() == 0, len(uniq),
                                    np.searchsorted(uniq, keys.numpy())))
    ref_out = ref(idx, *args[1:])
    out = emb(*args)
    assert out.shape == ref_out.shape
    assert torch.allclose(out, ref_out, atol=1e-6)
    up = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (ref_out * up).sum().backward()
    (out * up).sum().backward()
    after = torch.from_numpy(rows_of(emb, uniq))
    assert torch.allclose(rows - after, ref.weight.grad[:len(uniq)], atol=1e-5)
    emb.close()


def test_mean_bag_with_padding_numpy_reference(daemon, tname):
    """The mean divides by the non-padding count; an all-padding bag is zeros."""
    emb = sgd_emb(daemon, tname, mode="mean")
    keys = np.array([[3, 0, 5], [0, 0, 0], [5, 5, 0]])
    out = emb(keys).detach().numpy()
    r3, r5 = emb.table.lookup(np.array([3, 5]))
    assert np.allclose(out[0], (r3 + r5) / 2, atol=1e-6)
    assert np.all(out[1] == 0)
    assert np.allclose(out[2], r5, atol=1e-6)
    emb.close()


def test_string_keys(daemon, tname):
    emb = sgd_emb(daemon, tname, keys="str")
    keys = [["apple", "pear", "apple"], ["", "fig", "pear"]]
    out = emb(keys)
    assert out.shape == (2, 3, DIM)
    ref = emb.table.lookup(["apple", "pear", "fig"])
    assert np.array_equal(out[0, 0].detach().numpy(), ref[0])
    assert np.array_equal(out[1, 2].detach().numpy(), ref[1])
    assert np.array_equal(out[1, 1].detach().numpy(), ref[2])
    assert torch.all(out[1, 0] == 0)                     # "" is padding
    up = torch.arange(2 * 3 * DIM, dtype=torch.float32).reshape(2, 3, DIM) / 10
    (out * up).sum().backward()
    want = {"apple": up[0, 0] + up[0, 2], "pear": up[0, 1] + up[1, 2], "fig": up[1, 1]}
    after = emb.table.lookup(["apple", "pear", "fig"], readonly=True)
    for i, k in enumerate(["apple", "pear", "fig"]):
        assert np.allclose(after[i], ref[i] - want[k].numpy(), atol=1e-5)
    # numpy string arrays and bytes work too
    assert np.array_equal(emb(np.array(["fig"])).detach().numpy(), after[2:3])
    with pytest.raises(TypeError):
        emb(torch.tensor([1, 2]))
    emb.close()


def test_lr_override_and_step(daemon, tname):
    emb = sgd_emb(daemon, tname, init="zeros", step=40)
    emb.lr = 0.25
    emb(torch.tensor([6, 6])).sum().backward()
    assert np.allclose(rows_of(emb, [6]), -0.5)          # 0.25 * (1 + 1)
    assert emb.step == 41
    emb.lr = None                                        # the table's lr (1.0)
    emb(torch.tensor([6])).sum().backward()
    assert np.allclose(rows_of(emb, [6]), -1.5)
    emb.auto_step = False
    emb(torch.tensor([6])).sum().backward()
    assert emb.step == 42
    emb.close()


def test_no_grad_and_eval(daemon, tname):
    emb = sgd_emb(daemon, tname, init="constant", init_a=0.5)
    with torch.no_grad():
        out = emb(torch.tensor([1, 2]))                  # training mode: creates
    assert not out.requires_grad and emb.table.stats()["keys"] == 2
    emb.eval()
    out = emb(torch.tensor([2, 3]))                      # eval: read-only, 3 reads zeros
    assert np.allclose(out.numpy(), [[0.5] * DIM, [0.0] * DIM])
    assert emb.table.stats()["keys"] == 2
    emb.train()
    out = emb(torch.tensor([1]))
    assert out.requires_grad
    emb.close()


def test_bad_arguments(daemon, tname):
    with pytest.raises(ValueError):
        sgd_emb(daemon, tname, mode="max")
    emb = sgd_emb(daemon, tname, mode="sum")
    with pytest.raises(ValueError):
        emb(torch.tensor([1, 2]))                        # 1-D bags need offsets
    with pytest.raises(ValueError):
        emb(torch.tensor([[1, 2]]), torch.tensor([0]))   # 2-D bags take no offsets
    with pytest.raises(ValueError):
        emb(torch.ones(2, 2, 2, dtype=torch.int64))
    with pytest.raises(TypeError):
        emb(torch.tensor([[1.5]]))
    emb.close()
    # same name, another config: the daemon refuses (EEXIST)
    with pytest.raises(dynemb.DynembError) as e:
        sgd_emb(daemon, tname, lr=0.5)
    assert e.value.errno == errno.EEXIST


def test_table_without_optimizer_fails_at_backward(daemon, tname):
    emb = det.DynamicEmbedding(tname, DIM, socket_path=daemon)
    out = emb(torch.tensor([1, 2]))
    with pytest.raises(dynemb.DynembError) as e:
        out.sum().backward()
    assert e.value.errno == errno.EOPNOTSUPP
    emb.close()


def test_dense_part_with_torch_optim(daemon, tname):
    """The embedding trains on the server, the Linear with torch.optim: both move."""
    emb = sgd_emb(daemon, tname, lr=0.1)
    lin = nn.Linear(DIM, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    w0 = lin.weight.detach().clone()
    keys = torch.tensor([1, 2])
    out = lin(emb(keys)).sum()
    r0 = rows_of(emb, [1, 2])
    opt.zero_grad()
    out.backward()
    opt.step()
    assert not torch.equal(lin.weight, w0)
    # d out / d row = lin.weight for each key: the server stepped row -= 0.1 * weight
    assert np.allclose(rows_of(emb, [1, 2]), r0 - 0.1 * w0.numpy(), atol=1e-6)
    emb.close()


def test_modules_of_a_process_share_one_client(daemon, tname):
    a = sgd_emb(daemon, tname + "a")
    b = sgd_emb(daemon, tname + "b", mode="sum")
    assert a.table.client is b.table.client
    det.close_clients()                                  # closes it; modules reconnect
    assert a.table.client is not None and not a.table.client.closed
    assert a.table.client is b.table.client
    assert a(torch.tensor([1])).shape == (1, DIM)
