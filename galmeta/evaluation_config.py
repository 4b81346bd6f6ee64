"""The sizes of one evaluation run, checked where they are given (CI mode and the full benchmark differ only here)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TAIL_RMSE", "EvaluationConfig"]

#: A draw whose RMSE of u - r exceeds this (mag) counts in the tail fraction: about twice the typical RMSE
#: of the pooled network (0.16). A few draws of every learner, the oracle's included, pass it (query sets
#: with unusual galaxies); many more mean adaptation that goes wrong.
TAIL_RMSE = 0.3


@dataclass
class EvaluationConfig:
    """Sizes of one evaluation run (the notebook's CI mode and the full benchmark differ only here)."""

    ks: tuple = (1, 5, 10, 20)
    folds: tuple = (0, 1, 2, 3, 4)
    n_folds: int = 5
    seeds: tuple = (0, 1, 2)
    n_draws: int = 10
    n_val_draws: int = 5
    n_query: int = 20
    meta_iterations: int = 3000
    pooled_epochs: int = 100
    include_numpy_check: bool = True
    algorithms: tuple = (("MAML", "maml"), ("FOMAML", "fomaml"), ("Meta-SGD", "metasgd"), ("ANIL", "anil"),
                         ("MAML++", "maml++"))
    #: K of the PyTorch meta-learners' training tasks: drawn per meta-batch from 1..max(ks) (None), or one K.
    meta_train_k: int | None = None
    draw_seed: int = 0
    tail_rmse: float = TAIL_RMSE

    def __post_init__(self):
        self.ks = _whole_numbers("ks", self.ks, minimum=1, what="support sizes")
        self.seeds = _whole_numbers("seeds", self.seeds, minimum=0, what="training seeds")
        self.folds = _whole_numbers("folds", self.folds, minimum=0, what="folds")
        if max(self.folds) >= _whole_number("n_folds", self.n_folds, 1):
            raise ValueError(f"folds must lie in 0..n_folds-1 = 0..{self.n_folds - 1}, got {self.folds!r}")
        for name in ("n_draws", "n_val_draws", "n_query", "meta_iterations", "pooled_epochs"):
            _whole_number(name, getattr(self, name), 1)
        if self.meta_train_k is not None:
            _whole_number("meta_train_k", self.meta_train_k, 1)
        if isinstance(self.tail_rmse, bool) or not isinstance(self.tail_rmse, (int, float)) or not self.tail_rmse > 0:
            raise ValueError(f"tail_rmse must be a number of magnitudes > 0, got {self.tail_rmse!r}")


def _whole_number(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _whole_numbers(name, values, minimum, what):
    """A non-empty tuple of distinct whole numbers >= minimum, or ValueError naming the setting."""
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(f"{name} must list {what} (e.g. {name}=(0, 1)), got {values!r}") from None
    if not values:
        raise ValueError(f"{name} must list at least one of the {what}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must list whole numbers >= {minimum} ({what}), but it holds {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} lists a value twice ({values!r}); each of the {what} may appear once")
    return tuple(int(v) for v in values)
