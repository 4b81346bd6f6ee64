"""Everything one evaluation measured, in one keyed store, with the statistics the tables need.

:class:`EvaluationResults` records predictions per learner, K, seed and fold, merges runs over disjoint
folds, replaces a re-run learner, and computes intervals and paired differences
(:mod:`galmeta.metrics`). Tables and files are written by :mod:`galmeta.reports`; results are saved
and loaded as data by :mod:`galmeta.results_files`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from galmeta import metrics as gm

if TYPE_CHECKING:
    from galmeta.evaluation_config import EvaluationConfig

__all__ = ["EvaluationResults"]


@dataclass
class EvaluationResults:
    """Everything :func:`galmeta.evaluate.run_evaluation` measured, in flat stores keyed the same way.

    Per learner, K, fold and seed (key ``(learner, k, fold, seed)``): ``predictions`` and ``margins``
    (arrays ``(S_fold, D, Q)``), the ``chosen`` option, its ``val_rmse`` and every option's meta-test
    ``option_rmse``. Per K and fold (key ``(k, fold)``): ``truth``, ``labels`` and ``draws``. Per fold:
    ``label_thresholds``; ``slices`` lists the meta-test slices in fold order. Runs over disjoint folds
    merge as a union of these stores (:meth:`merge`).
    """

    config: EvaluationConfig
    learners: dict
    target_name: str = "u − r"
    #: ``"development"``, or ``"confirmation"`` for the sealed galaxies (:mod:`galmeta.samples`).
    sample: str = "development"
    label_thresholds: dict = field(default_factory=dict)
    margins: dict = field(default_factory=dict)
    predictions: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    draws: dict = field(default_factory=dict)
    chosen: dict = field(default_factory=dict)
    val_rmse: dict = field(default_factory=dict)
    option_rmse: dict = field(default_factory=dict)
    slices: list = field(default_factory=list)
    seconds: float = 0.0
    #: ``(learner, fold, seed) -> iteration`` for meta-trainings that diverged and stopped there (the learner
    #: then predicts with its best meta-validation state); reported with the tables.
    diverged: dict = field(default_factory=dict)
    #: Predictive variance of every query galaxy's measured target, keyed like ``predictions`` (NaN: none).
    variances: dict = field(default_factory=dict)
    #: Seconds each learner spent training in this run (all folds and seeds; not saved in result files).
    fit_seconds: dict = field(default_factory=dict)

    #: The stores keyed by learner first (a re-run learner replaces its entries in these).
    LEARNER_STORES = ("predictions", "margins", "chosen", "val_rmse", "option_rmse", "diverged", "variances")
    #: The stores of what every learner shares (the draws and the truth).
    SHARED_STORES = ("truth", "labels", "draws", "label_thresholds")

    # -- recording ------------------------------------------------------------
    def add_slices(self, data, draws):
        for s, task in zip(draws.slice_ids, [data.tasks["test"][i] for i in draws.slice_ids]):
            self.slices.append({"fold": data.fold, "slice": task.name, "block": _block_of(task, data.splits),
                                "z_lo": task.z_lo, "z_hi": task.z_hi, "n_galaxies": task.size})

    def add_labels(self, k, fold, labels, truth, draws):
        self.labels[(k, fold)], self.truth[(k, fold)], self.draws[(k, fold)] = labels, truth, draws

    def add(self, learner, k, fold, seed, predictions, option, val_rmse, option_rmse, margins, variance=None):
        key = (learner.name, k, fold, seed)
        self.predictions[key], self.margins[key] = predictions, margins
        self.variances[key] = np.full(np.shape(predictions), np.nan) if variance is None else np.asarray(variance, float)
        self.chosen[key], self.val_rmse[key], self.option_rmse[key] = option, val_rmse, option_rmse

    @classmethod
    def merge(cls, parts):
        """One result from runs over disjoint folds with the same learners, seeds, K and draws: a union.

        Lets the folds of a long evaluation run in separate processes (``benchmarks/redness_evaluation.py
        --merge``). Raises ValueError when the parts do not fit together.
        """
        import dataclasses

        parts = sorted(parts, key=lambda part: part.config.folds[0])
        first = parts[0]
        folds = [f for part in parts for f in part.config.folds]
        if len(set(folds)) != len(folds):
            raise ValueError(f"the parts share folds ({folds}); each fold must come from exactly one part")
        for part in parts[1:]:
            same = {key: getattr(part.config, key) == getattr(first.config, key)
                    for key in ("ks", "seeds", "n_draws", "n_val_draws", "n_query", "meta_iterations", "algorithms",
                                "draw_seed", "tail_rmse", "n_folds")}
            same["sample"] = part.sample == first.sample
            if not all(same.values()) or list(part.learners) != list(first.learners):
                differ = [key for key, ok in same.items() if not ok] or ["learners"]
                raise ValueError(f"the parts were run with different settings ({', '.join(differ)}); they cannot be merged")
        merged = cls(config=dataclasses.replace(first.config, folds=tuple(folds)), learners=first.learners,
                     target_name=first.target_name, sample=first.sample, slices=[s for part in parts for s in part.slices],
                     seconds=sum(part.seconds for part in parts))
        for store in cls.LEARNER_STORES + cls.SHARED_STORES:
            setattr(merged, store, {key: value for part in parts for key, value in getattr(part, store).items()})
        return merged

    def with_learners_from(self, other):
        """A copy in which the learners of ``other`` (a run of some learners on the same folds, seeds, K and
        draws) replace or join this run's: for re-running one learner after a fix without re-running all.

        Raises ValueError unless the draws are identical, so the pairing of learners stays exact.
        """
        import copy

        for key in ("ks", "seeds", "folds", "n_draws", "n_query", "draw_seed", "n_val_draws"):
            if getattr(other.config, key) != getattr(self.config, key):
                raise ValueError(f"the runs differ in {key}; their learners cannot be compared on the same draws")
        for key, mine in self.draws.items():
            theirs = other.draws[key]
            if not (np.array_equal(mine.support, theirs.support) and np.array_equal(mine.query, theirs.query)):
                raise ValueError(f"the runs drew different support/query galaxies at K={key[0]}")
        combined = copy.copy(self)
        combined.learners = {**self.learners, **other.learners}
        names = set(other.learners)
        for store in self.LEARNER_STORES:
            kept = {key: value for key, value in getattr(self, store).items() if key[0] not in names}
            setattr(combined, store, {**kept, **getattr(other, store)})
        return combined

    # -- arrays -----------------------------------------------------------------
    @property
    def ks(self):
        return tuple(self.config.ks)

    def names(self, group=None):
        return [n for n, l in self.learners.items() if group is None or l.group == group]

    def _stack(self, name, k, store=None):
        store = self.predictions if store is None else store
        return np.stack([np.concatenate([store[(name, k, fold, seed)] for fold in self.config.folds])
                         for seed in self.config.seeds])

    def truth_array(self, k):
        """True values of every meta-test query galaxy at this K, shape ``(S, D, Q)`` (slices of all folds)."""
        return np.concatenate([self.truth[(k, fold)] for fold in self.config.folds])

    def draws_of(self, k):
        """The meta-test draws at this K, one :class:`galmeta.learners.Draws` per fold, in fold order."""
        return [self.draws[(k, fold)] for fold in self.config.folds]

    def scores(self, name, k):
        """Label margins (positive: predicted red), shape ``(seeds, S, D, Q)``."""
        return self._stack(name, k, self.margins)

    def residuals(self, name, k):
        """Predicted minus true u - r, shape ``(seeds, S, D, Q)`` (NaN for label-only learners)."""
        if not self.learners[name].regression:
            return np.full_like(self._stack(name, k), np.nan)
        residuals = self._stack(name, k) - self.truth_array(k)[None]
        # a prediction that is not a number (an adaptation that overflowed) is an infinite error, so that
        # RMSE, worst draw and the tail fraction count it instead of NaN hiding it
        return np.where(np.isfinite(residuals), residuals, np.inf)

    #: Scores of the predictive distribution, per galaxy: Gaussian negative log-likelihood (nats) and whether
    #: the truth lies inside the central 68% / 95% interval; summarised by their mean (metric ``"mean"``).
    PREDICTIVE_METRICS = ("nll", "coverage_68", "coverage_95")

    def predictive_values(self, name, k, metric):
        """Per-galaxy ``nll`` or coverage indicator, shape ``(seeds, S, D, Q)`` (NaN without a variance)."""
        from galmeta.hierarchical import gaussian_nll

        residuals = self.residuals(name, k)
        variance = self._stack(name, k, self.variances)
        if metric == "nll":
            return np.where(np.isfinite(variance), gaussian_nll(residuals, variance), np.nan)
        half_width = gm.COVERAGE_HALF_WIDTHS[metric]
        with np.errstate(all="ignore"):
            inside = (np.abs(residuals) <= half_width * np.sqrt(variance)).astype(float)
        return np.where(np.isfinite(variance), inside, np.nan)

    def pit_values(self, name, k):
        """Probability integral transform of every meta-test query galaxy: the predictive CDF at the truth.

        Uniform on [0, 1] for a calibrated learner; piled at 0 and 1 when its intervals are too narrow, in the
        middle when too wide."""
        from scipy.stats import norm

        residuals = self.residuals(name, k)
        with np.errstate(all="ignore"):
            return norm.cdf(-residuals / np.sqrt(self._stack(name, k, self.variances)))

    def non_finite_draws(self, name, k):
        """Number of draws (over seeds, slices and draws) in which some prediction is not a finite number."""
        if not self.learners[name].regression:
            return 0
        return int(np.sum(np.any(~np.isfinite(self.residuals(name, k)), axis=-1)))

    def blocks(self):
        """The block of every meta-test slice (slices of one block are correlated: the unit of independence)."""
        return np.array([s.get("block", s["slice"]) for s in self.slices])

    def paired_blocks(self, name, reference, k, metric="rmse", confidence=0.95):
        """``name`` minus ``reference`` with a delete-one-block jackknife interval (:func:`galmeta.metrics.block_jackknife`)."""
        if metric in self.PREDICTIVE_METRICS:
            return gm.block_jackknife("mean", self.blocks(), self.predictive_values(name, k, metric),
                                      self.predictive_values(reference, k, metric), confidence=confidence)
        return gm.block_jackknife(metric, self.blocks(), self.residuals(name, k), self.residuals(reference, k),
                                  self.label_array(k), self.scores(name, k), self.scores(reference, k),
                                  threshold=0.0, tail=self.config.tail_rmse, confidence=confidence)

    def paired_icc(self, name, reference, k, metric="rmse"):
        """Intraclass correlation, within blocks, of the per-slice differences ``name`` minus ``reference``."""
        kwargs = dict(labels=self.label_array(k), threshold=0.0, tail=self.config.tail_rmse)
        differences = (gm.per_slice(metric, self.residuals(name, k), scores=self.scores(name, k), **kwargs)
                       - gm.per_slice(metric, self.residuals(reference, k), scores=self.scores(reference, k), **kwargs))
        return gm.intraclass_correlation(differences, self.blocks())

    def label_array(self, k):
        return np.concatenate([self.labels[(k, fold)] for fold in self.config.folds])

    # -- summaries -----------------------------------------------------------------
    def interval(self, name, k, metric="rmse", n_resamples=1000, level="slices"):
        if metric in self.PREDICTIVE_METRICS:
            return gm.bootstrap("mean", self.predictive_values(name, k, metric), n_resamples=n_resamples, level=level)
        return gm.bootstrap(metric, self.residuals(name, k), self.label_array(k), self.scores(name, k),
                            threshold=0.0, tail=self.config.tail_rmse, n_resamples=n_resamples, level=level)

    def best_baseline(self, k):
        """The non-meta baseline with the lowest meta-validation RMSE at this K (mean over folds and seeds)."""
        return self._best_on_validation("baseline", k)

    def best_meta_learner(self, k):
        """The meta-learner with the lowest meta-validation RMSE at this K: the headline learner, chosen without
        looking at meta-test."""
        return self._best_on_validation("meta-learner", k)

    def _best_on_validation(self, group, k):
        scores = {name: np.mean([self.val_rmse[(name, k, f, s)] for f in self.config.folds for s in self.config.seeds])
                  for name in self.names(group)}
        return min(scores, key=scores.get)

    def paired(self, name, reference, k, metric="rmse", n_resamples=1000):
        """Metric of ``name`` minus metric of ``reference`` on the same draws (:func:`galmeta.metrics.paired_difference`)."""
        return gm.paired_difference(metric, self.residuals(name, k), self.residuals(reference, k), self.label_array(k),
                                    self.scores(name, k), self.scores(reference, k),
                                    threshold=0.0, tail=self.config.tail_rmse, n_resamples=n_resamples)

    def chosen_options(self, name, k):
        learner = self.learners[name]
        options = [learner.describe(self.chosen[(name, k, f, s)]) for f in self.config.folds for s in self.config.seeds]
        values, counts = np.unique(options, return_counts=True)
        order = np.argsort(-counts)
        return "; ".join(f"{values[i]}" + (f" ({counts[i]}x)" if len(values) > 1 else "") for i in order[:3])

    # -- tables (galmeta.reports) --------------------------------------------------------
    def summary_rows(self, **kwargs):
        """:func:`galmeta.reports.summary_rows` of this result."""
        from galmeta import reports

        return reports.summary_rows(self, **kwargs)

    def paired_rows(self, **kwargs):
        """:func:`galmeta.reports.paired_rows` of this result."""
        from galmeta import reports

        return reports.paired_rows(self, **kwargs)

    def write(self, folder, **kwargs):
        """:func:`galmeta.reports.write_tables` of this result; returns ``(summary_rows, paired_rows)``."""
        from galmeta import reports

        return reports.write_tables(self, folder, **kwargs)


def _block_of(task, splits):
    """The redshift block holding a slice (``splits``: (z_lo, z_hi, split) triples), else the slice itself."""
    middle = 0.5 * (task.z_lo + task.z_hi)
    for lo, hi, _ in splits or ():
        if lo <= middle < hi:
            return f"z {lo:.2f}-{hi:.2f}"
    return task.name
