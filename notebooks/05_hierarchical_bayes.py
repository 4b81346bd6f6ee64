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
# # 05 · Meta-learning as hierarchical Bayes
#
# **The question.** Notebooks 03 and 04 meta-learned an initialisation that a few gradient steps adapt to a
# new slice. Statisticians have adapted models to new groups from few members for decades: empirical Bayes,
# hierarchical (random-effects) models. How do these relate to MAML, and which of them is "meta-learning"?
#
# **Learning goals**
# - shrink slice means towards the pooled model (empirical Bayes) and see that the course's offset baseline
#   is the simplest case;
# - fit a **hierarchical linear model**: a random intercept and random slopes per slice, its prior estimated
#   on meta-train slices, and the posterior predictive of a new slice from K galaxies, in closed form;
# - read MAML's few inner steps as an **implicit prior** centred on its initialisation (Grant et al. 2018);
# - build the **meta-learned Bayesian last layer** (ALPaCA; Harrison, Sharma & Pavone 2018) by hand in NumPy,
#   check it against the library, and see that it starts as the hierarchical model;
# - give every prediction an uncertainty, and check it (coverage, negative log-likelihood).
#
# **Prerequisites:** notebooks 02–04.
#
# **Runtime:** on a 2-core CPU, CI mode 15 s, laptop mode 18 s (one fold; the Bayesian layer
# meta-trains for 300 or 3,000 iterations). Notebook 06 runs every learner of this notebook through the
# full protocol. GPU: not needed (the matrices are at most 20 × 20).

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

from galmeta import baselines as gb
from galmeta import hierarchical as hb
from galmeta import metrics as gm
from galmeta.bayesian_last_layer import MetaLearnedBayesianLayer
from galmeta.config import by_mode, describe_mode, seed_everything
from galmeta.data import load_galaxies
from galmeta.learners import FitContext, make_draws
from galmeta.tasks import build_catalogue

print(describe_mode())
seed_everything(0)
catalogue = build_catalogue(load_galaxies())
data = catalogue.fold(0)
context = FitContext(pooled_epochs=by_mode(ci=20, laptop=100))
print(f"fold 0: {len(data.tasks['train'])} meta-train, {len(data.tasks['val'])} meta-validation and "
      f"{len(data.tasks['test'])} meta-test slices; features {data.feature_names}")

# %% [markdown]
# ## 1. A pooled model, and what it leaves per slice
#
# Start from the best model that ignores slices: gradient boosting fitted to every meta-train galaxy
# (`galmeta.baselines.PooledBoosting`). For meta-train galaxies we use its **out-of-fold** predictions
# (each redshift block predicted by a model fitted without it): boosting fits its own training galaxies so
# well that their residuals would understate how much slices scatter.

# %%
pooled = gb.PooledBoosting().fit(data, seed=0, context=context)
galaxies, slice_ids = hb.train_slice_arrays(data)
residuals = data.y[galaxies, 0] - pooled.training_predict(data, galaxies)
slice_means = np.array([residuals[slice_ids == t].mean() for t in np.unique(slice_ids)])
print(f"pooled gradient boosting ({pooled.setting_}): residual sd {residuals.std():.3f} mag; the mean residual "
      f"of a meta-train slice ranges from {slice_means.min():+.3f} to {slice_means.max():+.3f} mag")

# %% [markdown]
# ## 2. Shrinking slice means: empirical Bayes
#
# Model each slice's offset as $\mu_t \sim N(0, \tau^2)$ and each galaxy's residual as $e = \mu_t +
# \varepsilon$, $\varepsilon \sim N(0, \sigma^2)$. The mean of $K$ support residuals, $\bar e$, estimates
# $\mu_t$ with variance $\sigma^2/K$, and the posterior mean of $\mu_t$ is
#
# $$ \mathbb{E}[\mu_t \mid \bar e] = B_K\,\bar e, \qquad B_K = \frac{\tau^2}{\tau^2 + \sigma^2/K}. $$
#
# *Empirical* Bayes: $\tau^2$ and $\sigma^2$ are estimated from the meta-train slices themselves
# ($\sigma^2$: the pooled within-slice variance; $\tau^2$: the variance of the slice means minus their
# sampling variance). By hand, then against the library:

# %%
sizes = np.array([np.sum(slice_ids == t) for t in np.unique(slice_ids)], float)
within = sum(np.sum((residuals[slice_ids == t] - m) ** 2) for t, m in zip(np.unique(slice_ids), slice_means))
sigma2 = within / np.sum(sizes - 1)
tau2 = max(np.var(slice_means, ddof=1) - np.mean(sigma2 / sizes), 0.0)
print(f"tau = {np.sqrt(tau2):.3f} mag between slices, sigma = {np.sqrt(sigma2):.3f} mag within")
for k in (1, 5, 10, 20):
    print(f"K={k:2d}: shrinkage factor B = {tau2 / (tau2 + sigma2 / k):.2f}")
np.testing.assert_allclose((tau2, sigma2), gb.offset_shrinkage(residuals, slice_ids), rtol=1e-12)

# %% [markdown]
# This is the course's **offset baseline** (`PooledPlusOffset`): with one galaxy the raw mean residual is
# mostly that galaxy's own scatter, so it is shrunk hard; with twenty it is believed. Nothing here is
# learned by gradient descent, yet "using meta-train slices to learn how to adapt to a new slice from K
# galaxies" describes it exactly.
#
# ## 3. Random slopes: a hierarchical linear model
#
# A slice may differ by more than an offset: at another redshift the same $g-r$ maps to another $u-r$. Give
# every slice its own line in the standardised features $x$ around the pooled prediction $f(x)$:
#
# $$ y_i = f(x_i) + z_i^\top \beta_t + \varepsilon_i,\quad z_i = [1, x_i],\quad \beta_t \sim N(\mu, \Sigma),
# \quad \varepsilon_i \sim N(0, s^2 + e_i^2), $$
#
# with $e_i$ the galaxy's own measurement error of $u-r$ (catalogued) and $s^2$ the intrinsic scatter. The
# prior $(\mu, \Sigma, s^2)$ comes from meta-train slices by moments: fit each slice by least squares, take
# the mean and covariance of the fitted $\hat\beta_t$, and subtract from the covariance what fitting noise
# alone would give. By hand:

# %%
z_train = hb.design(hb.measured_inputs(data, galaxies))
meas_var = data.target_err[galaxies] ** 2
p = z_train.shape[1]
betas, grams, rss, dof = [], [], 0.0, 0
for t in np.unique(slice_ids):
    rows = slice_ids == t
    beta = np.linalg.lstsq(z_train[rows], residuals[rows], rcond=None)[0]
    betas.append(beta)
    grams.append(z_train[rows].T @ z_train[rows])
    rss += np.sum((residuals[rows] - z_train[rows] @ beta) ** 2)
    dof += rows.sum() - p
scatter2 = max(rss / dof - meas_var.mean(), hb.MIN_SCATTER2)
sampling = np.mean([(scatter2 + meas_var.mean()) * np.linalg.inv(g) for g in grams], axis=0)
between = np.cov(np.array(betas), rowvar=False) - sampling
values, vectors = np.linalg.eigh(between)
prior_cov = (vectors * np.clip(values, 0, None)) @ vectors.T           # a covariance cannot be negative
prior = hb.estimate_slice_prior(z_train, residuals, meas_var, slice_ids)
np.testing.assert_allclose(np.mean(betas, axis=0), prior.mean, atol=1e-12)
np.testing.assert_allclose(prior_cov, prior.cov, atol=1e-12)
print(f"intrinsic scatter s = {np.sqrt(prior.scatter2):.3f} mag (median measurement error "
      f"{np.median(data.target_err):.3f} mag)")
for name, sd in zip(["intercept"] + data.feature_names, np.sqrt(np.diag(prior.cov))):
    print(f"  {name:>10s}: slices differ by sd {sd:.3f} mag per unit")

# %% [markdown]
# ## 4. The posterior predictive of a new slice
#
# For a new slice, the support residuals $r_s$ and a query galaxy's value are jointly Gaussian: covariance
# $z \Sigma z'^\top$ between any two galaxies of the slice, plus each galaxy's noise on the diagonal.
# Conditioning a Gaussian on the support gives the query's predictive mean and variance:
#
# $$ m_q = f(x_q) + z_q\mu + C_{qs} C_{ss}^{-1}(r_s - Z_s\mu),\qquad
#    v_q = z_q \Sigma z_q^\top - C_{qs} C_{ss}^{-1} C_{sq} + s^2 + e_q^2 .$$
#
# With $K = 0$ it is the prior (the pooled model plus $z_q\mu$, with the full prior spread); every support
# galaxy narrows it. One meta-test draw at $K = 5$, by hand and with `galmeta.hierarchical.linear_predictive`:

# %%
draws = make_draws(data, "test", 5, n_draws=1, n_query=35, seed=0)   # every slice has 40 galaxies or more
slice_index = int(np.argmax([t.size for t in data.tasks["test"]]))   # the fullest meta-test slice
support, query = draws.support[slice_index, 0], draws.query[slice_index, 0]
noise = lambda g: prior.scatter2 + data.target_err[g] ** 2  # noqa: E731
r_s = data.y[support, 0] - pooled.base_predict(data, support)
Z_s, Z_q = hb.design(hb.measured_inputs(data, support)), hb.design(hb.measured_inputs(data, query))
C_ss = Z_s @ prior.cov @ Z_s.T + np.diag(noise(support))
C_qs = Z_q @ prior.cov @ Z_s.T
mean_by_hand = Z_q @ prior.mean + C_qs @ np.linalg.solve(C_ss, r_s - Z_s @ prior.mean)
var_by_hand = np.einsum("qi,ij,qj->q", Z_q, prior.cov, Z_q) - np.einsum("qs,qs->q", C_qs, np.linalg.solve(C_ss, C_qs.T).T) + noise(query)
mean_lib, var_lib = hb.linear_predictive(Z_s, r_s, noise(support), Z_q, noise(query), prior.mean, prior.cov)
np.testing.assert_allclose(mean_by_hand, mean_lib, rtol=1e-10, atol=1e-12)
np.testing.assert_allclose(var_by_hand, var_lib, rtol=1e-10)
prior_mean_q, prior_var_q = hb.linear_predictive(Z_s[:0], r_s[:0], noise(support)[:0], Z_q, noise(query), prior.mean, prior.cov)
print(f"slice {data.tasks['test'][slice_index].name}: predictive sd {np.sqrt(prior_var_q).mean():.3f} mag before "
      f"the support (K = 0), {np.sqrt(var_lib).mean():.3f} mag after K = 5")

# %% [markdown]
# The slice, its five support galaxies, and the prior and posterior predictive bands (±2 sd) of its query
# galaxies, ordered by $g - r$:

# %%
order = np.argsort(data.X[query, data.feature_names.index("g_minus_r")])
gr = catalogue.X_raw[query, data.feature_names.index("g_minus_r")][order]
base = pooled.base_predict(data, query)[order] + data.target_mean
fig, ax = plt.subplots(figsize=(9, 4.6))
for mean, var, colour, label in ((prior_mean_q, prior_var_q, "tab:grey", "prior predictive (K = 0)"),
                                 (mean_lib, var_lib, "tab:blue", "posterior predictive (K = 5)")):
    centre = base + mean[order]
    ax.fill_between(gr, centre - 2 * np.sqrt(var[order]), centre + 2 * np.sqrt(var[order]), color=colour, alpha=0.25,
                    label=f"{label}, ±2 sd")
    ax.plot(gr, centre, color=colour, lw=1.5)
ax.scatter(gr, data.target[query][order], s=12, color="k", label="query galaxies (true u − r)")
ax.scatter(catalogue.X_raw[support, data.feature_names.index("g_minus_r")], data.target[support], s=70,
           marker="*", color="tab:red", label="the K = 5 support galaxies", zorder=5)
ax.set_xlabel("g − r (mag)")
ax.set_ylabel("u − r (mag)")
ax.set_title(f"One meta-test slice, {data.tasks['test'][slice_index].name}: hierarchical linear model on pooled "
             "gradient boosting", fontsize=10)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. MAML's inner steps are an implicit prior
#
# Grant et al. (2018) read MAML as hierarchical Bayes: a few gradient steps from the meta-learned
# initialisation $\theta_0$, stopped early, land near the *maximum a posteriori* estimate under a Gaussian
# prior centred on $\theta_0$. For a linear model with squared loss this is exact enough to see. Write the
# support problem in the eigenbasis of $Z^\top Z/K$ (eigenvalues $\lambda$): $n$ gradient steps of size
# $\alpha$ move each direction a fraction $1 - (1 - \alpha\lambda)^n$ of the way from $\theta_0$ to the
# least-squares fit, while a Gaussian prior of precision $\rho$ moves it $\lambda / (\lambda + \rho)$. Both
# keep poorly determined directions (small $\lambda$) at the prior; both let the data win where it is strong.
# Few steps behave like a tight prior, many like a loose one:

# %%
support_20 = make_draws(data, "test", 20, n_draws=1, n_query=1, seed=1).support[slice_index, 0]
Z20 = hb.design(hb.measured_inputs(data, support_20))
lam = np.linalg.eigvalsh(Z20.T @ Z20 / len(Z20))
lam_grid = np.geomspace(max(lam.min(), 1e-3), lam.max(), 200)
alpha = 0.5 / lam.max()
fig, ax = plt.subplots(figsize=(8, 4))
for n_steps, colour in ((1, "tab:orange"), (5, "tab:green"), (25, "tab:purple")):
    ax.plot(lam_grid, 1 - (1 - alpha * lam_grid) ** n_steps, color=colour, label=f"{n_steps} gradient step(s)")
    rho = 1 / (alpha * n_steps)   # the prior precision that early stopping after n steps resembles
    ax.plot(lam_grid, lam_grid / (lam_grid + rho), color=colour, ls="--", label=f"Gaussian prior, precision {rho:.1f}")
ax.plot(lam, np.zeros_like(lam), "k|", ms=14, label="this support set's directions")
ax.set_xscale("log")
ax.set_xlabel("eigenvalue λ of the support set's Z'Z / K")
ax.set_ylabel("fraction moved towards the data")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
moved = 1 - (1 - alpha * lam) ** 5
print(f"after 5 steps the best-determined direction moved {moved.max():.2f} of the way, the worst {moved.min():.3f}")
assert moved.max() > 10 * moved.min()

# %% [markdown]
# So MAML meta-learns the prior's **centre** (and, with Meta-SGD or MAML++, something like its shape, through
# per-parameter step sizes), and adapts by an approximate posterior mode. The hierarchical model estimates
# the centre *and* the covariance from meta-train slices, and adapts by the exact posterior. What neither
# has is what a network adds: features of the galaxies that the prior can act on.
#
# ## 6. A meta-learned Bayesian last layer (ALPaCA)
#
# Keep the exact Bayesian adaptation, and learn the features. Each galaxy gets
# $\phi(x) = [1, x, f(x), g_\theta(x)]$: the hierarchical model's inputs, the pooled prediction, and the
# outputs of a small network. The slice's coefficients are $\beta_t \sim N(\mu, AA^\top)$ and the noise
# $N(0, s^2 + e^2)$. Meta-training adjusts $\theta, \mu, A, s^2$ by gradient descent on the negative
# log-likelihood of query galaxies under the posterior predictive given the support (section 4's formula),
# with $K$ drawn from 0 to 20. It **starts as the hierarchical model**: $\mu$ and $AA^\top$ are section 3's
# prior on $[1, x]$, $f$ has coefficient 1, and the network's coefficients start at 0 with almost no
# variance, so meta-learning starts from the strong baseline and can only move where the likelihood says.

# %%
layer = MetaLearnedBayesianLayer(iterations=by_mode(ci=300, laptop=3_000), k_max=20)
layer.fit(data, seed=0, context=context)
print(f"meta-trained {layer.iterations_run_} iterations; best meta-validation NLL {layer.best_val_nll_:.3f} nats "
      f"per galaxy; learned intrinsic scatter {np.sqrt(layer.model_.log_scatter2.exp().item()):.3f} mag")

# %% [markdown]
# The same predictive by hand, in NumPy, from the layer's parameters, checked against the library:

# %%
def features_by_hand(layer, galaxies):
    """phi(x) = [1, x, f(x), g_theta(x)] with the network written out (tanh hidden layers, linear output)."""
    x = data.X[galaxies]
    h = x
    linear = [m for m in layer.model_.network if hasattr(m, "weight")]
    for i, module in enumerate(linear):
        h = h @ module.weight.detach().numpy().T + module.bias.detach().numpy()
        h = np.tanh(h) if i < len(linear) - 1 else h
    return np.column_stack([np.ones(len(x)), x[:, :layer.model_.n_linear], layer.pooled_[galaxies], h])


A = layer.model_.prior_factor.detach().numpy()
mu, s2 = layer.model_.prior_mean.detach().numpy(), layer.model_.log_scatter2.exp().item()
Phi_s, Phi_q = features_by_hand(layer, support), features_by_hand(layer, query)
y_s = data.y[support, 0]
C_ss = Phi_s @ A @ A.T @ Phi_s.T + np.diag(s2 + data.target_err[support] ** 2)
C_qs = Phi_q @ A @ A.T @ Phi_s.T
blr_mean = Phi_q @ mu + C_qs @ np.linalg.solve(C_ss, y_s - Phi_s @ mu) + data.target_mean
blr_var = (np.einsum("qi,ij,qj->q", Phi_q, A @ A.T, Phi_q) - np.einsum("qs,qs->q", C_qs, np.linalg.solve(C_ss, C_qs.T).T)
           + s2 + data.target_err[query] ** 2)
lib_mean, lib_var = layer.predictive(data, draws)
np.testing.assert_allclose(blr_mean, lib_mean[slice_index, 0], rtol=1e-9)
np.testing.assert_allclose(blr_var, lib_var[slice_index, 0], rtol=1e-9)
print("Bayesian last layer by hand = galmeta.bayesian_last_layer, to 1e-9")

# %% [markdown]
# ## 7. Three learners on this fold's meta-test slices
#
# One fold and one seed, so no intervals here (notebook 06 gives them). Every learner returns a predictive
# mean and variance; we score the mean (RMSE), the distribution (mean negative log-likelihood per galaxy,
# lower is better), and the calibration: the share of query galaxies inside the central 68% and 95%
# predictive intervals, which should be 0.68 and 0.95.

# %%
hierarchical = hb.HierarchicalLinear(gb.PooledBoosting()).fit(data, seed=0, context=context)
offset = gb.PooledPlusOffset(gb.PooledBoosting()).fit(data, seed=0, context=context)
scores = {}
for k in (1, 5, 20):
    test = make_draws(data, "test", k, n_draws=by_mode(ci=3, laptop=10), n_query=20, seed=0)
    truth = data.target[test.query]
    for name, mean, var in (
            ("pooled boosting + slice offset", offset.predict(data, test), None),
            ("+ random intercept and slopes", *hierarchical.predictive(data, test, 1.0)),
            ("Bayesian last layer, meta-learned", *layer.predictive(data, test))):
        if var is None:   # a point learner: its scatter on meta-validation at this K, plus the galaxy's error
            val = make_draws(data, "val", k, n_draws=3, n_query=20, seed=0)
            val_resid2 = (offset.predict(data, val) - data.target[val.query]) ** 2 - data.target_err[val.query] ** 2
            var = max(val_resid2.mean(), hb.MIN_SCATTER2) + data.target_err[test.query] ** 2
        z = np.abs(mean - truth) / np.sqrt(var)   # inside the central 68% / 95% interval: within 1 / 1.96 sd
        scores[(name, k)] = (np.sqrt(np.mean((mean - truth) ** 2)), hb.gaussian_nll(mean - truth, var).mean(),
                             np.mean(z <= gm.COVERAGE_HALF_WIDTHS["coverage_68"]),
                             np.mean(z <= gm.COVERAGE_HALF_WIDTHS["coverage_95"]))
print(f"{'K':>3s} {'learner':36s} {'RMSE':>7s} {'NLL':>7s} {'in 68%':>7s} {'in 95%':>7s}")
for (name, k), (rmse, nll, c68, c95) in scores.items():
    print(f"{k:3d} {name:36s} {rmse:7.4f} {nll:7.3f} {c68:7.2f} {c95:7.2f}")
assert all(0.8 <= c95 <= 1.0 for *_, c95 in scores.values()), "95% intervals should cover most galaxies"

# %% [markdown]
# ## 8. Which of these is meta-learning?
#
# All of them use meta-train slices to learn how to adapt to a new slice from $K$ galaxies, so by the
# definition of notebook 03 all of them are. What differs is what is learned and how adaptation is done:
#
# | learner | learned from meta-train slices | adaptation to a new slice |
# |---|---|---|
# | pooled model + slice offset | $\tau^2$, $\sigma^2$ (two numbers) | exact posterior of an offset |
# | hierarchical linear model | $\mu$, $\Sigma$, $s^2$ on $[1, x]$ | exact posterior of a line |
# | MAML (notebooks 03–04) | a network's initialisation | a few gradient steps (implicit prior) |
# | Bayesian last layer | features, $\mu$, $\Sigma$, $s^2$ | exact posterior on learned features |
#
# The network adds features that the prior can act on, and nothing else: if the slices differ along
# directions the standardised inputs already span, the hierarchical model is as good, and the meta-learned
# layer should stay where it started. Notebook 06 measures which is the case, with every learner in one
# pool and blocks as the unit.
#
# ## Summary
# - The offset baseline is empirical Bayes; random slopes make it a hierarchical linear model, whose
#   posterior predictive for a new slice is Gaussian conditioning in closed form.
# - MAML's early-stopped inner steps act like a Gaussian prior centred on the meta-learned initialisation.
# - The meta-learned Bayesian last layer keeps the exact adaptation and learns features; started at the
#   hierarchical model, it can only add what the meta-train likelihood supports.
# - Every learner now gives a predictive distribution; coverage and NLL check it.
#
# ## Exercises
#
# Each exercise has a hint and a **self-check** cell: it reminds you until you have answered and fails if the
# answer is wrong. All run offline.
#
# 1. **Warm-up: the offset is a special case.** Estimate the prior of section 3 with `z` a single column of
#    ones, and store its variance in `tau2_from_prior`. It should equal section 2's $\tau^2$ up to how the two
#    estimate the noise. *Hint:* `hb.estimate_slice_prior(np.ones((len(residuals), 1)), residuals, meas_var, slice_ids)`.
# 2. **Core: how much does the support narrow the prediction?** For the slice of section 4, compute the
#    mean predictive sd of its query galaxies for K = 1, 5 and 20 (draws of `make_draws`), and store them
#    in a dict `sd_by_k`. *Hint:* `hierarchical.predictive(data, draws, 1.0)` returns mean and variance.
# 3. **Stretch: the prior scale.** `HierarchicalLinear` tunes one factor on the prior covariance on
#    meta-validation. Compute the meta-validation RMSE at K = 10 for factors 0.5, 1 and 2, and store the best
#    factor in `best_scale`. *Hint:* `make_draws(data, "val", 10, ...)` and `hierarchical.predict(data, draws, factor)`.

# %% tags=["solution"]
# Solution 1
offset_prior = hb.estimate_slice_prior(np.ones((len(residuals), 1)), residuals, meas_var, slice_ids)
tau2_from_prior = float(offset_prior.cov[0, 0])
print(f"tau^2: {tau2:.5f} by moments of slice means, {tau2_from_prior:.5f} from the regression prior")

# %%
# Self-check 1: a reminder until you have answered, an error if the answer is wrong
if {"tau2_from_prior"} <= set(globals()):
    assert abs(tau2_from_prior - tau2) < 0.1 * tau2 + 1e-4, "both estimate the between-slice variance of the offset"
else:
    print("exercise 1: not answered yet (define tau2_from_prior)")

# %% tags=["solution"]
# Solution 2
sd_by_k = {}
for k in (1, 5, 20):
    d = make_draws(data, "test", k, n_draws=5, n_query=20, seed=0)
    sd_by_k[k] = float(np.sqrt(hierarchical.predictive(data, d, 1.0)[1][slice_index]).mean())
print({k: round(v, 4) for k, v in sd_by_k.items()})

# %%
# Self-check 2: a reminder until you have answered, an error if the answer is wrong
if {"sd_by_k"} <= set(globals()):
    assert sd_by_k[1] >= sd_by_k[5] >= sd_by_k[20], "more support galaxies can only narrow the predictive"
else:
    print("exercise 2: not answered yet (define sd_by_k)")

# %% tags=["solution"]
# Solution 3
val10 = make_draws(data, "val", 10, n_draws=5, n_query=20, seed=0)
val_rmse = {f: float(np.sqrt(np.mean((hierarchical.predict(data, val10, f) - data.target[val10.query]) ** 2)))
            for f in (0.5, 1.0, 2.0)}
best_scale = min(val_rmse, key=val_rmse.get)
print({f: round(v, 4) for f, v in val_rmse.items()}, "best", best_scale)

# %%
# Self-check 3: a reminder until you have answered, an error if the answer is wrong
if {"best_scale"} <= set(globals()):
    assert best_scale in (0.5, 1.0, 2.0)
else:
    print("exercise 3: not answered yet (define best_scale)")
