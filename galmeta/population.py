"""Population training: many meta-learners of one configuration trained as one batched computation.

The evaluation trains every meta-learner once per fold and seed: 25 trainings of the same small network
that differ only in their data and their random numbers. Each of them alone keeps the machine busy with
per-call overhead, not arithmetic (a meta-iteration of a 40-40 network is a few hundred small matrix
products). Trained together they become one computation whose matrices are P times larger.

How
---
Every parameter gets a leading **population axis**, ``(P, ...)``. A meta-batch of member ``p`` is its own
``T`` tasks, drawn by its own sampler from its own random stream; the ``P x T`` tasks are laid along one
task axis, every task with a copy of its member's parameters (``repeat_interleave``), so the inner loop of
:mod:`galmeta.inner_loop` and the batched forward pass of :mod:`galmeta.maml_functional` run unchanged.
Tasks of different members may have different K (the evaluation's learners draw K per meta-batch): the
support sets are padded to the largest K and masked, so each task's loss is the mean over its own points.
The population's loss is the **sum of the members' meta-losses**, whose gradient with respect to member
``p``'s rows is exactly member ``p``'s meta-gradient (members share no parameter). Adam is elementwise,
so one Adam over the stacked tensors is one Adam per member; it is written out here (the arithmetic of
``torch.optim.Adam``) so that a member can be frozen.

Per member: early stopping on its own meta-validation tasks, the divergence guard, the history, the
checkpoint file. A member that stops (patience or divergence) is **masked**: it leaves the batch, its
parameters and optimiser state no longer change, and the others go on. At the end every member's
:class:`galmeta.maml_torch.MetaLearner` holds what its own ``fit`` would have given it: the best
parameters, the optimiser state, the iteration, the history, ``diverged_at``. ``tests/test_population.py``
checks that in float64, for every algorithm, against separate trainings.

``benchmarks/population_speed.py`` measures it against separate trainings.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from galmeta.inner_loop import sgd_steps
from galmeta.maml_functional import batched_forward, task_mse
from galmeta.meta_config import multi_step_weights
from galmeta.safe_files import exclusive_lock
from galmeta.training import DivergenceGuard, EarlyStopping, validation_batches
from galmeta.validation import check_task_array

__all__ = ["PopulationMetaLearner", "fit_population", "pad_support", "stacked_adam_step"]

#: torch.optim.Adam's defaults, which every MetaLearner uses.
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def pad_support(batches, dtype, device, check=None):
    """Stack the members' ``(xs, ys, xq, yq)`` batches along the task axis, padding the support sets.

    ``check(xs=..., ys=..., xq=..., yq=...)``, if given, validates each member's batch first (the single
    learner's checks and messages). Returns ``xs (P*T, K_max, d)``, ``ys``, ``xq (P*T, Q, d)``, ``yq`` and
    the support mask ``(P*T, K_max)`` (None when every member has the same K).
    """
    names = ("xs", "ys", "xq", "yq")
    as_tensor = [[torch.as_tensor(check_task_array(n, a), dtype=dtype).to(device) for n, a in zip(names, batch)]
                 for batch in batches]
    for arrays in as_tensor:  # a single output dimension may come as (T, K)
        for i in (1, 3):
            if arrays[i].dim() == 2:
                arrays[i] = arrays[i].unsqueeze(-1)
        if check is not None:
            check(**dict(zip(names, arrays)))
    ks = [arrays[0].shape[1] for arrays in as_tensor]
    k_max = max(ks)
    mask = None
    if min(ks) != k_max:
        xs, ys, masks = [], [], []
        for arrays, k in zip(as_tensor, ks):
            pad = k_max - k
            xs.append(torch.nn.functional.pad(arrays[0], (0, 0, 0, pad)))
            ys.append(torch.nn.functional.pad(arrays[1], (0, 0, 0, pad)))
            m = torch.zeros(arrays[0].shape[0], k_max, dtype=dtype, device=device)
            m[:, :k] = 1
            masks.append(m)
        mask = torch.cat(masks)
    else:
        xs, ys = [a[0] for a in as_tensor], [a[1] for a in as_tensor]
    return (torch.cat(xs), torch.cat(ys), torch.cat([a[2] for a in as_tensor]), torch.cat([a[3] for a in as_tensor]),
            mask)


@torch.no_grad()
def stacked_adam_step(tensors, grads, exp_avg, exp_avg_sq, step, lr, active):
    """``torch.optim.Adam``'s update (default betas and eps) of the ``active`` rows of stacked tensors.

    ``tensors``, ``grads``, ``exp_avg``, ``exp_avg_sq``: dicts of ``(P, ...)`` tensors under the same keys;
    ``step``: the Adam step count of the active members after this update (they all share it); ``active``:
    a tensor of row indices. Rows not in ``active`` (frozen members) are left as they are.
    """
    beta1, beta2 = ADAM_BETAS
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    for key, tensor in tensors.items():
        g = grads[key].index_select(0, active)
        avg = exp_avg[key].index_select(0, active).lerp_(g, 1 - beta1)
        avg_sq = exp_avg_sq[key].index_select(0, active).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
        rows = tensor.index_select(0, active).addcdiv_(avg, denom, value=-lr / bias_correction1)
        tensor.index_copy_(0, active, rows)
        exp_avg[key].index_copy_(0, active, avg)
        exp_avg_sq[key].index_copy_(0, active, avg_sq)


class PopulationMetaLearner:
    """P :class:`galmeta.maml_torch.MetaLearner` objects of one configuration, trained in lockstep.

    Parameters
    ----------
    learners : list of MetaLearner
        Same architecture, algorithm, training settings, device and dtype; they may differ in their
        starting parameters and seeds. They may be fresh or restored from checkpoints, but all at the
        same iteration.

    Examples
    --------
    >>> population = PopulationMetaLearner(learners)                       # doctest: +SKIP
    >>> population.fit(samplers, 3000, val_tasks=val, patience=20)        # doctest: +SKIP
    >>> learners[3].adapt(support_x, support_y)                            # doctest: +SKIP
    """

    def __init__(self, learners):
        from galmeta.checkpoints import TRAINING_SETTINGS

        self.learners = list(learners)
        if not self.learners:
            raise ValueError("learners must hold at least one MetaLearner")
        first = self.learners[0]
        for i, learner in enumerate(self.learners):
            shapes = {n: tuple(p.shape) for n, p in learner.model.named_parameters()}
            if shapes != {n: tuple(p.shape) for n, p in first.model.named_parameters()}:
                raise ValueError(f"learners[{i}] has another architecture than learners[0]")
            differ = [name for name in TRAINING_SETTINGS + ("algorithm", "eval_inner_steps")
                      if getattr(learner.config, name) != getattr(first.config, name)]
            if differ:
                raise ValueError(f"learners[{i}] differs from learners[0] in {differ}: a population shares one "
                                 "configuration (only the seed and the data may differ)")
            if (learner.device, learner.dtype) != (first.device, first.dtype):
                raise ValueError(f"learners[{i}] is on {learner.device} in {learner.dtype}, learners[0] on "
                                 f"{first.device} in {first.dtype}: move them to one device and dtype")
            if learner.world_size > 1:
                raise ValueError("population training runs in one process; it does not combine with torch.distributed")
            if learner.iteration != first.iteration:
                raise ValueError(f"learners[{i}] is at iteration {learner.iteration}, learners[0] at "
                                 f"{first.iteration}: a population trains members that are at the same iteration")
        self.config, self.traits, self.model = first.config, first.traits, first.model
        self.device, self.dtype = first.device, first.dtype
        self.adapt_names = first.inner.adapt_names
        self.iteration = first.iteration
        with torch.no_grad():
            self.params = {n: torch.stack([dict(l.model.named_parameters())[n].detach() for l in self.learners])
                           .clone().requires_grad_(True) for n in first.names}
            self.rates = None
            if first.inner_lrs is not None:
                self.rates = {n: torch.stack([l.inner_lrs[n].detach() for l in self.learners]).clone().requires_grad_(True)
                              for n in first.inner_lrs}
        self._import_adam()

    @property
    def size(self):
        return len(self.learners)

    def _trainable(self):
        return {**{("param", n): t for n, t in self.params.items()},
                **({("rate", n): t for n, t in self.rates.items()} if self.rates else {})}

    def _member_tensors(self, learner):
        """The member's own tensors, in the order of the population's trainable tensors."""
        params = dict(learner.model.named_parameters())
        return {**{("param", n): params[n] for n in self.params},
                **({("rate", n): learner.inner_lrs[n] for n in self.rates} if self.rates else {})}

    def _import_adam(self):
        """Adam's moments from the members' optimisers (zeros for fresh ones), stacked."""
        self.adam_step = 0
        self.exp_avg = {key: torch.zeros_like(t) for key, t in self._trainable().items()}
        self.exp_avg_sq = {key: torch.zeros_like(t) for key, t in self._trainable().items()}
        steps = set()
        for p, learner in enumerate(self.learners):
            own = self._member_tensors(learner)
            for key, tensor in own.items():
                state = learner.optimiser.state.get(tensor)
                if state:
                    steps.add(int(state["step"]))
                    self.exp_avg[key][p] = state["exp_avg"]
                    self.exp_avg_sq[key][p] = state["exp_avg_sq"]
                else:
                    steps.add(0)
        if len(steps) > 1:
            raise ValueError(f"the members' optimisers have taken different numbers of steps ({sorted(steps)}); "
                             "a population trains members that are at the same iteration")
        self.adam_step = steps.pop()

    # -- one computation for all active members ---------------------------------------------------
    def _per_task(self, active, n_tasks):
        """Each task's copy of its member's parameters: ``(A*T, ...)`` from the active rows."""
        return {n: t.index_select(0, active).repeat_interleave(n_tasks, dim=0) for n, t in self.params.items()}

    def _rate(self, active, n_tasks):
        """``rate(name, step)`` for the inner loop: a number, or each task's member's learned rates."""
        if self.rates is None:
            return lambda name, step: self.config.inner_lr
        per_task = {n: t.index_select(0, active).repeat_interleave(n_tasks, dim=0) for n, t in self.rates.items()}
        if not self.config.step_lrs:  # Meta-SGD: one rate per weight, shaped like the weight
            return lambda name, step: per_task[name]

        def per_step(name, step):  # MAML++: (A*T, steps) -> this step's rate, broadcast over the weight
            rates = per_task[name]
            shape = self.params[name].shape[1:]
            return rates[:, min(step, rates.shape[1] - 1)].reshape(-1, *([1] * len(shape)))

        return per_step

    def _adapt(self, active, xs, ys, mask, steps, create_graph, trajectory=False):
        n_tasks = xs.shape[0] // len(active)
        return sgd_steps(self.model, self._per_task(active, n_tasks), xs, ys, steps, create_graph, self.adapt_names,
                         self._rate(active, n_tasks), self.config.inner_grad_clip, trajectory=trajectory,
                         support_mask=mask)

    def _member_means(self, per_task_loss, n_active):
        return per_task_loss.reshape(n_active, -1).mean(dim=1)

    def member_losses(self, active, batches, steps=None, create_graph=False):
        """Each active member's meta-loss on its batch (``batches[i]`` for ``active[i]``), shape ``(A,)``."""
        xs, ys, xq, yq, mask = pad_support(batches, self.dtype, self.device, self.learners[0]._check)
        steps = int(self.config.inner_steps if steps is None else steps)
        with torch.enable_grad():
            per_task = self._adapt(active, xs, ys, mask, steps, create_graph)
        return self._member_means(task_mse(batched_forward(self.model, per_task, xq), yq), len(active))

    def _training_losses(self, active, batches):
        """Differentiable per-member training losses and the last step's query losses (the reported ones)."""
        xs, ys, xq, yq, mask = pad_support(batches, self.dtype, self.device, self.learners[0]._check)
        steps = int(self.config.inner_steps)
        second_order = self.traits.second_order
        if not self.config.multi_step_iterations or steps <= 1:
            per_task = self._adapt(active, xs, ys, mask, steps, second_order)
            loss = self._member_means(task_mse(batched_forward(self.model, per_task, xq), yq), len(active))
            return loss, loss.detach()
        weights = multi_step_weights(steps, self.iteration, self.config.multi_step_iterations)
        path = self._adapt(active, xs, ys, mask, steps, second_order, trajectory=True)
        losses = [self._member_means(task_mse(batched_forward(self.model, p, xq), yq), len(active)) for p in path]
        return sum(float(w) * loss for w, loss in zip(weights, losses)), losses[-1].detach()

    def _gradients(self, active, batches):
        """Gradients of every stacked tensor (rows of inactive members are zero) and the reported losses."""
        trainable = self._trainable()
        if not self.traits.query_gradient:
            return self._reptile_gradients(active, batches)
        total, reported = self._training_losses(active, batches)
        grads = torch.autograd.grad(total.sum(), list(trainable.values()), allow_unused=True)
        return {key: torch.zeros_like(t) if g is None else g for (key, t), g in zip(trainable.items(), grads)}, reported

    def _reptile_gradients(self, active, batches):
        """Reptile: (theta - phi) / inner_lr averaged over each member's tasks, as MetaLearner does."""
        xs, ys, xq, yq, support_mask = pad_support(batches, self.dtype, self.device, self.learners[0]._check)
        x, y = torch.cat([xs, xq], dim=1), torch.cat([ys, yq], dim=1)
        mask = None
        if support_mask is not None:  # each task's padding sits between its support and its query points
            mask = torch.cat([support_mask, torch.ones(xq.shape[:2], dtype=self.dtype, device=self.device)], dim=1)
        n_tasks = x.shape[0] // len(active)
        with torch.enable_grad():
            per_task = {n: v.detach() for n, v in
                        self._adapt(active, x, y, mask, self.config.reptile_steps, create_graph=False).items()}
        grads = {key: torch.zeros_like(t) for key, t in self._trainable().items()}
        with torch.no_grad():
            reported = self._member_means(task_mse(batched_forward(self.model, per_task, x), y, mask), len(active))
            for n, t in self.params.items():
                moved = t.index_select(0, active) - per_task[n].reshape(len(active), n_tasks, *t.shape[1:]).mean(dim=1)
                grads[("param", n)][active] = moved / max(self.config.inner_lr, 1e-12)
        return grads, reported

    def _adam_step(self, grads, active):
        """torch.optim.Adam's update for the active members' rows; frozen members keep theirs."""
        self.adam_step += 1
        stacked_adam_step(self._trainable(), grads, self.exp_avg, self.exp_avg_sq, self.adam_step, self.config.meta_lr,
                          active)

    # -- members -------------------------------------------------------------------------------
    def _member_state(self, p):
        """Member ``p``'s parameters and rates, as MetaLearner._state() gives them (copies)."""
        learner = self.learners[p]
        model = {n: self.params[n][p].detach().clone() for n in self.params}
        state = copy.deepcopy(learner.model.state_dict())
        state.update(model)
        rates = {n: t[p].detach().clone() for n, t in self.rates.items()} if self.rates else None
        return {"model": state, "inner_lrs": rates}

    def _write_member(self, p, iteration):
        """Copy member ``p``'s current rows, its Adam moments and its iteration into its MetaLearner."""
        learner = self.learners[p]
        learner._load_state(self._member_state(p))
        fused = bool(learner.optimiser.defaults.get("fused"))
        for key, tensor in self._member_tensors(learner).items():
            learner.optimiser.state[tensor] = {  # where torch.optim.Adam keeps its step: the parameter's device if fused
                "step": torch.tensor(float(self.member_steps[p]), dtype=torch.float32,
                                     device=tensor.device if fused else "cpu"),
                "exp_avg": self.exp_avg[key][p].detach().clone(),
                "exp_avg_sq": self.exp_avg_sq[key][p].detach().clone(),
            }
        learner.iteration = iteration

    # -- training ----------------------------------------------------------------------------
    def fit(self, samplers, n_iterations, val_tasks=None, eval_every=100, patience=None, checkpoints=None,
            progress=None, rngs=None, on_divergence="raise"):
        """Meta-train every member for at most ``n_iterations`` meta-updates; returns the list of members.

        Parameters
        ----------
        samplers : list of callable
            ``samplers[p](rng, n_tasks) -> (xs, ys, xq, yq)``, member ``p``'s tasks.
        n_iterations, eval_every, patience, progress, on_divergence
            As in :func:`galmeta.training.meta_train`, applied to every member on its own.
        val_tasks : list, optional
            ``val_tasks[p]``: member ``p``'s fixed validation batch, or list of batches (their losses are
            averaged), as ``meta_train`` takes them.
        checkpoints : list of path, optional
            One checkpoint file per member (:meth:`MetaLearner.save`), written every ``eval_every``
            iterations while the member trains and at the end; a member's file resumes with its own
            ``fit`` exactly where population training left it.
        rngs : list of numpy.random.Generator, optional
            One stream per member (default: seeded from each member's ``config.seed``, as ``fit`` does).

        Raises
        ------
        FloatingPointError
            With ``on_divergence="raise"``, when a member's meta-loss stops being finite or grows a
            million-fold (the message names the member).
        """
        size = self.size
        for name, value in (("samplers", samplers), ("val_tasks", val_tasks), ("checkpoints", checkpoints),
                            ("rngs", rngs)):
            if value is not None and len(value) != size:
                raise ValueError(f"{name} must hold one entry per member ({size}), got {len(value)}")
        if isinstance(n_iterations, bool) or not isinstance(n_iterations, (int, np.integer)) or n_iterations < 0:
            raise ValueError(f"n_iterations must be an integer >= 0, got {n_iterations!r}")
        if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
            raise ValueError(f"eval_every must be an integer >= 1, got {eval_every!r}")
        if on_divergence not in ("raise", "stop"):
            raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}")
        with contextlib.ExitStack() as locks:
            for path in checkpoints or ():  # one training per checkpoint file, as meta_train
                locks.enter_context(exclusive_lock(Path(str(path) + ".lock"), f"the checkpoint {path}", timeout=0))
            _train(self, samplers, int(n_iterations), val_tasks, int(eval_every), patience, checkpoints, progress,
                   rngs, on_divergence)
        return self.learners

def fit_population(learners, samplers, n_iterations, **kwargs):
    """Train ``learners`` (MetaLearners of one configuration) as one population; returns them, trained.

    A shortcut for ``PopulationMetaLearner(learners).fit(samplers, n_iterations, **kwargs)``.
    """
    return PopulationMetaLearner(learners).fit(samplers, n_iterations, **kwargs)


def _train(population, samplers, n_iterations, val_tasks, eval_every, patience, checkpoints, progress, rngs, on_divergence):
    """The loop behind :meth:`PopulationMetaLearner.fit` (apart from the object, as :func:`galmeta.training.meta_train`)."""
    from galmeta.config import progress_bar

    size = population.size
    rngs = list(rngs) if rngs is not None else [np.random.default_rng(l.config.seed + l.iteration)
                                                 for l in population.learners]
    stoppers = [EarlyStopping(patience) for _ in range(size)]
    guards = [DivergenceGuard() for _ in range(size)]
    fallbacks = [population._member_state(p) if on_divergence == "stop" else None for p in range(size)]
    val_batches = [validation_batches(v) for v in val_tasks] if val_tasks is not None else None
    active = list(range(size))
    population.member_steps = [population.adam_step] * size
    member_iterations = [population.iteration] * size
    for learner in population.learners:
        learner.diverged_at = None
    start = time.perf_counter()
    bar = progress_bar(range(n_iterations), disable=None if progress is None else not progress,
                       desc=f"population ({population.config.algorithm}, {size} members)", mininterval=1.0)

    def freeze(p):
        active.remove(p)
        population._write_member(p, member_iterations[p])

    for _ in bar:
        if not active:
            break
        index = torch.tensor(active, device=population.device)
        batches = [samplers[p](rngs[p], population.config.meta_batch) for p in active]
        grads, losses = population._gradients(index, batches)
        losses = [float(v) for v in losses]
        for p, loss in zip(list(active), losses):
            if not math.isfinite(loss):  # as MetaLearner.step: no update from a non-finite loss
                _diverged(population, p, FloatingPointError(
                    f"meta-loss became {loss} at iteration {member_iterations[p]}; lower meta_lr or inner_lr, "
                    "or check the tasks for outliers"), member_iterations[p], on_divergence, stoppers, fallbacks)
                freeze(p)
        if not active:
            break
        stepped = [(p, loss) for p, loss in zip(index.tolist(), losses) if p in active]
        population._adam_step(grads, torch.tensor(active, device=population.device))
        population.iteration += 1
        for p, loss in stepped:
            member_iterations[p] += 1
            population.member_steps[p] += 1
            try:
                guards[p].check(loss, member_iterations[p])
            except FloatingPointError as exc:
                _diverged(population, p, exc, member_iterations[p], on_divergence, stoppers, fallbacks)
                freeze(p)
                continue
            history = population.learners[p].history
            history["iteration"].append(member_iterations[p])
            history["train_loss"].append(loss)
        if population.iteration % eval_every == 0:
            if val_batches is not None and active:
                _validate(population, active, val_batches, stoppers, member_iterations, freeze, bar)
            if checkpoints is not None:
                for p in list(active):
                    population._write_member(p, member_iterations[p])
                    population.learners[p].save(checkpoints[p])
    seconds = time.perf_counter() - start
    for p in list(active):
        population._write_member(p, member_iterations[p])
    for p, learner in enumerate(population.learners):
        learner.seconds = seconds
        if stoppers[p].best_state is not None:
            learner._load_state(stoppers[p].best_state)
        learner.is_fitted_ = True
        if checkpoints is not None:
            learner.save(checkpoints[p])
    population.active_ = list(active)
    return population.learners

def _validate(population, active, val_batches, stoppers, member_iterations, freeze, bar):
    """Every active member's validation loss; members whose patience ran out are frozen."""
    index = torch.tensor(active, device=population.device)
    n_batches = {len(val_batches[p]) for p in active}
    if len(n_batches) != 1:
        raise ValueError("every member needs the same number of validation batches")
    steps = population.config.eval_inner_steps if population.config.eval_inner_steps is not None else population.config.inner_steps
    per_batch = [population.member_losses(index, [val_batches[p][b] for p in active], steps=steps).detach()
                 for b in range(n_batches.pop())]
    values = torch.stack(per_batch).cpu().numpy()
    for i, p in enumerate(list(active)):
        val = float(np.mean([float(v) for v in values[:, i]]))
        history = population.learners[p].history
        history["val_iteration"].append(member_iterations[p])
        history["val_loss"].append(val)
        if stoppers[p].update(val, lambda p=p: population._member_state(p)):
            freeze(p)
    bar.set_postfix(active=len(active))

def _diverged(population, p, exc, iteration, on_divergence, stoppers, fallbacks):
    """Raise, or stop member ``p`` keeping its best state, as ``meta_train(on_divergence=...)`` does."""
    if on_divergence == "raise":
        raise FloatingPointError(f"population member {p}: {exc}") from exc
    population.learners[p].diverged_at = iteration
    kept = "the best validation state" if stoppers[p].best_state is not None else "the parameters it started from"
    warnings.warn(f"population member {p}: {exc}; its training stopped, keeping {kept}", RuntimeWarning,
                  stacklevel=4)
    stoppers[p].best_state = stoppers[p].best_state or fallbacks[p]
