"""Hyperparameters of a meta-learner: :class:`MetaConfig`, MAML++'s settings and its multi-step loss weights."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from galmeta.algorithms import traits_of
from galmeta.config import DEFAULT_SEED
from galmeta.validation import check_inner, check_steps

__all__ = ["MetaConfig", "mamlpp_config", "multi_step_weights"]


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
            check_steps(self.eval_inner_steps, "eval_inner_steps")
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
