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

The family is one :class:`MetaLearner` with an ``algorithm`` option:
``"maml"`` (second order), ``"fomaml"``, ``"metasgd"`` (learned per-parameter
inner learning rates, Li et al. 2017), ``"anil"`` (adapt only the head, Raghu
et al. 2020) and ``"reptile"`` (Nichol et al. 2018).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from galmeta.config import DEFAULT_SEED, try_device

__all__ = [
    "MLP",
    "mlp_forward",
    "meta_gradient",
    "loop_meta_gradient",
    "MetaConfig",
    "MetaLearner",
    "AdaptedModel",
    "ALGORITHMS",
]

ALGORITHMS = ("maml", "fomaml", "metasgd", "anil", "reptile")


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


def _check_batch(xs, ys, xq=None, yq=None):
    arrays = {"xs": xs, "ys": ys} if xq is None else {"xs": xs, "ys": ys, "xq": xq, "yq": yq}
    n_tasks = xs.shape[0] if xs.dim() == 3 else None
    for name, value in arrays.items():
        if value.dim() != 3:
            raise ValueError(f"{name} must have shape (tasks, points, features); got {tuple(value.shape)}")
        if value.shape[0] != n_tasks:
            raise ValueError(f"{name} has {value.shape[0]} tasks but xs has {n_tasks}")
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or inf; clean or impute the data first (galmeta.tasks)")
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"xs has {xs.shape[1]} points per task but ys has {ys.shape[1]}")
    if xq is not None and xq.shape[1] != yq.shape[1]:
        raise ValueError(f"xq has {xq.shape[1]} points per task but yq has {yq.shape[1]}")


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
    if isinstance(inner_steps, bool) or int(inner_steps) != inner_steps or inner_steps < 1:
        raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps!r}")
    _check_batch(xs, ys, xq, yq)
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

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={self.algorithm!r} is not one of {ALGORITHMS}")
        if int(self.inner_steps) < 1:
            raise ValueError(f"inner_steps must be >= 1, got {self.inner_steps!r}")
        if not (self.inner_lr >= 0 and math.isfinite(self.inner_lr)):
            raise ValueError(f"inner_lr must be a finite number >= 0, got {self.inner_lr!r}")
        if int(self.meta_batch) < 1:
            raise ValueError(f"meta_batch must be >= 1, got {self.meta_batch!r}")
        self.head_names = tuple(self.head_names)


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
        self.config = config or MetaConfig(**kwargs)
        if config is not None and kwargs:
            raise TypeError("pass either config or keyword hyperparameters, not both")
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
        if self.config.algorithm == "metasgd":
            self.inner_lrs = {n: torch.full_like(p, self.config.inner_lr, requires_grad=True)
                              for n, p in self.model.named_parameters()}
        trainable = list(self.model.parameters()) + (list(self.inner_lrs.values()) if self.inner_lrs else [])
        self.optimiser = torch.optim.Adam(trainable, lr=self.config.meta_lr)
        self.history: dict = {"iteration": [], "train_loss": [], "val_iteration": [], "val_loss": []}
        self.iteration = 0
        self.seconds = 0.0  # wall-clock time of the last fit

    # -- the inner loop ------------------------------------------------------
    def _adapted(self, xs, ys, steps, create_graph, start=None):
        """Per-task parameters after ``steps`` inner SGD steps (a dict name -> (T, ...)).

        ``start`` continues from earlier per-task parameters instead of the shared ones.
        """
        n_tasks = xs.shape[0]
        params = dict(self.model.named_parameters())
        adapt_names = self.config.head_names if self.config.algorithm == "anil" else tuple(self.names)
        if start is None:
            per_task = {n: p.expand(n_tasks, *p.shape) for n, p in params.items()}
        else:
            per_task = {n: v.detach().requires_grad_(n in adapt_names) for n, v in start.items()}
        for _ in range(int(steps)):
            loss = _task_mse(_batched_forward(self.model, per_task, xs), ys).sum()
            grads = torch.autograd.grad(loss, [per_task[n] for n in adapt_names], create_graph=create_graph)
            for n, g in zip(adapt_names, grads):
                lr = self.inner_lrs[n] if self.inner_lrs is not None else self.config.inner_lr
                per_task[n] = per_task[n] - lr * g
        return per_task

    def _as_tensor(self, array):
        return torch.as_tensor(np.asarray(array) if not torch.is_tensor(array) else array,
                               dtype=self.dtype).to(self.device)

    def meta_loss(self, xs, ys, xq, yq, steps=None, create_graph=True):
        """Mean query loss after adaptation (a tensor, differentiable unless ``create_graph`` is False)."""
        xs, ys, xq, yq = (self._as_tensor(a) for a in (xs, ys, xq, yq))
        _check_batch(xs, ys, xq, yq)
        steps = steps or self.config.inner_steps
        second_order = create_graph and self.config.algorithm in ("maml", "metasgd", "anil")
        per_task = self._adapted(xs, ys, steps, create_graph=second_order)
        return _task_mse(_batched_forward(self.model, per_task, xq), yq).mean()

    # -- one meta-update -----------------------------------------------------
    def step(self, xs, ys, xq, yq):
        """One meta-update on a batch of tasks; returns the meta-loss before the update."""
        self.optimiser.zero_grad(set_to_none=True)
        if self.config.algorithm == "reptile":
            loss = self._reptile_gradients(xs, ys, xq, yq)
        else:
            loss_t = self.meta_loss(xs, ys, xq, yq)
            loss_t.backward()
            loss = float(loss_t.detach())
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
        x = torch.cat([self._as_tensor(xs), self._as_tensor(xq)], dim=1)
        y = torch.cat([self._as_tensor(ys), self._as_tensor(yq)], dim=1)
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
            patience: int | None = None, checkpoint: str | Path | None = None, progress: bool = True,
            rng: np.random.Generator | None = None):
        """Meta-train.

        Parameters
        ----------
        sample_tasks : callable
            ``sample_tasks(rng, n_tasks) -> (xs, ys, xq, yq)`` (NumPy or tensors).
        n_iterations : int
            Meta-updates to run (counted from the current :attr:`iteration`, so a
            resumed learner continues).
        val_tasks : tuple, optional
            A fixed ``(xs, ys, xq, yq)`` batch of meta-validation tasks for early stopping.
        eval_every : int, default 100
        patience : int, optional
            Stop after this many evaluations without improvement; the best
            parameters are restored at the end.
        checkpoint : path, optional
            Saved at every evaluation (model, optimiser, config, seed, history, rng).
        rng : numpy.random.Generator, optional
            Default: seeded from ``config.seed``.
        """
        from tqdm.auto import tqdm

        rng = rng or np.random.default_rng(self.config.seed + self.iteration)
        best, best_state, bad_evals = math.inf, None, 0
        start = time.perf_counter()
        bar = tqdm(range(int(n_iterations)), disable=not progress, desc=f"meta-train ({self.config.algorithm})",
                   mininterval=1.0)
        for _ in bar:
            batch = sample_tasks(rng, self.config.meta_batch)
            loss = self.step(*batch)
            self.history["iteration"].append(self.iteration)
            self.history["train_loss"].append(loss)
            if val_tasks is not None and self.iteration % eval_every == 0:
                val = self.evaluate(*val_tasks)
                self.history["val_iteration"].append(self.iteration)
                self.history["val_loss"].append(val)
                bar.set_postfix(loss=f"{loss:.4f}", val=f"{val:.4f}")
                if val < best:
                    best, bad_evals = val, 0
                    best_state = self._state()
                else:
                    bad_evals += 1
                if checkpoint is not None:
                    self.save(checkpoint)
                if patience is not None and bad_evals >= patience:
                    break
        self.seconds = time.perf_counter() - start
        if best_state is not None:
            self._load_state(best_state)
        return self

    def evaluate(self, xs, ys, xq, yq, steps=None) -> float:
        """Meta-loss on fixed tasks, without updating anything."""
        loss = self.meta_loss(xs, ys, xq, yq, steps=steps or self.config.eval_inner_steps, create_graph=False)
        return float(loss.detach())

    # -- adapt / predict -------------------------------------------------------
    def adapt(self, support_x, support_y, steps=None):
        """Adapt to new tasks from their support sets.

        Parameters
        ----------
        support_x : array, shape (K, d_in) for one task or (T, K, d_in)
        support_y : array, shape (K,), (K, d_out) or (T, K, d_out)
        steps : int, optional
            Inner steps (default ``config.eval_inner_steps`` or ``config.inner_steps``).

        Returns
        -------
        AdaptedModel
        """
        x, y = self._as_tensor(support_x), self._as_tensor(support_y)
        single = x.dim() == 2
        if single:
            x = x.unsqueeze(0)
            y = y.reshape(1, x.shape[1], -1)
        elif y.dim() == 2:
            y = y.unsqueeze(-1)
        _check_batch(x, y)
        steps = steps or self.config.eval_inner_steps or self.config.inner_steps
        per_task = self._adapted(x, y, steps, create_graph=False)
        return AdaptedModel(self, {n: v.detach() for n, v in per_task.items()}, single)

    def adaptation_predictions(self, support_x, support_y, query_x, max_steps=10):
        """Query predictions after 0, 1, ..., ``max_steps`` inner steps, shape ``(max_steps + 1, T, Q, d_out)``.

        One pass through the inner loop (cheaper than calling :meth:`adapt` for every step count).
        """
        x, y, xq = self._as_tensor(support_x), self._as_tensor(support_y), self._as_tensor(query_x)
        if y.dim() == 2:
            y = y.unsqueeze(-1)
        _check_batch(x, y)
        per_task = {n: v.detach() for n, v in self._adapted(x, y, 0, create_graph=False).items()}
        predictions = []
        for step in range(int(max_steps) + 1):
            if step:
                per_task = {n: v.detach() for n, v in self._adapted(x, y, 1, False, start=per_task).items()}
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
        """Save model, learned rates, optimiser, config, iteration, history and RNG state."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {**self._state(), "optimiser": self.optimiser.state_dict(), "config": asdict(self.config),
                   "iteration": self.iteration, "history": self.history, "torch_rng": torch.get_rng_state()}
        tmp = path.with_suffix(path.suffix + ".part")
        torch.save(payload, tmp)
        tmp.replace(path)

    def load(self, path):
        """Restore a checkpoint written by :meth:`save` (same model architecture)."""
        payload = torch.load(path, map_location=self.device, weights_only=False)
        if payload["config"]["algorithm"] != self.config.algorithm:
            raise ValueError(f"checkpoint is for {payload['config']['algorithm']!r}, learner is {self.config.algorithm!r}")
        self._load_state(payload)
        self.optimiser.load_state_dict(payload["optimiser"])
        self.iteration, self.history = payload["iteration"], payload["history"]
        torch.set_rng_state(payload["torch_rng"])
        return self


class AdaptedModel:
    """The result of :meth:`MetaLearner.adapt`: one set of adapted parameters per task."""

    def __init__(self, learner: MetaLearner, per_task: dict, single: bool):
        self.learner, self.per_task, self.single = learner, per_task, single

    @torch.no_grad()
    def predict(self, x):
        """Predictions for ``x`` of shape ``(N, d_in)`` (one task) or ``(T, N, d_in)``; NumPy out."""
        x = self.learner._as_tensor(x)
        if self.single:
            if x.dim() != 2:
                raise ValueError(f"this model was adapted to one task: x must be (N, d_in), got {tuple(x.shape)}")
            x = x.unsqueeze(0)
        out = _batched_forward(self.learner.model, self.per_task, x)
        out = out[0] if self.single else out
        return out.cpu().numpy()
