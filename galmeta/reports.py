"""Tables of an evaluation: rows with intervals, CSV files and Markdown (the README's tables come from here)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from galmeta import metrics as gm

__all__ = ["SUMMARY_METRICS", "PER_DRAW_COLUMNS", "per_draw_rows", "write_per_draw", "summary_rows", "paired_rows",
           "slice_rows", "write_tables", "summary_markdown", "paired_markdown"]


#: ROC AUC is available (``results.interval(name, k, "roc_auc")``) but left out by default: ranking every
#: resample's scores makes it the slowest metric by far, and balanced accuracy answers the red/blue question.
SUMMARY_METRICS = ("rmse", "sigma_nmad", "bias", "worst_draw_rmse", "tail_fraction", "balanced_accuracy", "nll",
                   "coverage_68", "coverage_95")


def summary_rows(results, metrics=SUMMARY_METRICS, n_resamples=1000):
    """One row per learner and K: each metric as an :class:`galmeta.metrics.Interval`."""
    rows = []
    for k in results.ks:
        for name, learner in results.learners.items():
            row = {"learner": name, "group": learner.group, "K": k, "chosen": results.chosen_options(name, k)}
            for metric in metrics:
                if metric in ("balanced_accuracy", "roc_auc") or learner.regression:
                    row[metric] = results.interval(name, k, metric, n_resamples)
                else:
                    row[metric] = None
            rows.append(row)
    return rows


def paired_rows(results, metrics=("rmse", "sigma_nmad", "balanced_accuracy"), n_resamples=1000, family_level=0.95):
    """For every K and meta-learner: the paired difference to the best non-meta baseline (the headline).

    ``rmse_simultaneous``: the block interval at the Bonferroni level ``1 - (1 - family_level) / m`` for the
    family of m = meta-learners x K comparisons, so that all of them hold together (meta-learners only).
    ``nll_blocks``: the difference in mean negative log-likelihood per galaxy, with its block interval.
    """
    rows = []
    family = len(results.names("meta-learner")) * len(results.ks)
    simultaneous = 1 - (1 - family_level) / max(family, 1)
    enough = len(set(results.blocks())) >= 3  # a jackknife over blocks needs three (a one-fold run has two)
    for k in results.ks:
        reference = results.best_baseline(k)
        for name in results.names("meta-learner") + [n for n in results.names("baseline") if n != reference]:
            row = {"K": k, "learner": name, "group": results.learners[name].group, "reference": reference}
            for metric in metrics:
                row[metric] = results.paired(name, reference, k, metric, n_resamples)
            # blocks as the unit of independence: the jackknife interval and how correlated a block's slices are
            row["rmse_blocks"] = results.paired_blocks(name, reference, k) if enough else None
            row["rmse_simultaneous"] = (results.paired_blocks(name, reference, k, confidence=simultaneous)
                                        if enough and row["group"] == "meta-learner" else None)
            row["nll_blocks"] = results.paired_blocks(name, reference, k, "nll") if enough else None
            row["rmse_icc"] = results.paired_icc(name, reference, k)
            rows.append(row)
    return rows


def slice_rows(results):
    """Per learner, K, seed and slice: RMSE, bias, sigma_NMAD, worst draw and balanced accuracy."""
    rows = []
    n_slices = len(results.slices)
    for name, k in dict.fromkeys((name, k) for name, k, _, _ in results.predictions):
        learner = results.learners[name]
        residuals, scores, labels = results.residuals(name, k), results.scores(name, k), results.label_array(k)
        for i_seed, seed in enumerate(results.config.seeds):
            for s in range(n_slices):
                r = residuals[i_seed, s]
                predicted = scores[i_seed, s] >= 0
                rows.append({**results.slices[s], "learner": name, "K": k, "seed": seed,
                             "chosen": learner.describe(results.chosen[(name, k, results.slices[s]["fold"], seed)]),
                             "rmse": float(np.sqrt(np.mean(r ** 2))), "bias": float(np.mean(r)),
                             "sigma_nmad": float(gm.sigma_nmad(r.ravel())),
                             "worst_draw_rmse": float(np.sqrt(np.mean(r ** 2, axis=-1)).max()),
                             "balanced_accuracy": float(gm.balanced_accuracy(labels[s].ravel(), predicted.ravel()))})
    return rows

#: Columns of the per-draw result files (``results/redness_per_draw.csv.gz``): one row per learner, K, seed,
#: fold, slice and draw. ``sse`` is the sum of squared errors of the target over the draw's query galaxies
#: (mag^2), ``nll_sum`` their summed Gaussian negative log-likelihood (nats), ``n_in68``/``n_in95`` how many
#: lie inside the central 68%/95% predictive interval, ``n_label_correct`` how many get the right label;
#: ``val_rmse`` is the learner's meta-validation score by which headline learners are chosen.
PER_DRAW_COLUMNS = ("dataset", "sample", "learner", "group", "k", "seed", "fold", "block", "slice", "draw", "n_query",
                    "sse", "nll_sum", "n_in68", "n_in95", "n_label_correct", "val_rmse", "chosen")


def per_draw_rows(results, dataset):
    """The rows of a per-draw result file (:data:`PER_DRAW_COLUMNS`) for every learner, K, seed and fold."""
    from galmeta.hierarchical import gaussian_nll

    rows, half_width = [], gm.COVERAGE_HALF_WIDTHS
    slices_by_fold = {}
    for entry in results.slices:
        slices_by_fold.setdefault(entry["fold"], []).append(entry)
    for (name, k, fold, seed), predictions in results.predictions.items():
        learner = results.learners[name]
        truth, labels = results.truth[(k, fold)], results.labels[(k, fold)]
        correct = np.sum((results.margins[(name, k, fold, seed)] >= 0) == labels, axis=-1)
        with np.errstate(all="ignore"):
            errors = np.where(np.isfinite(predictions), predictions - truth, np.inf)
            variance = results.variances[(name, k, fold, seed)]
            z = np.abs(errors) / np.sqrt(variance)
            nll = gaussian_nll(errors, variance).sum(axis=-1)
        sse = (errors ** 2).sum(axis=-1)
        has_variance = learner.regression and bool(np.all(np.isfinite(variance)))
        for s, entry in enumerate(slices_by_fold[fold]):
            for d in range(predictions.shape[1]):
                rows.append({
                    "dataset": dataset, "sample": results.sample, "learner": name, "group": learner.group, "k": k,
                    "seed": seed, "fold": fold, "block": entry.get("block", entry["slice"]), "slice": entry["slice"],
                    "draw": d, "n_query": predictions.shape[2],
                    "sse": f"{sse[s, d]:.6g}" if learner.regression else "",
                    "nll_sum": f"{nll[s, d]:.6g}" if has_variance else "",
                    "n_in68": int(np.sum(z[s, d] <= half_width["coverage_68"])) if has_variance else "",
                    "n_in95": int(np.sum(z[s, d] <= half_width["coverage_95"])) if has_variance else "",
                    "n_label_correct": int(correct[s, d]),
                    "val_rmse": f"{results.val_rmse[(name, k, fold, seed)]:.6g}",
                    "chosen": learner.describe(results.chosen[(name, k, fold, seed)])})
    return rows


def write_per_draw(results, path, dataset):
    """Write :func:`per_draw_rows` to ``path`` (gzip-compressed CSV when it ends in ``.gz``), atomically.

    The gzip header carries no name and no time, so the same results give the same bytes.
    """
    import gzip
    import io

    from galmeta.safe_files import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = per_draw_rows(results, dataset)
    with atomic_write(path) as tmp, open(tmp, "wb") as raw:
        binary = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) if path.suffix == ".gz" else raw
        with io.TextIOWrapper(binary, encoding="utf-8", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=PER_DRAW_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return path


# -- output -------------------------------------------------------------------------
def write_tables(results, folder, n_resamples=1000, summary=None, paired=None):
    """Write ``redness_per_slice.csv``, ``redness_summary.{csv,md}`` and ``redness_paired.{csv,md}``.

    ``summary`` and ``paired`` are rows already computed by :func:`summary_rows` and :func:`paired_rows`
    (computed here when not given).

    Returns
    -------
    summary_rows, paired_rows : list of dict
        As :func:`summary_rows` and :func:`paired_rows` computed them (for figures, without a second bootstrap).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_csv(folder / "redness_per_slice.csv", slice_rows(results))
    summary = summary if summary is not None else summary_rows(results, n_resamples=n_resamples)
    paired = paired if paired is not None else paired_rows(results, n_resamples=n_resamples)
    _write_csv(folder / "redness_summary.csv", _intervals_to_columns(summary))
    _write_csv(folder / "redness_paired.csv", _intervals_to_columns(paired))
    (folder / "redness_summary.md").write_text(summary_markdown(summary) + "\n")
    (folder / "redness_paired.md").write_text(paired_markdown(paired, results) + "\n")
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


def summary_markdown(rows, metrics=("rmse", "sigma_nmad", "worst_draw_rmse", "tail_fraction", "balanced_accuracy", "nll",
                                    "coverage_95")):
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
                     f"block interval: delete-one-block jackknife with Student's t over {len(set(results.blocks()))} "
                     f"blocks (slices of one block are correlated; ICC: their intraclass correlation); simultaneous: "
                     f"the block interval at the Bonferroni level for all meta-learners x K together; seed sd = "
                     f"standard deviation of the difference over training seeds; ΔNLL: mean negative "
                     f"log-likelihood per galaxy (nats), block interval.\n")
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
    lines += ["| K | learner | reference | ΔRMSE (mag), slice interval | block interval | simultaneous | ICC | "
              "seed sd | ΔNLL | Δσ_NMAD (mag) | Δ balanced accuracy |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    signed = lambda iv: f"{iv.estimate:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}]"  # noqa: E731
    for row in rows:
        bounds = lambda iv: "—" if iv is None else f"[{iv.lo:+.3f}, {iv.hi:+.3f}]"  # noqa: E731
        block_text, simultaneous_text = bounds(row.get("rmse_blocks")), bounds(row.get("rmse_simultaneous"))
        nll = row.get("nll_blocks")
        nll_text = "—" if nll is None or not np.isfinite(nll.estimate) else signed(nll)
        icc = row.get("rmse_icc")
        icc_text = "—" if icc is None or not np.isfinite(icc) else f"{icc:.2f}"
        lines.append(f"| {row['K']} | {row['learner']} | {row['reference']} | {signed(row['rmse'])} | {block_text} | "
                     f"{simultaneous_text} | {icc_text} | {row['rmse'].seed_sd_text} | {nll_text} | {signed(row['sigma_nmad'])} | "
                     f"{signed(row['balanced_accuracy'])} |")
    return "\n".join(lines)

