"""The learner interface and the meta-learners' adapters: what the protocol (:mod:`galmeta.evaluate`) runs.

A :class:`Learner` estimates the target in a new slice from K galaxies of it: it may learn from
meta-train (:meth:`Learner.fit`, with a :class:`FitContext` that one fold and seed share), lists its
tunable :meth:`Learner.options` and predicts every draw (:meth:`Learner.predict`). The baselines
(:mod:`galmeta.baselines`) and the meta-learners below are all Learners; :func:`make_draws` makes the
support/query draws they all predict.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from galmeta import maml_numpy as mn

__all__ = ["Draws", "make_draws", "flat_task_arrays", "FitContext", "Learner", "AdaptationCurveLearner",
           "VARIANTS", "GradientMetaLearner", "NumpyMAML"]


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

    def subset(self, rows):
        """The draws of some slices only (``rows``: positions along the slice axis)."""
        return Draws(self.split, self.k, self.slice_ids[rows], self.support[rows], self.query[rows])


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




def flat_task_arrays(data, draws):
    """Support inputs/targets and query inputs with the (slice, draw) axes merged into one task axis."""
    support = draws.support.reshape(-1, draws.support.shape[-1])
    query = draws.query.reshape(-1, draws.query.shape[-1])
    return data.X[support], data.y[support], data.X[query]


@dataclass
class FitContext:
    """What the learners of one fold and seed share while they fit.

    Attributes
    ----------
    pooled_epochs : int
        Most epochs of the pooled networks.
    pooled_models : dict
        Pooled networks already trained in this fold and seed (trained once, used by every learner built
        on them).
    """

    pooled_epochs: int = 100
    pooled_models: dict = field(default_factory=dict)


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

    #: The iteration at which the last fit's meta-training diverged and stopped (None: it did not).
    diverged_at = None
    #: Learners that can train all folds and seeds as one batch define ``fit_population(members)``: it takes
    #: ``(data, seed, context)`` triples and returns one fitted copy per member, each equal to what :meth:`fit` gives
    #: (:meth:`GradientMetaLearner.fit_population`). The evaluation then calls it instead of ``fit``.
    fit_population = None
    #: True for learners with their own predictive distribution (:meth:`predictive_variance`); the
    #: evaluation gives the others a variance per K fitted on meta-validation.
    bayesian = False

    def fit(self, data, seed, context: FitContext):
        """Learn from the meta-train (and, for early stopping, meta-validation) slices of ``data``.

        ``context`` (:class:`FitContext`) lives for one fold and seed, so learners can share a trained part.
        """
        return self

    def options(self, k):
        """Options to choose from on meta-validation (``[None]``: nothing to tune)."""
        return [None]

    def predict(self, data, draws, option):
        raise NotImplementedError

    def predictive_variance(self, data, draws, option):
        """Predictive variance of each query galaxy's measured target (its error included), or None for a
        point learner."""
        return None

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


class AdaptationCurveLearner(Learner):
    """A learner whose options are 0..max_steps gradient steps on the support set."""

    max_steps = 10

    def options(self, k):
        return list(range(self.max_steps + 1))

    def curve(self, xs, ys, xq):
        raise NotImplementedError

    def predict_options(self, data, draws):
        xs, ys, xq = flat_task_arrays(data, draws)
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


#: Algorithms of :class:`GradientMetaLearner` beyond :data:`galmeta.algorithms.ALGORITHMS`: MAML with the
#: MAML++ stabilisers (:func:`galmeta.maml_torch.mamlpp_config`): 5 inner steps with learned per-layer,
#: per-step rates, the multi-step loss annealed over the first 500 meta-iterations, and each task's inner
#: gradient clipped to norm 3. Measured on fold 0 after 1,500 iterations of plain MAML, per-task inner
#: gradient norms have medians of 0.6-1.3 and 99th percentiles of 3-9 (K = 20 ... 1): the clip acts on
#: the tail only.
VARIANTS = {"maml++": dict(algorithm="maml", inner_steps=5, step_lrs=True, multi_step_iterations=500,
                           inner_grad_clip=3.0)}


class GradientMetaLearner(AdaptationCurveLearner):
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

    def _prepare(self, data, seed):
        """The MetaLearner of one fold and seed, its task sampler and its meta-validation batches."""
        import torch

        from galmeta import maml_torch as mt

        torch.manual_seed(seed)
        init = mn.init_mlp((data.X.shape[1], *self.hidden, 1), np.random.default_rng(seed), dtype=np.float32)
        model = mt.MetaLearner(mt.MLP.from_numpy(init), device=self.device, **self.meta_config(seed))
        k_min, k_max = self.support_range
        samplers = {k: data.sampler("train", k, self.n_query) for k in range(k_min, k_max + 1)}

        def sample(rng, n_tasks):  # one K per meta-batch (the tasks of a batch share their shapes)
            k = int(rng.integers(k_min, k_max + 1)) if k_min < k_max else k_min
            return [a.astype(np.float32) for a in samplers[k].sample(rng, n_tasks)]

        val = [[a.astype(np.float32) for a in
                data.sampler("val", k, self.n_query).sample(np.random.default_rng(seed + 1), n_tasks=100)]
               for k in self.validation_ks]
        return model, sample, val

    def fit(self, data, seed, context):
        self.model, sample, val = self._prepare(data, seed)
        self.model.fit(sample, self.iterations, val_tasks=val, eval_every=self.eval_every, patience=self.patience,
                       progress=False, rng=np.random.default_rng(seed), on_divergence="stop")
        self.diverged_at = self.model.diverged_at
        return self

    def fit_population(self, members):
        """:meth:`fit` for many ``(data, seed, context)`` at once, trained as one population
        (:mod:`galmeta.population`); returns one fitted copy of this learner per member, in order."""
        import copy

        from galmeta.population import fit_population

        prepared = [self._prepare(data, seed) for data, seed, _ in members]
        fit_population([m for m, _, _ in prepared], [s for _, s, _ in prepared], self.iterations,
                       val_tasks=[v for _, _, v in prepared], eval_every=self.eval_every, patience=self.patience,
                       progress=False, rngs=[np.random.default_rng(seed) for _, seed, _ in members],
                       on_divergence="stop")
        fitted = []
        for model, _, _ in prepared:
            twin = copy.copy(self)
            twin.model, twin.diverged_at = model, model.diverged_at
            fitted.append(twin)
        return fitted

    def curve(self, xs, ys, xq):
        return self.model.adaptation_predictions(xs.astype(np.float32), ys.astype(np.float32), xq.astype(np.float32),
                                                 self.max_steps)


class NumpyMAML(AdaptationCurveLearner):
    """The from-scratch MAML of notebook 03 (:mod:`galmeta.maml_numpy`), trained like the others: a check."""

    group = "meta-learner"

    def __init__(self, iterations, n_support=10, n_query=20, inner_lr=0.01, hidden=(40, 40), max_steps=10):
        self.name = "MAML (NumPy check)"
        self.iterations, self.n_support, self.n_query = int(iterations), n_support, n_query
        self.inner_lr, self.hidden, self.max_steps = inner_lr, hidden, max_steps

    def fit(self, data, seed, context):
        sampler = data.sampler("train", self.n_support, self.n_query)
        init = mn.init_mlp((data.X.shape[1], *self.hidden, 1), np.random.default_rng(seed))
        self.params = mn.meta_train(init, lambda r: sampler.sample(r, 25), self.iterations, np.random.default_rng(seed),
                                    inner_lr=self.inner_lr, progress=False).params
        return self

    def curve(self, xs, ys, xq):
        return mn.adaptation_predictions(self.params, xs, ys, xq, self.inner_lr, self.max_steps)

