"""Leaks measured, not named: does any input feature predict the label as well as the target itself?

Introduced in ``notebooks/02_clean_and_tasks.py``; :meth:`galmeta.tasks.GalaxyCatalogue.fold` runs
:func:`measure_leaks` on meta-train every time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TargetLeakError", "best_threshold_accuracy", "LeakReport", "measure_leaks"]


class TargetLeakError(ValueError):
    """A single input feature predicts the label at least as well as the measured target does."""


def best_threshold_accuracy(values, labels):
    """Best balanced accuracy of a one-feature threshold rule (either direction), and its threshold.

    Missing values (NaN) are ignored.

    Returns
    -------
    balanced_accuracy : float
    threshold : float
    direction : int
        +1: ``values >= threshold`` predicts the positive class; -1: ``values < threshold`` does.

    Examples
    --------
    >>> best_threshold_accuracy([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
    (1.0, 0.5, 1)
    """
    values, labels = np.asarray(values, float), np.asarray(labels, bool)
    keep = np.isfinite(values)
    values, labels = values[keep], labels[keep]
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("labels must contain both classes to measure a threshold rule")
    order = np.argsort(values, kind="stable")
    sorted_values, sorted_labels = values[order], labels[order]
    # cut k: the k smallest values are predicted negative; only cuts between distinct values count
    below_pos = np.concatenate([[0], np.cumsum(sorted_labels)])
    below_neg = np.concatenate([[0], np.cumsum(~sorted_labels)])
    upward = 0.5 * ((n_pos - below_pos) / n_pos + below_neg / n_neg)
    valid = np.ones(values.size + 1, bool)
    valid[1:-1] = sorted_values[1:] > sorted_values[:-1]
    scores = np.where(valid, np.maximum(upward, 1.0 - upward), -np.inf)
    k = int(np.argmax(scores))
    edges = np.concatenate([[-np.inf], sorted_values])
    threshold = float(sorted_values[k] if k < values.size else np.inf)
    if 0 < k < values.size:
        threshold = 0.5 * (edges[k] + sorted_values[k])
    return float(scores[k]), float(threshold), (1 if upward[k] >= 0.5 else -1)


@dataclass
class LeakReport:
    """What :func:`measure_leaks` found: each feature's balanced accuracy against the label's ceiling."""

    feature_scores: dict
    ceiling: float
    noiseless_ceiling: float = 1.0

    @property
    def worst(self):
        name = max(self.feature_scores, key=self.feature_scores.get)
        return name, self.feature_scores[name]

    @property
    def leaking(self) -> list:
        return [n for n, v in self.feature_scores.items() if v >= self.ceiling]

    def as_text(self) -> str:
        lines = [f"{'feature':<14s} balanced accuracy of its best threshold"]
        for name, value in sorted(self.feature_scores.items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:<14s} {value:.3f}" + ("   <- LEAK" if value >= self.ceiling else ""))
        lines.append(f"{'ceiling':<14s} {self.ceiling:.3f}  (thresholding the target re-measured with its own errors)")
        return "\n".join(lines)

    def check(self):
        """Raise :class:`TargetLeakError` if any feature reaches the ceiling."""
        if self.leaking:
            name, value = self.worst
            raise TargetLeakError(
                f"feature {name!r} alone predicts the red/blue label with balanced accuracy {value:.3f}, at least "
                f"as well as the measured target does ({self.ceiling:.3f}): it carries the label's information "
                f"(leaking: {self.leaking}). Drop it from the features."
            )
        return self


def measure_leaks(X, names, target, target_err, labels, seed=0):
    """Measure, feature by feature, how well one input alone predicts the label.

    The ceiling is what a perfect estimate of the true target reaches on the
    label as measured: the target re-drawn with its own measurement errors,
    thresholded at the best cut. An input that separates the label as well as
    that ceiling carries the label's own information (as ``u - i`` would for a
    ``u - r`` label): that is a leak, whatever its name.

    Parameters
    ----------
    X : ndarray, shape (n, d)
        Raw (unscaled) features; measure them on meta-train galaxies.
    names : list of str
    target, target_err : ndarray, shape (n,)
    labels : ndarray of bool, shape (n,)
    seed : int
        Seed of the re-measurement.

    Returns
    -------
    LeakReport
        Call ``.check()`` to raise on a leak.
    """
    X = np.asarray(X, float)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"X must be (n, len(names)); got {X.shape} and {len(names)} names")
    scores = {name: best_threshold_accuracy(X[:, j], labels)[0] for j, name in enumerate(names)}
    rng = np.random.default_rng(seed)
    remeasured = np.asarray(target, float) + rng.normal(size=len(target)) * np.asarray(target_err, float)
    ceiling = best_threshold_accuracy(remeasured, labels)[0]
    return LeakReport(scores, ceiling)
