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
# # 05 · Does meta-learning estimate galaxy redness better?
#
# **The question.** In a new slice of the universe, we have $g, r, i, z$ photometry of every galaxy and the
# $u$ band for only $K$ of them. Does a meta-learned model estimate the others' $u-r$ colour, and whether they
# are red, better than the obvious alternatives?
#
# **Learning goals**
# - evaluate few-shot learners so that the answer survives a referee: every redshift block meta-test once
#   (rotating folds), the same draws for every learner, every option chosen on meta-validation;
# - put uncertainty where the independence is: resample **slices** (then draws within them), repeat
#   **training seeds**; build the robust scatter $\sigma_\mathrm{NMAD}$ and the slice bootstrap by hand and
#   check them against the library;
# - compare learners **paired**, against the strongest simple baseline (a pooled model plus a shrunk
#   per-slice offset), and say no more than the paired intervals allow.
#
# - judge predictive distributions, not only predictions: negative log-likelihood, coverage of the central
#   68% and 95% intervals, a calibration figure.
#
# **Prerequisites:** notebooks 02–05.
#
# **Runtime:** on a 2-core CPU, CI mode 72 s (all 5 folds, 1 training seed, 200 meta-iterations,
# 4 draws per slice: the numbers illustrate the protocol); laptop mode 371 s (the whole protocol: 5 folds,
# 3 seeds, 600 meta-iterations; each meta-learner's 15 trainings run as one population). The full evaluation quoted in the README (5 folds × 5 seeds, 10 draws per slice, and the
# sealed confirmation sample) is `python benchmarks/redness_evaluation.py --confirm`. GPU: not measured
# (this notebook's networks are small).

# %% Colab or a bare kernel: install the course package when it is missing (a no-op when it is installed)
import importlib.util, os, subprocess, sys  # noqa: E401
COURSE_COMMIT = "main"  # `galmeta course generate` writes here the commit this notebook was made from
if importlib.util.find_spec("galmeta") is None:
    url = os.environ.get("GALMETA_REPOSITORY") or input("URL of the galmeta git repository to install from: ")
    if url.strip().startswith("-"):
        raise ValueError(f"{url!r} is not a repository URL (it starts with '-')")
    commit = os.environ.get("GALMETA_COMMIT") or COURSE_COMMIT  # the course as this notebook knows it
    subprocess.run(["git", "init", "-q", "galmeta-course"], check=True)
    subprocess.run(["git", "-C", "galmeta-course", "fetch", "-q", "--depth=1", "--", url.strip(), commit], check=True)
    subprocess.run(["git", "-C", "galmeta-course", "checkout", "-q", "FETCH_HEAD"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "galmeta-course"], check=True)
    sys.path.insert(0, os.path.abspath("galmeta-course"))

# %%
import matplotlib.pyplot as plt
import numpy as np

from galmeta import evaluate as ev
from galmeta import metrics as gm
from galmeta import plots
from galmeta.config import MODE, by_mode, describe_mode, seed_everything, try_device
from galmeta.course import repository_root
from galmeta.data import load_galaxies
from galmeta.tasks import build_catalogue

print(describe_mode())
seed_everything(0)
device = try_device()
catalogue = build_catalogue(load_galaxies())
print(f"device {device}; {len(catalogue.target)} clean galaxies; target u - r, features {catalogue.feature_names}")

# %% [markdown]
# ## 1. The protocol
#
# * **Folds.** The redshift range 0.01–0.21 is cut into ten blocks; in each of five folds two blocks are
#   meta-test, two meta-validation and six meta-train (notebook 02). Every block is meta-test exactly once,
#   so all 39 meta-test slices (windows of 0.005 in redshift with 40 development galaxies or more) are
#   used. Everything that learns is trained again for every fold.
# * **Draws.** In every meta-test slice and for every $K \in \{1, 5, 10, 20\}$: a fixed number of seeded
#   draws of $K$ support galaxies and 20 query galaxies. Every learner, and every training seed of a
#   learner, predicts exactly these draws.
# * **Tuning.** Options (adaptation steps, step sizes, ridge strength, neighbours, prior scale) are chosen per
#   fold, seed and $K$ on draws from half of the **meta-validation** slices; each learner's meta-validation
#   RMSE, by which the headline learner and the best baseline are chosen, is measured on the other half, so
#   that a learner with many options gains nothing from having them. Nothing is chosen on meta-test.
# * **Galaxies.** The development sample only: a fifth of the SDSS imaging runs is sealed for one
#   confirmation run (notebook 02, `galmeta.samples`), and no notebook sees those galaxies.
# * **Predictive distributions.** Every regressor gives each query galaxy a mean and a variance: the Bayesian
#   learners of notebook 05 from their posterior, point learners from a variance per $K$ fitted on
#   meta-validation; both include the galaxy's own measurement error.
# * **Target and label.** Every regressor predicts $u-r$; the label is the prediction thresholded at 2.22.
#   The label is the true $u-r$ thresholded, so perfect colours give perfect labels (the ceiling).
# * **Learners.** Each is one object with its options and a `predict(data, draws, option)`
#   (`galmeta.evaluate.Learner`): the MAML family in PyTorch (MAML, FOMAML, Meta-SGD, ANIL and MAML++ of
#   notebook 04, meta-trained with $K$ drawn from 1 to 20 per meta-batch), the NumPy MAML of notebook 03
#   (plain, meta-trained at $K = 10$ only: a check, and the "before" of notebook 04's tail comparison), the
#   meta-learned Bayesian last layer of notebook 05, and the baselines: pooled models (network, gradient
#   boosting, ridge) alone, plus a shrunk slice offset, and plus a random intercept and random slopes
#   (notebook 05's hierarchical linear model), the fine-tuned network, per-task ridge and nearest neighbours.

# %%
config = ev.EvaluationConfig(
    seeds=by_mode(ci=(0,), laptop=(0, 1, 2), full=(0, 1, 2, 3, 4)),
    meta_iterations=by_mode(ci=200, laptop=600, full=5_000),
    pooled_epochs=by_mode(ci=20, laptop=50, full=100),
    n_draws=by_mode(ci=4, laptop=8, full=10), n_val_draws=by_mode(ci=2, laptop=4, full=5))
n_resamples = by_mode(ci=300, laptop=500, full=1000)
learners = ev.default_learners(config, device=device)
for learner in learners:
    print(f"{learner.group:>12s}  {learner.name}")

# %% [markdown]
# ## 2. Train and predict, fold by fold
#
# Each meta-learner is trained once per fold and seed, and `run_evaluation` trains those
# folds × seeds trainings of one learner **as one population** (notebook 04, section 7): one batched
# computation, early stopping per member, every member equal to its own training up to float32 rounding
# (`population=False` trains them one by one). Laptop mode runs the whole protocol: all five folds, three
# seeds, 600 meta-iterations (the full run: 5 seeds and 5,000).

# %%
results = ev.run_evaluation(catalogue, learners, config, progress=print)
print(f"{len(results.slices)} meta-test slices, {len(config.seeds)} training seed(s), {config.n_draws} draws per "
      f"slice and K; {results.seconds:.0f} s")
assert len(results.slices) >= 30

# %% [markdown]
# Every draw comes from its fold's meta-test slices, never from meta-validation or meta-train:

# %%
for k in config.ks:
    for fold_draws, fold in zip(results.draws_of(k), config.folds):
        data = catalogue.fold(fold)
        used = np.concatenate([fold_draws.support.ravel(), fold_draws.query.ravel()])
        assert np.isin(used, data.indices("test")).all()
        assert not np.isin(used, data.indices("val")).any() and not np.isin(used, data.indices("train")).any()
print("draws: meta-test slices only")

# %% [markdown]
# ## 3. Two tools, by hand first
#
# **Robust scatter.** RMSE squares errors, so a few wild predictions dominate it. The normalised median
# absolute deviation, $\sigma_\mathrm{NMAD} = 1.4826\,\mathrm{median}\,|e - \mathrm{median}(e)|$, equals the
# standard deviation for Gaussian errors and ignores the tails. Report both: a reader who must trust one
# prediction cares about the tail.

# %%
residuals = results.residuals("pooled network", 10)          # (seeds, slices, draws, queries)
e = residuals[0].ravel()
nmad_by_hand = 1.4826 * np.median(np.abs(e - np.median(e)))
print(f"sigma_NMAD by hand {nmad_by_hand:.5f} mag, galmeta {gm.sigma_nmad(e):.5f} mag; RMSE {np.sqrt(np.mean(e**2)):.5f}")
assert np.isclose(nmad_by_hand, gm.sigma_nmad(e), rtol=1e-12)

# %% [markdown]
# **The slice bootstrap.** Galaxies of one draw share a support set; draws of one slice share the slice.
# What would change in a repeat of the experiment is *which slices* we got. So each bootstrap resample picks
# slices with replacement, then draws within each picked slice with replacement, and recomputes the metric.
# Written out:

# %%
def slice_bootstrap_rmse(residuals, n_resamples, seed):
    rng = np.random.default_rng(seed)
    n_seeds, n_slices, n_draws, _ = residuals.shape
    slices = rng.integers(n_slices, size=(n_resamples, n_slices))
    draws = rng.integers(n_draws, size=(n_resamples, n_slices, n_draws))
    values = []
    for b in range(n_resamples):
        picked = residuals[:, slices[b][:, None], draws[b]]            # (seeds, slices, draws, queries)
        values.append(np.sqrt(np.mean(picked.reshape(n_seeds, -1) ** 2, axis=1)).mean())
    return np.quantile(values, [0.025, 0.975])


by_hand = slice_bootstrap_rmse(residuals, 200, seed=11)
library = gm.bootstrap("rmse", residuals, n_resamples=200, seed=11)
print(f"95% interval by hand [{by_hand[0]:.5f}, {by_hand[1]:.5f}], galmeta {library:.5f}")
np.testing.assert_allclose(by_hand, [library.lo, library.hi], rtol=1e-12)

# %% [markdown]
# Treating every draw as independent gives a narrower interval on the same data, and it is wrong: it
# pretends we saw many more slices than we did.

# %%
widths = {}
for k in config.ks:
    over_slices = results.interval("pooled network", k, "rmse", n_resamples, level="slices")
    over_draws = results.interval("pooled network", k, "rmse", n_resamples, level="draws")
    widths[k] = (over_slices.hi - over_slices.lo, over_draws.hi - over_draws.lo)
    print(f"K={k:2d}: pooled network RMSE {over_slices.estimate:.3f}; 95% width over slices {widths[k][0]:.3f} mag, "
          f"over draws {widths[k][1]:.3f} mag")
assert all(w_slices > w_draws for w_slices, w_draws in widths.values()), "slices differ: resampling them widens"

# %% [markdown]
# The same argument goes one level up. The four slices cut from one redshift block are neighbours: their
# galaxies come from the same populations and the same photometric conditions, so when a learner does
# well in one slice it tends to do well in the block's others. The **intraclass correlation** (ICC) says
# how much: the share of the variance of the per-slice differences that lies between blocks (0: slices
# of a block vary as much as any; 1: they move as one). With a high ICC, 40 slices are worth little more
# than 10 blocks, and an interval that resamples slices is too narrow.
#
# So the block is the unit. With only 10 blocks a bootstrap over blocks is itself optimistic, so galmeta
# uses a **delete-one-block jackknife**: recompute the paired difference with each block left out, take
# the spread of those ten values as the standard error, and use Student's $t$ with 9 degrees of freedom.
# Whether an interval keeps its promise is measured, not assumed: on synthetic slices with a true
# difference of 0 and block-correlated errors (10 blocks × 4 slices, ICC near 0.9), count how often each
# nominal 95% interval covers 0.

# %%
def correlated_pair(rng, n_blocks=10, per_block=4, draws=3, queries=10):
    """Residuals of two exchangeable learners (true RMSE difference 0) whose errors move together by block."""
    blocks = np.repeat(np.arange(n_blocks), per_block)
    common = rng.normal(0, 0.15, (blocks.size, draws, queries))   # the galaxies both learners face
    pair = []
    for _ in range(2):
        offset = rng.normal(0, 0.15, n_blocks)[blocks] + rng.normal(0, 0.02, blocks.size)   # block, then slice
        pair.append(common + offset[:, None, None] + rng.normal(0, 0.02, common.shape))
    return pair[0], pair[1], blocks


rng = np.random.default_rng(5)
covered = {"slice bootstrap": [], "block jackknife": []}
iccs = []
for replicate in range(by_mode(ci=40, laptop=200)):
    a, b, blocks = correlated_pair(rng)
    iccs.append(gm.intraclass_correlation(gm.per_slice("rmse", a) - gm.per_slice("rmse", b), blocks))
    for method, interval in (("slice bootstrap", gm.paired_difference("rmse", a, b, n_resamples=200, seed=replicate)),
                             ("block jackknife", gm.block_jackknife("rmse", blocks, a, b))):
        covered[method].append(interval.lo <= 0 <= interval.hi)
print(f"synthetic slices, median ICC {np.median(iccs):.2f}; share of nominal 95% intervals that cover the truth:")
for method, hits in covered.items():
    print(f"  {method:16s} {np.mean(hits):.2f}  ({len(hits)} replicates)")
assert np.mean(covered["block jackknife"]) > np.mean(covered["slice bootstrap"])

# %% [markdown]
# On this run's real slices, the ICC of the offset baseline's gain over the pooled network, and both
# intervals side by side (the headline table below gives both for every learner):

# %%
for k in config.ks[1:]:
    slice_interval = results.paired("pooled network + slice offset", "pooled network", k, n_resamples=n_resamples)
    block_interval = results.paired_blocks("pooled network + slice offset", "pooled network", k)
    icc = results.paired_icc("pooled network + slice offset", "pooled network", k)
    print(f"K={k:2d}: offset - pooled {slice_interval.estimate:+.4f} mag; slice interval [{slice_interval.lo:+.4f}, "
          f"{slice_interval.hi:+.4f}], block interval [{block_interval.lo:+.4f}, {block_interval.hi:+.4f}]; ICC {icc:.2f}")

# %% [markdown]
# ## 4. The results
#
# First every learner on its own (estimate and 95% interval; `worst_draw_rmse` and `tail_fraction`, the
# share of draws whose RMSE exceeds 0.3 mag, show the tail):

# %%
summary_rows = results.summary_rows(n_resamples=n_resamples)
print(ev.summary_markdown(summary_rows))

# %% [markdown]
# Then the headline: every learner **minus the best non-meta baseline** (chosen on meta-validation RMSE at
# each $K$), on the same resamples of slices and draws. Below zero means better than that baseline.

# %%
paired_rows = results.paired_rows(n_resamples=n_resamples)
print(ev.paired_markdown(paired_rows, results))
folder = repository_root() / "build" / "results" / f"notebook_{MODE}"
results.write(folder, summary=summary_rows, paired=paired_rows)
print(f"per-slice CSV, summary and paired tables written to {folder}")

# %% [markdown]
# Checks that can fail. The hidden redshift is worth something (the oracle beats the pooled network,
# paired); slices differ by an offset that $K \ge 5$ galaxies can estimate (the shrunk offset beats the
# pooled network, paired, at slice level: at block level, above, the same gain need not be resolved); the from-scratch NumPy MAML behaves like the PyTorch MAML at $K = 10$, the support
# size both meet in training (the NumPy learner trains at $K = 10$ only, the PyTorch one at 1 to 20).

# %%
for k in config.ks:
    oracle_gain = results.paired("oracle: pooled network + redshift", "pooled network", k, n_resamples=n_resamples)
    assert oracle_gain.hi < 0, f"K={k}: the oracle should beat the pooled network ({oracle_gain})"
    if k >= 5:
        offset_gain = results.paired("pooled network + slice offset", "pooled network", k, n_resamples=n_resamples)
        assert offset_gain.hi < 0, f"K={k}: the per-slice offset should help ({offset_gain})"
        print(f"K={k:2d}: oracle - pooled {oracle_gain:+.3f} mag; offset - pooled {offset_gain:+.3f} mag")
print("checks passed")

# %% [markdown]
# The NumPy and PyTorch MAML of the table above train differently (K = 10 against K from 1 to 20), so their
# errors need not agree. Whether they compute the same thing is a question for identical training: the same
# meta-batches, float64, the same Adam. Then they agree to the arithmetic's precision, not to a tolerance in
# magnitudes:

# %%
import torch

from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt

fold0 = catalogue.fold(0)
sampler = fold0.sampler("train", 10, 20)
start = mn.init_mlp((fold0.X.shape[1], 40, 40, 1), np.random.default_rng(0))
params = [(W.copy(), b.copy()) for W, b in start]   # each learner its own copy: nothing shared in memory
twin = mt.MetaLearner(mt.MLP.from_numpy(start), algorithm="maml", inner_lr=0.01, device="cpu", dtype=torch.float64)
adam = mn.Adam(params)
for iteration in range(20):
    batch = sampler.sample(np.random.default_rng(iteration), 25)
    loss_numpy, grads = mn.meta_gradient(params, *batch, inner_lr=0.01)
    adam.step(params, grads)
    loss_torch = twin.step(*batch)
torch_params = np.concatenate([p.detach().numpy().ravel() for pair in twin.model.pairs() for p in pair])
numpy_params = np.concatenate([p.ravel() for pair in params for p in pair])
gap = np.max(np.abs(torch_params - numpy_params)) / np.max(np.abs(numpy_params))
initial = np.concatenate([p.ravel() for pair in mn.init_mlp((fold0.X.shape[1], 40, 40, 1), np.random.default_rng(0))
                          for p in pair])
print(f"training moved the parameters by up to {np.max(np.abs(numpy_params - initial)):.3f}")
print(f"after 20 identical meta-iterations: largest parameter difference {gap:.1e} of the largest parameter; "
      f"meta-loss {loss_numpy:.6f} (NumPy) and {loss_torch:.6f} (PyTorch)")
assert gap < 1e-10

# %% [markdown]
# ## 5. Predictive distributions
#
# A prediction with an uncertainty can be checked twice: is the truth inside the central 68% and 95%
# predictive intervals as often as promised, and how probable did the learner find it (the mean negative
# log-likelihood per galaxy, in nats: lower is better, and it punishes both overconfidence and vagueness)?
# For each $K$, the headline meta-learner and the best baseline (both chosen on meta-validation), and the
# Bayesian layer against the best baseline, paired at block level:

# %%
for k in config.ks:
    reference = results.best_baseline(k)
    for name in dict.fromkeys([results.best_meta_learner(k), "Bayesian last layer, meta-learned", reference]):
        nll = results.interval(name, k, "nll", n_resamples)
        c68, c95 = (results.interval(name, k, m, n_resamples).estimate for m in ("coverage_68", "coverage_95"))
        print(f"K={k:2d} {name:55s} NLL {nll.estimate:+.3f} nats/galaxy; inside 68%: {c68:.3f}, inside 95%: {c95:.3f}")
    d_nll = results.paired_blocks("Bayesian last layer, meta-learned", reference, k, "nll")
    print(f"      Bayesian layer - {reference}: ΔNLL {d_nll.estimate:+.3f} [{d_nll.lo:+.3f}, {d_nll.hi:+.3f}] (block interval)")

# %% [markdown]
# The calibration curve: for every nominal level, the share of meta-test galaxies inside the central interval
# of that level (all training seeds pooled). On the diagonal a learner's uncertainties mean what they say:

# %%
fig, ax = plt.subplots(figsize=(7, 5.5))
plots.plot_coverage(results, 10, [results.best_meta_learner(10), "Bayesian last layer, meta-learned",
                                  results.best_baseline(10), "pooled network + slice offset"], ax=ax)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Figures
#
# The headline figure: paired differences of the meta-learners to the best non-meta baseline at each $K$
# (left: RMSE with the simultaneous block intervals of the verdict below; right: balanced accuracy with slice
# intervals).

# %%
meta_rows = [r for r in paired_rows if r["group"] == "meta-learner"]
fig, axes = plt.subplots(1, 2, figsize=(15, 4.6))
plots.plot_paired_differences(meta_rows, "rmse", ax=axes[0], interval="rmse_simultaneous")
plots.plot_paired_differences(meta_rows, "balanced_accuracy", ax=axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# Each learner's RMSE against $K$ (log axis; dashed: references that do not compete), and the meta-test
# error against the number of adaptation steps at $K = 10$ (step 0 is the learner before it sees the support):

# %%
fig, axes = plt.subplots(1, 2, figsize=(15, 4.6))
plots.plot_error_vs_k(summary_rows, "rmse", ax=axes[0])
plots.plot_error_vs_steps(results, 10, ax=axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# Per-slice errors against redshift (each marker is one meta-test slice; there is no slice between them),
# and predicted against true colour for every meta-test query galaxy:

# %%
focus = [results.best_meta_learner(10), results.best_baseline(10)]   # both chosen on meta-validation
fig, axes = plt.subplots(1, 2, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1.7, 1]})
plots.plot_per_slice(results, 10, focus, ax=axes[0])
plots.plot_predicted_vs_true(results, focus[0], 10, ax=axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7. What this run says
#
# Written by code from this run's paired intervals, so it says no more than they allow. The learner it
# speaks of is the meta-learner with the best **meta-validation** RMSE (picking the best of seven on meta-test
# would be a selection the intervals do not account for). The **family** of claims is every meta-learner at
# every $K$ ($m$ comparisons), so "better" needs the **simultaneous** block interval (Bonferroni: each at level
# $1 - 0.05/m$) to exclude zero, and the effect to exceed twice its seed standard error (seed sd / √seeds), so
# that neither the blocks we happened to get nor the training seed explains it. With one seed (CI mode) the
# seed condition cannot be checked, and the verdict says so.

# %%
def verdict(interval, seed_sd=float("nan"), n_seeds=1, lower_is_better=True):
    if not interval.excludes_zero():
        return "indistinguishable from"
    if not np.isfinite(seed_sd):
        return "(one training seed: seed variation unchecked) " + verdict(interval, 0.0, 1, lower_is_better)
    if abs(interval.estimate) <= 2 * seed_sd / np.sqrt(n_seeds):
        return "not resolved from seed variation against"
    better = interval.hi < 0 if lower_is_better else interval.lo > 0
    return "better than" if better else "worse than"


family = len(results.names("meta-learner")) * len(config.ks)
for k in config.ks:
    reference = results.best_baseline(k)
    rows = {r["learner"]: r for r in paired_rows if r["K"] == k and r["group"] == "meta-learner"}
    best = results.best_meta_learner(k)
    d_rmse, d_sim = rows[best]["rmse"], rows[best]["rmse_simultaneous"]
    print(f"K={k:2d}: meta-learner chosen on meta-validation {best}: ΔRMSE {d_rmse.estimate:+.3f} mag, simultaneous "
          f"interval [{d_sim.lo:+.3f}, {d_sim.hi:+.3f}] (family of {family}, {len(set(results.blocks()))} blocks, ICC "
          f"{rows[best]['rmse_icc']:.2f}, seed sd {d_rmse.seed_sd_text}) -> "
          f"{verdict(d_sim, d_rmse.seed_sd, len(config.seeds))} {reference}")
    print(f"RESULT: K={k}: {best} - {reference}: ΔRMSE {d_sim.estimate:+.3f} [{d_sim.lo:+.3f}, "
          f"{d_sim.hi:+.3f}] mag (simultaneous block interval)")

# %% [markdown]
# How to read it:
#
# * The **oracle** shows how much there is to gain: knowing a galaxy's redshift lowers the pooled network's
#   error. A few-shot learner can at best recover that from its support set.
# * The **hierarchical models of notebook 05** are the bar to beat: a pooled model plus a shrunk slice offset,
#   or plus a random intercept and random slopes, estimate what a slice's $K$ galaxies say by empirical
#   Bayes, with no gradient-based meta-learning at all. A meta-learner earns its keep only where its paired
#   interval against the best of them lies below zero; the Bayesian last layer starts as one of them, so it
#   shows what learned features add.
# * A ranking without a paired interval says nothing; an interval over draws instead of slices says too much.
#
# ## 8. Limitations
#
# * **Ten blocks.** Slices of one redshift block are correlated, so the block intervals rest on ten units;
#   neighbouring blocks may still be correlated with each other.
# * **Selection during development.** These meta-test slices were looked at while the course's learners were
#   revised; the README therefore also reports one run on the sealed confirmation sample.
# * **Selection.** The SDSS main sample is flux-limited and the snapshot keeps galaxies with all five errors
#   below 0.1 mag, which removes faint-in-$u$ red galaxies at higher redshift (notebook 01).
# * **Observed-frame colours.** $u-r$ is not k-corrected: part of what the learners fit is the redshift shift
#   of the filters, which is exactly why the hidden redshift matters.
# * **One network size, one budget.** Every meta-learner is a 40-40 network with at most the same number of
#   meta-iterations, chosen by early stopping; bigger networks or longer training might change the ranking.
#
# ## Summary
# - Rotating folds use every redshift block as meta-test once; every learner predicts the same draws; options
#   are chosen on meta-validation.
# - Blocks are the unit of independence: the headline intervals are block jackknife intervals, simultaneous
#   over the family of meta-learners × K; learners are compared paired, against the best non-meta baseline
#   chosen on meta-validation; the training seeds' spread must be exceeded too.
# - Every learner gives a predictive distribution; NLL, coverage and a calibration curve judge it.
# - The table, the per-slice CSV and the paired differences are in `build/results/`; the full run is quoted in
#   the README.
#
# ## Exercises
#
# Each exercise has a hint and a **self-check** cell: it reminds you until you have answered and fails if the answer is wrong. All run offline.
#
# 1. **Warm-up: slices or draws?** For MAML at $K = 5$, how many times wider is the 95% interval of the RMSE
#    when slices are resampled than when draws are treated as independent? Store the ratio in `width_ratio`.
#    *Hint:* `results.interval(name, k, "rmse", n_resamples, level="slices")` and `level="draws"`.
# 2. **Core: add a learner in one object.** Write a `Learner` that predicts the pooled ridge model plus the
#    *unshrunk* mean support residual (no empirical-Bayes factor), run it with `run_evaluation` on one fold and
#    seed beside `pooled ridge + slice offset`, and store the paired RMSE differences (raw minus shrunk) at
#    $K = 1$ and $K = 20$ in `raw_minus_shrunk`. When does shrinking matter, and why?
#    *Hint:* subclass `ev.Learner`, set `name`, and implement `fit(data, seed, context)` and
#    `predict(data, draws, option)`; `gb.PooledRidge().fit(...)` and its `base_predict(data, galaxies)` give the
#    pooled part. With one galaxy the mean residual is mostly noise; with twenty it is mostly the offset.
# 3. **Stretch: ranking, not thresholding.** Balanced accuracy judges one threshold; ROC AUC judges the ranking
#    of red against blue. Compute the paired difference in ROC AUC between the best meta-learner and the best
#    baseline at $K = 10$ and store it in `auc_difference`. Does it tell the same story as balanced accuracy?
#    *Hint:* `results.paired(name, reference, k, metric="roc_auc", n_resamples=...)`.

# %% tags=["solution"]
# Solution 1
over_slices = results.interval("MAML", 5, "rmse", n_resamples, level="slices")
over_draws = results.interval("MAML", 5, "rmse", n_resamples, level="draws")
width_ratio = (over_slices.hi - over_slices.lo) / (over_draws.hi - over_draws.lo)
print(f"MAML, K=5: interval width over slices {over_slices.hi - over_slices.lo:.3f} mag, over draws "
      f"{over_draws.hi - over_draws.lo:.3f} mag: {width_ratio:.1f}x")

# %%
# Self-check 1: a reminder until you have answered, an error if the answer is wrong
if {"width_ratio"} <= set(globals()):
    assert width_ratio > 1, "slices differ, so resampling them must widen the interval"
else:
    print("exercise 1: not answered yet (define width_ratio)")

# %% tags=["solution"]
# Solution 2
from galmeta import baselines as gb


class RidgePlusRawOffset(ev.Learner):
    name = "pooled ridge + raw offset"

    def fit(self, data, seed, context):
        self.base = gb.PooledRidge().fit(data, seed, context)
        return self

    def predict(self, data, draws, option=None):
        support_residual = data.y[draws.support, 0] - self.base.base_predict(data, draws.support)
        return self.base.base_predict(data, draws.query) + support_residual.mean(axis=-1, keepdims=True) + data.target_mean


small = ev.EvaluationConfig(ks=(1, 20), folds=(0,), seeds=(0,), n_draws=4, n_val_draws=2, include_numpy_check=False,
                            algorithms=())
exercise = ev.run_evaluation(catalogue, [RidgePlusRawOffset(), gb.PooledPlusOffset(gb.PooledRidge())], small)
raw_minus_shrunk = {k: exercise.paired("pooled ridge + raw offset", "pooled ridge + slice offset", k, n_resamples=300)
                    for k in (1, 20)}
for k, difference in raw_minus_shrunk.items():
    print(f"K={k:2d}: raw offset - shrunk offset: ΔRMSE {difference:+.3f} mag")
print("With one galaxy the raw offset adds that galaxy's own scatter to every prediction; shrinking keeps only the "
      "part of it the between-slice spread makes believable. With twenty, the mean residual is precise and the "
      "factor is close to 1.")

# %%
# Self-check 2: a reminder until you have answered, an error if the answer is wrong
if {"raw_minus_shrunk"} <= set(globals()):
    assert raw_minus_shrunk[1].estimate > raw_minus_shrunk[20].estimate, "shrinking should matter most at K = 1"
else:
    print("exercise 2: not answered yet (define raw_minus_shrunk)")

# %% tags=["solution"]
# Solution 3
reference = results.best_baseline(10)
best_meta = results.best_meta_learner(10)   # chosen on meta-validation, as the headline is
auc_difference = results.paired(best_meta, reference, 10, metric="roc_auc", n_resamples=200)
balanced = results.paired(best_meta, reference, 10, metric="balanced_accuracy", n_resamples=200)
print(f"K=10, {best_meta} - {reference}: ΔAUC {auc_difference:+.4f}, Δ balanced accuracy {balanced:+.3f}")

# %%
# Self-check 3: a reminder until you have answered, an error if the answer is wrong
if {"auc_difference"} <= set(globals()):
    assert np.isfinite(auc_difference.estimate) and auc_difference.lo <= auc_difference.estimate <= auc_difference.hi
else:
    print("exercise 3: not answered yet (define auc_difference)")
