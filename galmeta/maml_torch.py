"""MAML and its family in PyTorch, batched over tasks, for CPU and GPU.

Introduced in ``notebooks/04_maml_torch.py``.

Same conventions as :mod:`galmeta.maml_numpy`: a task batch is support
``xs (T, K, d_in)``, ``ys (T, K, d_out)`` and query ``xq (T, Q, d_in)``,
``yq (T, Q, d_out)``; a task's loss is the mean squared error; the meta-loss is
the mean over tasks of the query loss after adaptation.

How tasks are batched
---------------------
Every task gets its own copy of the parameters: a view of the shared tensors
expanded along a leading task axis, so no memory is copied. The inner-loop
gradient of the *sum* of task losses with respect to those copies is each
task's own gradient (tasks do not interact), so one ``torch.autograd.grad``
call adapts all tasks at once. For the MLP the forward pass is a batched matrix
product; for any other ``torch.nn.Module`` it is ``torch.func.vmap`` over
``torch.func.functional_call``. ``benchmarks/maml_torch_speed.py`` measured this
against a pure ``torch.func`` (``vmap`` of ``grad``) formulation: the batched
matrix products were about twice as fast on the CPU, so they are kept.

Data-parallel meta-training
---------------------------
When a ``torch.distributed`` process group is initialised (for example by ``torchrun``), a
:class:`MetaLearner` broadcasts its initial parameters from rank 0, each rank samples its own shard of
``meta_batch / world_size`` tasks (task sampling is seeded per rank), and the meta-gradients are averaged
over ranks (all-reduce) before every optimiser step. W ranks with equal shards then take exactly the step
one process takes on the whole meta-batch (the meta-loss is a mean over tasks). Only rank 0 writes
checkpoints and shows progress. Without a process group nothing changes. ``python -m galmeta.train``
(``galmeta train``) is the launcher.

The family is one :class:`MetaLearner` with an ``algorithm`` option:
``"maml"`` (second order), ``"fomaml"``, ``"metasgd"`` (learned per-parameter
inner learning rates, Li et al. 2017), ``"anil"`` (adapt only the head, Raghu
et al. 2020) and ``"reptile"`` (Nichol et al. 2018).

Stabilised adaptation (MAML++, Antoniou, Edwards & Storkey 2019)
----------------------------------------------------------------
Three options of :class:`MetaConfig`, usable with ``"maml"``, ``"fomaml"`` and ``"anil"``:
``step_lrs=True`` learns one inner learning rate per parameter tensor (a layer's ``W`` or ``b``) and per
inner step (adapting for more steps than were trained reuses the last step's rates);
``multi_step_iterations=N`` makes the training loss a weighted sum of the query losses after every inner
step, annealed over the first N meta-iterations towards the last step's loss alone (so early training
cannot ignore the intermediate steps); ``inner_grad_clip=c`` rescales each task's inner gradient to a norm
of at most ``c`` (in training and adaptation), so one badly placed support point cannot throw the
weights far. :func:`mamlpp_config` sets all three.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from galmeta.algorithms import ALGORITHM_NAMES, traits_of
from galmeta.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from galmeta.config import DEFAULT_SEED, try_device
from galmeta.distributed import average_gradients, broadcast_from_rank_0, distributed_context
from galmeta.maml_numpy import check_inner, check_task_array, check_task_batch
from galmeta.safe_files import exclusive_lock
from galmeta.training import meta_train

__all__ = [
    "MLP",
    "mlp_forward",
    "meta_gradient",
    "loop_meta_gradient",
    "MetaConfig",
    "MetaLearner",
    "AdaptedModel",
    "ALGORITHMS",
    "distributed_context",
    "mamlpp_config",
    "CheckpointError",
]

#: The algorithms' names (their traits: :data:`galmeta.algorithms.ALGORITHMS`).
ALGORITHMS = ALGORITHM_NAMES


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


def _task_mse(out, y):
    """Per-task mean squared error, shape ``(T,)``."""
    return ((out - y) ** 2).mean(dim=(-2, -1))


def _finite(tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def _check_batch(xs, ys, xq=None, yq=None, d_in=None, d_out=None):
    """The NumPy learner's rules (:func:`galmeta.maml_numpy.check_task_batch`), applied to tensors."""
    arrays = {"xs": xs, "ys": ys} if xq is None else {"xs": xs, "ys": ys, "xq": xq, "yq": yq}
    check_task_batch(d_in, d_out, arrays, finite=_finite)


def _as_like(value, reference, name="task array"):
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
    xs, ys, xq, yq = (_as_like(a, reference, n) for a, n in zip((xs, ys, xq, yq), ("xs", "ys", "xq", "yq")))
    _check_batch(xs, ys, xq, yq, d_in=reference.shape[0], d_out=params[-1][0].shape[-1])
    leaves = [t.detach().requires_grad_(True) for pair in params for t in pair]
    pairs = [(leaves[2 * i], leaves[2 * i + 1]) for i in range(len(params))]
    n_tasks = xs.shape[0]
    phi = [(W.expand(n_tasks, *W.shape), b.expand(n_tasks, *b.shape)) for W, b in pairs]
    for _ in range(int(inner_steps)):
        flat = [t for pair in phi for t in pair]
        support_loss = _task_mse(mlp_forward(phi, xs), ys).sum()
        grads = torch.autograd.grad(support_loss, flat, create_graph=not first_order)
        flat = [p - inner_lr * g for p, g in zip(flat, grads)]
        phi = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(params))]
    meta_loss = _task_mse(mlp_forward(phi, xq), yq).mean()
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
def _batched_forward(model: nn.Module, per_task: dict, x):
    """Output of ``model`` for every task with its own parameters ``per_task[name] (T, ...)``."""
    if isinstance(model, MLP):
        n_layers = len(model.weights)
        pairs = [(per_task[f"weights.{i}"], per_task[f"biases.{i}"]) for i in range(n_layers)]
        return mlp_forward(pairs, x)
    from torch.func import functional_call, vmap

    def one_task(params_t, x_t):
        return functional_call(model, params_t, (x_t,))

    return vmap(one_task)(per_task, x)


def _default_head(model: nn.Module) -> tuple:
    """ANIL's head: the output layer (the last submodule that owns parameters)."""
    if isinstance(model, MLP):
        last = len(model.weights) - 1
        return (f"weights.{last}", f"biases.{last}")
    owners = [(name, module) for name, module in model.named_modules() if list(module.parameters(recurse=False))]
    name, module = owners[-1]
    prefix = f"{name}." if name else ""
    return tuple(prefix + p for p, _ in module.named_parameters(recurse=False))


# ---------------------------------------------------------------------------
# Configuration, trainer, adapted model
# ---------------------------------------------------------------------------
@dataclass
class MetaConfig:
    """Hyperparameters of a :class:`MetaLearner` (saved in checkpoints)."""

    algorithm: str = "maml"
    inner_lr: float = 0.01
    inner_steps: int = 1
    eval_inner_steps: int | None = None
    meta_lr: float = 1e-3
    meta_batch: int = 25
    head_names: tuple = ()
    reptile_steps: int = 5
    seed: int = DEFAULT_SEED
    step_lrs: bool = False
    multi_step_iterations: int = 0
    inner_grad_clip: float | None = None

    def __post_init__(self):
        traits = traits_of(self.algorithm)
        check_inner(self.inner_lr, self.inner_steps)
        if self.eval_inner_steps is not None:
            _check_steps(self.eval_inner_steps, "eval_inner_steps")
        if not (isinstance(self.meta_lr, (int, float)) and math.isfinite(self.meta_lr) and self.meta_lr > 0):
            raise ValueError(f"meta_lr must be a finite number > 0, got {self.meta_lr!r}")
        for name in ("meta_batch", "reptile_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.head_names = tuple(self.head_names)
        if self.step_lrs and not traits.per_step_rates_allowed:
            raise ValueError(f"step_lrs=True (learned per-layer, per-step rates) needs algorithm 'maml', 'fomaml' or "
                             f"'anil', not {self.algorithm!r} (Meta-SGD learns its own rates; Reptile has no query loss)")
        if isinstance(self.multi_step_iterations, bool) or not isinstance(self.multi_step_iterations, (int, np.integer)) \
                or self.multi_step_iterations < 0:
            raise ValueError(f"multi_step_iterations must be an integer >= 0 (0: the last step's loss only), "
                             f"got {self.multi_step_iterations!r}")
        if self.inner_grad_clip is not None and not (
                isinstance(self.inner_grad_clip, (int, float)) and not isinstance(self.inner_grad_clip, bool)
                and math.isfinite(self.inner_grad_clip) and self.inner_grad_clip > 0):
            raise ValueError(f"inner_grad_clip must be None (no clipping) or a finite number > 0, got {self.inner_grad_clip!r}")


def mamlpp_config(inner_steps=5, multi_step_iterations=1_000, inner_grad_clip=10.0, **kwargs) -> MetaConfig:
    """A :class:`MetaConfig` with the MAML++ stabilisers: per-layer per-step rates, multi-step loss, clipping.

    Examples
    --------
    >>> config = mamlpp_config(inner_lr=0.01)
    >>> config.algorithm, config.inner_steps, config.step_lrs, config.inner_grad_clip
    ('maml', 5, True, 10.0)
    """
    kwargs.setdefault("algorithm", "maml")
    return MetaConfig(inner_steps=inner_steps, step_lrs=True, multi_step_iterations=multi_step_iterations,
                      inner_grad_clip=inner_grad_clip, **kwargs)


def multi_step_weights(n_steps: int, iteration: int, anneal_iterations: int) -> np.ndarray:
    """Weights of the query losses after inner steps 1..n in the MAML++ multi-step loss.

    Uniform (1/n each) at iteration 0; the weights of steps 1..n-1 then fall linearly to a floor of
    0.03/n by ``anneal_iterations`` while the last step takes the rest (Antoniou et al. 2019, sec. 4).
    ``anneal_iterations = 0`` or one step: the last step's loss alone.

    Examples
    --------
    >>> multi_step_weights(4, 0, 100).round(3).tolist()
    [0.25, 0.25, 0.25, 0.25]
    >>> multi_step_weights(4, 100, 100).round(4).tolist()
    [0.0075, 0.0075, 0.0075, 0.9775]
    """
    n_steps = int(n_steps)
    if n_steps <= 1 or anneal_iterations <= 0:
        return np.eye(1, max(n_steps, 1), max(n_steps, 1) - 1).ravel()
    floor = 0.03 / n_steps
    progress = min(iteration / anneal_iterations, 1.0)
    early = 1.0 / n_steps + (floor - 1.0 / n_steps) * progress
    weights = np.full(n_steps, early)
    weights[-1] = 1.0 - early * (n_steps - 1)
    return weights


def _check_steps(steps, name="steps"):
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"{name} must be an integer >= 0 (0: no adaptation), got {steps!r}")
    return int(steps)


class MetaLearner:
    """Meta-learn an initialisation (and, for Meta-SGD, learning rates) over tasks.

    Parameters
    ----------
    model : torch.nn.Module
        Any module mapping ``(N, d_in) -> (N, d_out)``; :class:`MLP` is fastest.
    config : MetaConfig, optional
        Or pass its fields as keyword arguments.
    device : str or torch.device, optional
        Default: :func:`galmeta.config.try_device` (CUDA, then MPS, then CPU).
    dtype : torch.dtype, default torch.float32

    Examples
    --------
    >>> learner = MetaLearner(MLP((1, 40, 40, 1)), algorithm="maml", inner_lr=0.01)   # doctest: +SKIP
    >>> learner.fit(sample_tasks, n_iterations=1000)                                   # doctest: +SKIP
    >>> predictor = learner.adapt(support_x, support_y)                                # doctest: +SKIP
    >>> predictor.predict(query_x)                                                     # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: MetaConfig | None = None, device=None, dtype=torch.float32, **kwargs):
        if config is not None and kwargs:
            raise TypeError("pass either config or keyword hyperparameters, not both")
        # a copy: the learner fills in head_names, and the caller's config must not change under them
        self.config = dataclasses.replace(config) if config is not None else MetaConfig(**kwargs)
        self.device = torch.device(device) if device is not None else try_device()
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype)
        self.names = [name for name, _ in self.model.named_parameters()]
        if not self.config.head_names:
            self.config.head_names = _default_head(self.model)
        unknown = set(self.config.head_names) - set(self.names)
        if unknown:
            raise ValueError(f"head_names {sorted(unknown)} are not parameters of the model; it has {self.names}")
        self.inner_lrs = None
        self.traits = traits_of(self.config.algorithm)
        if self.traits.learns_rates == "per-parameter":
            self.inner_lrs = {n: torch.full_like(p, self.config.inner_lr, requires_grad=True)
                              for n, p in self.model.named_parameters()}
        elif self.config.step_lrs:  # MAML++: one rate per parameter tensor and inner step
            steps = max(int(self.config.inner_steps), 1)
            self.inner_lrs = {n: torch.full((steps,), float(self.config.inner_lr), dtype=dtype, device=self.device,
                                            requires_grad=True) for n in self._adapt_names()}
        trainable = list(self.model.parameters()) + (list(self.inner_lrs.values()) if self.inner_lrs else [])
        self.rank, self.world_size = distributed_context()
        if self.world_size > 1:
            if self.config.meta_batch % self.world_size:
                raise ValueError(f"meta_batch={self.config.meta_batch} must be divisible by the {self.world_size} ranks "
                                 "of the process group, so that every rank's shard has the same size")
            broadcast_from_rank_0(trainable)
        self.optimiser = torch.optim.Adam(trainable, lr=self.config.meta_lr)
        self.history: dict = {"iteration": [], "train_loss": [], "val_iteration": [], "val_loss": []}
        self.iteration = 0
        self.seconds = 0.0  # wall-clock time of the last fit
        self.diverged_at = None  # iteration at which the last fit(on_divergence="stop") stopped, if it did
        self.is_fitted_ = False

    # -- the inner loop ------------------------------------------------------
    def _adapt_names(self):
        return tuple(self.config.head_names) if self.traits.adapts == "head" else tuple(self.names)

    def _rate(self, name, step, inner_lr=None):
        """The inner step size of parameter ``name`` at inner step ``step`` (0-based)."""
        if inner_lr is not None:
            return inner_lr
        if self.inner_lrs is None:
            return self.config.inner_lr
        rates = self.inner_lrs[name]
        if self.config.step_lrs:  # beyond the trained steps, keep the last step's rate
            return rates[min(step, rates.shape[0] - 1)]
        return rates

    def _clipped(self, grads):
        """Each task's inner gradient rescaled to a norm of at most ``inner_grad_clip`` (differentiable)."""
        clip = self.config.inner_grad_clip
        if clip is None:
            return grads
        squared = sum(g.pow(2).reshape(g.shape[0], -1).sum(dim=1) for g in grads)
        # clamp_min before sqrt: at a zero gradient, sqrt's derivative is infinite and the second-order
        # meta-gradient becomes 0 * inf = NaN (without it, 3 of 25 MAML++ galaxy trainings went NaN). 1e-12:
        # norms below 1e-6 are never clipped, and clip / norm**2 stays finite in float32.
        norm = squared.clamp_min(1e-12).sqrt()
        scale = torch.clamp(clip / norm, max=1.0)
        return [g * scale.reshape(-1, *([1] * (g.dim() - 1))) for g in grads]

    def _adapted(self, xs, ys, steps, create_graph, start=None, first_step=0, inner_lr=None, trajectory=False):
        """Per-task parameters after ``steps`` inner SGD steps (a dict name -> (T, ...)).

        ``start`` continues from earlier per-task parameters instead of the shared ones, at inner step
        ``first_step`` (which picks MAML++'s per-step rates); ``inner_lr`` overrides every step size;
        ``trajectory=True`` returns the list of per-task parameters after each step instead.
        """
        n_tasks = xs.shape[0]
        params = dict(self.model.named_parameters())
        adapt_names = self._adapt_names()
        if start is None:
            per_task = {n: p.expand(n_tasks, *p.shape) for n, p in params.items()}
        else:
            per_task = {n: v.detach().requires_grad_(n in adapt_names) for n, v in start.items()}
        path = []
        for step in range(first_step, first_step + int(steps)):
            loss = _task_mse(_batched_forward(self.model, per_task, xs), ys).sum()
            grads = torch.autograd.grad(loss, [per_task[n] for n in adapt_names], create_graph=create_graph)
            for n, g in zip(adapt_names, self._clipped(list(grads))):
                per_task[n] = per_task[n] - self._rate(n, step, inner_lr) * g
            if trajectory:
                path.append(dict(per_task))
        return path if trajectory else per_task

    def _as_tensor(self, array, name="task array"):
        return torch.as_tensor(check_task_array(name, array), dtype=self.dtype).to(self.device)

    def _widths(self):
        """(d_in, d_out) of the model when it is an MLP, else (None, None): a generic module checks itself."""
        return (self.model.sizes[0], self.model.sizes[-1]) if isinstance(self.model, MLP) else (None, None)

    def _check(self, **arrays):
        d_in, d_out = self._widths()
        check_task_batch(d_in, d_out, arrays, finite=_finite)

    def meta_loss(self, xs, ys, xq, yq, steps=None, create_graph=True):
        """Mean query loss after ``steps`` inner steps (default ``config.inner_steps``; 0: no adaptation).

        A tensor, differentiable unless ``create_graph`` is False.
        """
        xs, ys, xq, yq = (self._as_tensor(a, n) for a, n in zip((xs, ys, xq, yq), ("xs", "ys", "xq", "yq")))
        self._check(xs=xs, ys=ys, xq=xq, yq=yq)
        steps = _check_steps(self.config.inner_steps if steps is None else steps)
        second_order = create_graph and self.traits.second_order
        per_task = self._adapted(xs, ys, steps, create_graph=second_order)
        return _task_mse(_batched_forward(self.model, per_task, xq), yq).mean()

    def _training_loss(self, xs, ys, xq, yq):
        """The loss meta-training differentiates: the meta-loss, or MAML++'s annealed multi-step loss.

        Returns ``(differentiable loss, last step's query loss as a float)``.
        """
        steps = int(self.config.inner_steps)
        if not self.config.multi_step_iterations or steps <= 1:
            loss = self.meta_loss(xs, ys, xq, yq)
            return loss, float(loss.detach())
        xs, ys, xq, yq = (self._as_tensor(a, n) for a, n in zip((xs, ys, xq, yq), ("xs", "ys", "xq", "yq")))
        self._check(xs=xs, ys=ys, xq=xq, yq=yq)
        second_order = self.traits.second_order
        weights = multi_step_weights(steps, self.iteration, self.config.multi_step_iterations)
        path = self._adapted(xs, ys, steps, create_graph=second_order, trajectory=True)
        losses = [_task_mse(_batched_forward(self.model, per_task, xq), yq).mean() for per_task in path]
        total = sum(float(w) * loss for w, loss in zip(weights, losses))
        return total, float(losses[-1].detach())

    # -- one meta-update -----------------------------------------------------
    def step(self, xs, ys, xq, yq):
        """One meta-update on a batch of tasks; returns the meta-loss (last inner step) before the update."""
        self.optimiser.zero_grad(set_to_none=True)
        if not self.traits.query_gradient:
            loss = self._reptile_gradients(xs, ys, xq, yq)
        else:
            loss_t, loss = self._training_loss(xs, ys, xq, yq)
            loss_t.backward()
        if self.world_size > 1:
            loss = average_gradients(self.optimiser, loss, self.world_size, self.device)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"meta-loss became {loss} at iteration {self.iteration}; lower meta_lr or inner_lr, "
                "or check the tasks for outliers"
            )
        self.optimiser.step()
        self.iteration += 1
        return loss

    def _reptile_gradients(self, xs, ys, xq, yq):
        """Reptile: move towards the task-adapted weights; (theta - phi) is used as the gradient."""
        x = torch.cat([self._as_tensor(xs, "xs"), self._as_tensor(xq, "xq")], dim=1)
        y = torch.cat([self._as_tensor(ys, "ys"), self._as_tensor(yq, "yq")], dim=1)
        with torch.enable_grad():
            per_task = self._adapted(x, y, self.config.reptile_steps, create_graph=False)
            per_task = {n: v.detach() for n, v in per_task.items()}
        with torch.no_grad():
            query_loss = float(_task_mse(_batched_forward(self.model, per_task, x), y).mean())
            for n, p in self.model.named_parameters():
                p.grad = (p - per_task[n]).mean(dim=0) / max(self.config.inner_lr, 1e-12)
        return query_loss

    # -- training loop -------------------------------------------------------
    def fit(self, sample_tasks: Callable, n_iterations: int, val_tasks=None, eval_every: int = 100,
            patience: int | None = None, checkpoint: str | Path | None = None, progress: bool | None = None,
            rng: np.random.Generator | None = None, on_divergence: str = "raise"):
        """Meta-train.

        Parameters
        ----------
        sample_tasks : callable
            ``sample_tasks(rng, n_tasks) -> (xs, ys, xq, yq)`` (NumPy or tensors).
        n_iterations : int
            Meta-updates to run (counted from the current :attr:`iteration`, so a
            resumed learner continues).
        val_tasks : tuple or list of tuples, optional
            A fixed ``(xs, ys, xq, yq)`` batch of meta-validation tasks for early stopping, or a list of such
            batches (for example one per support size K): their losses are averaged.
        eval_every : int, default 100
        patience : int, optional
            Stop after this many evaluations without improvement; the best
            parameters are restored at the end.
        checkpoint : path, optional
            Saved every ``eval_every`` iterations and at the end (model, optimiser, config, seed, history, rng),
            with or without ``val_tasks``.
        progress : bool, optional
            Progress bar (default: on, except in batch execution; :func:`galmeta.config.progress_bar`).
        rng : numpy.random.Generator, optional
            Default: seeded from ``config.seed``.
        on_divergence : {"raise", "stop"}, default "raise"
            What to do when training diverges (below). ``"stop"`` ends training with a ``RuntimeWarning``,
            keeps the parameters with the best validation loss so far (without ``val_tasks``, or before the
            first evaluation, those it started from) and records the iteration in :attr:`diverged_at`: for
            long unattended runs such as the evaluation, which must report a diverging learner, not crash.

        Raises
        ------
        FloatingPointError
            When the meta-loss stops being finite, or grows a million-fold over its first values (a
            ``RuntimeWarning`` comes first, at a thousand-fold): training diverges.
        """
        if isinstance(n_iterations, bool) or not isinstance(n_iterations, (int, np.integer)) or n_iterations < 0:
            raise ValueError(f"n_iterations must be an integer >= 0, got {n_iterations!r}")
        if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
            raise ValueError(f"eval_every must be an integer >= 1, got {eval_every!r}")
        if on_divergence not in ("raise", "stop"):
            raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}")
        arguments = dict(val_tasks=val_tasks, eval_every=eval_every, patience=patience, checkpoint=checkpoint,
                         progress=progress, rng=rng, on_divergence=on_divergence)
        if checkpoint is None or self.rank != 0:
            return meta_train(self, sample_tasks, n_iterations, **arguments)
        # one training per checkpoint file: a second one is refused before it starts, not after it trained
        with exclusive_lock(Path(str(checkpoint) + ".lock"), f"the checkpoint {checkpoint}", timeout=0):
            return meta_train(self, sample_tasks, n_iterations, **arguments)

    def _default_eval_steps(self, steps):
        if steps is not None:
            return _check_steps(steps)
        return self.config.eval_inner_steps if self.config.eval_inner_steps is not None else self.config.inner_steps

    def _require_fitted(self, what):
        if not self.is_fitted_:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                f"this MetaLearner is not meta-trained yet: call fit() (or load() a checkpoint) before {what}(). "
                "To adapt from the initial weights on purpose, call fit(None, 0) first."
            )

    def evaluate(self, xs, ys, xq, yq, steps=None) -> float:
        """Meta-loss on fixed tasks after ``steps`` inner steps (default ``eval_inner_steps`` or ``inner_steps``)."""
        loss = self.meta_loss(xs, ys, xq, yq, steps=self._default_eval_steps(steps), create_graph=False)
        return float(loss.detach())

    # -- adapt / predict -------------------------------------------------------
    def adapt(self, support_x, support_y, steps=None):
        """Adapt to new tasks from their support sets.

        Parameters
        ----------
        support_x : array, shape (K, d_in) for one task or (T, K, d_in)
        support_y : array, shape (K,), (K, d_out) or (T, K, d_out)
        steps : int, optional
            Inner steps (default ``config.eval_inner_steps`` or ``config.inner_steps``; 0: none).

        Returns
        -------
        AdaptedModel
        """
        self._require_fitted("adapt")
        x, y = self._as_tensor(support_x, "support_x"), self._as_tensor(support_y, "support_y")
        single = x.dim() == 2
        if single:
            x = x.unsqueeze(0)
            y = y.reshape(1, x.shape[1], -1)
        elif y.dim() == 2:
            y = y.unsqueeze(-1)
        self._check(xs=x, ys=y)
        steps = self._default_eval_steps(steps)
        per_task = self._adapted(x, y, steps, create_graph=False)
        return AdaptedModel(self, {n: v.detach() for n, v in per_task.items()}, single)

    def adaptation_predictions(self, support_x, support_y, query_x, max_steps=10, inner_lr=None):
        """Query predictions after 0, 1, ..., ``max_steps`` inner steps, shape ``(max_steps + 1, T, Q, d_out)``.

        One pass through the inner loop (cheaper than calling :meth:`adapt` for every step count).
        ``inner_lr`` replaces the (fixed or learned) step sizes by one number, e.g. to compare step sizes.
        """
        self._require_fitted("adaptation_predictions")
        max_steps = _check_steps(max_steps, "max_steps")
        if inner_lr is not None:
            check_inner(inner_lr, 1)
        x, y, xq = (self._as_tensor(support_x, "support_x"), self._as_tensor(support_y, "support_y"),
                    self._as_tensor(query_x, "query_x"))
        if y.dim() == 2:
            y = y.unsqueeze(-1)
        self._check(xs=x, ys=y, xq=xq)
        per_task = {n: v.detach() for n, v in self._adapted(x, y, 0, create_graph=False).items()}
        predictions = []
        for step in range(int(max_steps) + 1):
            if step:
                per_task = {n: v.detach() for n, v in
                            self._adapted(x, y, 1, False, start=per_task, first_step=step - 1, inner_lr=inner_lr).items()}
            with torch.no_grad():
                predictions.append(_batched_forward(self.model, per_task, xq).cpu().numpy())
        return np.stack(predictions)

    # -- checkpoints -------------------------------------------------------------
    def _state(self):
        return {"model": copy.deepcopy(self.model.state_dict()),
                "inner_lrs": {n: v.detach().clone() for n, v in self.inner_lrs.items()} if self.inner_lrs else None}

    def _load_state(self, state):
        self.model.load_state_dict(state["model"])
        if state.get("inner_lrs") and self.inner_lrs is not None:
            with torch.no_grad():
                for n, v in state["inner_lrs"].items():
                    self.inner_lrs[n].copy_(v)

    def save(self, path):
        """Save model, learned rates, optimiser, config, iteration, history and RNG state
        (:func:`galmeta.checkpoints.save_checkpoint`: tensors and plain data only)."""
        save_checkpoint(self, path)

    def load(self, path):
        """Restore a checkpoint written by :meth:`save` (same architecture, algorithm and training settings).

        The file is read with ``torch.load(weights_only=True)``, which builds tensors and plain Python data
        only (a crafted file cannot run code), and checked completely before anything of this learner
        changes (:func:`galmeta.checkpoints.load_checkpoint`).

        Raises
        ------
        CheckpointError
            Naming the file and what is wrong; the learner is left as it was.
        """
        return load_checkpoint(self, path)


class AdaptedModel:
    """The result of :meth:`MetaLearner.adapt`: one set of adapted parameters per task."""

    def __init__(self, learner: MetaLearner, per_task: dict, single: bool):
        self.learner, self.per_task, self.single = learner, per_task, single

    @torch.no_grad()
    def predict(self, x):
        """Predictions for ``x`` of shape ``(N, d_in)`` (one task) or ``(T, N, d_in)``; NumPy out."""
        x = self.learner._as_tensor(x, "x")
        if self.single:
            if x.dim() != 2:
                raise ValueError(f"this model was adapted to one task: x must be (N, d_in), got {tuple(x.shape)}")
            x = x.unsqueeze(0)
        out = _batched_forward(self.learner.model, self.per_task, x)
        out = out[0] if self.single else out
        return out.cpu().numpy()
