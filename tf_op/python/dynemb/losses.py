"""Sampled losses for PyTorch with the output classes in a dynemb table.

``sampled_softmax_loss`` and ``sampled_sigmoid_loss`` follow TensorFlow's
``tf.nn.sampled_softmax_loss`` / the sigmoid variant of ``_compute_sampled_logits``:

* The output-class embeddings are the rows of a dynemb table (one row per class key).
  Bias (``bias=True``): the table's ``dim`` is ``inputs.shape[1] + 1`` and the LAST column
  of each row is that class's bias, so one lookup, one optimizer and one eviction policy
  cover weights and bias together (a second table would need its own lookups and could
  evict a class's bias without its weights). ``bias=False``: ``dim == inputs.shape[1]``.
* Negatives are drawn server side (``Table.sample``: uniform, log-uniform or unigram over
  the table's live keys), with TensorFlow's expected counts; logits are corrected by
  ``- log(expected count)`` (``subtract_log_q=True``, TF's default).
* ``remove_accidental_hits``: a sampled class equal to one of the row's own labels gets
  ``-FLT_MAX`` added to its logit (per row, as TF does).
* Backward: a ``torch.autograd.Function`` pushes the gradient of every row used (true
  and sampled classes; duplicates are summed by the daemon) to the table with
  ``Table.apply_gradients`` (the table's optimizer steps them), and returns the gradient
  with respect to ``inputs`` to torch. The rows are fetched with a creating lookup at
  ``step``: a label the table does not hold yet is created (or, with admission, counted).

Both return per-example losses of shape ``[batch]`` (reduce them as you like; only what
reaches the loss contributes to the pushed gradients). ``sampled_values=(sampled,
true_expected, sampled_expected)`` reuses a draw (e.g. from ``Table.sample``) instead of
drawing here, as TF's argument of that name.
"""

import numpy as np
import torch

_FLT_MAX = float(np.finfo(np.float32).max)


class _PushRows(torch.autograd.Function):
    """Identity on rows fetched from a table; backward pushes their gradient to it."""

    @staticmethod
    def forward(ctx, rows, table, keys, step, lr):
        ctx.table, ctx.keys, ctx.step, ctx.lr = table, keys, step, lr
        return rows.clone()

    @staticmethod
    def backward(ctx, grad):
        g = grad.detach().to(torch.float32).contiguous().numpy()
        ctx.table.apply_gradients(ctx.keys, g, step=ctx.step, lr=ctx.lr)
        return None, None, None, None, None


def _labels(labels, num_true):
    lab = torch.as_tensor(labels)
    if lab.dim() == 1:
        lab = lab.reshape(-1, 1)
    if lab.dim() != 2 or lab.shape[1] != num_true:
        raise ValueError(f"labels must have shape [batch, {num_true}], not {tuple(lab.shape)}")
    return lab.to(torch.int64)


def _compute_sampled_logits(table, inputs, labels, num_sampled, num_true, sampler, unique,
                            power, remove_accidental_hits, subtract_log_q, bias, seed, step,
                            lr, sampled_values):
    if table.key_type != "int64":
        raise TypeError("sampled losses need an int64 table (class ids)")
    x = inputs
    if x.dim() != 2:
        raise ValueError(f"inputs must be [batch, dim], not {tuple(x.shape)}")
    d = x.shape[1]
    if table.dim != d + (1 if bias else 0):
        raise ValueError(f"table dim {table.dim} must be inputs dim {d}"
                         f"{' + 1 (bias column)' if bias else ''}")
    lab = _labels(labels, num_true)
    b = lab.shape[0]
    lab_np = lab.numpy().astype(np.int64).view(np.uint64).reshape(-1)
    if sampled_values is None:
        sampled, true_exp, samp_exp, _ = table.sample(num_sampled, lab_np, kind=sampler,
                                                      unique=unique, power=power, seed=seed)
    else:
        sampled, true_exp, samp_exp = sampled_values
    sampled = np.asarray(sampled, dtype=np.uint64).reshape(-1)
    s = sampled.size
    ids = np.concatenate([lab_np, sampled])
    fetched = torch.from_numpy(table.lookup(ids, step=step))
    rows = _PushRows.apply(fetched.requires_grad_(True), table, ids, step, lr)
    w_true = rows[:b * num_true].reshape(b, num_true, table.dim)
    w_s = rows[b * num_true:]
    xf = x.to(torch.float32)
    true_logits = torch.einsum("bd,btd->bt", xf, w_true[..., :d])
    samp_logits = xf @ w_s[:, :d].t()
    if bias:
        true_logits = true_logits + w_true[..., d]
        samp_logits = samp_logits + w_s[:, d]
    if subtract_log_q:
        te = torch.as_tensor(np.asarray(true_exp, dtype=np.float32).reshape(b, num_true))
        se = torch.as_tensor(np.asarray(samp_exp, dtype=np.float32).reshape(s))
        true_logits = true_logits - torch.log(te)
        samp_logits = samp_logits - torch.log(se)
    if remove_accidental_hits:
        hit = torch.from_numpy((lab_np.reshape(b, num_true)[:, :, None] ==
                                sampled[None, None, :]).any(axis=1))
        samp_logits = samp_logits + hit.to(torch.float32) * -_FLT_MAX
    return torch.cat([true_logits, samp_logits], dim=1)


def sampled_softmax_loss(table, inputs, labels, num_sampled, num_true=1, sampler="log_uniform",
                         unique=True, power=0.75, remove_accidental_hits=True,
                         subtract_log_q=True, bias=False, seed=None, step=0, lr=None,
                         sampled_values=None):
    """Per-example sampled softmax loss, ``[batch]`` (see the module docstring).

    ``inputs``: float ``[batch, d]`` (requires_grad for its gradient); ``labels``: int
    ``[batch, num_true]`` (or ``[batch]``) class keys of ``table``. Cross entropy over
    ``[true classes, sampled classes]`` with each true class weighted ``1/num_true``.
    """
    logits = _compute_sampled_logits(table, inputs, labels, num_sampled, num_true, sampler,
                                     unique, power, remove_accidental_hits, subtract_log_q,
                                     bias, seed, step, lr, sampled_values)
    logp = torch.log_softmax(logits, dim=1)
    return -logp[:, :num_true].sum(dim=1) / num_true


def sampled_sigmoid_loss(table, inputs, labels, num_sampled, num_true=1, sampler="log_uniform",
                         unique=True, power=0.75, remove_accidental_hits=True,
                         subtract_log_q=True, bias=False, seed=None, step=0, lr=None,
                         sampled_values=None):
    """Per-example sampled logistic loss, ``[batch]``: the sum over ``[true, sampled]``
    classes of sigmoid cross entropy with targets ``1/num_true`` for true classes and 0
    for sampled ones (TF's ``nce_loss``-style objective over the same corrected logits).
    """
    logits = _compute_sampled_logits(table, inputs, labels, num_sampled, num_true, sampler,
                                     unique, power, remove_accidental_hits, subtract_log_q,
                                     bias, seed, step, lr, sampled_values)
    target = torch.zeros_like(logits)
    target[:, :num_true] = 1.0 / num_true
    return torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, reduction="none").sum(dim=1)
