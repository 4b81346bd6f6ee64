"""Redness on held-out tasks: learners, baselines, metrics with bootstrap intervals, table, plots.

Introduced in ``notebooks/05_redness_evaluation.py``; the full run is
``python benchmarks/redness_evaluation.py``.

Protocol
--------
* Every learner sees the **same** meta-test tasks and the same support/query
  draws for each K (seeded); nothing is tuned on meta-test.
* Hyperparameters (adaptation steps, fine-tuning step size, ridge strength,
  number of neighbours, classification threshold) are chosen on
  meta-validation tasks, separately for every K.
* Every learner predicts the ``g - r`` colour (regression). The red/blue
  label is read from it with a threshold chosen on meta-validation, except
  for the per-task logistic regression and the k-nearest-neighbour classifier,
  which are fitted to the support labels directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from galmeta import maml_numpy as mn

__all__ = [
    "OUTLIER_THRESHOLD",
    "sigma_nmad",
    "roc_auc",
    "regression_metrics",
    "classification_metrics",
    "bootstrap_interval",
    "PooledMLP",
    "EvaluationDraws",
    "draw_tasks",
    "evaluate_learners",
    "ResultsTable",
]

#: |predicted - true| above this many magnitudes of g - r counts as an outlier
#: (about 2.5 times the typical scatter of a good estimate).
OUTLIER_THRESHOLD = 0.15


# ---------------------------------------------------------------------------
# Metrics (vectorised so that bootstrap resamples are cheap)
# ---------------------------------------------------------------------------
def sigma_nmad(residuals, axis=-1):
    """1.4826 x the median absolute deviation from the median (robust scatter)."""
    residuals = np.asarray(residuals, float)
    median = np.median(residuals, axis=axis, keepdims=True)
    return 1.4826 * np.median(np.abs(residuals - median), axis=axis)


def roc_auc(labels, scores, axis=-1):
    """Area under the ROC curve by the Mann-Whitney statistic (ties get average ranks)."""
    from scipy.stats import rankdata

    labels, scores = np.broadcast_arrays(np.asarray(labels, bool), np.asarray(scores, float))
    ranks = rankdata(scores, axis=axis)
    n_pos = labels.sum(axis=axis)
    n_neg = labels.shape[axis] - n_pos
    rank_sum = np.where(labels, ranks, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def regression_metrics(residuals):
    """RMSE, bias, sigma_NMAD and outlier fraction of residuals (last axis pooled)."""
    residuals = np.asarray(residuals, float)
    return {
        "rmse": np.sqrt(np.mean(residuals ** 2, axis=-1)),
        "bias": np.mean(residuals, axis=-1),
        "sigma_nmad": sigma_nmad(residuals),
        "outlier_fraction": np.mean(np.abs(residuals) > OUTLIER_THRESHOLD, axis=-1),
    }


def classification_metrics(labels, scores, threshold):
    """Accuracy, balanced accuracy and ROC AUC of scores against boolean labels."""
    labels = np.asarray(labels, bool)
    predicted = np.asarray(scores) >= threshold
    correct = predicted == labels
    n_pos, n_neg = labels.sum(axis=-1), (~labels).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_pos = np.where(labels, correct, False).sum(axis=-1) / n_pos
        recall_neg = np.where(~labels, correct, False).sum(axis=-1) / n_neg
    return {
        "accuracy": correct.mean(axis=-1),
        "balanced_accuracy": 0.5 * (recall_pos + recall_neg),
        "roc_auc": roc_auc(labels, scores),
    }


def bootstrap_interval(per_task_values: dict, statistic, n_resamples=1000, rng=None, confidence=0.95):
    """Point estimate and percentile interval of ``statistic`` over tasks resampled with replacement.

    Parameters
    ----------
    per_task_values : dict of ndarray
        Arrays of shape ``(n_tasks, Q)``; resampling picks whole tasks.
    statistic : callable
        ``statistic(**arrays)`` on arrays of shape ``(..., n_points)`` returning shape ``(...)``.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    n_tasks = next(iter(per_task_values.values())).shape[0]
    flat = {k: v.reshape(-1) for k, v in per_task_values.items()}
    estimate = float(statistic(**flat))
    picks = rng.integers(n_tasks, size=(n_resamples, n_tasks))
    resampled = {k: v[picks].reshape(n_resamples, -1) for k, v in per_task_values.items()}
    values = np.asarray(statistic(**resampled), float)
    alpha = (1 - confidence) / 2
    lo, hi = np.nanquantile(values, [alpha, 1 - alpha])
    return estimate, float(lo), float(hi)


# ---------------------------------------------------------------------------
# The pooled baseline (and the oracle)
# ---------------------------------------------------------------------------
class PooledMLP:
    """One network fitted to all meta-train galaxies together (no task information).

    The same architecture as the meta-learners, trained with Adam on mini-batches
    (NumPy, from :mod:`galmeta.maml_numpy`), with early stopping on
    meta-validation galaxies. ``fine_tune`` adapts it to a support set with
    plain SGD (Chen et al. 2019; Tian et al. 2020).

    Parameters
    ----------
    hidden : tuple of int, default (40, 40)
    n_epochs : int, default 30
    batch_size : int, default 256
    lr : float, default 1e-3
    seed : int, default 0
    """

    def __init__(self, hidden=(40, 40), n_epochs=30, batch_size=256, lr=1e-3, seed=0):
        self.hidden, self.n_epochs, self.batch_size, self.lr, self.seed = hidden, n_epochs, batch_size, lr, seed
        self.params_ = None

    def fit(self, X, y, X_val=None, y_val=None):
        X, y = np.asarray(X, float), np.asarray(y, float).reshape(len(X), -1)
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
            raise ValueError("X and y must be finite; impute missing values first (galmeta.tasks.FeaturePreprocessor)")
        rng = np.random.default_rng(self.seed)
        params = mn.init_mlp((X.shape[1], *self.hidden, y.shape[1]), rng)
        optimiser = mn.Adam(params, lr=self.lr)
        best, best_params = math.inf, None
        for _ in range(int(self.n_epochs)):
            order = rng.permutation(len(X))
            for start in range(0, len(X), self.batch_size):
                batch = order[start:start + self.batch_size]
                _, grads = mn.loss_and_gradient(params, X[batch][None], y[batch][None])
                optimiser.step(params, [(dW[0], db[0]) for dW, db in grads])
            if X_val is not None:
                val = float(mn.task_losses(params, np.asarray(X_val, float)[None], np.asarray(y_val, float).reshape(1, len(X_val), -1))[0])
                if val < best:
                    best, best_params = val, [(W.copy(), b.copy()) for W, b in params]
        self.params_ = best_params or params
        return self

    def predict(self, X):
        return mn.forward(self.params_, np.asarray(X, float))

    def fine_tune_predictions(self, xs, ys, xq, lr, max_steps):
        """Query predictions after 0..max_steps SGD steps on each support set, ``(steps + 1, T, Q, 1)``."""
        return mn.adaptation_predictions(self.params_, xs, ys, xq, lr, max_steps)


def redshift_feature(data):
    """The hidden redshift, standardised on meta-train galaxies, as a column (for the oracle)."""
    train_z = data.redshift[data.train_indices()]
    return ((data.redshift - train_z.mean()) / train_z.std())[:, None]


# ---------------------------------------------------------------------------
# Draws, learners and the evaluation loop
# ---------------------------------------------------------------------------
@dataclass
class EvaluationDraws:
    """The support/query draws of one split and one K, shared by every learner."""

    split: str
    k: int
    support: np.ndarray  # (T, K) galaxy indices
    query: np.ndarray    # (T, Q)
    task_ids: np.ndarray


def draw_tasks(data, split, k, n_tasks, n_query, seed):
    """Seeded support/query draws from the tasks of one split."""
    sampler = data.sampler(split, k, n_query)
    support, query, task_ids = sampler.sample_indices(np.random.default_rng(seed), n_tasks=n_tasks)
    return EvaluationDraws(split, k, support, query, task_ids)


def _steps_predictions(name, learner, data, draws, max_steps, option=None):
    X, y = data.X, data.y
    xs, ys, xq = X[draws.support], y[draws.support], X[draws.query]
    if name == "pooled + fine-tuning":
        return learner.fine_tune_predictions(xs, ys, xq, option, max_steps)
    predictions = learner.adaptation_predictions(xs.astype(np.float32), ys.astype(np.float32), xq.astype(np.float32),
                                                 max_steps)
    return predictions.astype(float)


def _per_task_predictions(name, data, draws, option):
    """Ridge / logistic regression and k-NN fitted on each support set alone."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    X, y, labels = data.X, data.y[:, 0], data.is_red
    reg = np.empty(draws.query.shape)
    prob = np.empty(draws.query.shape)
    for row, (s, q) in enumerate(zip(draws.support, draws.query)):
        if name == "per-task ridge / logistic":
            reg[row] = Ridge(alpha=option).fit(X[s], y[s]).predict(X[q])
            if labels[s].min() == labels[s].max():  # one class in the support set: predict it
                prob[row] = float(labels[s][0])
            else:
                clf = LogisticRegression(C=1.0 / option, max_iter=500).fit(X[s], labels[s])
                prob[row] = clf.predict_proba(X[q])[:, 1]
        else:  # k nearest neighbours
            n = min(option, len(s))
            reg[row] = KNeighborsRegressor(n_neighbors=n).fit(X[s], y[s]).predict(X[q])
            prob[row] = KNeighborsClassifier(n_neighbors=n).fit(X[s], labels[s]).predict_proba(X[q])[:, -1] \
                if labels[s].min() != labels[s].max() else float(labels[s][0])
    return reg[..., None], prob


@dataclass
class LearnerResult:
    name: str
    k: int
    option: object
    steps: int | None
    residuals: np.ndarray      # (T, Q)
    scores: np.ndarray         # (T, Q) classification score
    threshold: float
    steps_rmse: np.ndarray | None = None  # RMSE on meta-test against 0..max_steps


@dataclass
class ResultsTable:
    """Results of :func:`evaluate_learners`: one row per learner x K."""

    rows: list = field(default_factory=list)
    results: dict = field(default_factory=dict)   # (learner, K) -> LearnerResult
    details: dict = field(default_factory=dict)   # threshold, test draws

    COLUMNS = ("learner", "K", "chosen", "rmse", "bias", "sigma_nmad", "outlier_fraction", "accuracy",
               "balanced_accuracy", "roc_auc")

    def to_csv(self, path):
        import csv

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            header = ["learner", "K", "chosen"]
            for metric in self.COLUMNS[3:]:
                header += [metric, f"{metric}_lo", f"{metric}_hi"]
            writer.writerow(header)
            for row in self.rows:
                line = [row["learner"], row["K"], row["chosen"]]
                for metric in self.COLUMNS[3:]:
                    line += [f"{v:.5f}" for v in row[metric]]
                writer.writerow(line)
        return path

    def to_markdown(self, metrics=("rmse", "sigma_nmad", "outlier_fraction", "bias", "balanced_accuracy", "roc_auc")):
        header = "| learner | K | " + " | ".join(metrics) + " | chosen on meta-validation |"
        lines = [header, "|" + "---|" * (len(metrics) + 3)]
        for row in self.rows:
            cells = [f"{row[m][0]:.3f} [{row[m][1]:.3f}, {row[m][2]:.3f}]" for m in metrics]
            lines.append(f"| {row['learner']} | {row['K']} | " + " | ".join(cells) + f" | {row['chosen']} |")
        return "\n".join(lines)

    def write(self, folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.to_csv(folder / "redness_results.csv")
        (folder / "redness_results.md").write_text(self.to_markdown() + "\n")
        return folder

    def print(self, metrics=("rmse", "sigma_nmad", "outlier_fraction", "balanced_accuracy", "roc_auc")):
        """Print the table compactly (95% intervals in brackets)."""
        width = max(len(r["learner"]) for r in self.rows)
        print(f"{'learner':<{width}s}  K  " + "  ".join(f"{m:>24s}" for m in metrics))
        for row in self.rows:
            cells = [f"{row[m][0]:.3f} [{row[m][1]:.3f},{row[m][2]:.3f}]" for m in metrics]
            print(f"{row['learner']:<{width}s} {row['K']:2d}  " + "  ".join(f"{c:>24s}" for c in cells))

    def get(self, learner, k, metric="rmse"):
        for row in self.rows:
            if row["learner"] == learner and row["K"] == k:
                return row[metric]
        raise KeyError((learner, k))


def _choose_threshold(data):
    """The g - r cut (on the centred scale) that best separates red from blue meta-train galaxies."""
    train = data.train_indices()
    values = data.y[train, 0]
    labels = data.is_red[train]
    candidates = np.quantile(values, np.linspace(0.05, 0.95, 181))
    balanced = [0.5 * (np.mean(values[labels] >= c) + np.mean(values[~labels] < c)) for c in candidates]
    return float(candidates[int(np.argmax(balanced))])


def evaluate_learners(data, meta_learners: dict, pooled: PooledMLP, oracle: PooledMLP, ks=(1, 5, 10, 20),
                      n_tasks=200, n_val_tasks=100, n_query=30, max_steps=10, n_resamples=1000, seed=0,
                      finetune_lrs=(0.001, 0.003, 0.01, 0.03, 0.1), ridge_alphas=(0.1, 1.0, 10.0, 100.0),
                      neighbours=(1, 3, 5, 10, 20), progress=True):
    """Evaluate every learner on the same meta-test draws, tuning on meta-validation.

    Parameters
    ----------
    data : galmeta.tasks.GalaxyTaskData
    meta_learners : dict
        Name -> fitted :class:`galmeta.maml_torch.MetaLearner`.
    pooled : PooledMLP
        Fitted on meta-train galaxies.
    oracle : PooledMLP
        Fitted on meta-train galaxies with the hidden redshift as an extra feature.
    ks : tuple of int
        Support sizes.

    Returns
    -------
    ResultsTable
    """
    from tqdm.auto import tqdm

    threshold = _choose_threshold(data)
    table = ResultsTable()
    table.details["threshold_centred_g_r"] = threshold
    table.details["threshold_g_r"] = threshold + data.target_mean
    X_with_z = np.concatenate([data.X, redshift_feature(data)], axis=1)
    names = [*meta_learners, "pooled + fine-tuning", "pooled (no adaptation)", "per-task ridge / logistic",
             "k nearest neighbours", "oracle: pooled + redshift"]
    bar = tqdm(total=len(ks) * len(names), disable=not progress, desc="evaluate")
    for k_index, k in enumerate(ks):
        val = draw_tasks(data, "val", k, n_val_tasks, n_query, seed=seed + 1000 + k_index)
        test = draw_tasks(data, "test", k, n_tasks, n_query, seed=seed + 2000 + k_index)
        table.details.setdefault("test_draws", {})[k] = test
        y_val, y_test = data.y[val.query], data.y[test.query]
        for name in names:
            steps_rmse, steps = None, None
            if name in meta_learners or name == "pooled + fine-tuning":
                learner = meta_learners.get(name, pooled)
                options = finetune_lrs if name == "pooled + fine-tuning" else (None,)
                best = (math.inf, None, None)
                for option in options:
                    with np.errstate(all="ignore"):
                        curve = _steps_predictions(name, learner, data, val, max_steps, option)
                        rmse = np.sqrt(np.mean((curve - y_val[None]) ** 2, axis=(1, 2, 3)))
                    rmse = np.where(np.isfinite(rmse), rmse, np.inf)
                    s = int(np.argmin(rmse))
                    if rmse[s] < best[0]:
                        best = (rmse[s], option, s)
                _, option, steps = best
                with np.errstate(all="ignore"):
                    curve = _steps_predictions(name, learner, data, test, max_steps, option)
                    steps_rmse = np.sqrt(np.mean((curve - y_test[None]) ** 2, axis=(1, 2, 3)))
                prediction = curve[steps]
                chosen = f"steps={steps}" + (f", lr={option}" if option is not None else "")
                scores = prediction[..., 0]
                thr = threshold
            elif name in ("pooled (no adaptation)", "oracle: pooled + redshift"):
                oracle_run = name.startswith("oracle")
                prediction = oracle.predict(X_with_z[test.query]) if oracle_run else pooled.predict(data.X[test.query])
                chosen, option, scores, thr = ("knows z" if oracle_run else "-"), None, prediction[..., 0], threshold
            else:
                grid = ridge_alphas if name.startswith("per-task") else tuple(n for n in neighbours if n <= max(k, 1))
                scores_val = {}
                for option in grid:
                    reg, _ = _per_task_predictions(name, data, val, option)
                    scores_val[option] = float(np.sqrt(np.mean((reg - y_val) ** 2)))
                option = min(scores_val, key=scores_val.get)
                prediction, scores = _per_task_predictions(name, data, test, option)
                thr = 0.5
                chosen = f"alpha={option}" if name.startswith("per-task") else f"k={option}"
            residuals = (prediction - y_test)[..., 0]
            labels = data.is_red[test.query]
            stats = {}
            for metric in ("rmse", "bias", "sigma_nmad", "outlier_fraction"):
                stats[metric] = bootstrap_interval({"r": residuals}, lambda r, m=metric: regression_metrics(r)[m],
                                                   n_resamples, np.random.default_rng(seed + 7))
            for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
                stats[metric] = bootstrap_interval(
                    {"l": labels.astype(float), "s": scores},
                    lambda l, s, m=metric, t=thr: classification_metrics(l.astype(bool), s, t)[m],
                    n_resamples, np.random.default_rng(seed + 7))
            table.rows.append({"learner": name, "K": k, "chosen": chosen, **stats})
            table.results[(name, k)] = LearnerResult(name, k, option, steps, residuals, scores, thr, steps_rmse)
            bar.update()
    bar.close()
    return table


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------
def plot_error_vs_k(table, metric="rmse", ax=None):
    """One line per learner with its 95% band."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4.2))[1]
    learners = list(dict.fromkeys(r["learner"] for r in table.rows))
    for name in learners:
        rows = [r for r in table.rows if r["learner"] == name]
        ks = [r["K"] for r in rows]
        values = np.array([r[metric] for r in rows])
        style = "--" if name.startswith(("oracle", "pooled (no")) else "-"
        line, = ax.plot(ks, values[:, 0], style, marker="o", ms=3, label=name)
        ax.fill_between(ks, values[:, 1], values[:, 2], color=line.get_color(), alpha=0.15)
    ax.set(xscale="log", xlabel="K (support galaxies)", ylabel=metric.replace("_", " "),
           xticks=sorted({r["K"] for r in table.rows}), xticklabels=sorted({r["K"] for r in table.rows}))
    ax.legend(fontsize=7)
    return ax


def plot_error_vs_steps(table, k, ax=None):
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for (name, kk), result in table.results.items():
        if kk == k and result.steps_rmse is not None:
            ax.plot(np.arange(len(result.steps_rmse)), result.steps_rmse, marker="o", ms=3, label=name)
    ax.set(xlabel="adaptation steps", ylabel="RMSE of g − r (mag)", title=f"meta-test, K = {k}")
    ax.legend(fontsize=7)
    return ax


# ---------------------------------------------------------------------------
# The whole protocol in one call (notebook 05 and benchmarks/redness_evaluation.py)
# ---------------------------------------------------------------------------
META_LEARNERS = {"MAML": "maml", "FOMAML": "fomaml", "Meta-SGD": "metasgd", "ANIL": "anil"}


def train_learners(data, meta_iterations, pooled_epochs, device=None, seed=0, n_support=10, n_query=30,
                   include_numpy=True, progress=False):
    """Meta-train MAML, FOMAML, Meta-SGD and ANIL (and the NumPy MAML as a check), the pooled network and the oracle.

    Meta-learners train on K = ``n_support`` tasks of meta-train with early stopping on meta-validation.
    """
    import torch

    from galmeta import maml_torch as mt

    train_sampler = data.sampler("train", n_support, n_query)
    val_batch = [a.astype(np.float32) for a in data.sampler("val", n_support, n_query).sample(np.random.default_rng(seed + 1), n_tasks=100)]
    sample32 = lambda rng, n: [a.astype(np.float32) for a in train_sampler.sample(rng, n)]
    d_in = data.X.shape[1]
    learners = {}
    for name, algorithm in META_LEARNERS.items():
        torch.manual_seed(seed)
        init = mn.init_mlp((d_in, 40, 40, 1), np.random.default_rng(seed), dtype=np.float32)
        learner = mt.MetaLearner(mt.MLP.from_numpy(init), algorithm=algorithm, inner_lr=0.01, inner_steps=1,
                                 meta_batch=25, seed=seed, device=device)
        learner.fit(sample32, meta_iterations, val_tasks=val_batch, eval_every=50, patience=20, progress=progress,
                    rng=np.random.default_rng(seed))
        learners[name] = learner
    if include_numpy:
        learners["MAML (NumPy check)"] = _NumpyMAML(data, meta_iterations, seed, n_support, n_query, progress)
    train = data.train_indices()
    val = np.unique(np.concatenate([t.indices for t in data.tasks["val"]]))
    pooled = PooledMLP(n_epochs=pooled_epochs, seed=seed).fit(data.X[train], data.y[train], data.X[val], data.y[val])
    Xz = np.concatenate([data.X, redshift_feature(data)], axis=1)
    oracle = PooledMLP(n_epochs=pooled_epochs, seed=seed).fit(Xz[train], data.y[train], Xz[val], data.y[val])
    return learners, pooled, oracle


class _NumpyMAML:
    """The NumPy MAML of notebook 03, trained like the others, behind the same adaptation interface."""

    def __init__(self, data, iterations, seed, n_support, n_query, progress):
        rng = np.random.default_rng(seed)
        sampler = data.sampler("train", n_support, n_query)
        init = mn.init_mlp((data.X.shape[1], 40, 40, 1), np.random.default_rng(seed))
        self.params = mn.meta_train(init, lambda r: sampler.sample(r, 25), iterations, rng, inner_lr=0.01,
                                    progress=progress).params

    def adaptation_predictions(self, xs, ys, xq, max_steps):
        return mn.adaptation_predictions(self.params, xs, ys, xq, 0.01, max_steps)


def plot_predicted_vs_true(table, data, learner, k, n_tasks=4, axes=None):
    """Predicted against true g - r on a few meta-test tasks."""
    import matplotlib.pyplot as plt

    result, draws = table.results[(learner, k)], table.details["test_draws"][k]
    axes = axes if axes is not None else plt.subplots(1, n_tasks, figsize=(3.2 * n_tasks, 3.2), sharey=True)[1]
    for ax, row in zip(np.atleast_1d(axes), range(n_tasks)):
        true = data.g_r[draws.query[row]]
        predicted = true + result.residuals[row]
        ax.scatter(true, predicted, s=10)
        lims = [min(true.min(), predicted.min()) - 0.05, max(true.max(), predicted.max()) + 0.05]
        ax.plot(lims, lims, color="k", lw=0.8)
        task = data.tasks["test"][draws.task_ids[row]]
        ax.set(title=f"{task.name}", xlabel="true g − r")
    np.atleast_1d(axes)[0].set_ylabel(f"{learner}, K={k}: predicted g − r")
    return axes


def plot_residuals(table, data, learners, k, axes=None):
    """Residuals against redshift, r magnitude and true colour, binned medians with 16-84% bands."""
    import matplotlib.pyplot as plt

    draws = table.details["test_draws"][k]
    query = draws.query.reshape(-1)
    r_mag = np.asarray(data.clean["dered_r"], float)
    against = {"redshift z": data.redshift[query], "r (mag)": r_mag[query], "true g − r": data.g_r[query]}
    axes = axes if axes is not None else plt.subplots(1, 3, figsize=(14, 3.6), sharey=True)[1]
    for ax, (label, x) in zip(axes, against.items()):
        edges = np.quantile(x, np.linspace(0, 1, 9))
        centres = 0.5 * (edges[1:] + edges[:-1])
        for name in learners:
            residual = table.results[(name, k)].residuals.reshape(-1)
            which = np.clip(np.digitize(x, edges[1:-1]), 0, len(centres) - 1)
            med = np.array([np.median(residual[which == b]) for b in range(len(centres))])
            lo = np.array([np.quantile(residual[which == b], 0.16) for b in range(len(centres))])
            hi = np.array([np.quantile(residual[which == b], 0.84) for b in range(len(centres))])
            line, = ax.plot(centres, med, marker="o", ms=3, label=name)
            ax.fill_between(centres, lo, hi, color=line.get_color(), alpha=0.12)
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel=label)
    axes[0].set_ylabel(f"residual of g − r (mag), K={k}")
    axes[0].legend(fontsize=7)
    return axes


def plot_colour_magnitude(table, data, learner, k, task_row=0, ax=None):
    """Colour-magnitude diagram of one meta-test task coloured by predicted label; mistakes circled."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5.5, 4.2))[1]
    result, draws = table.results[(learner, k)], table.details["test_draws"][k]
    galaxies = draws.query[task_row]
    predicted_red = result.scores[task_row] >= result.threshold
    truth = data.is_red[galaxies]
    r_mag = np.asarray(data.clean["dered_r"], float)[galaxies]
    ax.scatter(r_mag[predicted_red], data.g_r[galaxies][predicted_red], color="tab:red", s=18, label="predicted red")
    ax.scatter(r_mag[~predicted_red], data.g_r[galaxies][~predicted_red], color="tab:blue", s=18, label="predicted blue")
    wrong = predicted_red != truth
    ax.scatter(r_mag[wrong], data.g_r[galaxies][wrong], facecolors="none", edgecolors="k", s=70, label="misclassified")
    support = draws.support[task_row]
    ax.scatter(np.asarray(data.clean["dered_r"], float)[support], data.g_r[support], marker="*", color="gold",
               edgecolors="k", s=120, label=f"support (K={k})")
    task = data.tasks["test"][draws.task_ids[task_row]]
    ax.set(xlabel="r (mag)", ylabel="true g − r", title=f"{learner}, task {task.name}")
    ax.legend(fontsize=7)
    return ax


def save_figures(table, data, folder, k=10, learners=("MAML", "pooled + fine-tuning", "per-task ridge / logistic")):
    """Write the evaluation's figures as PNG files into ``folder``; returns their paths."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    figures = {
        "error_vs_k.png": lambda: plot_error_vs_k(table),
        "error_vs_steps.png": lambda: plot_error_vs_steps(table, k),
        "predicted_vs_true.png": lambda: plot_predicted_vs_true(table, data, learners[0], k),
        "residuals.png": lambda: plot_residuals(table, data, learners, k),
        "colour_magnitude.png": lambda: plot_colour_magnitude(table, data, learners[0], k),
    }
    for name, draw in figures.items():
        draw()
        figure = plt.gcf()
        figure.tight_layout()
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
        paths.append(folder / name)
    return paths
