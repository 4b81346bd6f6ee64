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
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from galmeta import maml_numpy as mn
from galmeta import metrics as gm

__all__ = [
    "TAIL_RMSE",
    "Draws",
    "make_draws",
    "Learner",
    "GradientMetaLearner",
    "VARIANTS",
    "NumpyMAML",
    "EvaluationConfig",
    "default_learners",
    "run_evaluation",
    "EvaluationResults",
]

#: A draw whose RMSE of u - r exceeds this (mag) counts in the tail fraction: about twice the typical RMSE
#: of the pooled network (0.16). A few draws of every learner, the oracle's included, pass it (query sets
#: with unusual galaxies); many more mean adaptation that goes wrong.
TAIL_RMSE = 0.3


# ---------------------------------------------------------------------------
# Draws
# ---------------------------------------------------------------------------
@dataclass
class Draws:
    """Support/query draws in every slice of one split, for one K: ``support (S, D, K)``, ``query (S, D, Q)``."""

    split: str
    k: int
    slice_ids: np.ndarray
    support: np.ndarray
    query: np.ndarray

    @property
    def n_slices(self):
        return self.support.shape[0]


def make_draws(data, split, k, n_draws, n_query, seed):
    """``n_draws`` seeded draws of K support and ``n_query`` query galaxies (disjoint) in every slice of ``split``."""
    from galmeta.tasks import TooFewGalaxiesError

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a whole number of support galaxies >= 1, got {k!r}")
    for name, value in (("n_draws", n_draws), ("n_query", n_query)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    tasks = data.tasks[split]
    rng = np.random.default_rng([int(seed), data.fold, int(k), {"train": 0, "val": 1, "test": 2}[split]])
    support = np.empty((len(tasks), n_draws, k), dtype=np.int64)
    query = np.empty((len(tasks), n_draws, n_query), dtype=np.int64)
    for s, task in enumerate(tasks):
        if task.size < k + n_query:
            raise TooFewGalaxiesError(
                f"slice {task.name} ({split}, fold {data.fold}) has {task.size} galaxies but K + n_query = "
                f"{k + n_query}; lower n_query or K, or raise min_size when building tasks"
            )
        for d in range(n_draws):
            pick = rng.choice(task.indices, size=k + n_query, replace=False)
            support[s, d], query[s, d] = pick[:k], pick[k:]
    return Draws(split, int(k), np.arange(len(tasks)), support, query)


# ---------------------------------------------------------------------------
# The learner interface
# ---------------------------------------------------------------------------
class Learner:
    """One way of estimating u - r in a new slice from K galaxies of it.

    Subclasses set :attr:`name`, override :meth:`fit` if they learn from
    meta-train, list their tunable :meth:`options` and implement :meth:`predict`.
    Predictions are u - r in magnitudes, shape ``draws.query.shape``.

    Attributes
    ----------
    group : {"meta-learner", "baseline", "reference"}
        References (the oracle, the ceiling) are shown but never compete.
    regression : bool
        False for learners that only score the label (their residuals are NaN).
    """

    name = "learner"
    group = "baseline"
    regression = True

    def fit(self, data, seed, shared):
        """Learn from the meta-train (and, for early stopping, meta-validation) slices of ``data``.

        ``shared`` is a dict that lives for one fold and seed, so learners can share a trained part.
        """
        return self

    def options(self, k):
        """Options to choose from on meta-validation (``[None]``: nothing to tune)."""
        return [None]

    def predict(self, data, draws, option):
        raise NotImplementedError

    def predict_options(self, data, draws):
        """Predictions for every option (override when one pass computes them all)."""
        return {option: self.predict(data, draws, option) for option in self.options(draws.k)}

    def margin(self, data, predictions):
        """The label score: positive means red. Predictions of the target minus this fold's red/blue threshold."""
        return predictions - data.label_threshold

    def describe(self, option):
        return "-" if option is None else str(option)

    def curve_key(self, option):
        """``(family, steps)`` when an option is a number of adaptation steps (for step-curve plots), else None."""
        return None


class _AdaptationCurveLearner(Learner):
    """A learner whose options are 0..max_steps gradient steps on the support set."""

    max_steps = 10

    def options(self, k):
        return list(range(self.max_steps + 1))

    def curve(self, xs, ys, xq):
        raise NotImplementedError

    def predict_options(self, data, draws):
        from galmeta.baselines import _flat_task_arrays

        xs, ys, xq = _flat_task_arrays(data, draws)
        with np.errstate(all="ignore"):
            curve = np.asarray(self.curve(xs, ys, xq), float)
        return {steps: curve[steps, ..., 0].reshape(draws.query.shape) + data.target_mean
                for steps in range(self.max_steps + 1)}

    def predict(self, data, draws, option):
        return self.predict_options(data, draws)[option]

    def describe(self, option):
        return f"steps={option}"

    def curve_key(self, option):
        return (None, option)


#: Algorithms of :class:`GradientMetaLearner` beyond :data:`galmeta.maml_torch.ALGORITHMS`: MAML with the
#: MAML++ stabilisers (:func:`galmeta.maml_torch.mamlpp_config`): 5 inner steps with learned per-layer,
#: per-step rates, the multi-step loss annealed over the first 500 meta-iterations, and each task's inner
#: gradient clipped to norm 3. Measured on fold 0 after 1,500 iterations of plain MAML, per-task inner
#: gradient norms have medians of 0.6-1.3 and 99th percentiles of 3-9 (K = 20 ... 1): the clip acts on
#: the tail only.
VARIANTS = {"maml++": dict(algorithm="maml", inner_steps=5, step_lrs=True, multi_step_iterations=500,
                           inner_grad_clip=3.0)}


class GradientMetaLearner(_AdaptationCurveLearner):
    """A member of the MAML family (:class:`galmeta.maml_torch.MetaLearner`), meta-trained on K-shot slices.

    Parameters
    ----------
    name : str
    algorithm : str
        ``"maml"``, ``"fomaml"``, ``"metasgd"``, ``"anil"``, ``"reptile"`` or ``"maml++"`` (:data:`VARIANTS`).
    iterations : int
        Most meta-iterations (early stopping on meta-validation decides).
    n_support : int or (int, int), default 10
        K of the meta-training tasks, or a range ``(k_min, k_max)``: every meta-batch then draws its K
        uniformly from ``k_min..k_max``, and early stopping averages the validation loss over
        ``validation_ks`` (default ``(k_min, k_max)``).
    """

    group = "meta-learner"

    def __init__(self, name, algorithm, iterations, n_support=10, n_query=20, inner_lr=0.01, meta_batch=25,
                 hidden=(40, 40), max_steps=10, eval_every=50, patience=20, device=None, validation_ks=None):
        if algorithm not in VARIANTS:
            from galmeta.maml_torch import ALGORITHMS

            if algorithm not in ALGORITHMS:
                raise ValueError(f"algorithm={algorithm!r} is not one of {ALGORITHMS + tuple(VARIANTS)}")
        sizes = (n_support, n_support) if np.isscalar(n_support) else tuple(n_support)
        if len(sizes) != 2 or not 1 <= sizes[0] <= sizes[1]:
            raise ValueError(f"n_support must be K >= 1 or a range (k_min, k_max) with 1 <= k_min <= k_max, got {n_support!r}")
        self.name, self.algorithm, self.iterations = name, algorithm, int(iterations)
        self.n_support, self.n_query, self.inner_lr, self.meta_batch = n_support, n_query, inner_lr, meta_batch
        self.support_range = (int(sizes[0]), int(sizes[1]))
        self.validation_ks = tuple(validation_ks) if validation_ks else tuple(sorted(set(self.support_range)))
        self.hidden, self.max_steps, self.eval_every, self.patience, self.device = hidden, max_steps, eval_every, patience, device

    def meta_config(self, seed):
        """The :class:`galmeta.maml_torch.MetaConfig` keyword arguments of this learner."""
        options = dict(algorithm=self.algorithm, inner_steps=1)
        options.update(VARIANTS.get(self.algorithm, {}))
        return dict(options, inner_lr=self.inner_lr, meta_batch=self.meta_batch, seed=seed)

    def fit(self, data, seed, shared):
        import torch

        from galmeta import maml_torch as mt

        torch.manual_seed(seed)
        init = mn.init_mlp((data.X.shape[1], *self.hidden, 1), np.random.default_rng(seed), dtype=np.float32)
        self.model = mt.MetaLearner(mt.MLP.from_numpy(init), device=self.device, **self.meta_config(seed))
        k_min, k_max = self.support_range
        samplers = {k: data.sampler("train", k, self.n_query) for k in range(k_min, k_max + 1)}

        def sample(rng, n_tasks):  # one K per meta-batch (the tasks of a batch share their shapes)
            k = int(rng.integers(k_min, k_max + 1)) if k_min < k_max else k_min
            return [a.astype(np.float32) for a in samplers[k].sample(rng, n_tasks)]

        val = [[a.astype(np.float32) for a in
                data.sampler("val", k, self.n_query).sample(np.random.default_rng(seed + 1), n_tasks=100)]
               for k in self.validation_ks]
        self.model.fit(sample, self.iterations, val_tasks=val, eval_every=self.eval_every, patience=self.patience,
                       progress=False, rng=np.random.default_rng(seed), on_divergence="stop")
        shared.setdefault("diverged", {})[self.name] = self.model.diverged_at
        return self

    def curve(self, xs, ys, xq):
        return self.model.adaptation_predictions(xs.astype(np.float32), ys.astype(np.float32), xq.astype(np.float32),
                                                 self.max_steps)


class NumpyMAML(_AdaptationCurveLearner):
    """The from-scratch MAML of notebook 03 (:mod:`galmeta.maml_numpy`), trained like the others: a check."""

    group = "meta-learner"

    def __init__(self, iterations, n_support=10, n_query=20, inner_lr=0.01, hidden=(40, 40), max_steps=10):
        self.name = "MAML (NumPy check)"
        self.iterations, self.n_support, self.n_query = int(iterations), n_support, n_query
        self.inner_lr, self.hidden, self.max_steps = inner_lr, hidden, max_steps

    def fit(self, data, seed, shared):
        sampler = data.sampler("train", self.n_support, self.n_query)
        init = mn.init_mlp((data.X.shape[1], *self.hidden, 1), np.random.default_rng(seed))
        self.params = mn.meta_train(init, lambda r: sampler.sample(r, 25), self.iterations, np.random.default_rng(seed),
                                    inner_lr=self.inner_lr, progress=False).params
        return self

    def curve(self, xs, ys, xq):
        return mn.adaptation_predictions(self.params, xs, ys, xq, self.inner_lr, self.max_steps)


# ---------------------------------------------------------------------------
# Configuration and the run
# ---------------------------------------------------------------------------
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
            results.add_labels(k, data.is_red[draws.query], data.target[draws.query], draws)
        for seed in config.seeds:
            shared = {"pooled_config": {"n_epochs": config.pooled_epochs}}
            for learner in learners:
                learner.fit(data, seed, shared)
                if shared.get("diverged", {}).get(learner.name) is not None:
                    results.diverged[(learner.name, fold, seed)] = shared["diverged"][learner.name]
                for k in config.ks:
                    truth_val = data.target[val_draws[k].query]
                    val_scores = {o: _rmse(p, truth_val) for o, p in learner.predict_options(data, val_draws[k]).items()}
                    chosen = min(val_scores, key=val_scores.get) if learner.regression else next(iter(val_scores))
                    test_predictions = learner.predict_options(data, test_draws[k])
                    truth = data.target[test_draws[k].query]
                    results.add(learner, k, fold, seed, test_predictions[chosen], truth, chosen, val_scores[chosen],
                                {o: _rmse(p, truth) for o, p in test_predictions.items()},
                                learner.margin(data, test_predictions[chosen]))
            if progress:
                progress(f"fold {fold} seed {seed} done ({time.perf_counter() - start:.0f} s)")
    results.seconds = time.perf_counter() - start
    return results


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------
@dataclass
class EvaluationResults:
    """Everything :func:`run_evaluation` measured, indexed by learner, K, fold and seed.

    ``predictions[(learner, k)][seed][fold]`` is an array ``(S_fold, D, Q)``; slices of all folds are
    concatenated in :meth:`residuals`.
    """

    config: EvaluationConfig
    learners: dict
    target_name: str = "u − r"
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

    # -- recording ------------------------------------------------------------
    def add_slices(self, data, draws):
        for s, task in zip(draws.slice_ids, [data.tasks["test"][i] for i in draws.slice_ids]):
            self.slices.append({"fold": data.fold, "slice": task.name, "z_lo": task.z_lo, "z_hi": task.z_hi,
                                "n_galaxies": task.size})

    def add_labels(self, k, labels, truth, draws):
        self.labels.setdefault(k, []).append(labels)
        self.truth.setdefault(k, []).append(truth)
        self.draws.setdefault(k, []).append(draws)

    def add(self, learner, k, fold, seed, predictions, truth, option, val_rmse, option_rmse, margins):
        key = (learner.name, k)
        self.predictions.setdefault(key, {}).setdefault(seed, {})[fold] = predictions
        self.margins.setdefault(key, {}).setdefault(seed, {})[fold] = margins
        self.chosen[(learner.name, k, fold, seed)] = option
        self.val_rmse[(learner.name, k, fold, seed)] = val_rmse
        self.option_rmse[(learner.name, k, fold, seed)] = option_rmse

    @classmethod
    def merge(cls, parts):
        """One result from runs over disjoint folds with the same learners, seeds, K and draws (in fold order).

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
            if not all(same.values()) or list(part.learners) != list(first.learners):
                differ = [key for key, ok in same.items() if not ok] or ["learners"]
                raise ValueError(f"the parts were run with different settings ({', '.join(differ)}); they cannot be merged")
        merged = cls(config=dataclasses.replace(first.config, folds=tuple(folds)), learners=first.learners,
                     target_name=first.target_name)
        for part in parts:
            merged.slices += part.slices
            merged.label_thresholds.update(part.label_thresholds)
            merged.chosen.update(part.chosen)
            merged.val_rmse.update(part.val_rmse)
            merged.option_rmse.update(part.option_rmse)
            merged.seconds += part.seconds
            merged.diverged.update(getattr(part, "diverged", {}))
            for k in part.labels:
                merged.labels.setdefault(k, []).extend(part.labels[k])
                merged.truth.setdefault(k, []).extend(part.truth[k])
                merged.draws.setdefault(k, []).extend(part.draws[k])
            for store in ("predictions", "margins"):
                for key, per_seed in getattr(part, store).items():
                    target = getattr(merged, store).setdefault(key, {})
                    for seed, per_fold in per_seed.items():
                        target.setdefault(seed, {}).update(per_fold)
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
        for k in self.ks:
            for mine, theirs in zip(self.draws[k], other.draws[k]):
                if not (np.array_equal(mine.support, theirs.support) and np.array_equal(mine.query, theirs.query)):
                    raise ValueError(f"the runs drew different support/query galaxies at K={k}")
        combined = copy.copy(self)
        combined.learners = {**self.learners, **other.learners}
        names = set(other.learners)
        for store in ("predictions", "margins", "chosen", "val_rmse", "option_rmse", "diverged"):
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
        per_seed = (self.predictions if store is None else store)[(name, k)]
        return np.stack([np.concatenate([per_seed[seed][fold] for fold in self.config.folds]) for seed in self.config.seeds])

    def scores(self, name, k):
        """Label margins (positive: predicted red), shape ``(seeds, S, D, Q)``."""
        return self._stack(name, k, self.margins)

    def residuals(self, name, k):
        """Predicted minus true u - r, shape ``(seeds, S, D, Q)`` (NaN for label-only learners)."""
        if not self.learners[name].regression:
            return np.full_like(self._stack(name, k), np.nan)
        residuals = self._stack(name, k) - np.concatenate(self.truth[k])[None]
        # a prediction that is not a number (an adaptation that overflowed) is an infinite error, so that
        # RMSE, worst draw and the tail fraction count it instead of NaN hiding it
        return np.where(np.isfinite(residuals), residuals, np.inf)

    def non_finite_draws(self, name, k):
        """Number of draws (over seeds, slices and draws) in which some prediction is not a finite number."""
        if not self.learners[name].regression:
            return 0
        return int(np.sum(np.any(~np.isfinite(self.residuals(name, k)), axis=-1)))

    def label_array(self, k):
        return np.concatenate(self.labels[k])

    # -- summaries -----------------------------------------------------------------
    def interval(self, name, k, metric="rmse", n_resamples=1000, level="slices"):
        return gm.bootstrap(metric, self.residuals(name, k), self.label_array(k), self.scores(name, k),
                            threshold=0.0, tail=self.config.tail_rmse, n_resamples=n_resamples, level=level)

    def best_baseline(self, k):
        """The non-meta baseline with the lowest meta-validation RMSE at this K (mean over folds and seeds)."""
        scores = {name: np.mean([self.val_rmse[(name, k, f, s)] for f in self.config.folds for s in self.config.seeds])
                  for name in self.names("baseline")}
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

    #: ROC AUC is available (``interval(name, k, "roc_auc")``) but left out by default: ranking every
    #: resample's scores makes it the slowest metric by far, and balanced accuracy answers the red/blue question.
    SUMMARY_METRICS = ("rmse", "sigma_nmad", "bias", "worst_draw_rmse", "tail_fraction", "balanced_accuracy")

    def summary_rows(self, metrics=SUMMARY_METRICS, n_resamples=1000):
        """One row per learner and K: each metric as an :class:`galmeta.metrics.Interval`."""
        rows = []
        for k in self.ks:
            for name, learner in self.learners.items():
                row = {"learner": name, "group": learner.group, "K": k, "chosen": self.chosen_options(name, k)}
                for metric in metrics:
                    if metric in ("balanced_accuracy", "roc_auc") or learner.regression:
                        row[metric] = self.interval(name, k, metric, n_resamples)
                    else:
                        row[metric] = None
                rows.append(row)
        return rows

    def paired_rows(self, metrics=("rmse", "sigma_nmad", "balanced_accuracy"), n_resamples=1000):
        """For every K and meta-learner: the paired difference to the best non-meta baseline (the headline)."""
        rows = []
        for k in self.ks:
            reference = self.best_baseline(k)
            for name in self.names("meta-learner") + [n for n in self.names("baseline") if n != reference]:
                row = {"K": k, "learner": name, "group": self.learners[name].group, "reference": reference}
                for metric in metrics:
                    row[metric] = self.paired(name, reference, k, metric, n_resamples)
                rows.append(row)
        return rows

    def slice_rows(self):
        """Per learner, K, seed and slice: RMSE, bias, sigma_NMAD, worst draw and balanced accuracy."""
        rows = []
        n_slices = len(self.slices)
        for (name, k), _ in self.predictions.items():
            learner = self.learners[name]
            residuals, scores, labels = self.residuals(name, k), self.scores(name, k), self.label_array(k)
            for i_seed, seed in enumerate(self.config.seeds):
                for s in range(n_slices):
                    r = residuals[i_seed, s]
                    predicted = scores[i_seed, s] >= 0
                    rows.append({**self.slices[s], "learner": name, "K": k, "seed": seed,
                                 "chosen": learner.describe(self.chosen[(name, k, self.slices[s]["fold"], seed)]),
                                 "rmse": float(np.sqrt(np.mean(r ** 2))), "bias": float(np.mean(r)),
                                 "sigma_nmad": float(gm.sigma_nmad(r.ravel())),
                                 "worst_draw_rmse": float(np.sqrt(np.mean(r ** 2, axis=-1)).max()),
                                 "balanced_accuracy": float(gm.balanced_accuracy(labels[s].ravel(), predicted.ravel()))})
        return rows

    # -- output -------------------------------------------------------------------------
    def write(self, folder, n_resamples=1000, summary=None, paired=None):
        """Write ``redness_per_slice.csv``, ``redness_summary.{csv,md}`` and ``redness_paired.{csv,md}``.

        ``summary`` and ``paired`` are rows already computed by :meth:`summary_rows` and :meth:`paired_rows`
        (computed here when not given).

        Returns
        -------
        summary_rows, paired_rows : list of dict
            As :meth:`summary_rows` and :meth:`paired_rows` computed them (for figures, without a second bootstrap).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv(folder / "redness_per_slice.csv", self.slice_rows())
        summary = summary if summary is not None else self.summary_rows(n_resamples=n_resamples)
        paired = paired if paired is not None else self.paired_rows(n_resamples=n_resamples)
        _write_csv(folder / "redness_summary.csv", _intervals_to_columns(summary))
        _write_csv(folder / "redness_paired.csv", _intervals_to_columns(paired))
        (folder / "redness_summary.md").write_text(summary_markdown(summary) + "\n")
        (folder / "redness_paired.md").write_text(paired_markdown(paired, self) + "\n")
        return summary, paired


def _intervals_to_columns(rows):
    out = []
    for row in rows:
        flat = {}
        for key, value in row.items():
            if isinstance(value, gm.Interval):
                flat.update({key: f"{value.estimate:.5f}", f"{key}_lo": f"{value.lo:.5f}", f"{key}_hi": f"{value.hi:.5f}",
                             f"{key}_seed_sd": f"{value.seed_sd:.5f}"})
            elif value is None:
                flat.update({key: "", f"{key}_lo": "", f"{key}_hi": "", f"{key}_seed_sd": ""})
            else:
                flat[key] = value
        out.append(flat)
    return out


def _write_csv(path, rows):
    keys = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.5f}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def _cell(value, spec=".3f"):
    return "—" if value is None else format(value, spec)


def summary_markdown(rows, metrics=("rmse", "sigma_nmad", "worst_draw_rmse", "tail_fraction", "balanced_accuracy")):
    """The summary table in Markdown: estimate [95% slice-bootstrap interval]."""
    header = "| K | learner | " + " | ".join(metrics) + " | chosen on meta-validation |"
    lines = [header, "|" + "---|" * (len(metrics) + 3)]
    for row in rows:
        lines.append(f"| {row['K']} | {row['learner']} | " + " | ".join(_cell(row[m]) for m in metrics)
                     + f" | {row['chosen']} |")
    return "\n".join(lines)


def paired_markdown(rows, results=None):
    """The headline table: paired differences to the best non-meta baseline, with slices and seeds."""
    lines = []
    if results is not None:
        lines.append(f"Paired differences (learner minus the best non-meta baseline chosen on meta-validation), "
                     f"{len(results.slices)} meta-test slices x {results.config.n_draws} draws, "
                     f"{len(results.config.seeds)} training seed(s); 95% interval from resampling slices, then draws; "
                     f"seed sd = standard deviation of the difference over training seeds.\n")
        n_draws = len(results.config.seeds) * len(results.slices) * results.config.n_draws
        failed = [f"{name} at K={k}: {n} of {n_draws} draws"
                  for k in results.ks for name in results.learners if (n := results.non_finite_draws(name, k))]
        if failed:
            lines.append("Predictions that are not finite (adaptation overflowed; counted as infinite errors): "
                         + "; ".join(failed) + ".\n")
        diverged = getattr(results, "diverged", {})
        if diverged:
            lines.append("Meta-trainings that diverged (stopped there, predicting with their best meta-validation "
                         "state): " + "; ".join(f"{name}, fold {fold}, seed {seed}, iteration {it}"
                                                for (name, fold, seed), it in sorted(diverged.items())) + ".\n")
    lines += ["| K | learner | reference | ΔRMSE (mag) | seed sd | Δσ_NMAD (mag) | Δ balanced accuracy |",
              "|---|---|---|---|---|---|---|"]
    signed = lambda iv: f"{iv.estimate:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}]"
    for row in rows:
        lines.append(f"| {row['K']} | {row['learner']} | {row['reference']} | {signed(row['rmse'])} | "
                     f"{row['rmse'].seed_sd_text} | {signed(row['sigma_nmad'])} | {signed(row['balanced_accuracy'])} |")
    return "\n".join(lines)
