"""The inner loop of the MAML family: SGD steps on every task's support set at once, as one small object.

It holds what adaptation needs and nothing else (learn2learn's ``MAML`` wrapper is the model): which
parameters adapt (all, or ANIL's head), the step sizes (one number, Meta-SGD's per-weight rates, or
MAML++'s per-layer, per-step rates) and MAML++'s inner-gradient clipping. Meta-training lives in
:class:`galmeta.maml_torch.MetaLearner` and :mod:`galmeta.training`.
"""
from __future__ import annotations

import torch

from galmeta.maml_functional import batched_forward, task_mse

__all__ = ["InnerLoop", "sgd_steps", "clip_per_task"]


class InnerLoop:
    """Adapt per-task copies of a model's parameters.

    Parameters
    ----------
    model : torch.nn.Module
    config : galmeta.meta_config.MetaConfig
    traits : galmeta.algorithms.AlgorithmTraits
    names : list of str
        The model's parameter names.
    device, dtype
        Of the learned rates.

    Attributes
    ----------
    adapt_names : tuple of str
        The parameters the inner loop changes.
    rates : dict or None
        Learned inner rates by parameter name (Meta-SGD: one per weight; MAML++: one per inner step), or
        None when the step size is ``config.inner_lr``.
    """

    def __init__(self, model, config, traits, names, device, dtype):
        self.model, self.config = model, config
        self.adapt_names = tuple(config.head_names) if traits.adapts == "head" else tuple(names)
        self.rates = None
        if traits.learns_rates == "per-parameter":
            self.rates = {n: torch.full_like(p, config.inner_lr, requires_grad=True) for n, p in model.named_parameters()}
        elif config.step_lrs:  # MAML++: one rate per parameter tensor and inner step
            steps = max(int(config.inner_steps), 1)
            self.rates = {n: torch.full((steps,), float(config.inner_lr), dtype=dtype, device=device,
                                        requires_grad=True) for n in self.adapt_names}

    def rate(self, name, step, inner_lr=None):
        """The inner step size of parameter ``name`` at inner step ``step`` (0-based)."""
        if inner_lr is not None:
            return inner_lr
        if self.rates is None:
            return self.config.inner_lr
        rates = self.rates[name]
        if self.config.step_lrs:  # beyond the trained steps, keep the last step's rate
            return rates[min(step, rates.shape[0] - 1)]
        return rates

    def clipped(self, grads):
        """Each task's inner gradient rescaled to a norm of at most ``inner_grad_clip`` (differentiable)."""
        return clip_per_task(grads, self.config.inner_grad_clip)

    def adapt(self, xs, ys, steps, create_graph, start=None, first_step=0, inner_lr=None, trajectory=False):
        """Per-task parameters after ``steps`` inner SGD steps (a dict name -> (T, ...)).

        ``start`` continues from earlier per-task parameters instead of the shared ones, at inner step
        ``first_step`` (which picks MAML++'s per-step rates); ``inner_lr`` overrides every step size;
        ``trajectory=True`` returns the list of per-task parameters after each step instead.
        """
        n_tasks = xs.shape[0]
        if start is None:
            per_task = {n: p.expand(n_tasks, *p.shape) for n, p in self.model.named_parameters()}
        else:
            per_task = {n: v.detach().requires_grad_(n in self.adapt_names) for n, v in start.items()}
        return sgd_steps(self.model, per_task, xs, ys, steps, create_graph, self.adapt_names,
                         lambda name, step: self.rate(name, step, inner_lr), self.config.inner_grad_clip,
                         first_step=first_step, trajectory=trajectory)


def clip_per_task(grads, clip):
    """Each task's gradient (leading axis) rescaled to a norm of at most ``clip`` over all tensors; None: as is."""
    if clip is None:
        return grads
    squared = sum(g.pow(2).reshape(g.shape[0], -1).sum(dim=1) for g in grads)
    # clamp_min before sqrt: at a zero gradient, sqrt's derivative is infinite and the second-order
    # meta-gradient becomes 0 * inf = NaN (without it, 3 of 25 MAML++ galaxy trainings went NaN). 1e-12:
    # norms below 1e-6 are never clipped, and clip / norm**2 stays finite in float32.
    norm = squared.clamp_min(1e-12).sqrt()
    scale = torch.clamp(clip / norm, max=1.0)
    return [g * scale.reshape(-1, *([1] * (g.dim() - 1))) for g in grads]


def sgd_steps(model, per_task, xs, ys, steps, create_graph, adapt_names, rate, clip, first_step=0, trajectory=False,
              support_mask=None):
    """The inner loop itself: ``steps`` SGD steps of every task's parameters on its support loss.

    Parameters
    ----------
    per_task : dict
        Parameters with a leading task axis (views of shared tensors, or already adapted copies).
    adapt_names : tuple of str
        The parameters that move.
    rate : callable
        ``rate(name, step)``: the step size, a number or a tensor broadcastable to ``per_task[name]``.
    clip : float or None
        Each task's gradient norm bound (:func:`clip_per_task`).
    support_mask : tensor (T, K), optional
        1 for real support points, 0 for padding (tasks of one batch with different K, as in
        :mod:`galmeta.population`): a task's loss is the mean over its real points only.
    """
    per_task = dict(per_task)
    path = []
    for step in range(first_step, first_step + int(steps)):
        loss = task_mse(batched_forward(model, per_task, xs), ys, support_mask).sum()
        grads = torch.autograd.grad(loss, [per_task[n] for n in adapt_names], create_graph=create_graph)
        for n, g in zip(adapt_names, clip_per_task(list(grads), clip)):
            step_size = rate(n, step)
            # one fused operation for a plain number (the per-task tensors are the largest in the graph)
            per_task[n] = (torch.add(per_task[n], g, alpha=-step_size) if isinstance(step_size, (int, float))
                           else torch.addcmul(per_task[n], step_size, g, value=-1))
        if trajectory:
            path.append(dict(per_task))
    return path if trajectory else per_task
