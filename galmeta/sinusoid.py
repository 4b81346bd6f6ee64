"""The sinusoid regression benchmark of the MAML paper (Finn et al. 2017, sec. 5.1).

Each task is ``y = A sin(x - phase)`` with amplitude ``A ~ U[0.1, 5]``, phase
``~ U[0, pi]`` and inputs ``x ~ U[-5, 5]``. Used in notebooks 03 and 04 and in
``benchmarks/sinusoid_reproduction.py``.
"""
from __future__ import annotations

import numpy as np

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, np.pi)
INPUT_RANGE = (-5.0, 5.0)

#: Appendix C, Table 2 of Finn et al. (2017): 5-shot MSE after 1 / 5 / 10 gradient
#: steps for MAML meta-trained with K = 10, and for the pretrained-then-fine-tuned baseline.
PAPER_TABLE_2 = {
    "MAML": {1: 0.67, 5: 0.38, 10: 0.35},
    "pretrained": {1: 2.41, 5: 2.23, 10: 2.19},
}


#: Weight scale of the MAML authors' code for this benchmark (truncated normal, std 0.01).
PAPER_WEIGHT_STD = 0.01


def sample_sinusoid_tasks(rng, n_tasks, n_support, n_query, dtype=np.float64):
    """Draw a meta-batch of sinusoid tasks.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_tasks, n_support, n_query : int
    dtype : numpy dtype, default float64

    Returns
    -------
    xs, ys, xq, yq : ndarray
        Shapes ``(T, K, 1)`` and ``(T, Q, 1)``.
    amplitude, phase : ndarray, shape (T,)
        The hidden task parameters (for plots and checks).
    """
    amplitude = rng.uniform(*AMPLITUDE_RANGE, size=n_tasks)
    phase = rng.uniform(*PHASE_RANGE, size=n_tasks)
    x = rng.uniform(*INPUT_RANGE, size=(n_tasks, n_support + n_query, 1))
    y = amplitude[:, None, None] * np.sin(x - phase[:, None, None])
    x, y = x.astype(dtype), y.astype(dtype)
    return x[:, :n_support], y[:, :n_support], x[:, n_support:], y[:, n_support:], amplitude, phase


def task_sampler(n_tasks=25, n_support=10, n_query=10, dtype=np.float64):
    """A ``sample(rng) -> (xs, ys, xq, yq)`` callable for the meta-trainers."""

    def sample(rng):
        return sample_sinusoid_tasks(rng, n_tasks, n_support, n_query, dtype)[:4]

    return sample


def pooled_sampler(n_points=250, dtype=np.float64):
    """Pretraining data for the paper's baseline: points pooled across many tasks.

    The baseline of the MAML paper is a network trained to regress all tasks at
    once (it sees ``(x, y)`` pairs from random sinusoids, never the task), then
    fine-tuned on the K support points of a new task.
    """

    def sample(rng):
        x, y, _, _, _, _ = sample_sinusoid_tasks(rng, n_points, 1, 0, dtype)
        return x.reshape(1, -1, 1), y.reshape(1, -1, 1)

    return sample


def pretrain_pooled(params, n_iterations, rng, n_points=250, lr=1e-3, progress=False):
    """Train the paper's baseline: one network regressing points pooled from random sinusoids.

    Returns the trained parameters (a copy).
    """
    from galmeta.config import progress_bar
    from galmeta.maml_numpy import Adam, loss_and_gradient

    params = [(W.copy(), b.copy()) for W, b in params]
    optimiser = Adam(params, lr=lr)
    sample = pooled_sampler(n_points, dtype=params[0][0].dtype)
    for _ in progress_bar(range(int(n_iterations)), disable=not progress, desc="pretrain (pooled)", mininterval=1.0):
        x, y = sample(rng)
        _, grads = loss_and_gradient(params, x, y)
        optimiser.step(params, [(dW[0], db[0]) for dW, db in grads])
    return params


def tune_finetune_lr(params, tasks, candidates=(0.001, 0.003, 0.01, 0.03, 0.1), steps=10):
    """The fine-tuning step size with the lowest mean query MSE after ``steps`` steps on ``tasks``.

    ``tasks`` must be validation tasks, never the evaluation tasks.
    """
    from galmeta.maml_numpy import adaptation_curve

    scores = {}
    for lr in candidates:
        with np.errstate(all="ignore"):
            curve = adaptation_curve(params, *tasks, inner_lr=lr, max_steps=steps)
        scores[lr] = float(np.mean(curve[-1])) if np.all(np.isfinite(curve)) else np.inf
    return min(scores, key=scores.get), scores


def summarise_errors(errors, before, divergence_factor=10.0):
    """Summary of per-task errors after adaptation, as the MAML paper's code computes it: over **all** tasks.

    No task is dropped, whatever its error: the mean over all tasks is what the paper reports, and
    excluding the tasks that blew up would let the outcome choose which tasks count. A mean that
    overflows is ``inf`` (then the median still says what a typical task does). A task *diverged* when its
    error is not finite or exceeds ``divergence_factor`` times its error before adaptation (``before``):
    counted, never excluded.

    Returns
    -------
    dict
        ``mean`` and ``ci95`` (normal-approximation half-width) over all tasks, ``median``, ``diverged``
        (the count just defined) and ``overflowed`` (errors that are not finite).

    Examples
    --------
    >>> s = summarise_errors([0.1, 0.2, 30.0], before=[1.0, 1.0, 1.0])
    >>> round(s["mean"], 3), s["median"], s["diverged"], s["overflowed"]
    (10.1, 0.2, 1, 0)
    """
    errors, before = np.asarray(errors, float), np.asarray(before, float)
    with np.errstate(invalid="ignore", over="ignore"):
        overflowed = ~np.isfinite(errors)
        diverged = overflowed | (errors > divergence_factor * before)
    errors = np.where(overflowed, np.inf, errors)  # NaN (inf - inf) is an overflow too
    if overflowed.any():
        mean, half = float("inf"), float("inf")
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            mean, half = mean_confidence_interval(errors)
    return {"mean": mean, "ci95": half, "median": float(np.median(errors)), "diverged": int(diverged.sum()),
            "overflowed": int(overflowed.sum())}


def summarise_over_seeds(errors_per_seed, before_per_seed, divergence_factor=10.0):
    """:func:`summarise_errors` for each training seed, then the spread over seeds.

    Returns
    -------
    dict
        ``mean`` and ``mean_sd``: the mean over seeds of the all-task means, and their standard deviation
        over seeds (``inf`` when any seed's mean overflowed; ``nan`` for one seed); ``median`` and
        ``median_sd`` likewise; ``diverged`` and ``overflowed`` summed over seeds; ``per_seed``, the
        per-seed summaries.
    """
    per_seed = [summarise_errors(e, b, divergence_factor) for e, b in zip(errors_per_seed, before_per_seed)]
    if not per_seed:
        raise ValueError("errors_per_seed is empty: no training seed to summarise")
    means = np.array([s["mean"] for s in per_seed])
    medians = np.array([s["median"] for s in per_seed])
    spread = (lambda v: float(np.std(v, ddof=1)) if v.size > 1 and np.all(np.isfinite(v)) else
              (float("inf") if not np.all(np.isfinite(v)) else float("nan")))
    return {"mean": float(np.mean(means)) if np.all(np.isfinite(means)) else float("inf"), "mean_sd": spread(means),
            "median": float(np.mean(medians)), "median_sd": spread(medians),
            "diverged": int(sum(s["diverged"] for s in per_seed)),
            "overflowed": int(sum(s["overflowed"] for s in per_seed)), "per_seed": per_seed}


def format_summary(summary) -> str:
    """``mean ± ci95 (median m, d diverged)`` for printing; the mean is over all tasks."""
    mean = "inf (overflow)" if not np.isfinite(summary["mean"]) else f"{summary['mean']:.3f} ± {summary['ci95']:.3f}"
    text = f"{mean} (median {summary['median']:.3f}"
    return text + (f", {summary['diverged']} diverged)" if summary["diverged"] else ")")


def plot_adaptation_curves(curves: dict, title: str = "", ax=None):
    """Median query MSE (with quartile band) against adaptation steps, one line per learner.

    ``curves`` maps a label to an array of shape ``(steps + 1, tasks)``.
    """
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(9, 3.8), layout="constrained")[1]
    for label, curve in curves.items():
        steps = np.arange(curve.shape[0])
        with np.errstate(invalid="ignore", over="ignore"):
            median = np.median(np.where(np.isfinite(curve), curve, np.inf), axis=1)
            band = np.nanquantile(np.where(np.isfinite(curve), curve, np.inf), [0.25, 0.75], axis=1)
        gone = np.flatnonzero(~np.isfinite(median) | (median > 1e6))
        if gone.size:  # say where a line stops instead of letting it vanish
            label = f"{label} (median overflows from step {gone[0]})"
        line, = ax.plot(steps, np.where(median > 1e6, np.nan, median), marker="o", ms=3, label=label)
        ax.fill_between(steps, *np.where(np.isfinite(band) & (band < 1e6), band, np.nan), color=line.get_color(),
                        alpha=0.15)
    ax.set(xlabel="gradient steps on the support points", ylabel="query MSE (median, quartiles)", yscale="log",
           title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def mean_confidence_interval(values, confidence=0.95):
    """Mean and the half-width of its normal-approximation confidence interval."""
    values = np.asarray(values, dtype=float)
    z = {0.95: 1.959963984540054, 0.9: 1.6448536269514722, 0.99: 2.5758293035489004}[confidence]
    return float(values.mean()), float(z * values.std(ddof=1) / np.sqrt(values.size))
