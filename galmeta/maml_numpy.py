"""MAML from scratch in NumPy, with exact second-order meta-gradients.

Introduced in ``notebooks/03_maml_numpy.py``.

Conventions (shared with :mod:`galmeta.maml_torch`)
----------------------------------------------------
* A model is a ReLU multilayer perceptron with a linear output layer. Its
  parameters are a list of ``(W, b)`` pairs with ``W`` of shape ``(n_in, n_out)``
  and ``b`` of shape ``(n_out,)``. After adaptation every task has its own copy:
  the same list with a leading task axis, ``W`` of shape ``(T, n_in, n_out)``.
* Tasks come batched: support ``xs (T, K, d_in)``, ``ys (T, K, d_out)``; query
  ``xq (T, Q, d_in)``, ``yq (T, Q, d_out)``.
* A task's loss is the mean squared error over its points and outputs. The
  meta-loss is the mean over tasks of the query loss after adaptation.

How the second-order meta-gradient is computed
----------------------------------------------
With support gradient ``g(phi) = dL_s/dphi`` the inner loop is
``phi_{k+1} = phi_k - inner_lr * g(phi_k)``, ``phi_0 = theta``. By the chain rule
the meta-gradient of ``L_q(phi_S)`` is obtained backwards from
``v_S = dL_q/dphi_S`` with ``v_k = v_{k+1} - inner_lr * H_s(phi_k) v_{k+1}``,
and equals ``v_0``. Each Hessian-vector product ``H_s(phi) v`` is computed
exactly with Pearlmutter's R-operator (a forward-mode derivative of the
backward pass), which costs about one extra forward and backward pass. All
tasks are processed at once with batched matrix products.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

# the rules both learners apply to their inputs, in one place (the PyTorch learner uses them too)
from galmeta.validation import check_inner, check_task_array, check_task_batch

__all__ = [
    "init_mlp",
    "forward",
    "task_losses",
    "loss_and_gradient",
    "hessian_vector_product",
    "adapt",
    "adaptation_predictions",
    "adaptation_curve",
    "clip_task_gradients",
    "meta_gradient",
    "check_task_batch",
    "check_inner",
    "Adam",
    "MetaTrainResult",
    "meta_train",
]


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------
def init_mlp(sizes: Sequence[int], rng: np.random.Generator, dtype=np.float64, weight_std: float | None = None):
    """Initialise MLP parameters.

    By default weights are normal with He (Kaiming) scaling ``sqrt(2 / n_in)``;
    biases start at zero.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths including input and output, e.g. ``(1, 40, 40, 1)``.
    rng : numpy.random.Generator
        Source of randomness (explicit, so runs are reproducible).
    dtype : numpy dtype, default float64
    weight_std : float, optional
        Use a normal distribution truncated at two standard deviations with this
        standard deviation instead, as the MAML authors' code does for the
        sinusoid benchmark (``weight_std=0.01``): the network starts near zero
        output, so the first inner steps are small.

    Returns
    -------
    list of (W, b)
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"sizes must list at least two positive widths, got {sizes!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator, e.g. np.random.default_rng(0)")
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        if weight_std is None:
            W = rng.normal(0.0, math.sqrt(2.0 / n_in), size=(n_in, n_out))
        else:
            W = np.clip(rng.normal(0.0, weight_std, size=(n_in, n_out)), -2 * weight_std, 2 * weight_std)
        params.append((W.astype(dtype), np.zeros(n_out, dtype=dtype)))
    return params


def _forward_cache(params, x):
    """Forward pass keeping what the backward pass needs.

    Returns the output and the list of layer inputs ``h_{l-1}`` and the ReLU
    masks. Works for shared (2-D ``W``) and per-task (3-D ``W``) parameters.
    """
    inputs, masks, h = [], [], x
    last = len(params) - 1
    for layer, (W, b) in enumerate(params):
        inputs.append(h)
        z = h @ W + (b[:, None, :] if b.ndim == 2 else b)
        if layer < last:
            masks.append(z > 0)
        h = z * masks[-1] if layer < last else z
    return h, inputs, masks


def forward(params, x):
    """Network output for inputs ``x`` of shape ``(..., N, d_in)``.

    ``params`` may be shared (``W`` 2-D) or per-task (``W`` 3-D, then ``x`` is
    ``(T, N, d_in)``).
    """
    return _forward_cache(params, x)[0]


def task_losses(params, x, y):
    """Mean squared error of each task, shape ``(T,)``."""
    out = forward(params, x)
    return np.mean((out - y) ** 2, axis=(-2, -1))


def _backward(params, inputs, masks, g_out):
    """Backward pass: per-task gradients for an output gradient ``g_out (T, N, d_out)``."""
    grads = [None] * len(params)
    g_z = g_out
    for layer in range(len(params) - 1, -1, -1):
        W, _ = params[layer]
        h = inputs[layer]
        grads[layer] = (np.swapaxes(h, -1, -2) @ g_z, g_z.sum(axis=-2))
        if layer > 0:
            g_z = (g_z @ np.swapaxes(W, -1, -2)) * masks[layer - 1]
    return grads


def loss_and_gradient(params, x, y):
    """Per-task losses and per-task gradients of the MSE loss.

    Parameters
    ----------
    params : list of (W, b)
        Shared or per-task parameters.
    x : ndarray, shape (T, N, d_in)
    y : ndarray, shape (T, N, d_out)

    Returns
    -------
    losses : ndarray, shape (T,)
    grads : list of (dW, db)
        ``dW`` of shape ``(T, n_in, n_out)``: each task's gradient of its own loss.
    """
    out, inputs, masks = _forward_cache(params, x)
    residual = out - y
    n_points, n_out = residual.shape[-2], residual.shape[-1]
    losses = np.mean(residual ** 2, axis=(-2, -1))
    g_out = residual * (2.0 / (n_points * n_out))
    return losses, _backward(params, inputs, masks, g_out)


def hessian_vector_product(params, x, y, vector):
    """Exact per-task Hessian-vector products of the MSE loss (R-operator).

    Pearlmutter's R-operator ``R{f} = d/dr f(params + r * vector)`` at ``r = 0``
    is pushed through the forward and the backward pass. ReLU's second
    derivative is zero almost everywhere, so the masks pass through unchanged.

    Parameters
    ----------
    params : list of (W, b)
        Shared or per-task parameters.
    x, y : ndarray
        Batched task data, ``(T, N, d_in)`` and ``(T, N, d_out)``.
    vector : list of (vW, vb)
        Per-task direction, same structure as per-task gradients.

    Returns
    -------
    list of (HvW, Hvb)
    """
    n_layers = len(params)
    last = n_layers - 1
    # forward pass with its R-forward
    inputs, r_inputs, masks = [], [], []
    h, r_h = x, np.zeros_like(x)
    for layer, ((W, b), (vW, vb)) in enumerate(zip(params, vector)):
        inputs.append(h)
        r_inputs.append(r_h)
        z = h @ W + (b[:, None, :] if b.ndim == 2 else b)
        r_z = r_h @ W + h @ vW + vb[:, None, :]
        if layer < last:
            mask = z > 0
            masks.append(mask)
            h, r_h = z * mask, r_z * mask
        else:
            h, r_h = z, r_z
    residual = h - y
    scale = 2.0 / (residual.shape[-2] * residual.shape[-1])
    g_z, r_g_z = residual * scale, r_h * scale
    # backward pass with its R-backward
    hvp = [None] * n_layers
    for layer in range(last, -1, -1):
        W, _ = params[layer]
        vW, _ = vector[layer]
        h_in, r_h_in = inputs[layer], r_inputs[layer]
        r_dW = np.swapaxes(r_h_in, -1, -2) @ g_z + np.swapaxes(h_in, -1, -2) @ r_g_z
        hvp[layer] = (r_dW, r_g_z.sum(axis=-2))
        if layer > 0:
            mask = masks[layer - 1]
            W_t = np.swapaxes(W, -1, -2)
            r_g_h = r_g_z @ W_t + g_z @ np.swapaxes(vW, -1, -2)
            g_z = (g_z @ W_t) * mask
            r_g_z = r_g_h * mask
    return hvp


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------
def _check_params(params):
    if not isinstance(params, (list, tuple)) or len(params) == 0:
        raise TypeError("params must be a non-empty list of (W, b) pairs, as made by init_mlp")
    for i, pair in enumerate(params):
        if len(pair) != 2:
            raise TypeError(f"params[{i}] must be a (W, b) pair")
        W, b = pair
        if W.ndim != 2 or b.ndim != 1 or W.shape[1] != b.shape[0]:
            raise ValueError(
                f"params[{i}] has W {W.shape} and b {b.shape}; expected W (n_in, n_out) and b (n_out,)"
            )
        if i > 0 and params[i - 1][0].shape[1] != W.shape[0]:
            raise ValueError(f"params[{i}] takes {W.shape[0]} inputs but layer {i - 1} gives {params[i - 1][0].shape[1]}")
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
            raise ValueError(f"params[{i}] contains NaN or inf; re-initialise or lower the meta learning rate")


def _check_tasks(params, dtype, **arrays):
    out = {name: check_task_array(name, value) for name, value in arrays.items()}
    check_task_batch(params[0][0].shape[0], params[-1][0].shape[1], out)
    return {name: value.astype(dtype, copy=False) for name, value in out.items()}


def _working_dtype(params, *arrays):
    dtype = np.result_type(*(W for W, _ in params), *arrays)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.float64
    return dtype


# ---------------------------------------------------------------------------
# Inner loop and meta-gradient
# ---------------------------------------------------------------------------
def _per_task(params, n_tasks):
    return [
        (np.broadcast_to(W, (n_tasks,) + W.shape[-2:]) if W.ndim == 2 else W,
         np.broadcast_to(b, (n_tasks,) + b.shape[-1:]) if b.ndim == 1 else b)
        for W, b in params
    ]


def _sgd_step(params, grads, inner_lr):
    return [(W - inner_lr * dW, b - inner_lr * db) for (W, b), (dW, db) in zip(params, grads)]


def adapt(params, xs, ys, inner_lr, inner_steps=1):
    """Adapt shared parameters to each task with ``inner_steps`` SGD steps.

    Parameters
    ----------
    params : list of (W, b)
        Shared (meta-learned) parameters.
    xs : ndarray, shape (T, K, d_in)
        Support inputs.
    ys : ndarray, shape (T, K, d_out)
        Support targets.
    inner_lr : float
        Inner-loop step size.
    inner_steps : int, default 1

    Returns
    -------
    list of (W, b)
        Per-task parameters, ``W`` of shape ``(T, n_in, n_out)``. Evaluate them with
        :func:`forward` on inputs of shape ``(T, N, d_in)``.
    """
    _check_params(params)
    check_inner(inner_lr, inner_steps)
    dtype = _working_dtype(params, np.asarray(xs))
    data = _check_tasks(params, dtype, xs=xs, ys=ys)
    xs, ys = data["xs"], data["ys"]
    phi = _per_task([(W.astype(dtype, copy=False), b.astype(dtype, copy=False)) for W, b in params], xs.shape[0])
    for _ in range(inner_steps):
        _, grads = loss_and_gradient(phi, xs, ys)
        phi = _sgd_step(phi, grads, inner_lr)
    return phi


def adaptation_predictions(params, xs, ys, xq, inner_lr, max_steps=10, grad_clip=None):
    """Query predictions after 0, 1, ..., ``max_steps`` inner SGD steps on each support set.

    ``grad_clip``: each task's gradient is scaled down to this norm where longer (None: no clipping).

    Returns
    -------
    ndarray, shape (max_steps + 1, T, Q, d_out)
    """
    _check_params(params)
    check_inner(inner_lr, max_steps, min_steps=0)
    dtype = _working_dtype(params, np.asarray(xs))
    data = _check_tasks(params, dtype, xs=xs, ys=ys, xq=xq)
    xs, ys, xq = data["xs"], data["ys"], data["xq"]
    phi = _per_task([(W.astype(dtype, copy=False), b.astype(dtype, copy=False)) for W, b in params], xs.shape[0])
    predictions = [forward(phi, xq)]
    for _ in range(int(max_steps)):
        _, grads = loss_and_gradient(phi, xs, ys)
        grads = grads if grad_clip is None else clip_task_gradients(grads, grad_clip)
        phi = _sgd_step(phi, grads, inner_lr)
        predictions.append(forward(phi, xq))
    return np.stack(predictions)


def clip_task_gradients(grads, max_norm):
    """Each task's gradient (leading axis of every array) scaled down to norm ``max_norm`` where it is longer."""
    norm = np.sqrt(sum(np.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for pair in grads for g in pair))
    factor = np.where(np.isfinite(norm), float(max_norm) / np.maximum(norm, float(max_norm)), 0.0)
    return [tuple(g * factor.reshape((-1,) + (1,) * (g.ndim - 1)) for g in pair) for pair in grads]


def adaptation_curve(params, xs, ys, xq, yq, inner_lr, max_steps=10):
    """Query MSE of every task after 0, 1, ..., ``max_steps`` inner SGD steps.

    Returns
    -------
    ndarray, shape (max_steps + 1, T)
    """
    predictions = adaptation_predictions(params, xs, ys, xq, inner_lr, max_steps)
    return np.mean((predictions - np.asarray(yq, predictions.dtype)[None]) ** 2, axis=(-2, -1))


def meta_gradient(params, xs, ys, xq, yq, inner_lr, inner_steps=1, first_order=False):
    """MAML meta-loss and its gradient with respect to the shared parameters.

    Parameters
    ----------
    params : list of (W, b)
        Shared parameters, ``W`` of shape ``(n_in, n_out)``, ``b`` of shape ``(n_out,)``.
    xs : ndarray, shape (T, K, d_in)
        Support inputs of ``T`` tasks.
    ys : ndarray, shape (T, K, d_out)
        Support targets.
    xq : ndarray, shape (T, Q, d_in)
        Query inputs.
    yq : ndarray, shape (T, Q, d_out)
        Query targets.
    inner_lr : float
        Inner-loop SGD step size (alpha in the paper).
    inner_steps : int, default 1
        Number of inner SGD steps.
    first_order : bool, default False
        If True, drop the second-order terms (FOMAML): the meta-gradient is the
        query gradient at the adapted parameters.

    Returns
    -------
    meta_loss : float
        Mean over tasks of the query loss after adaptation.
    grads : list of (dW, db)
        Meta-gradient, same structure and dtype as ``params``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> params = init_mlp((1, 40, 40, 1), rng)
    >>> xs, ys, xq, yq = (rng.normal(size=(4, 10, 1)) for _ in range(4))
    >>> loss, grads = meta_gradient(params, xs, ys, xq, yq, inner_lr=0.01)
    >>> grads[0][0].shape
    (1, 40)
    """
    _check_params(params)
    check_inner(inner_lr, inner_steps)
    dtype = _working_dtype(params, np.asarray(xs), np.asarray(xq))
    data = _check_tasks(params, dtype, xs=xs, ys=ys, xq=xq, yq=yq)
    xs, ys, xq, yq = data["xs"], data["ys"], data["xq"], data["yq"]
    n_tasks = xs.shape[0]
    inner_lr = dtype.type(inner_lr)

    phi = _per_task([(W.astype(dtype, copy=False), b.astype(dtype, copy=False)) for W, b in params], n_tasks)
    trajectory = [phi]
    for _ in range(inner_steps):
        _, grads = loss_and_gradient(phi, xs, ys)
        phi = _sgd_step(phi, grads, inner_lr)
        trajectory.append(phi)

    query_losses, adjoint = loss_and_gradient(phi, xq, yq)
    if not first_order:
        # v_k = (I - inner_lr * H_s(phi_k)) v_{k+1}, backwards through the inner loop
        for step in range(inner_steps - 1, -1, -1):
            hvp = hessian_vector_product(trajectory[step], xs, ys, adjoint)
            adjoint = [(vW - inner_lr * hW, vb - inner_lr * hb) for (vW, vb), (hW, hb) in zip(adjoint, hvp)]
    grads = [(vW.mean(axis=0), vb.mean(axis=0)) for vW, vb in adjoint]
    return float(query_losses.mean()), grads


# ---------------------------------------------------------------------------
# Optimiser and meta-training loop
# ---------------------------------------------------------------------------
class Adam:
    """Adam (Kingma & Ba 2015) for a list of ``(W, b)`` pairs, in NumPy.

    Parameters
    ----------
    params : list of (W, b)
        Parameters to optimise; updated in place by :meth:`step`.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
        self.v = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
        self.t = 0

    def step(self, params, grads):
        """Apply one update in place and return ``params``."""
        self.t += 1
        beta1, beta2 = self.betas
        correction1 = 1.0 - beta1 ** self.t
        correction2 = 1.0 - beta2 ** self.t
        for pair, grad_pair, m_pair, v_pair in zip(params, grads, self.m, self.v):
            for p, g, m, v in zip(pair, grad_pair, m_pair, v_pair):
                m *= beta1
                m += (1.0 - beta1) * g
                v *= beta2
                v += (1.0 - beta2) * g * g
                p -= self.lr * (m / correction1) / (np.sqrt(v / correction2) + self.eps)
        return params


@dataclass
class MetaTrainResult:
    """What :func:`meta_train` returns."""

    params: list
    losses: np.ndarray = field(repr=False)
    iterations: int = 0
    seconds: float = 0.0

    @property
    def iterations_per_second(self) -> float:
        return self.iterations / self.seconds if self.seconds > 0 else float("nan")


def meta_train(
    params,
    sample_tasks: Callable[[np.random.Generator], tuple],
    n_iterations: int,
    rng: np.random.Generator,
    inner_lr: float = 0.01,
    inner_steps: int = 1,
    meta_lr: float = 1e-3,
    first_order: bool = False,
    progress: bool | None = None,
    copy: bool = True,
):
    """Meta-train shared parameters with MAML and Adam.

    Parameters
    ----------
    params : list of (W, b)
        Initial parameters (copied unless ``copy=False``).
    sample_tasks : callable
        ``sample_tasks(rng) -> (xs, ys, xq, yq)``, one meta-batch of tasks.
    n_iterations : int
        Number of meta-updates.
    rng : numpy.random.Generator
        Passed to ``sample_tasks`` each iteration.
    inner_lr, inner_steps, first_order
        As in :func:`meta_gradient`.
    meta_lr : float, default 1e-3
        Adam step size.
    progress : bool, optional
        Progress bar (default: on, except in batch execution; :func:`galmeta.config.progress_bar`).

    Returns
    -------
    MetaTrainResult

    Raises
    ------
    FloatingPointError
        If the meta-loss becomes NaN or infinite.
    """
    import time
    from galmeta.config import progress_bar

    if int(n_iterations) < 0:
        raise ValueError(f"n_iterations must be >= 0, got {n_iterations!r}")
    if copy:
        params = [(W.copy(), b.copy()) for W, b in params]
    optimiser = Adam(params, lr=meta_lr)
    losses = np.empty(int(n_iterations))
    start = time.perf_counter()
    bar = progress_bar(range(int(n_iterations)), disable=None if progress is None else not progress,
                       desc="meta-train (NumPy)", mininterval=1.0)
    for it in bar:
        xs, ys, xq, yq = sample_tasks(rng)
        loss, grads = meta_gradient(params, xs, ys, xq, yq, inner_lr, inner_steps, first_order)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"meta-loss became {loss} at iteration {it}; lower meta_lr or inner_lr, or check the data for outliers"
            )
        optimiser.step(params, grads)
        losses[it] = loss
        if it % 100 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
    seconds = time.perf_counter() - start
    return MetaTrainResult(params=params, losses=losses, iterations=int(n_iterations), seconds=seconds)
