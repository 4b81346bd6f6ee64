"""Redness on held-out redshift slices: the learner interface, the protocol, results with paired intervals.

Introduced in ``notebooks/05_redness_evaluation.py``; the full run is
``python benchmarks/redness_evaluation.py``.

Protocol
--------
* **Folds.** Redshift blocks rotate through meta-train, meta-validation and
  meta-test (:func:`galmeta.tasks.redshift_splits`): every block is meta-test
  once, so every meta-test slice of the catalogue is used.
* **Draws.** In every meta-test slice, ``n_draws`` seeded support/query draws
  per K. Every learner, and every training seed of a learner, predicts exactly
  these draws.
* **Tuning.** A learner's options (adaptation steps, step sizes, ridge
  strength, neighbours) are chosen per fold, seed and K on draws from
  **meta-validation** slices; nothing is chosen on meta-test.
* **Target and label.** Every regressor predicts ``u - r``; the red/blue label
  is the prediction thresholded at the Strateva cut, 2.22 (the label is the
  true target thresholded, so no threshold is tuned).
* **Uncertainty.** Metrics come with a bootstrap over slices, then draws within
  slices, and the spread over training seeds; learners are compared paired
  (:mod:`galmeta.metrics`).

Adding a learner is adding one :class:`Learner` object: its options and
``predict(data, draws, option)``.

The pieces: :mod:`galmeta.learners` (the interface, draws, meta-learners), :mod:`galmeta.baselines`,
:mod:`galmeta.results` (what a run measured), :mod:`galmeta.reports` (tables) and
:mod:`galmeta.results_files` (saved results).
"""
from __future__ import annotations

import math
import time
import numpy as np

from galmeta.evaluation_config import TAIL_RMSE, EvaluationConfig  # noqa: F401
from galmeta.learners import (Draws, FitContext, GradientMetaLearner, Learner, NumpyMAML, VARIANTS,  # noqa: F401
                              make_draws)
from galmeta.reports import paired_markdown, summary_markdown  # noqa: F401
from galmeta.results import EvaluationResults

__all__ = [
    "TAIL_RMSE",
    "Draws",
    "make_draws",
    "Learner",
    "FitContext",
    "GradientMetaLearner",
    "VARIANTS",
    "NumpyMAML",
    "EvaluationConfig",
    "default_learners",
    "run_evaluation",
    "EvaluationResults",
    "summary_markdown",
    "paired_markdown",
]


# ---------------------------------------------------------------------------
# Configuration and the run
# ---------------------------------------------------------------------------
def default_learners(config: EvaluationConfig, device=None):
    """The meta-learners of the course and every baseline, as a list of :class:`Learner` objects."""
    from galmeta import baselines as gb

    support = (1, max(config.ks)) if config.meta_train_k is None else config.meta_train_k
    learners = [GradientMetaLearner(name, algorithm, config.meta_iterations, n_support=support, n_query=config.n_query,
                                    device=device)
                for name, algorithm in config.algorithms]
    if config.include_numpy_check:
        learners.append(NumpyMAML(config.meta_iterations, n_query=config.n_query))
    learners += [
        gb.PooledNetwork(),
        gb.FineTunedPooledNetwork(),
        gb.PooledPlusOffset(gb.PooledNetwork()),
        gb.PooledRidge(),
        gb.PooledPlusOffset(gb.PooledRidge()),
        gb.PerTaskRidge(),
        gb.NearestNeighbours(),
        gb.PooledNetworkWithRedshift(),
        gb.PerfectTarget(),
        gb.SingleFeatureCut(),
    ]
    names = [learner.name for learner in learners]
    if len(set(names)) != len(names):
        raise ValueError(f"learner names must be unique, got {names}")
    return learners


def _rmse(predictions, truth):
    with np.errstate(all="ignore"):
        value = float(np.sqrt(np.mean((predictions - truth) ** 2)))
    return value if np.isfinite(value) else math.inf


def run_evaluation(catalogue, learners, config: EvaluationConfig, window=0.005, min_size=40, progress=None):
    """Fit, tune and evaluate every learner on every fold and seed.

    Parameters
    ----------
    catalogue : galmeta.tasks.GalaxyCatalogue
        From :func:`galmeta.tasks.build_catalogue`.
    learners : list of Learner
    config : EvaluationConfig
    progress : callable, optional
        Called with a one-line message after each fold and seed.

    Returns
    -------
    EvaluationResults
    """
    results = EvaluationResults(config=config, learners={l.name: l for l in learners},
                                target_name=getattr(catalogue, "target_name", "u − r"))
    start = time.perf_counter()
    for fold in config.folds:
        data = catalogue.fold(fold, config.n_folds, window=window, min_size=min_size)
        val_draws = {k: make_draws(data, "val", k, config.n_val_draws, config.n_query, config.draw_seed) for k in config.ks}
        test_draws = {k: make_draws(data, "test", k, config.n_draws, config.n_query, config.draw_seed) for k in config.ks}
        results.add_slices(data, test_draws[config.ks[0]])
        results.label_thresholds[fold] = data.label_threshold
        for k, draws in test_draws.items():
            results.add_labels(k, fold, data.is_red[draws.query], data.target[draws.query], draws)
        for seed in config.seeds:
            context = FitContext(pooled_epochs=config.pooled_epochs)
            for learner in learners:
                learner.fit(data, seed, context)
                if learner.diverged_at is not None:
                    results.diverged[(learner.name, fold, seed)] = learner.diverged_at
                for k in config.ks:
                    truth_val = data.target[val_draws[k].query]
                    val_scores = {o: _rmse(p, truth_val) for o, p in learner.predict_options(data, val_draws[k]).items()}
                    chosen = min(val_scores, key=val_scores.get) if learner.regression else next(iter(val_scores))
                    test_predictions = learner.predict_options(data, test_draws[k])
                    truth = data.target[test_draws[k].query]
                    results.add(learner, k, fold, seed, test_predictions[chosen], chosen, val_scores[chosen],
                                {o: _rmse(p, truth) for o, p in test_predictions.items()},
                                learner.margin(data, test_predictions[chosen]))
            if progress:
                progress(f"fold {fold} seed {seed} done ({time.perf_counter() - start:.0f} s)")
    results.seconds = time.perf_counter() - start
    return results
