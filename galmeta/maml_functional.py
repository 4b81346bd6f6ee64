"""The functional side of PyTorch MAML: the MLP, batched forward passes, and the meta-gradient as one function.

Introduced in ``notebooks/04_maml_torch.py``: :func:`meta_gradient` mirrors
:func:`galmeta.maml_numpy.meta_gradient` (same arguments, same numbers), :func:`loop_meta_gradient` is
the tutorial-style loop over tasks it is checked against, and :func:`batched_forward` runs any module
with one set of parameters per task. :class:`galmeta.maml_torch.MetaLearner` is built on these.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from galmeta.validation import check_inner, check_task_array, check_task_batch

__all__ = ["MLP", "mlp_forward", "task_mse", "as_like", "meta_gradient", "loop_meta_gradient", "batched_forward",
           "default_head"]


# ---------------------------------------------------------------------------
# The MLP and the functional meta-gradient
# ---------------------------------------------------------------------------
class MLP(nn.Module):
    """ReLU MLP with a linear output, parameters stored as ``W (n_in, n_out)`` and ``b (n_out,)``.

    The layout matches :mod:`galmeta.maml_numpy` (``x @ W + b``), so parameters
    move between the two implementations unchanged (:meth:`from_numpy`).

    Parameters
    ----------
    sizes : sequence of int
        Layer widths including input and output, e.g. ``(1, 40, 40, 1)``.
    """

    def __init__(self, sizes, generator: torch.Generator | None = None, dtype=torch.float32):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must list at least two positive widths, got {sizes!r}")
        self.sizes = sizes
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            W = torch.randn(n_in, n_out, generator=generator, dtype=dtype) * math.sqrt(2.0 / n_in)
            self.weights.append(nn.Parameter(W))
            self.biases.append(nn.Parameter(torch.zeros(n_out, dtype=dtype)))

    @classmethod
    def from_numpy(cls, params, dtype=None):
        """An MLP holding copies of NumPy ``(W, b)`` pairs."""
        sizes = [params[0][0].shape[0]] + [W.shape[1] for W, _ in params]
        dtype = dtype or (torch.float64 if params[0][0].dtype == np.float64 else torch.float32)
        model = cls(sizes, dtype=dtype)
        with torch.no_grad():
            for layer, (W, b) in enumerate(params):
                model.weights[layer].copy_(torch.as_tensor(W))
                model.biases[layer].copy_(torch.as_tensor(b))
        return model

    def pairs(self):
        return [(W, b) for W, b in zip(self.weights, self.biases)]

    def forward(self, x):
        return mlp_forward(self.pairs(), x)


def mlp_forward(pairs, x):
    """MLP output for shared (``W`` 2-D) or per-task (``W`` 3-D, ``x (T, N, d)``) parameters."""
    h = x
    last = len(pairs) - 1
    for layer, (W, b) in enumerate(pairs):
        h = torch.baddbmm(b.unsqueeze(1), h, W) if W.dim() == 3 else torch.addmm(b, h.reshape(-1, h.shape[-1]), W).reshape(*h.shape[:-1], W.shape[-1])
        if layer < last:
            h = torch.relu(h)
    return h


def task_mse(out, y, mask=None):
    """Per-task mean squared error, shape ``(T,)``.

    ``mask (T, N)``: 1 for real points, 0 for padding; the mean is then over each task's real points.
    """
    if mask is None:
        return ((out - y) ** 2).mean(dim=(-2, -1))
    return ((out - y) ** 2 * mask[..., None]).sum(dim=(-2, -1)) / (mask.sum(dim=-1) * out.shape[-1])


def _finite(tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def _check_batch(xs, ys, xq=None, yq=None, d_in=None, d_out=None):
    """The NumPy learner's rules (:func:`galmeta.maml_numpy.check_task_batch`), applied to tensors."""
    arrays = {"xs": xs, "ys": ys} if xq is None else {"xs": xs, "ys": ys, "xq": xq, "yq": yq}
    check_task_batch(d_in, d_out, arrays, finite=_finite)


def as_like(value, reference, name="task array"):
    """A NumPy array or tensor as a tensor of ``reference``'s dtype and device, checked before the cast."""
    value = check_task_array(name, value)
    return torch.as_tensor(value, dtype=reference.dtype, device=reference.device)


def meta_gradient(params, xs, ys, xq, yq, inner_lr, inner_steps=1, first_order=False):
    """MAML meta-loss and its gradient, mirroring :func:`galmeta.maml_numpy.meta_gradient`.

    Parameters
    ----------
    params : list of (W, b) tensors
        Shared parameters (``W (n_in, n_out)``, ``b (n_out,)``).
    xs, ys, xq, yq : tensor
        Batched tasks, ``(T, K, d_in)``, ``(T, K, d_out)``, ``(T, Q, d_in)``, ``(T, Q, d_out)``.
    inner_lr : float
    inner_steps : int, default 1
    first_order : bool, default False
        FOMAML: do not differentiate through the inner gradients.

    Returns
    -------
    meta_loss : float
    grads : list of (dW, db) tensors
    """
    check_inner(inner_lr, inner_steps)
    reference = params[0][0]
    xs, ys, xq, yq = (as_like(a, reference, n) for a, n in zip((xs, ys, xq, yq), ("xs", "ys", "xq", "yq")))
    _check_batch(xs, ys, xq, yq, d_in=reference.shape[0], d_out=params[-1][0].shape[-1])
    leaves = [t.detach().requires_grad_(True) for pair in params for t in pair]
    pairs = [(leaves[2 * i], leaves[2 * i + 1]) for i in range(len(params))]
    n_tasks = xs.shape[0]
    phi = [(W.expand(n_tasks, *W.shape), b.expand(n_tasks, *b.shape)) for W, b in pairs]
    for _ in range(int(inner_steps)):
        flat = [t for pair in phi for t in pair]
        support_loss = task_mse(mlp_forward(phi, xs), ys).sum()
        grads = torch.autograd.grad(support_loss, flat, create_graph=not first_order)
        flat = [p - inner_lr * g for p, g in zip(flat, grads)]
        phi = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(params))]
    meta_loss = task_mse(mlp_forward(phi, xq), yq).mean()
    grads = torch.autograd.grad(meta_loss, leaves)
    return float(meta_loss.detach()), [(grads[2 * i], grads[2 * i + 1]) for i in range(len(params))]


def loop_meta_gradient(params, xs, ys, xq, yq, inner_lr, inner_steps=1, first_order=False):
    """The same meta-gradient with a Python loop over tasks.

    This is the style of most tutorials and of learn2learn: one
    ``torch.autograd.grad(..., create_graph=True)`` per task and step. It is
    kept as the reference for tests and the baseline of the speed benchmark,
    not for training.
    """
    leaves = [t.detach().requires_grad_(True) for pair in params for t in pair]
    losses = []
    for t in range(xs.shape[0]):
        fast = leaves
        for _ in range(int(inner_steps)):
            pairs = [(fast[2 * i], fast[2 * i + 1]) for i in range(len(params))]
            loss = ((mlp_forward(pairs, xs[t]) - ys[t]) ** 2).mean()
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            fast = [p - inner_lr * g for p, g in zip(fast, grads)]
        pairs = [(fast[2 * i], fast[2 * i + 1]) for i in range(len(params))]
        losses.append(((mlp_forward(pairs, xq[t]) - yq[t]) ** 2).mean())
    meta_loss = torch.stack(losses).mean()
    grads = torch.autograd.grad(meta_loss, leaves)
    return float(meta_loss.detach()), [(grads[2 * i], grads[2 * i + 1]) for i in range(len(params))]


# ---------------------------------------------------------------------------
# Batched functional forward for any module
# ---------------------------------------------------------------------------
def batched_forward(model: nn.Module, per_task: dict, x):
    """Output of ``model`` for every task with its own parameters ``per_task[name] (T, ...)``."""
    if isinstance(model, MLP):
        n_layers = len(model.weights)
        pairs = [(per_task[f"weights.{i}"], per_task[f"biases.{i}"]) for i in range(n_layers)]
        return mlp_forward(pairs, x)
    from torch.func import functional_call, vmap

    def one_task(params_t, x_t):
        return functional_call(model, params_t, (x_t,))

    return vmap(one_task)(per_task, x)


def default_head(model: nn.Module) -> tuple:
    """ANIL's head: the output layer (the last submodule that owns parameters)."""
    if isinstance(model, MLP):
        last = len(model.weights) - 1
        return (f"weights.{last}", f"biases.{last}")
    owners = [(name, module) for name, module in model.named_modules() if list(module.parameters(recurse=False))]
    name, module = owners[-1]
    prefix = f"{name}." if name else ""
    return tuple(prefix + p for p, _ in module.named_parameters(recurse=False))
