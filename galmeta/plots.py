"""Figures of the redness evaluation (notebook 06 and ``benchmarks/redness_evaluation.py``).

Every axis has its unit; discrete quantities get markers; errors that span
decades get a logarithmic axis.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "plot_paired_differences",
    "plot_error_vs_k",
    "plot_error_vs_steps",
    "plot_per_slice",
    "plot_predicted_vs_true",
    "save_figures",
]

def _twenty_colours():
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    return list(tab20[0::2]) + list(tab20[1::2])  # the ten dark shades first, then the light ones


_METRIC_LABELS = {
    "rmse": "RMSE of {target} (mag)",
    "sigma_nmad": "σ_NMAD of {target} (mag)",
    "balanced_accuracy": "red/blue balanced accuracy",
    "worst_draw_rmse": "worst draw's RMSE of {target} (mag)",
}


def _label(metric, target_name):
    return _METRIC_LABELS.get(metric, metric).format(target=target_name)


def _plain_log_ticks(ax, axis="y"):
    """Log-scaled axis labelled with plain decimals (0.15, 0.2) instead of powers of ten."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    target.set_major_formatter(FormatStrFormatter("%.3g"))
    target.set_minor_formatter(FormatStrFormatter(""))


def _errorbars(ax, x, est, lo, hi, fmt, label, color=None):
    """Estimates with interval bars; a non-finite estimate (a learner whose predictions overflowed) is a
    triangle at the top edge marked ∞, and an interval reaching infinity an arrow at the top edge."""
    est, lo, hi = (np.asarray(v, float) for v in (est, lo, hi))
    finite = np.isfinite(est)
    kwargs = {"color": color} if color is not None else {}
    bars = ax.errorbar(x[finite], est[finite], yerr=[est[finite] - lo[finite], np.where(np.isfinite(hi), hi, est)[finite]
                       - est[finite]], fmt=fmt, ms=4, capsize=2, label=label, **kwargs)
    colour = bars.lines[0].get_color()
    top = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for xi in np.asarray(x, float)[~finite]:
        ax.plot([xi], [0.97], marker="^", color=colour, transform=top, clip_on=False)
        ax.annotate("∞", (xi, 0.97), xycoords=top, xytext=(4, -3), textcoords="offset points", fontsize=7,
                    color=colour)
    for xi in np.asarray(x, float)[finite & ~np.isfinite(hi)]:
        ax.annotate("", (xi, 0.99), xycoords=top, xytext=(xi, 0.9), textcoords=top,
                    arrowprops={"arrowstyle": "->", "color": colour})
    return bars


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


def _zoom_on_most(ax, drawn):
    """Keep the y axis where most intervals lie, so that one learner that blew up does not flatten the others;
    an estimate beyond the edge is written there with its value (its bar runs off the axis)."""
    bounds = np.array([b for _, _, lo, hi, _ in drawn for b in (lo, hi)], float)
    bounds = bounds[np.isfinite(bounds)]
    if bounds.size < 4:
        return
    q_lo, q_hi = np.quantile(bounds, [0.1, 0.9])
    pad = 0.6 * (q_hi - q_lo)
    bottom, top = min(q_lo - pad, 0.0), max(q_hi + pad, 0.0)
    if bounds.min() >= bottom and bounds.max() <= top:
        return
    ax.set_ylim(bottom, top)
    for x, est, _, _, colour in drawn:
        if np.isfinite(est) and not bottom <= est <= top:
            edge = top if est > top else bottom
            ax.plot([x], [edge], marker="^" if est > top else "v", color=colour, clip_on=False)
            ax.annotate(f"{est:+.2f}", (x, edge), xytext=(4, -10 if est > top else 4), textcoords="offset points",
                        fontsize=7, color=colour)


def plot_paired_differences(paired_rows, metric="rmse", ax=None, learners=None, target_name="u − r", interval=None):
    """The headline: each learner minus the best non-meta baseline, per K, with paired 95% intervals.

    Below zero (for errors) means better than the baseline; an interval that crosses zero means the
    data do not tell the two apart. ``interval``: the row key of the intervals to draw (default ``metric``,
    the slice bootstrap; ``"rmse_simultaneous"``: the headline's simultaneous block intervals).
    """
    kind = {"rmse_simultaneous": "simultaneous block intervals", "rmse_blocks": "95% block intervals"}.get(
        interval, "95% slice intervals")
    ax = _axes(ax, (8, 4.5))
    ax.set_prop_cycle(color=_twenty_colours())
    names = learners or list(dict.fromkeys(r["learner"] for r in paired_rows))
    ks = sorted({r["K"] for r in paired_rows})
    width = 0.8 / max(len(names), 1)
    drawn = []
    for i, name in enumerate(names):
        rows = sorted((r for r in paired_rows if r["learner"] == name), key=lambda r: r["K"])
        x = np.array([ks.index(r["K"]) for r in rows]) - 0.4 + width * (i + 0.5)
        key = interval or metric
        est = np.array([r[key].estimate for r in rows])
        lo = np.array([r[key].lo for r in rows])
        hi = np.array([r[key].hi for r in rows])
        colour = _errorbars(ax, x, est, lo, hi, "o", name).lines[0].get_color()
        drawn += [(xi, e, l, h, colour) for xi, e, l, h in zip(x, est, lo, hi)]
    _zoom_on_most(ax, drawn)
    ax.axhline(0, color="k", lw=0.8)
    reference = {r["K"]: r["reference"] for r in paired_rows}
    ax.set(xticks=range(len(ks)), ylabel=f"Δ {_label(metric, target_name)}\nlearner − best baseline",
           title=f"Paired difference to the best non-meta baseline at each K (chosen on meta-validation)\n{kind}")
    ax.set_xticklabels([f"K = {k}\nvs {reference[k]}".replace(", ", ",\n").replace(" + ", "\n+ ") for k in ks],
                       fontsize=7)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_error_vs_k(summary_rows, metric="rmse", ax=None, learners=None, target_name="u − r"):
    """A metric against K for each learner, with 95% slice-bootstrap intervals; log scale for errors."""
    ax = _axes(ax, (7, 4.2))
    ax.set_prop_cycle(color=_twenty_colours())
    names = learners or list(dict.fromkeys(r["learner"] for r in summary_rows if r[metric] is not None))
    for name in names:
        rows = sorted((r for r in summary_rows if r["learner"] == name and r[metric] is not None), key=lambda r: r["K"])
        if metric != "balanced_accuracy":  # a log axis cannot show the ceiling's zero error
            rows = [r for r in rows if r[metric].estimate > 0]
        if not rows:
            continue
        ks = np.array([r["K"] for r in rows], float)
        est = np.array([r[metric].estimate for r in rows])
        lo, hi = np.array([r[metric].lo for r in rows]), np.array([r[metric].hi for r in rows])
        style = "--" if rows[0]["group"] == "reference" else "-"
        _errorbars(ax, ks, est, lo, hi, "o" + style, name)
    ks = sorted({r["K"] for r in summary_rows})
    ax.set(xscale="log", xticks=ks, xticklabels=ks, xlabel="K (support galaxies per slice)",
           ylabel=_label(metric, target_name))
    if metric != "balanced_accuracy":
        ax.set_yscale("log")
        _plain_log_ticks(ax)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # below: not over the lines
    return ax


def plot_error_vs_steps(results, k, ax=None):
    """Meta-test RMSE after 0..10 adaptation steps (median over folds and seeds); log scale, divergences counted.

    Learners whose options are step counts (``Learner.curve_key``) are drawn; for the fine-tuned network,
    the curve of the step size chosen most often.
    """
    ax = _axes(ax, (6, 4))
    runs = [(f, s) for f in results.config.folds for s in results.config.seeds]
    for name, learner in results.learners.items():
        chosen_keys = [learner.curve_key(results.chosen[(name, k, f, s)]) for f, s in runs]
        if chosen_keys[0] is None:
            continue
        families = [key[0] for key in chosen_keys]
        family = max(set(families), key=families.count)
        curves = []
        for f, s in runs:
            by_option = results.option_rmse[(name, k, f, s)]
            curves.append({learner.curve_key(o)[1]: v for o, v in by_option.items() if learner.curve_key(o)[0] == family})
        steps = sorted(curves[0])
        values = np.array([[c[step] for step in steps] for c in curves])
        median = np.median(np.where(np.isfinite(values), values, np.nan), axis=0)
        diverged = np.sum(~np.isfinite(values), axis=0)
        line, = ax.plot(steps, median, marker="o", ms=3, label=name)
        for step, n in zip(steps, diverged):
            if n:
                ax.annotate(f"{n} diverged", (step, median[step]), fontsize=6, color=line.get_color())
    ax.set(xlabel="adaptation steps on the support set", ylabel=f"RMSE of {results.target_name} (mag)\nmedian over folds × seeds",
           yscale="log", title=f"meta-test, K = {k}")
    _plain_log_ticks(ax)
    ax.legend(fontsize=7)
    return ax


def plot_per_slice(results, k, learners, ax=None, seed_index=0, target_name=None):
    """RMSE in each meta-test slice against the slice's redshift: markers only, one slice one point."""
    ax = _axes(ax, (8, 4))
    centres = np.array([0.5 * (s["z_lo"] + s["z_hi"]) for s in results.slices])
    for offset, name in zip(np.linspace(-0.0008, 0.0008, len(learners)), learners):
        residuals = results.residuals(name, k)[seed_index]
        rmse = np.sqrt(np.mean(residuals.reshape(residuals.shape[0], -1) ** 2, axis=1))
        ax.plot(centres + offset, rmse, "o", ms=4, label=name)
    ax.set(xlabel="redshift of the meta-test task (middle of its range)",
           ylabel=f"RMSE of {target_name or results.target_name} in the task (mag)",
           title=f"Per-task errors, K = {k}, training seed {results.config.seeds[seed_index]} "
                 "(each task is meta-test in one fold)")
    ax.legend(fontsize=7)
    return ax


def plot_predicted_vs_true(results, name, k, ax=None, seed_index=0):
    """Predicted against true u − r for every meta-test query galaxy (density), with the one-to-one line."""
    ax = _axes(ax, (4.8, 4.4))
    truth = results.truth_array(k).ravel()
    predicted = truth + results.residuals(name, k)[seed_index].ravel()
    lims = tuple(np.quantile(truth, [0.002, 0.998]) + np.array([-0.1, 0.1]))
    ax.hexbin(truth, predicted, gridsize=45, extent=(*lims, *lims), mincnt=1, cmap="Greys", bins="log")
    ax.plot(lims, lims, color="tab:red", lw=0.8)
    threshold = float(np.mean(list(results.label_thresholds.values())))
    ax.axvline(threshold, color="0.5", lw=0.6, ls=":")
    ax.axhline(threshold, color="0.5", lw=0.6, ls=":")
    target = results.target_name
    ax.set(xlim=lims, ylim=lims, xlabel=f"true {target} (mag)", ylabel=f"predicted {target} (mag)",
           title=f"{name}, K = {k}, training seed {results.config.seeds[seed_index]}")
    return ax


def plot_coverage(results, k, learners, ax=None, seed_index=None):
    """Calibration: the share of meta-test query galaxies inside each central predictive interval, against its
    nominal level (on the diagonal: calibrated; below: intervals too narrow; above: too wide). All seeds
    pooled unless ``seed_index`` picks one."""
    ax = _axes(ax, (6, 5))
    levels = np.linspace(0.05, 0.99, 40)
    for name in dict.fromkeys(learners):  # a learner named twice (the headline may be the Bayesian layer) once
        pit = results.pit_values(name, k)
        pit = (pit if seed_index is None else pit[seed_index]).ravel()
        pit = pit[np.isfinite(pit)]
        if pit.size:
            ax.plot(levels, [np.mean(np.abs(pit - 0.5) <= level / 2) for level in levels], label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
    ax.set_xlabel("nominal level of the central predictive interval")
    ax.set_ylabel("share of meta-test galaxies inside it")
    seeds = "all seeds" if seed_index is None else f"seed {results.config.seeds[seed_index]}"
    ax.set_title(f"Predictive calibration at K = {k} ({seeds})", fontsize=10)
    ax.legend(fontsize=7)
    return ax


def save_figures(results, paired_rows, summary_rows, folder, k=10, learners=None):
    """Write the evaluation's figures as PNG files into ``folder``; returns their paths."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # the headline learner (best meta-learner on meta-validation) against the best baseline, both so chosen
    focus = learners or [results.best_meta_learner(k), results.best_baseline(k)]
    figures = {
        "paired_differences.png": lambda: plot_paired_differences(
            [r for r in paired_rows if r["group"] == "meta-learner"], "rmse", target_name=results.target_name,
            interval="rmse_simultaneous" if all(r.get("rmse_simultaneous") for r in paired_rows
                                                if r["group"] == "meta-learner") else None),
        "error_vs_k.png": lambda: plot_error_vs_k(summary_rows, "rmse", target_name=results.target_name),
        "error_vs_steps.png": lambda: plot_error_vs_steps(results, k),
        "per_slice.png": lambda: plot_per_slice(results, k, focus),
        "predicted_vs_true.png": lambda: plot_predicted_vs_true(results, focus[0], k),
        "coverage.png": lambda: plot_coverage(results, k, focus),
    }
    paths = []
    for name, draw in figures.items():
        draw()
        figure = plt.gcf()
        figure.tight_layout()
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
        paths.append(folder / name)
    return paths
