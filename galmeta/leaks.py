"""Leaks refused by construction and measured: can the inputs predict the target better than its own errors allow?

Introduced in ``notebooks/02_clean_and_tasks.py``. Two checks, because either alone can be fooled:

* **By construction** (:func:`refuse_target_sources`): every feature declares the table columns it is
  computed from, and one built from a target column (``dered_u``, ``err_u``) or a spectroscopic one is
  refused before anything is fitted.
* **By measurement** (:func:`measure_leaks`, run on meta-train by :meth:`galmeta.tasks.GalaxyCatalogue.fold`
  every time): each feature alone against the label's ceiling (the target re-measured with its own errors),
  and *all features together* in cross-validated linear and gradient-boosting fits of the target. No honest
  model predicts a measured target better than that target's own measurement error, so a fit that does
  (``u - g`` beside ``g - r`` recovers ``u - r`` exactly) has found the target inside the inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TargetLeakError", "best_threshold_accuracy", "LeakReport", "measure_leaks", "refuse_target_sources",
           "LEAK_MODELS"]


class TargetLeakError(ValueError):
    """Inputs that carry the target: built from its columns, or predicting it better than its errors allow."""


def refuse_target_sources(sources: dict, forbidden: dict):
    """Refuse, by construction, any feature computed from a forbidden column.

    Parameters
    ----------
    sources : dict
        Feature name -> the table columns it is computed from.
    forbidden : dict
        Column -> why it may not enter (e.g. ``{"dered_u": "the target's band"}``).

    Raises
    ------
    TargetLeakError
        Naming the feature, the column and why.

    Examples
    --------
    >>> refuse_target_sources({"g_minus_r": ("dered_g", "dered_r")}, {"dered_u": "the target's band"})
    >>> refuse_target_sources({"u_minus_g": ("dered_u", "dered_g")}, {"dered_u": "the target's band"})
    Traceback (most recent call last):
    ...
    galmeta.leaks.TargetLeakError: feature 'u_minus_g' is computed from 'dered_u' (the target's band): ...
    """
    for feature, columns in sources.items():
        for column in columns:
            if column in forbidden:
                raise TargetLeakError(
                    f"feature {feature!r} is computed from {column!r} ({forbidden[column]}): the target would be "
                    "among the inputs. Build features from the other columns only."
                )


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


#: The joint fits of the measured check: a linear model and gradient boosting, both cross-validated.
LEAK_MODELS = ("linear", "gradient boosting")


@dataclass
class LeakReport:
    """What :func:`measure_leaks` found.

    Attributes
    ----------
    feature_scores : dict
        Each feature's best one-threshold balanced accuracy on the label.
    ceiling : float
        The label's ceiling: thresholding the target re-measured with its own errors.
    model_rmse : dict
        Cross-validated RMSE of the target from all features, per model of :data:`LEAK_MODELS`.
    model_scores : dict
        Balanced accuracy on the label of the best threshold of those predictions.
    noise_floor : float
        Root mean square of the target's measurement errors: no honest fit is better.
    """

    feature_scores: dict
    ceiling: float
    noiseless_ceiling: float = 1.0
    model_rmse: dict = field(default_factory=dict)
    model_scores: dict = field(default_factory=dict)
    noise_floor: float = 0.0

    @property
    def worst(self):
        name = max(self.feature_scores, key=self.feature_scores.get)
        return name, self.feature_scores[name]

    @property
    def leaking(self) -> list:
        single = [n for n, v in self.feature_scores.items() if v >= self.ceiling]
        joint = [f"{model} fit of all features" for model, rmse in self.model_rmse.items()
                 if rmse < self.noise_floor or self.model_scores.get(model, 0.0) >= self.ceiling]
        return single + joint

    def as_text(self) -> str:
        lines = [f"{'feature':<14s} balanced accuracy of its best threshold"]
        for name, value in sorted(self.feature_scores.items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:<14s} {value:.3f}" + ("   <- LEAK" if value >= self.ceiling else ""))
        lines.append(f"{'ceiling':<14s} {self.ceiling:.3f}  (thresholding the target re-measured with its own errors)")
        for model, rmse in self.model_rmse.items():
            leak = rmse < self.noise_floor or self.model_scores.get(model, 0.0) >= self.ceiling
            lines.append(f"all features, {model} (cross-validated): RMSE of the target {rmse:.4f}, balanced "
                         f"accuracy {self.model_scores.get(model, float('nan')):.3f}" + ("   <- LEAK" if leak else ""))
        if self.model_rmse:
            lines.append(f"measurement floor: RMS of the target's own errors {self.noise_floor:.4f} (no honest fit "
                         "of the measured target is better)")
        return "\n".join(lines)

    def check(self):
        """Raise :class:`TargetLeakError` if a feature reaches the ceiling or a joint fit beats the floor."""
        single = [n for n, v in self.feature_scores.items() if v >= self.ceiling]
        if single:
            name, value = self.worst
            raise TargetLeakError(
                f"feature {name!r} alone predicts the red/blue label with balanced accuracy {value:.3f}, at least "
                f"as well as the measured target does ({self.ceiling:.3f}): it carries the label's information "
                f"(leaking: {self.leaking}). Drop it from the features."
            )
        if self.leaking:
            model = self.leaking[0].split(" fit")[0]
            raise TargetLeakError(
                f"together, the features predict the target better than its own measurement errors allow: a "
                f"cross-validated {model} fit reaches RMSE {self.model_rmse[model]:.4f} against a floor of "
                f"{self.noise_floor:.4f} (balanced accuracy {self.model_scores[model]:.3f}, ceiling "
                f"{self.ceiling:.3f}). Some combination of features contains the target (as u - g beside g - r "
                "contains u - r): find it with the single-feature scores and the features' source columns."
            )
        return self


def _joint_fits(X, target, labels, seed, max_rows, n_splits=3):
    """Cross-validated predictions of the target from all features, per model of :data:`LEAK_MODELS`."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(target), size=min(max_rows, len(target)), replace=False))
    X, target, labels = X[rows], target[rows], labels[rows]
    models = {
        "linear": make_pipeline(SimpleImputer(), StandardScaler(), Ridge(alpha=1e-6)),
        "gradient boosting": HistGradientBoostingRegressor(max_iter=100, random_state=seed),
    }
    rmse, scores = {}, {}
    folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for name, model in models.items():
        predicted = cross_val_predict(model, X, target, cv=folds)
        rmse[name] = float(np.sqrt(np.mean((predicted - target) ** 2)))
        scores[name] = best_threshold_accuracy(predicted, labels)[0]
    return rmse, scores


def measure_leaks(X, names, target, target_err, labels, seed=0, joint=True, max_rows=5000):
    """Measure how well the inputs predict the label and the target, one by one and all together.

    The ceiling is what a perfect estimate of the true target reaches on the
    label as measured: the target re-drawn with its own measurement errors,
    thresholded at the best cut. An input that separates the label as well as
    that ceiling carries the label's own information (as ``u - i`` would for a
    ``u - r`` label): that is a leak, whatever its name. All inputs together are
    fitted to the target (cross-validated linear and gradient-boosting models on
    at most ``max_rows`` galaxies): a fit better than the target's own
    measurement errors, or one that separates the label as well as the ceiling,
    has found the target inside the inputs.

    Parameters
    ----------
    X : ndarray, shape (n, d)
        Raw (unscaled) features; measure them on meta-train galaxies.
    names : list of str
    target, target_err : ndarray, shape (n,)
    labels : ndarray of bool, shape (n,)
    seed : int
        Seed of the re-measurement and of the joint fits.
    joint : bool, default True
        Also fit all features together.

    Returns
    -------
    LeakReport
        Call ``.check()`` to raise on a leak.
    """
    X = np.asarray(X, float)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"X must be (n, len(names)); got {X.shape} and {len(names)} names")
    target, target_err, labels = np.asarray(target, float), np.asarray(target_err, float), np.asarray(labels, bool)
    scores = {name: best_threshold_accuracy(X[:, j], labels)[0] for j, name in enumerate(names)}
    rng = np.random.default_rng(seed)
    remeasured = target + rng.normal(size=len(target)) * target_err
    ceiling = best_threshold_accuracy(remeasured, labels)[0]
    report = LeakReport(scores, ceiling, noise_floor=float(np.sqrt(np.nanmean(target_err ** 2))))
    if joint:
        report.model_rmse, report.model_scores = _joint_fits(X, target, labels, seed, max_rows)
    return report
