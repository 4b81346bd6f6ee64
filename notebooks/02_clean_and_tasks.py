# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Cleaning galaxies and cutting them into few-shot tasks
#
# **Learning goals**
# - clean a real catalogue step by step, and count what each step removes;
# - define an honest redness target ($g-r$) and label (red sequence / blue cloud), and features that
#   do not leak it;
# - tell data *missing at random* from data *missing not at random*, and see a leak ruin a score;
# - cut the catalogue into few-shot tasks, "cosmic slices" of narrow redshift, with meta-train,
#   meta-validation and meta-test splits that share no galaxy and no redshift range.
#
# **Prerequisites:** notebook 01; basic scikit-learn (`fit` / `predict`).
#
# **Runtime:** about 11–13 s on a 2-core CPU in laptop and CI mode alike (nothing here is shrunk); no GPU work.

# %% Colab or a bare kernel: install the course package when it is missing (a no-op when it is installed)
import importlib.util, os, subprocess, sys  # noqa: E401
if importlib.util.find_spec("galmeta") is None:
    url = os.environ.get("GALMETA_REPOSITORY") or input("URL of the galmeta git repository to install from: ")
    subprocess.run(["git", "clone", "--depth=1", url, "galmeta-course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "galmeta-course"], check=True)
    sys.path.insert(0, os.path.abspath("galmeta-course"))

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from galmeta import tasks as gt
from galmeta.config import describe_mode, seed_everything
from galmeta.data import load_galaxies

print(describe_mode())
rng = seed_everything()
galaxies = load_galaxies()
print(len(galaxies), "rows from", galaxies.meta["galmeta"]["source"])

# %% [markdown]
# ## 1. Cleaning, one counted step at a time
#
# The snapshot was put together from several random draws, so some objects appear twice; one
# photometric object can also have several spectra. SDSS writes $-9999$ for "no measurement"; some
# redshifts are (slightly) negative; a few galaxies have broken photometry (deblending errors,
# satellites, cosmic rays) that shows as impossible colours. Let us first count these by hand.

# %%
obj = np.asarray(galaxies["objID"])
n_duplicates_by_hand = obj.size - np.unique(obj).size
photo_z = galaxies["photoZ"]
n_sentinel_photoz = int(np.sum(np.asarray(photo_z.filled(0.0) if hasattr(photo_z, "filled") else photo_z) == -9999))
n_negative_z = int(np.sum(np.asarray(galaxies["z"]) <= 0))
print(f"repeated objID rows: {n_duplicates_by_hand}; photoZ = -9999: {n_sentinel_photoz}; z <= 0: {n_negative_z}")

# %% [markdown]
# `galmeta.tasks.clean_galaxies` does the same and more, and reports each step:

# %%
clean, report = gt.clean_galaxies(galaxies)
print(report)
removed = {step: n for step, n, _ in report.steps}
assert removed["duplicate objID (kept smallest zErr)"] == n_duplicates_by_hand
assert len(np.unique(clean["objID"])) == len(clean)
assert np.all(np.asarray(clean["z"]) > 0)
print(f"RESULT: cleaning kept {len(clean)} of {len(galaxies)} rows "
      f"({n_duplicates_by_hand} duplicate objIDs removed)")

# %% [markdown]
# ## 2. Target, label and features
#
# **Target (regression):** the observed-frame colour $g-r$ of dereddened model magnitudes, with its
# error $\sigma_{g-r} = \sqrt{\sigma_g^2+\sigma_r^2}$ kept for noise weights $1/\sigma^2$.
#
# **Label (classification):** red sequence if $u-r \ge 2.22$ (Strateva et al. 2001, AJ 122, 1861),
# blue cloud otherwise.
#
# **Features:** only the $u$, $i$, $z$ bands: brightness $i$, colours $u-i$ and $i-z$, the three errors,
# and flags for the spectral subclass. Neither $g$ nor $r$ enters: with both we could compute the
# target exactly. The redshift is withheld too: it is the hidden variable that makes tasks differ.

# %%
g_r, g_r_err, is_red = gt.redness_targets(clean)
X_raw, names = gt.galaxy_features(clean)
print("features:", names)
print(f"g-r: mean {g_r.mean():.3f}, std {g_r.std():.3f}; median error {np.median(g_r_err):.4f} mag; "
      f"red fraction {is_red.mean():.3f}")
assert not {"dered_g", "dered_r"} & set(names)

# %% [markdown]
# ### Missing values: at random, or not?
#
# Two columns have holes, for very different reasons.
#
# * `subClass` is empty for about half the galaxies. SDSS assigns `STARFORMING`, `STARBURST`, `AGN`
#   or `BROADLINE` only when the spectrum has strong emission lines. An empty value *means* "no strong
#   lines", typical of old, red galaxies: the value is **missing not at random**, and the fact that it
#   is missing is itself informative. We keep it as the feature `subclass_missing`.
# * `photoZ` is absent for whole query batches of the snapshot (two of its five source files were
#   queried without the photo-z join): missing **by batch**, unrelated to the galaxy.

# %%
sub_missing = np.asarray(clean["subClass"]) == ""
photoz_missing = np.isnan(np.asarray(clean["photoZ"], float))
print(f"subClass empty: {sub_missing.mean():.1%}; red fraction when empty {is_red[sub_missing].mean():.2f}, "
      f"when present {is_red[~sub_missing].mean():.2f}")
print(f"photoZ missing: {photoz_missing.mean():.1%}; red fraction when missing {is_red[photoz_missing].mean():.2f}, "
      f"when present {is_red[~photoz_missing].mean():.2f}")
assert is_red[sub_missing].mean() > is_red[~sub_missing].mean() + 0.3, "missing subClass flags red galaxies"
assert abs(is_red[photoz_missing].mean() - is_red[~photoz_missing].mean()) < 0.1, "photoZ is missing by batch"

# %% [markdown]
# Imputation must not be fitted on galaxies we evaluate on. `FeaturePreprocessor` wraps scikit-learn's
# `SimpleImputer(strategy="median", add_indicator=True)` and `StandardScaler`, and is fitted on
# meta-train galaxies only (section 4).
#
# ### A leak, measured
# `photoZ` looks harmless, but it is computed *from all five magnitudes*, g and r included, and it
# estimates the redshift we want hidden. Here is what it does to a plain ridge regression of $g-r$
# (trained on one half of the galaxies, scored on the other):

# %%
def ridge_rmse(X, y, train, test):
    model = make_pipeline(SimpleImputer(add_indicator=True), StandardScaler(), Ridge(alpha=1.0)).fit(X[train], y[train])
    return float(np.sqrt(np.mean((model.predict(X[test]) - y[test]) ** 2)))


X_leaky, names_leaky = gt.galaxy_features(clean, include_photoz=True)
has_photoz = ~photoz_missing
order = rng.permutation(np.flatnonzero(has_photoz))
half_train, half_test = order[: order.size // 2], order[order.size // 2:]
rmse_clean = ridge_rmse(X_raw, g_r, half_train, half_test)
rmse_leaky = ridge_rmse(X_leaky, g_r, half_train, half_test)
print(f"ridge RMSE of g-r without photoZ: {rmse_clean:.4f} mag; with photoZ: {rmse_leaky:.4f} mag")
assert rmse_leaky < rmse_clean
try:
    gt.assert_no_target_leak(names_leaky)
except ValueError as error:
    print("the guard says:", error)
print(f"RESULT: photoZ leak lowers ridge RMSE from {rmse_clean:.4f} to {rmse_leaky:.4f} mag")

# %% [markdown]
# ### Measurement errors as noise weights
# The target's error $\sigma_{g-r}$ is kept. A weighted fit gives each galaxy the weight $1/\sigma^2$
# (here with a floor of 0.02 mag, the scatter that remains even for perfect photometry, so that the brightest
# galaxies do not dominate). We score both fits by the weighted error:

# %%
weights = 1.0 / (g_r_err ** 2 + 0.02 ** 2)
model_plain = make_pipeline(SimpleImputer(), StandardScaler(), Ridge()).fit(X_raw[half_train], g_r[half_train])
model_weighted = make_pipeline(SimpleImputer(), StandardScaler(), Ridge()).fit(
    X_raw[half_train], g_r[half_train], ridge__sample_weight=weights[half_train])
weighted_mse = {name: float(np.average((m.predict(X_raw[half_test]) - g_r[half_test]) ** 2, weights=weights[half_test]))
                for name, m in (("unweighted", model_plain), ("weighted", model_weighted))}
print("weighted test MSE:", {k: round(v, 5) for k, v in weighted_mse.items()},
      f"(change {100 * (weighted_mse['weighted'] / weighted_mse['unweighted'] - 1):+.1f}%)")
print(f"median error of g-r {np.median(g_r_err):.4f} mag vs residual scatter {np.sqrt(weighted_mse['unweighted']):.3f} mag")
assert weighted_mse["weighted"] <= weighted_mse["unweighted"] * 1.01

# %% [markdown]
# The weights change little here: the median photometric error of $g-r$ is far below the scatter of the
# relation we fit, so the noise is dominated by the galaxies, not the measurements. Weights matter where
# errors are comparable to that scatter: faint galaxies, the $u$ band, higher redshift.

# %% [markdown]
# The leaky score looks better, and it is a lie: in a new field the photo-z would carry information
# from the very bands we pretend not to have. galmeta's feature builder refuses `photoZ` unless asked
# for it explicitly, for this demonstration.
#
# ## 3. Why tasks differ: colours shift with redshift
#
# We observe galaxies at different redshifts through the same filters, so their light is shifted: the
# observed $g-r$ of the same kind of galaxy rises with $z$ (the 4000 Å break moves through the $g$
# band). The relation between our features and $g-r$ therefore changes from one redshift slice to the
# next. A slice's redshift is hidden; a few labelled galaxies of the slice reveal its mapping: that is
# the few-shot problem.

# %%
zc = np.asarray(clean["z"], float)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].hist2d(zc, g_r, bins=[np.linspace(0.01, 0.25, 60), np.linspace(0.1, 1.3, 60)], cmap="Greys", cmin=1)
axes[0].set(xlabel="redshift z", ylabel="g − r", title="Observed colour against redshift")
bins = np.linspace(0.01, 0.21, 11)
slope = []
for lo, hi in zip(bins[:-1], bins[1:]):
    sel = (zc >= lo) & (zc < hi)
    coef = np.polyfit(X_raw[sel, names.index("u_minus_i")], g_r[sel], 1)
    slope.append(coef)
    xs_line = np.linspace(1.5, 4.0, 2)
    axes[1].plot(xs_line, np.polyval(coef, xs_line), color=plt.cm.viridis((lo - 0.01) / 0.2), label=f"{lo:.2f}–{hi:.2f}")
axes[1].set(xlabel="u − i", ylabel="g − r (linear fit per slice)", title="The mapping drifts with z")
axes[1].legend(fontsize=7, ncol=2)
plt.tight_layout()
plt.show()
intercepts = np.array([c[1] + c[0] * 2.5 for c in slope])
print("fitted g-r at u-i = 2.5 per slice:", np.round(intercepts, 3))
assert intercepts[-1] > intercepts[0] + 0.05, "the same galaxy colour maps to redder g-r at higher z"

# %% [markdown]
# ## 4. Tasks and splits
#
# A **task** is the set of galaxies in a redshift window of width 0.005 (about 20 Mpc of depth): one
# "cosmic slice". The redshift axis 0.01–0.21 is cut into blocks of 0.02 dealt to meta-train,
# meta-test and meta-validation in a repeating pattern, so every split spans the range but no two
# splits share a redshift interval. Meta-train windows overlap (stride 0.0025) to give more tasks;
# validation and test windows do not, so their tasks are independent.

# %%
data = gt.prepare_galaxy_tasks(galaxies)
for split in ("train", "val", "test"):
    sizes = [t.size for t in data.tasks[split]]
    print(f"{split:>5s}: {len(sizes):3d} tasks, galaxies per task min {min(sizes)} / median {int(np.median(sizes))} / "
          f"max {max(sizes)}, {data.dropped[split]} windows dropped (< 40 galaxies)")
    print(f"RESULT: meta-{split}: {len(sizes)} tasks, median {int(np.median(sizes))} galaxies per task")
print("blocks:", gt.redshift_splits())

# %% [markdown]
# The assertions that make this notebook a test: no galaxy and no redshift interval in two splits,
# and the preprocessor saw only meta-train galaxies.

# %%
members = {s: np.concatenate([t.indices for t in data.tasks[s]]) for s in data.tasks}
for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
    assert not np.intersect1d(members[a], members[b]).size, f"{a} and {b} share galaxies"
    for ta in data.tasks[a]:
        for tb in data.tasks[b]:
            assert ta.z_hi <= tb.z_lo or tb.z_hi <= ta.z_lo, f"{ta.name} overlaps {tb.name}"
    assert zc[members[a]].size and zc[members[b]].size
train = data.train_indices()
scaler = data.preprocessor.pipeline[-1]
np.testing.assert_allclose(scaler.mean_[: len(names)], X_raw[train].mean(axis=0), rtol=1e-10)
assert "photoZ" not in data.feature_names
print("splits disjoint; scaler fitted on", train.size, "meta-train galaxies")

# %% [markdown]
# ## 5. Sampling K-shot tasks
#
# `TaskSampler` draws, for each task, K support galaxies and a disjoint query set, with an explicit
# `numpy.random.Generator`: the same seed gives the same draws.

# %%
K, Q = 10, 30
sampler = data.sampler("train", n_support=K, n_query=Q)
xs, ys, xq, yq = sampler.sample(np.random.default_rng(1), n_tasks=25)
print("support", xs.shape, ys.shape, "query", xq.shape, yq.shape)
again = sampler.sample(np.random.default_rng(1), n_tasks=25)
assert all(np.array_equal(a, b) for a, b in zip((xs, ys, xq, yq), again))

support, query, task_ids = sampler.sample_indices(np.random.default_rng(2), n_tasks=4)
fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), sharey=True)
col_ui = X_raw[:, names.index("u_minus_i")]
for ax, s_idx, q_idx, t in zip(axes, support, query, task_ids):
    task = sampler.tasks[t]
    ax.scatter(col_ui[task.indices], g_r[task.indices], s=3, color="0.85", label="task")
    ax.scatter(col_ui[q_idx], g_r[q_idx], s=12, color="tab:blue", label=f"query ({Q})")
    ax.scatter(col_ui[s_idx], g_r[s_idx], s=40, marker="*", color="tab:red", label=f"support (K={K})")
    ax.set(title=task.name, xlabel="u − i")
    assert not np.intersect1d(s_idx, q_idx).size
axes[0].set_ylabel("g − r")
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# A task that is too small for the K and query size asked for is an error that names it:

# %%
smallest = min(data.tasks["test"], key=lambda t: t.size)
try:
    data.sampler("test", n_support=20, n_query=smallest.size)
except gt.TooFewGalaxiesError as error:
    print(error)

# %% [markdown]
# ## Summary
# - Cleaning removed duplicate objects, sentinel values, non-physical redshifts and broken photometry,
#   each step counted.
# - The target is observed $g-r$ (with errors as weights); the label is Strateva's $u-r \ge 2.22$;
#   features come from the $u$, $i$, $z$ bands and the spectral subclass only. `photoZ` leaks.
# - Missing `subClass` is informative (missing not at random); missing `photoZ` is missing by batch.
# - Tasks are narrow redshift slices with the redshift hidden; meta-train, meta-validation and meta-test
#   use disjoint redshift ranges, and the preprocessing is fitted on meta-train only.
#
# ## Exercises
# 1. Use a colour–magnitude cut instead of Strateva's: call a galaxy red when
#    $g - r > 0.63 - 0.02\,(M_r + 20)$ needs an absolute magnitude, so first try the observed-frame
#    version $g - r > 0.7$. How often do the two labels agree?
# 2. Make tasks twice as wide (`window=0.01`). How many tasks per split do you get, and how much does
#    the mapping drift within one task now?

# %% tags=["solution"]
# Solution 1
label_gr = g_r > 0.7
agreement = np.mean(label_gr == is_red)
print(f"g-r > 0.7 agrees with u-r >= 2.22 for {agreement:.1%} of galaxies")
assert agreement > 0.7

# %% tags=["solution"]
# Solution 2
wide, dropped = gt.build_tasks(zc, gt.redshift_splits(), window=0.01, train_stride=0.005)
print({split: len(v) for split, v in wide.items()}, "dropped:", dropped)
