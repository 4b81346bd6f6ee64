"""Baselines for few-shot redness estimation, each one :class:`galmeta.learners.Learner`.

Introduced in ``notebooks/06_redness_evaluation.py``.

* :class:`PooledNetwork`: one network fitted to all meta-train galaxies (no task information).
* :class:`FineTunedPooledNetwork`: the same, fine-tuned on each support set with plain SGD
  (Chen et al. 2019; Tian et al. 2020).
* :class:`PooledPlusOffset`: a pooled model (network or ridge) plus the mean support residual,
  shrunk towards zero by an empirical-Bayes factor estimated on meta-train. When slices differ
  mainly by an additive colour offset, this is the strongest simple baseline.
* :class:`PooledRidge`: a pooled linear model; :class:`PooledBoosting`: pooled gradient boosting.
* :class:`galmeta.hierarchical.HierarchicalLinear` (its own module): a pooled model plus a random
  intercept and random slopes per slice, by empirical Bayes.
* :class:`PerTaskRidge` and :class:`NearestNeighbours`: fitted on each support set alone.
* :class:`PooledNetworkWithRedshift`: the oracle, given the hidden redshift.
* :class:`PerfectTarget` and :class:`SingleFeatureCut`: the label's ceiling and the best
  one-feature cut chosen on meta-train.
"""
from __future__ import annotations

import numpy as np

from galmeta import maml_numpy as mn
from galmeta.learners import FitContext, Learner, flat_task_arrays
from galmeta.leaks import best_threshold_accuracy
from galmeta.training import EarlyStopping

__all__ = [
    "PooledMLP",
    "offset_shrinkage",
    "PooledNetwork",
    "PooledBoosting",
    "FineTunedPooledNetwork",
    "PooledRidge",
    "PooledPlusOffset",
    "PerTaskRidge",
    "NearestNeighbours",
    "PooledNetworkWithRedshift",
    "PerfectTarget",
    "SingleFeatureCut",
    "redshift_feature",
]


class PooledMLP:
    """One network fitted to galaxies pooled over tasks, with Adam and early stopping (NumPy).

    The architecture of the meta-learners (:mod:`galmeta.maml_numpy`), so fine-tuning it is
    comparable to adapting them.

    Parameters
    ----------
    hidden : tuple of int, default (40, 40)
    n_epochs : int, default 100
        At most this many passes over the data.
    patience : int, default 10
        Stop after this many epochs without a better validation loss (needs validation data).
    batch_size : int, default 256
    lr : float, default 1e-3
    seed : int, default 0
    """

    def __init__(self, hidden=(40, 40), n_epochs=100, patience=10, batch_size=256, lr=1e-3, seed=0):
        self.hidden, self.n_epochs, self.patience = hidden, n_epochs, patience
        self.batch_size, self.lr, self.seed = batch_size, lr, seed
        self.params_ = None

    def fit(self, X, y, X_val=None, y_val=None):
        X, y = np.asarray(X, float), np.asarray(y, float).reshape(len(X), -1)
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
            raise ValueError("X and y must be finite; impute missing values first (galmeta.tasks.FeaturePreprocessor)")
        rng = np.random.default_rng(self.seed)
        params = mn.init_mlp((X.shape[1], *self.hidden, y.shape[1]), rng)
        optimiser = mn.Adam(params, lr=self.lr)
        stopper = EarlyStopping(self.patience)  # the same early stopping as the meta-learners'
        self.epochs_ = 0
        for _ in range(int(self.n_epochs)):
            order = rng.permutation(len(X))
            for start in range(0, len(X), self.batch_size):
                batch = order[start:start + self.batch_size]
                _, grads = mn.loss_and_gradient(params, X[batch][None], y[batch][None])
                optimiser.step(params, [(dW[0], db[0]) for dW, db in grads])
            self.epochs_ += 1
            if X_val is not None:
                val = float(np.mean((mn.forward(params, np.asarray(X_val, float)) - np.asarray(y_val, float).reshape(len(X_val), -1)) ** 2))
                if stopper.update(val, lambda: [(W.copy(), b.copy()) for W, b in params]):
                    break
        self.params_ = stopper.best_state or params
        return self

    def predict(self, X):
        if self.params_ is None:
            raise RuntimeError("call fit() before predict()")
        return mn.forward(self.params_, np.asarray(X, float))


def redshift_feature(data):
    """The hidden redshift, standardised on meta-train galaxies, as a column (for the oracle only)."""
    train_z = data.redshift[data.train_indices()]
    return ((data.redshift - train_z.mean()) / train_z.std())[:, None]


def _pooled_network(data, seed, context: FitContext, with_redshift=False):
    """The pooled network of this fold and seed, trained once and used by every learner built on it."""
    key = ("pooled network", with_redshift, seed)
    if key not in context.pooled_models:
        X = np.concatenate([data.X, redshift_feature(data)], axis=1) if with_redshift else data.X
        train, val = data.indices("train"), data.indices("val")
        context.pooled_models[key] = PooledMLP(seed=seed, n_epochs=context.pooled_epochs).fit(
            X[train], data.y[train], X[val], data.y[val])
    return context.pooled_models[key]


def offset_shrinkage(residuals, task_ids):
    """Empirical-Bayes pieces of a per-task offset: between-task variance tau^2 and within-task variance sigma^2.

    With residuals ``e = y - f(x)`` of a pooled model, model a task's offset ``mu_t ~ N(0, tau^2)`` and
    ``e = mu_t + noise(sigma^2)``. The mean of K support residuals then estimates ``mu_t`` with variance
    ``sigma^2 / K``, and the posterior mean shrinks it by ``B = tau^2 / (tau^2 + sigma^2 / K)``.
    Moment estimates: ``sigma^2`` is the pooled within-task variance; ``tau^2`` is the variance of the
    task means minus their sampling variance (floored at zero).

    Parameters
    ----------
    residuals : ndarray, shape (n,)
    task_ids : ndarray of int, shape (n,)

    Returns
    -------
    tau2, sigma2 : float
    """
    residuals, task_ids = np.asarray(residuals, float), np.asarray(task_ids)
    tasks = np.unique(task_ids)
    if tasks.size < 2:
        raise ValueError("need residuals of at least two tasks to estimate a between-task variance")
    means, sizes, within = [], [], []
    for t in tasks:
        e = residuals[task_ids == t]
        means.append(e.mean())
        sizes.append(e.size)
        within.append(e.var(ddof=1) * (e.size - 1))
    sizes = np.asarray(sizes, float)
    sigma2 = float(np.sum(within) / np.sum(sizes - 1))
    tau2 = float(max(np.var(means, ddof=1) - np.mean(sigma2 / sizes), 0.0))
    return tau2, sigma2


class _Pooled(Learner):
    """A learner whose prediction is a fitted pooled function of the inputs, plus nothing."""

    def base_predict(self, data, galaxies):
        raise NotImplementedError

    def training_predict(self, data, galaxies):
        """Predictions for meta-train galaxies as honest as the model allows (for estimating priors on
        their residuals): in-sample here, out-of-fold where a model overfits its training galaxies."""
        return self.base_predict(data, galaxies)

    def predict(self, data, draws, option=None):
        return self.base_predict(data, draws.query) + data.target_mean


class PooledNetwork(_Pooled):
    """The pooled network with no adaptation: ignores the support set."""

    name = "pooled network"

    def fit(self, data, seed, context):
        self.model = _pooled_network(data, seed, context)
        return self

    def base_predict(self, data, galaxies):
        return self.model.predict(data.X[galaxies])[..., 0]


class PooledRidge(_Pooled):
    """A ridge regression fitted to all meta-train galaxies (the pooled linear model)."""

    name = "pooled ridge"

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, data, seed, context):
        from sklearn.linear_model import Ridge

        train = data.indices("train")
        self.model = Ridge(alpha=self.alpha).fit(data.X[train], data.y[train, 0])
        return self

    def base_predict(self, data, galaxies):
        return self.model.predict(data.X[galaxies.reshape(-1)]).reshape(galaxies.shape)


class PooledBoosting(_Pooled):
    """Gradient boosting (scikit-learn's ``HistGradientBoostingRegressor``) fitted to all meta-train galaxies.

    Its options (learning rate, leaves per tree) are chosen once per fold and seed by the RMSE of
    meta-validation galaxies; the number of trees by early stopping on a held-out tenth of meta-train. For
    meta-train galaxies, :meth:`training_predict` gives out-of-fold predictions (each redshift block
    predicted by a model fitted without it), because boosting fits its own training galaxies too well
    for their residuals to measure how slices scatter.

    Parameters
    ----------
    settings : tuple of dict
        The candidate options.
    """

    name = "pooled gradient boosting"

    def __init__(self, settings=({"learning_rate": 0.1, "max_leaf_nodes": 15},
                                 {"learning_rate": 0.1, "max_leaf_nodes": 31},
                                 {"learning_rate": 0.05, "max_leaf_nodes": 31})):
        self.settings = tuple(dict(s) for s in settings)

    def _model(self, setting, seed):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=500, early_stopping=True, validation_fraction=0.1,
                                             n_iter_no_change=20, random_state=seed, **setting)

    def fit(self, data, seed, context):
        key = ("pooled gradient boosting", seed)
        if key not in context.pooled_models:
            context.pooled_models[key] = self._fit(data, seed)
        self.setting_, self.predictions_ = context.pooled_models[key]
        return self

    def _fit(self, data, seed):
        train, val = data.indices("train"), data.indices("val")
        X, y = data.X, data.y[:, 0]
        models = [self._model(setting, seed).fit(X[train], y[train]) for setting in self.settings]
        val_mse = [np.mean((model.predict(X[val]) - y[val]) ** 2) for model in models]
        best = int(np.argmin(val_mse))
        predictions = models[best].predict(X)
        # out-of-fold predictions for meta-train galaxies: leave one redshift block out at a time (or, where
        # tasks are not cut from blocks, as in SAMI's environments, one of five groups of tasks)
        train_blocks = [(lo, hi) for lo, hi, split in data.splits if split == "train"]
        if train_blocks:
            held_out = [train[(data.redshift[train] >= lo) & (data.redshift[train] < hi)] for lo, hi in train_blocks]
        else:
            tasks = data.tasks["train"]
            held_out = [np.concatenate([t.indices for t in tasks[i::5]]) for i in range(min(5, len(tasks)))]
        out_of_fold = predictions.copy()
        for held in held_out:
            rest = np.setdiff1d(train, held)
            if held.size and rest.size:
                out_of_fold[held] = self._model(self.settings[best], seed).fit(X[rest], y[rest]).predict(X[held])
        return self.settings[best], (predictions, out_of_fold)

    def base_predict(self, data, galaxies):
        return self.predictions_[0][galaxies]

    def training_predict(self, data, galaxies):
        return self.predictions_[1][galaxies]


class PooledPlusOffset(Learner):
    """A pooled model plus the shrunk mean residual of the support set (an empirical-Bayes per-slice offset).

    Parameters
    ----------
    base : Learner
        A pooled learner (:class:`PooledNetwork` or :class:`PooledRidge`).
    """

    def __init__(self, base):
        self.base = base
        self.name = f"{base.name} + slice offset"

    def fit(self, data, seed, context):
        self.base.fit(data, seed, context)
        train_ids = np.concatenate([np.full(t.size, i) for i, t in enumerate(data.tasks["train"])])
        galaxies = np.concatenate([t.indices for t in data.tasks["train"]])
        residuals = data.y[galaxies, 0] - self.base.training_predict(data, galaxies)
        self.tau2_, self.sigma2_ = offset_shrinkage(residuals, train_ids)
        return self

    def shrinkage(self, k):
        """The factor applied to the mean support residual for K support galaxies."""
        return self.tau2_ / (self.tau2_ + self.sigma2_ / k) if self.tau2_ > 0 else 0.0

    def predict(self, data, draws, option=None):
        support_residual = data.y[draws.support, 0] - self.base.base_predict(data, draws.support)
        offset = self.shrinkage(draws.k) * support_residual.mean(axis=-1, keepdims=True)
        return self.base.base_predict(data, draws.query) + offset + data.target_mean


class FineTunedPooledNetwork(Learner):
    """The pooled network fine-tuned on each support set: SGD step size and step count chosen on meta-validation.

    Each step's gradient is clipped to norm ``grad_clip`` (the bound MAML++ puts on its inner steps), so
    that no chosen option can throw an adapted network far out on an unusual support set.
    """

    name = "pooled network, fine-tuned"

    def __init__(self, learning_rates=(0.001, 0.003, 0.01, 0.03, 0.1), max_steps=10, grad_clip=3.0):
        self.learning_rates, self.max_steps, self.grad_clip = tuple(learning_rates), int(max_steps), grad_clip

    def fit(self, data, seed, context):
        self.model = _pooled_network(data, seed, context)
        return self

    def options(self, k):
        return [(lr, steps) for lr in self.learning_rates for steps in range(self.max_steps + 1)]

    def predict_options(self, data, draws):
        xs, ys, xq = flat_task_arrays(data, draws)
        out = {}
        for lr in self.learning_rates:
            with np.errstate(all="ignore"):
                curve = mn.adaptation_predictions(self.model.params_, xs, ys, xq, lr, self.max_steps,
                                                  grad_clip=self.grad_clip)
            for steps in range(self.max_steps + 1):
                out[(lr, steps)] = curve[steps, ..., 0].reshape(draws.query.shape) + data.target_mean
        return out

    def describe(self, option):
        return f"lr={option[0]}, steps={option[1]}"

    def curve_key(self, option):
        return option


class PerTaskRidge(Learner):
    """Ridge regression fitted to each support set alone (closed form, vectorised over draws)."""

    name = "per-task ridge"

    def __init__(self, alphas=(0.1, 1.0, 10.0, 100.0)):
        self.alphas = tuple(alphas)

    def options(self, k):
        return list(self.alphas)

    def predict(self, data, draws, alpha):
        xs, ys, xq = flat_task_arrays(data, draws)
        x_mean, y_mean = xs.mean(axis=1, keepdims=True), ys.mean(axis=1, keepdims=True)
        xc, yc = xs - x_mean, ys - y_mean
        gram = np.swapaxes(xc, 1, 2) @ xc + alpha * np.eye(xs.shape[-1])
        weights = np.linalg.solve(gram, np.swapaxes(xc, 1, 2) @ yc)
        prediction = (xq - x_mean) @ weights + y_mean
        return prediction[..., 0].reshape(draws.query.shape) + data.target_mean

    def describe(self, option):
        return f"alpha={option}"


class NearestNeighbours(Learner):
    """Mean target of the k nearest support galaxies (Euclidean, scaled features)."""

    name = "k nearest neighbours"

    def __init__(self, neighbours=(1, 3, 5, 10, 20)):
        self.neighbours = tuple(neighbours)

    def options(self, k):
        return [n for n in self.neighbours if n <= k]

    def predict(self, data, draws, n_neighbours):
        xs, ys, xq = flat_task_arrays(data, draws)
        distance = np.sum((xq[:, :, None, :] - xs[:, None, :, :]) ** 2, axis=-1)  # (T, Q, K)
        nearest = np.argsort(distance, axis=-1, kind="stable")[..., :n_neighbours]
        values = np.take_along_axis(np.broadcast_to(ys[:, None, :, 0], distance.shape), nearest, axis=-1)
        return values.mean(axis=-1).reshape(draws.query.shape) + data.target_mean

    def describe(self, option):
        return f"k={option}"


class PooledNetworkWithRedshift(_Pooled):
    """The oracle: the pooled network given the hidden redshift as an extra input. Not a competitor."""

    name = "oracle: pooled network + redshift"
    group = "reference"

    def fit(self, data, seed, context):
        self.model = _pooled_network(data, seed, context, with_redshift=True)
        self.z_column = redshift_feature(data)
        return self

    def base_predict(self, data, galaxies):
        X = np.concatenate([data.X, self.z_column], axis=1)
        return self.model.predict(X[galaxies])[..., 0]


class PerfectTarget(Learner):
    """The true target itself: RMSE 0 and the label's ceiling (balanced accuracy 1 by construction)."""

    name = "ceiling: perfect u - r"
    group = "reference"

    def predict(self, data, draws, option=None):
        return data.target[draws.query]


class SingleFeatureCut(Learner):
    """The label from one raw g, r, i, z feature and a threshold, both chosen on meta-train (no target estimate)."""

    name = "best single-feature cut"
    group = "reference"
    regression = False

    def fit(self, data, seed, context):
        train = data.indices("train")
        raw = data.catalogue.X_raw
        best = None
        for j, feature in enumerate(data.catalogue.feature_names):
            score, threshold, direction = best_threshold_accuracy(raw[train, j], data.is_red[train])
            if best is None or score > best[0]:
                best = (score, j, threshold, direction)
        _, self.column_, self.cut_, self.direction_ = best
        self.feature_ = data.catalogue.feature_names[self.column_]
        return self

    def predict(self, data, draws, option=None):
        return self.direction_ * data.catalogue.X_raw[draws.query, self.column_]

    def margin(self, data, predictions):
        return predictions - self.direction_ * self.cut_

    def describe(self, option):
        return f"{self.feature_} {'>=' if self.direction_ > 0 else '<'} {self.cut_:.3f}"
