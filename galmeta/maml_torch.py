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
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from galmeta.algorithms import ALGORITHM_NAMES, traits_of
from galmeta.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from galmeta.config import apply_thread_policy, try_device
from galmeta.distributed import average_gradients, broadcast_from_rank_0, distributed_context
from galmeta.inner_loop import InnerLoop
# the functional pieces and the configuration, importable from here as the notebooks do
from galmeta.maml_functional import (MLP, batched_forward, default_head, loop_meta_gradient, meta_gradient,  # noqa: F401
                                     mlp_forward, task_mse)
from galmeta.meta_config import MetaConfig, mamlpp_config, multi_step_weights  # noqa: F401
from galmeta.training import meta_train
from galmeta.validation import check_inner, check_steps, check_task_array, check_task_batch

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
    "multi_step_weights",
    "CheckpointError",
]

apply_thread_policy()  # one place, before any work: GALMETA_THREADS, else one thread (galmeta.config)

#: The algorithms' names (their traits: :data:`galmeta.algorithms.ALGORITHMS`).
ALGORITHMS = ALGORITHM_NAMES


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
            self.config.head_names = default_head(self.model)
        unknown = set(self.config.head_names) - set(self.names)
        if unknown:
            raise ValueError(f"head_names {sorted(unknown)} are not parameters of the model; it has {self.names}")
        self.traits = traits_of(self.config.algorithm)
        self.inner = InnerLoop(self.model, self.config, self.traits, self.names, self.device, dtype)
        self.inner_lrs = self.inner.rates  # learned inner rates (Meta-SGD, MAML++), or None
        trainable = list(self.model.parameters()) + (list(self.inner_lrs.values()) if self.inner_lrs else [])
        self.rank, self.world_size = distributed_context()
        if self.world_size > 1:
            if self.config.meta_batch % self.world_size:
                raise ValueError(f"meta_batch={self.config.meta_batch} must be divisible by the {self.world_size} ranks "
                                 "of the process group, so that every rank's shard has the same size")
            broadcast_from_rank_0(trainable)
        # the fused kernel updates every tensor in one call (about 8% of a sinusoid meta-iteration on the CPU)
        fused = True if self.device.type in ("cpu", "cuda") else None
        self.optimiser = torch.optim.Adam(trainable, lr=self.config.meta_lr, fused=fused)
        self.history: dict = {"iteration": [], "train_loss": [], "val_iteration": [], "val_loss": []}
        self.iteration = 0
        self.seconds = 0.0  # wall-clock time of the last fit
        self.diverged_at = None  # iteration at which the last fit(on_divergence="stop") stopped, if it did
        self.is_fitted_ = False

    # -- the inner loop (galmeta.inner_loop) ----------------------------------
    def _adapted(self, xs, ys, steps, create_graph, start=None, first_step=0, inner_lr=None, trajectory=False):
        """Per-task parameters after ``steps`` inner steps (:meth:`galmeta.inner_loop.InnerLoop.adapt`)."""
        return self.inner.adapt(xs, ys, steps, create_graph, start, first_step, inner_lr, trajectory)

    def _clipped(self, grads):
        return self.inner.clipped(grads)

    def _as_tensor(self, array, name="task array"):
        return torch.as_tensor(check_task_array(name, array), dtype=self.dtype).to(self.device)

    def _widths(self):
        """(d_in, d_out) of the model when it is an MLP, else (None, None): a generic module checks itself."""
        return (self.model.sizes[0], self.model.sizes[-1]) if isinstance(self.model, MLP) else (None, None)

    def _check(self, **arrays):
        d_in, d_out = self._widths()
        check_task_batch(d_in, d_out, arrays, finite=lambda t: bool(torch.isfinite(t).all()))

    def meta_loss(self, xs, ys, xq, yq, steps=None, create_graph=True):
        """Mean query loss after ``steps`` inner steps (default ``config.inner_steps``; 0: no adaptation).

        A tensor, differentiable unless ``create_graph`` is False.
        """
        xs, ys, xq, yq = (self._as_tensor(a, n) for a, n in zip((xs, ys, xq, yq), ("xs", "ys", "xq", "yq")))
        self._check(xs=xs, ys=ys, xq=xq, yq=yq)
        steps = check_steps(self.config.inner_steps if steps is None else steps)
        second_order = create_graph and self.traits.second_order
        per_task = self._adapted(xs, ys, steps, create_graph=second_order)
        return task_mse(batched_forward(self.model, per_task, xq), yq).mean()

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
        losses = [task_mse(batched_forward(self.model, per_task, xq), yq).mean() for per_task in path]
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
            query_loss = float(task_mse(batched_forward(self.model, per_task, x), y).mean())
            for n, p in self.model.named_parameters():
                p.grad = (p - per_task[n]).mean(dim=0) / max(self.config.inner_lr, 1e-12)
        return query_loss

    # -- training loop -------------------------------------------------------
    def fit(self, sample_tasks: Callable, n_iterations: int, val_tasks=None, eval_every: int = 100,
            patience: int | None = None, checkpoint: str | Path | None = None, progress: bool | None = None,
            rng: np.random.Generator | None = None, on_divergence: str = "raise"):
        """Meta-train for ``n_iterations`` meta-updates with :func:`galmeta.training.meta_train`, whose
        docstring explains every argument (early stopping, checkpoints, divergence). Returns ``self``."""
        return meta_train(self, sample_tasks, n_iterations, val_tasks=val_tasks, eval_every=eval_every,
                          patience=patience, checkpoint=checkpoint, progress=progress, rng=rng,
                          on_divergence=on_divergence)

    def _default_eval_steps(self, steps):
        if steps is not None:
            return check_steps(steps)
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
        max_steps = check_steps(max_steps, "max_steps")
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
                predictions.append(batched_forward(self.model, per_task, xq).cpu().numpy())
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
        out = batched_forward(self.learner.model, self.per_task, x)
        out = out[0] if self.single else out
        return out.cpu().numpy()
