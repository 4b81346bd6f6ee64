"""Metrics and uncertainty for few-shot evaluation: robust scatter, ROC AUC, the slice bootstrap, paired differences.

Introduced in ``notebooks/06_redness_evaluation.py``.

Evaluation results are arrays with the axes ``(seed, slice, draw, query)``:
every training seed of a learner predicts the same support/query draws of the
same meta-test slices. Galaxies of one draw share a slice and a support set, and
draws of one slice share the slice, so the independent units are the **slices**
(and, for what training does, the **seeds**). Intervals therefore come from a
hierarchical bootstrap: resample slices with replacement, then draws within each
chosen slice (Davison & Hinkley 1997, sec. 3.8); never draws alone. Learners are
compared **paired**: the same resamples for both, the difference of the metric
computed on each (Dietterich 1998; Demšar 2006).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "sigma_nmad",
    "roc_auc",
    "balanced_accuracy",
    "METRICS",
    "metric",
    "hierarchical_resamples",
    "Interval",
    "bootstrap",
    "paired_difference",
    "block_jackknife",
    "intraclass_correlation",
    "per_slice",
    "COVERAGE_HALF_WIDTHS",
]


def sigma_nmad(residuals, axis=-1):
    """1.4826 x the median absolute deviation from the median (a robust scatter; equals sigma for a Gaussian).

    Examples
    --------
    >>> float(sigma_nmad([0.0, 0.1, -0.1, 0.2, 5.0]))  # the 5.0 outlier barely matters
    0.14826
    """
    residuals = np.moveaxis(np.asarray(residuals, float), axis, -1)
    median = _median(residuals)
    return 1.4826 * _median(np.abs(residuals - median[..., None]))


def _median(values):
    """``np.median`` over the last axis, by sorting: NumPy's vectorised sort is several times faster than the
    partition ``np.median`` uses on the bootstrap's (resamples x galaxies) arrays; NaN where a row has one."""
    ordered = np.sort(values, axis=-1)
    n = ordered.shape[-1]
    middle = ordered[..., n // 2] if n % 2 else 0.5 * (ordered[..., n // 2 - 1] + ordered[..., n // 2])
    return np.where(np.isnan(ordered[..., -1]), np.nan, middle)  # sorting puts NaN last


def roc_auc(labels, scores, axis=-1):
    """Area under the ROC curve by the Mann-Whitney statistic (ties get average ranks); NaN without both classes."""
    from scipy.stats import rankdata

    labels, scores = np.broadcast_arrays(np.asarray(labels, bool), np.asarray(scores, float))
    ranks = rankdata(scores, axis=axis)
    n_pos = labels.sum(axis=axis)
    n_neg = labels.shape[axis] - n_pos
    rank_sum = np.where(labels, ranks, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def balanced_accuracy(labels, predicted, axis=-1):
    """Mean of the recall of each class (NaN where a class is absent)."""
    labels, predicted = np.broadcast_arrays(np.asarray(labels, bool), np.asarray(predicted, bool))
    correct = labels == predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_pos = np.where(labels, correct, False).sum(axis=axis) / labels.sum(axis=axis)
        recall_neg = np.where(~labels, correct, False).sum(axis=axis) / (~labels).sum(axis=axis)
    return 0.5 * (recall_pos + recall_neg)


def _pooled(values, n_axes):
    """Merge the last ``n_axes`` axes into one."""
    return values.reshape(*values.shape[: values.ndim - n_axes], -1)


#: Metric name -> function of (residuals, labels, scores, threshold) over the last three axes (slice, draw, query).
METRICS = {
    "rmse": lambda r, l, s, t: np.sqrt(np.mean(_pooled(r, 3) ** 2, axis=-1)),
    "bias": lambda r, l, s, t: np.mean(_pooled(r, 3), axis=-1),
    # the mean of any per-galaxy score passed in place of the residuals (negative log-likelihood, coverage)
    "mean": lambda r, l, s, t: np.mean(_pooled(r, 3), axis=-1),
    "sigma_nmad": lambda r, l, s, t: sigma_nmad(_pooled(r, 3)),
    "worst_draw_rmse": lambda r, l, s, t: np.sqrt(np.mean(r ** 2, axis=-1)).reshape(*r.shape[:-3], -1).max(axis=-1),
    "balanced_accuracy": lambda r, l, s, t: balanced_accuracy(_pooled(l, 3), _pooled(s, 3) >= t),
    "roc_auc": lambda r, l, s, t: roc_auc(_pooled(l, 3), _pooled(s, 3)),
}


#: Half-widths, in standard deviations, of the central 68.27% and 95% intervals of a Gaussian: the predictive
#: interval a galaxy's truth must fall in to count towards ``coverage_68`` / ``coverage_95``.
COVERAGE_HALF_WIDTHS = {"coverage_68": 1.0, "coverage_95": 1.959963984540054}


def metric(name, residuals, labels=None, scores=None, threshold=None, tail=None):
    """One metric over the last three axes ``(slice, draw, query)`` of its inputs.

    Parameters
    ----------
    name : str
        A key of :data:`METRICS`, or ``"tail_fraction"`` (fraction of draws whose RMSE exceeds ``tail``).
    residuals : ndarray, shape (..., S, D, Q)
        Predicted minus true target.
    labels, scores, threshold
        True labels, classification scores and the score threshold (for the label metrics).
    """
    residuals = np.asarray(residuals, float)
    if name == "tail_fraction":
        draw_rmse = np.sqrt(np.mean(residuals ** 2, axis=-1))
        return np.mean(_pooled(draw_rmse, 2) > tail, axis=-1)
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {sorted(METRICS) + ['tail_fraction']}")
    return METRICS[name](residuals, labels, scores, threshold)


def hierarchical_resamples(rng, n_slices, n_draws, n_resamples):
    """Indices of a two-level bootstrap: slices with replacement, then draws within each chosen slice.

    Returns
    -------
    slices : ndarray, shape (n_resamples, n_slices)
    draws : ndarray, shape (n_resamples, n_slices, n_draws)
    """
    return (rng.integers(n_slices, size=(n_resamples, n_slices)),
            rng.integers(n_draws, size=(n_resamples, n_slices, n_draws)))


def _gather(values, slices, draws, flat_draws=None):
    """values (..., S, D, Q) -> (B, ..., S, D, Q) for the given resample indices."""
    values = np.moveaxis(values, (-3, -2), (0, 1))  # (S, D, ..., Q)
    slices = slices if slices.ndim == draws.ndim else np.broadcast_to(slices[..., None], draws.shape)
    picked = values[slices, draws]  # (B, S, D, ..., Q)
    return np.moveaxis(picked, (1, 2), (-3, -2))


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval (and the spread over training seeds)."""

    estimate: float
    lo: float
    hi: float
    seed_sd: float = float("nan")

    @property
    def seed_sd_text(self) -> str:
        """The spread over training seeds, or a dash when there was one seed."""
        return "—" if not np.isfinite(self.seed_sd) else f"{self.seed_sd:.3f}"

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def __format__(self, spec):
        spec = spec or ".3f"
        return f"{self.estimate:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"


#: Metrics that combine per-draw summaries (every draw has the same number of query galaxies): the bootstrap
#: resamples those ``(S, D)`` summaries instead of every galaxy, Q times less data for the same numbers.
_PER_DRAW = ("rmse", "bias", "mean", "worst_draw_rmse", "tail_fraction", "balanced_accuracy")


def _draw_summaries(name, residuals, labels, scores, threshold):
    """Per-draw summaries ``(..., S, D, n)`` from which :func:`_from_draw_summaries` gives the metric."""
    if name == "rmse":
        return np.mean(residuals ** 2, axis=-1)[..., None]
    if name in ("bias", "mean"):
        return np.mean(residuals, axis=-1)[..., None]
    if name in ("worst_draw_rmse", "tail_fraction"):
        return np.sqrt(np.mean(residuals ** 2, axis=-1))[..., None]
    labels, predicted = np.broadcast_arrays(np.asarray(labels, bool), np.asarray(scores, float) >= threshold)
    correct = labels == predicted
    return np.stack([np.where(labels, correct, False).sum(-1), labels.sum(-1),
                     np.where(~labels, correct, False).sum(-1), (~labels).sum(-1)], axis=-1).astype(float)


def _from_draw_summaries(name, summaries, tail):
    """The metric over the last three axes ``(slice, draw, summary)`` of resampled draw summaries."""
    pooled = summaries.reshape(*summaries.shape[:-3], -1, summaries.shape[-1])  # (..., S*D, n)
    if name == "rmse":
        return np.sqrt(np.mean(pooled[..., 0], axis=-1))
    if name in ("bias", "mean"):
        return np.mean(pooled[..., 0], axis=-1)
    if name == "worst_draw_rmse":
        return pooled[..., 0].max(axis=-1)
    if name == "tail_fraction":
        return np.mean(pooled[..., 0] > tail, axis=-1)
    totals = pooled.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 0.5 * (totals[..., 0] / totals[..., 1] + totals[..., 2] / totals[..., 3])


def _resampled_metric(name, arrays, slices, draws, kwargs, chunk):
    residuals, labels, scores = arrays
    out = []
    if name in _PER_DRAW:
        summaries = _draw_summaries(name, np.asarray(residuals, float), labels, scores, kwargs.get("threshold"))
        for start in range(0, slices.shape[0], chunk):
            out.append(_from_draw_summaries(name, _gather(summaries, slices[start:start + chunk],
                                                          draws[start:start + chunk]), kwargs.get("tail")))
        return np.concatenate(out, axis=0)
    for start in range(0, slices.shape[0], chunk):
        s, d = slices[start:start + chunk], draws[start:start + chunk]
        r = _gather(residuals, s, d)
        l = None if labels is None else _gather(labels, s, d)
        sc = None if scores is None else _gather(scores, s, d)
        out.append(metric(name, r, l, sc, **kwargs))
    return np.concatenate(out, axis=0)


def bootstrap(name, residuals, labels=None, scores=None, threshold=None, tail=None, n_resamples=1000, seed=0,
              level="slices", confidence=0.95, chunk=100):
    """A metric's estimate (mean over training seeds) with a bootstrap interval.

    Parameters
    ----------
    name : str
        Metric (see :func:`metric`).
    residuals : ndarray, shape (n_seeds, S, D, Q) or (S, D, Q)
    labels : ndarray, shape (S, D, Q), optional
    scores : ndarray, shape like ``residuals``, optional
    level : {"slices", "draws"}
        ``"slices"``: hierarchical (slices, then draws within them), the honest one;
        ``"draws"``: every draw treated as independent (for comparison only).

    Returns
    -------
    Interval
    """
    residuals, scores = _with_seed_axis(residuals), None if scores is None else _with_seed_axis(scores)
    labels = None if labels is None else np.asarray(labels, bool)[None]
    kwargs = _metric_kwargs(name, threshold, tail)
    per_seed = metric(name, residuals, labels, scores, **kwargs)
    slices, draws = _resample_indices(residuals.shape[1], residuals.shape[2], n_resamples, seed, level)
    values = _resampled_metric(name, (residuals, labels, scores), slices, draws, kwargs, chunk).mean(axis=1)
    lo, hi = _quantile_interval(values, confidence)
    with np.errstate(invalid="ignore"):  # an infinite seed makes the spread NaN: unknown, not an error
        sd = float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else float("nan")
    return Interval(float(np.mean(per_seed)), float(lo), float(hi), sd)


def _quantile_interval(values, confidence):
    """Percentile interval of bootstrap values; where it meets an infinite value (a learner whose predictions
    overflowed), the bound is that infinity rather than the NaN that interpolating towards it gives."""
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanquantile(values, q)
        if np.isnan(lo):
            lo = np.nanquantile(values, q[0], method="lower")
        if np.isnan(hi):
            hi = np.nanquantile(values, q[1], method="higher")
    return lo, hi


def paired_difference(name, residuals_a, residuals_b, labels=None, scores_a=None, scores_b=None, threshold=None,
                      tail=None, n_resamples=1000, seed=0, confidence=0.95, chunk=100):
    """Metric of learner A minus metric of learner B on the same draws, with a paired slice bootstrap.

    Both learners' metrics are computed on the *same* resampled slices and draws, so what the two share
    (which slices are hard) cancels. ``seed_sd`` is the standard deviation of the difference over training
    seeds (A's and B's seed ``i`` paired; a learner with one seed is repeated).

    Returns
    -------
    Interval
    """
    a, b = _with_seed_axis(residuals_a), _with_seed_axis(residuals_b)
    sa = None if scores_a is None else _with_seed_axis(scores_a)
    sb = None if scores_b is None else _with_seed_axis(scores_b)
    labels = None if labels is None else np.asarray(labels, bool)[None]
    kwargs = _metric_kwargs(name, threshold, tail)
    per_seed_a = metric(name, a, labels, sa, **kwargs)
    per_seed_b = metric(name, b, labels, sb, **kwargs)
    n = max(per_seed_a.size, per_seed_b.size)
    diffs = np.resize(per_seed_a, n) - np.resize(per_seed_b, n)
    slices, draws = _resample_indices(a.shape[1], a.shape[2], n_resamples, seed, "slices")
    values = (_resampled_metric(name, (a, labels, sa), slices, draws, kwargs, chunk).mean(axis=1)
              - _resampled_metric(name, (b, labels, sb), slices, draws, kwargs, chunk).mean(axis=1))
    lo, hi = _quantile_interval(values, confidence)
    with np.errstate(invalid="ignore"):
        sd = float(np.std(diffs, ddof=1)) if n > 1 else float("nan")
    return Interval(float(np.mean(per_seed_a) - np.mean(per_seed_b)), float(lo), float(hi), sd)


def _metric_kwargs(name, threshold, tail):
    if name == "tail_fraction":
        return {"tail": tail}
    return {"threshold": threshold} if name in ("balanced_accuracy", "roc_auc") else {}


def _with_seed_axis(values):
    values = np.asarray(values, float)
    if values.ndim == 3:
        return values[None]
    if values.ndim != 4:
        raise ValueError(f"expected an array (seeds, slices, draws, queries) or (slices, draws, queries); got {values.shape}")
    return values


def _resample_indices(n_slices, n_draws, n_resamples, seed, level):
    rng = np.random.default_rng(seed)
    if level == "slices":
        return hierarchical_resamples(rng, n_slices, n_draws, n_resamples)
    if level == "draws":
        # every (slice, draw) pair drawn independently from all pairs: the slice of a pair is random too
        flat = rng.integers(n_slices * n_draws, size=(n_resamples, n_slices, n_draws))
        return flat // n_draws, flat % n_draws
    raise ValueError(f"level must be 'slices' or 'draws', got {level!r}")


# ---------------------------------------------------------------------------
# Blocks as the unit of independence
# ---------------------------------------------------------------------------
def _drop_slices(values, keep):
    return None if values is None else values[..., keep, :, :]


def block_jackknife(name, blocks, residuals_a, residuals_b=None, labels=None, scores_a=None, scores_b=None,
                    threshold=None, tail=None, confidence=0.95):
    """A metric (or a paired difference of two learners' metrics) with a delete-one-block jackknife interval.

    Slices of one redshift block are correlated (neighbouring windows share galaxies' populations and
    photometry), so the slices are not independent and a slice bootstrap is too narrow. Here the block is the
    unit: the metric is recomputed with each block left out, the jackknife standard error comes from those
    ``B`` values, and the interval is the estimate plus or minus Student's ``t`` with ``B - 1`` degrees of
    freedom times it (a studentised interval, honest with as few as ten blocks: the synthetic test in
    ``tests/test_metrics.py`` measures its coverage).

    Parameters
    ----------
    name : str
        Metric (see :func:`metric`).
    blocks : sequence, length S
        The block of every slice (any hashable labels).
    residuals_a, residuals_b : ndarray, shape (n_seeds, S, D, Q) or (S, D, Q)
        ``residuals_b`` given: the interval is of metric(a) minus metric(b), paired on the same draws.

    Returns
    -------
    Interval
        ``seed_sd``: the spread of the estimate over training seeds.
    """
    from scipy import stats

    a = _with_seed_axis(residuals_a)
    b = None if residuals_b is None else _with_seed_axis(residuals_b)
    sa = None if scores_a is None else _with_seed_axis(scores_a)
    sb = None if scores_b is None else _with_seed_axis(scores_b)
    labels = None if labels is None else np.asarray(labels, bool)[None]
    kwargs = _metric_kwargs(name, threshold, tail)
    blocks = np.asarray(blocks)
    if blocks.shape != (a.shape[1],):
        raise ValueError(f"blocks must name the block of each of the {a.shape[1]} slices, got shape {blocks.shape}")
    unique = list(dict.fromkeys(blocks.tolist()))
    if len(unique) < 3:
        raise ValueError(f"a block interval needs at least 3 blocks, got {len(unique)}")

    def estimate(keep):
        value = metric(name, _drop_slices(a, keep), _drop_slices(labels, keep), _drop_slices(sa, keep), **kwargs)
        if b is not None:
            other = metric(name, _drop_slices(b, keep), _drop_slices(labels, keep), _drop_slices(sb, keep), **kwargs)
            n = max(value.size, other.size)
            value = np.resize(value, n) - np.resize(other, n)
        return value  # per seed

    every = np.ones(len(blocks), bool)
    per_seed = estimate(every)
    full = float(np.mean(per_seed))
    left_out = np.array([np.mean(estimate(blocks != block)) for block in unique])
    n_blocks = len(unique)
    with np.errstate(invalid="ignore"):
        se = float(np.sqrt((n_blocks - 1) / n_blocks * np.sum((left_out - left_out.mean()) ** 2)))
        half = float(stats.t.ppf(0.5 + confidence / 2, n_blocks - 1)) * se
        sd = float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else float("nan")
    if not np.isfinite(full):
        return Interval(full, full, full, sd)
    return Interval(full, full - half, full + half, sd)


def intraclass_correlation(values, groups):
    """One-way intraclass correlation ICC(1) of ``values`` grouped by ``groups`` (unequal group sizes allowed).

    The share of the variance that lies between groups: near 0 when slices of one block vary as much as
    slices of different blocks, near 1 when the slices of a block move together (and so count as one).

    Examples
    --------
    >>> round(intraclass_correlation([1.0, 1.1, 5.0, 5.1, 9.0, 9.2], ["a", "a", "b", "b", "c", "c"]), 3)
    0.999
    """
    values, groups = np.asarray(values, float), np.asarray(groups)
    keep = np.isfinite(values)
    values, groups = values[keep], groups[keep]
    labels = list(dict.fromkeys(groups.tolist()))
    sizes = np.array([np.sum(groups == g) for g in labels], float)
    means = np.array([values[groups == g].mean() for g in labels])
    n, k = values.size, len(labels)
    if k < 2 or n <= k:
        return float("nan")
    ms_between = np.sum(sizes * (means - values.mean()) ** 2) / (k - 1)
    ms_within = sum(np.sum((values[groups == g] - m) ** 2) for g, m in zip(labels, means)) / (n - k)
    k0 = (n - np.sum(sizes ** 2) / n) / (k - 1)
    denominator = ms_between + (k0 - 1) * ms_within
    return float((ms_between - ms_within) / denominator) if denominator > 0 else float("nan")


def per_slice(name, residuals, labels=None, scores=None, threshold=None, tail=None):
    """The metric in every slice, averaged over seeds: shape (S,)."""
    residuals = _with_seed_axis(residuals)
    scores = None if scores is None else _with_seed_axis(scores)
    kwargs = _metric_kwargs(name, threshold, tail)
    values = []
    for s in range(residuals.shape[1]):
        keep = np.zeros(residuals.shape[1], bool)
        keep[s] = True
        lab = None if labels is None else np.asarray(labels, bool)[None][..., keep, :, :]
        values.append(float(np.mean(metric(name, residuals[..., keep, :, :], lab,
                                           None if scores is None else scores[..., keep, :, :], **kwargs))))
    return np.array(values)
