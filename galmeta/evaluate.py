"""Redness on held-out redshift slices: the learner interface, the protocol, results with paired intervals.

Introduced in ``notebooks/06_redness_evaluation.py``; the full run is
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
  strength, neighbours, prior scale) are chosen per fold, seed and K on draws
  from half of the **meta-validation** slices (:func:`validation_halves`); the
  learner's meta-validation RMSE, by which the headline learner and the best
  baseline are chosen, is measured on the other half, so that a learner with
  many options gains nothing from having them. Nothing is chosen on meta-test.
* **Predictive distributions.** Every regressor gives each query galaxy a
  predictive mean and variance: the Bayesian learners from their posterior,
  point learners from a variance per K fitted on meta-validation
  (:func:`point_variance`); both include the galaxy's own measurement error.
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
    "validation_halves",
    "point_variance",
    "run_evaluation",
    "run_confirmation",
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
    from galmeta.bayesian_last_layer import MetaLearnedBayesianLayer
    from galmeta.hierarchical import HierarchicalLinear

    support = (1, max(config.ks)) if config.meta_train_k is None else config.meta_train_k
    learners = [GradientMetaLearner(name, algorithm, config.meta_iterations, n_support=support, n_query=config.n_query,
                                    device=device)
                for name, algorithm in config.algorithms]
    if config.include_numpy_check:
        learners.append(NumpyMAML(config.meta_iterations, n_query=config.n_query))
    learners.append(MetaLearnedBayesianLayer(config.meta_iterations, k_max=max(config.ks), n_query=config.n_query))
    learners += [
        gb.PooledNetwork(),
        gb.FineTunedPooledNetwork(),
        gb.PooledPlusOffset(gb.PooledNetwork()),
        HierarchicalLinear(gb.PooledNetwork()),
        gb.PooledBoosting(),
        gb.PooledPlusOffset(gb.PooledBoosting()),
        HierarchicalLinear(gb.PooledBoosting()),
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


def validation_halves(n_slices):
    """Positions of the meta-validation slices that choose options (even) and that score the learner (odd).

    Neighbouring slices go to different halves, so both halves span the meta-validation blocks. With one
    slice, both halves are that slice.
    """
    every = np.arange(n_slices)
    return (every[0::2], every[1::2]) if n_slices >= 2 else (every, every)


def point_variance(predictions, truth, measurement_err):
    """A point learner's predictive variance at one K, fitted on meta-validation draws.

    The mean squared residual minus the mean squared measurement error is the learner's own scatter
    (floored at :data:`galmeta.hierarchical.MIN_SCATTER2`); a galaxy's predictive variance is that plus its
    own measurement error squared (add it to ``err ** 2``).
    """
    from galmeta.hierarchical import MIN_SCATTER2

    with np.errstate(all="ignore"):
        excess = (predictions - truth) ** 2 - measurement_err ** 2
        value = float(np.mean(excess[np.isfinite(excess)])) if np.any(np.isfinite(excess)) else math.inf
        if not np.all(np.isfinite(predictions)):
            value = math.inf
    return max(value, MIN_SCATTER2)


def _rmse(predictions, truth):
    with np.errstate(all="ignore"):
        value = float(np.sqrt(np.mean((predictions - truth) ** 2)))
    return value if np.isfinite(value) else math.inf


def run_evaluation(catalogue, learners, config: EvaluationConfig, window=0.005, min_size=40, progress=None,
                   population=True):
    """Fit, tune and evaluate every learner on every fold and seed.

    Parameters
    ----------
    catalogue : galmeta.tasks.GalaxyCatalogue
        From :func:`galmeta.tasks.build_catalogue`.
    learners : list of Learner
    config : EvaluationConfig
    progress : callable, optional
        Called with a one-line message after each fold and seed.
    population : bool, default True
        Train the meta-learners that can (``Learner.fit_population``) once for all folds and seeds as one
        batched computation (:mod:`galmeta.population`); False trains every fold and seed separately.
        Each member equals its separate training up to floating-point rounding.

    Returns
    -------
    EvaluationResults
    """
    return _run(catalogue, learners, config, ("development",), window, min_size, progress,
                population)["development"]


def run_confirmation(catalogue, learners, config: EvaluationConfig, window=0.005, min_size=40, progress=None,
                     population=True):
    """:func:`run_evaluation` that also evaluates the same trained learners on the sealed confirmation sample.

    ``catalogue`` must be built with ``sample="all"`` (:func:`galmeta.tasks.build_catalogue`). Every learner is
    fitted and tuned on development galaxies only; its frozen state then predicts draws from the development
    meta-test slices and from the sealed galaxies of the same meta-test redshift blocks.

    Returns
    -------
    dict
        ``{"development": EvaluationResults, "confirmation": EvaluationResults}``.
    """
    return _run(catalogue, learners, config, ("development", "confirmation"), window, min_size, progress, population)


def _population_fits(learners, folds, contexts, progress, start, fit_seconds):
    """Each population-capable learner trained once for every fold and seed: ``{name: {(fold, seed): copy}}``."""
    fits = {}
    members = list(contexts)
    for learner in learners:
        if learner.fit_population is None:
            continue
        begun = time.perf_counter()
        fitted = learner.fit_population([(folds[fold], seed, contexts[fold, seed]) for fold, seed in members])
        fits[learner.name] = dict(zip(members, fitted))
        vars(learner).update(vars(fitted[-1]))  # as after separate fits: the learner holds the last fold and seed
        fit_seconds[learner.name] = fit_seconds.get(learner.name, 0.0) + time.perf_counter() - begun
        if progress:
            progress(f"{learner.name}: {len(members)} trainings as one population "
                     f"({time.perf_counter() - start:.0f} s)")
    return fits


def _run(catalogue, learners, config, samples, window, min_size, progress, population=True):
    import dataclasses

    runs = {sample: EvaluationResults(config=config, learners={l.name: l for l in learners},
                                      target_name=getattr(catalogue, "target_name", "u − r"), sample=sample)
            for sample in samples}
    start = time.perf_counter()
    fit_seconds = {}
    folds = {fold: catalogue.fold(fold, config.n_folds, window=window, min_size=min_size) for fold in config.folds}
    # one context per fold and seed, shared by the learners of that fold and seed however they are trained
    contexts = {(fold, seed): FitContext(pooled_epochs=config.pooled_epochs) for fold in config.folds
                for seed in config.seeds}
    fits = _population_fits(learners, folds, contexts, progress, start, fit_seconds) if population else {}
    for fold in config.folds:
        data = folds[fold]
        val_draws = {k: make_draws(data, "val", k, config.n_val_draws, config.n_query, config.draw_seed) for k in config.ks}
        test_draws = {}
        for sample, results in runs.items():
            test_data = data
            if sample == "confirmation":  # the same fold (features, preprocessing) with the sealed meta-test tasks
                sealed = catalogue.fold(fold, config.n_folds, window=window, min_size=min_size, test_sample=sample)
                test_data = dataclasses.replace(data, tasks={**data.tasks, "test": sealed.tasks["test"]},
                                                dropped={**data.dropped, "test": sealed.dropped["test"]})
            test_draws[sample] = {k: make_draws(test_data, "test", k, config.n_draws, config.n_query, config.draw_seed)
                                  for k in config.ks}
            results.add_slices(test_data, test_draws[sample][config.ks[0]])
            results.label_thresholds[fold] = data.label_threshold
            for k, draws in test_draws[sample].items():
                results.add_labels(k, fold, data.is_red[draws.query], data.target[draws.query], draws)
        for seed in config.seeds:
            context = contexts[fold, seed]
            for learner in learners:
                if learner.name in fits:
                    learner = fits[learner.name][(fold, seed)]
                else:
                    begun = time.perf_counter()
                    learner.fit(data, seed, context)
                    fit_seconds[learner.name] = fit_seconds.get(learner.name, 0.0) + time.perf_counter() - begun
                for results in runs.values():
                    if learner.diverged_at is not None:
                        results.diverged[(learner.name, fold, seed)] = learner.diverged_at
                for k in config.ks:
                    _evaluate_one(runs, learner, data, k, fold, seed, val_draws[k],
                                  {sample: draws[k] for sample, draws in test_draws.items()})
            if progress:
                progress(f"fold {fold} seed {seed} done ({time.perf_counter() - start:.0f} s)")
    for results in runs.values():
        results.seconds = time.perf_counter() - start
        results.fit_seconds = dict(fit_seconds)
    return runs


def _evaluate_one(runs, learner, data, k, fold, seed, val, tests):
    """Choose the option on one half of meta-validation, score the learner on the other (once), then predict
    the meta-test draws of every sample (``runs`` and ``tests``: one entry per sample)."""
    options_half, score_half = validation_halves(val.n_slices)
    truth_val = data.target[val.query]
    val_predictions = learner.predict_options(data, val)
    option_scores = {o: _rmse(p[options_half], truth_val[options_half]) for o, p in val_predictions.items()}
    chosen = min(option_scores, key=option_scores.get) if learner.regression else next(iter(option_scores))
    val_score = _rmse(val_predictions[chosen][score_half], truth_val[score_half])
    scatter2 = None  # a point learner's fitted scatter, computed once if needed
    for sample, test in tests.items():
        test_predictions = learner.predict_options(data, test)
        truth = data.target[test.query]
        variance = learner.predictive_variance(data, test, chosen) if learner.regression else None
        if variance is None:
            if scatter2 is None:
                scatter2 = (point_variance(val_predictions[chosen], truth_val, data.target_err[val.query])
                            if learner.regression else math.nan)
            variance = scatter2 + data.target_err[test.query] ** 2
        runs[sample].add(learner, k, fold, seed, test_predictions[chosen], chosen, val_score,
                         {o: _rmse(p, truth) for o, p in test_predictions.items()},
                         learner.margin(data, test_predictions[chosen]), variance=variance)
