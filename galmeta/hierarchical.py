"""Empirical Bayes and hierarchical linear models: the closed form behind the strongest simple baselines.

Introduced in ``notebooks/05_hierarchical_bayes.py``.

A slice ``t`` of galaxies is modelled around a pooled prediction ``f(x)`` (a network or gradient boosting
fitted to all meta-train galaxies) as

    y_i = f(x_i) + z_i . beta_t + eps_i,     beta_t ~ N(mu, Sigma),     eps_i ~ N(0, s^2 + e_i^2),

with ``z_i = [1, x_i]`` (a random intercept and random slopes on the standardised features), ``s^2`` the
intrinsic scatter and ``e_i`` galaxy ``i``'s own measurement error of ``u - r``. The prior ``(mu, Sigma,
s^2)`` is estimated on meta-train slices (empirical Bayes, :func:`estimate_slice_prior`); a new slice's K
support galaxies give the posterior of ``beta_t`` and the predictive distribution of its other galaxies
in closed form (:func:`linear_predictive`). With ``z_i = [1]`` alone this is the shrunk slice offset of
:class:`galmeta.baselines.PooledPlusOffset`; with K = 0 it is the pooled model.

The same model with learned features ``phi(x)`` in place of ``z`` and a prior learned by gradient descent
on the predictive likelihood is the meta-learned Bayesian last layer (:mod:`galmeta.bayesian_last_layer`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from galmeta.learners import Learner

__all__ = ["SlicePrior", "design", "measured_inputs", "train_slice_arrays", "linear_predictive",
           "estimate_slice_prior", "HierarchicalLinear", "gaussian_nll", "MIN_SCATTER2"]

#: Smallest intrinsic scatter (mag^2) an estimate may reach: a prior that claims the colours scatter less
#: than their measurement errors allow would make every interval too narrow.
MIN_SCATTER2 = 1e-4


@dataclass(frozen=True)
class SlicePrior:
    """What empirical Bayes estimated on meta-train slices.

    Attributes
    ----------
    mean : ndarray, shape (p,)
        Prior mean of a slice's coefficients ``beta`` (intercept first).
    cov : ndarray, shape (p, p)
        Their prior covariance: how much slices differ.
    scatter2 : float
        Intrinsic scatter ``s^2`` of a galaxy around its slice's line (mag^2), beyond its measurement error.
    n_slices : int
        Meta-train slices it was estimated from.
    """

    mean: np.ndarray
    cov: np.ndarray
    scatter2: float
    n_slices: int

    def scaled(self, factor):
        """The same prior with its covariance multiplied by ``factor`` (the one option tuned on meta-validation)."""
        return SlicePrior(self.mean, self.cov * float(factor), self.scatter2, self.n_slices)


def design(X):
    """Random-effect inputs ``z = [1, x]``: an intercept and one slope per standardised feature."""
    X = np.asarray(X, float)
    return np.concatenate([np.ones(X.shape[:-1] + (1,)), X], axis=-1)


def measured_inputs(data, galaxies):
    """The standardised measured features of some galaxies (without the 0/1 missingness indicators, which
    can be constant within a slice and so carry no slope there)."""
    return data.X[galaxies][..., : data.preprocessor.n_measured_]


def linear_predictive(z_support, r_support, noise_support, z_query, noise_query, mean, cov):
    """Posterior predictive of a Bayesian linear model given K support points, batched over leading axes.

    With ``beta ~ N(mean, cov)`` and ``r = z . beta + noise``, the support and query values are jointly
    Gaussian with covariance ``z cov z'`` plus the noise on the diagonal, so the query given the support is
    (the "kernel" form: K x K solves, fine for a singular ``cov``; K = 0 gives the prior predictive)

        mean_q = z_q mean + C_qs C_ss^-1 (r_s - z_s mean)
        var_q  = diag(C_qq) - diag(C_qs C_ss^-1 C_sq) + noise_q.

    Parameters
    ----------
    z_support : ndarray, shape (..., K, p)
    r_support : ndarray, shape (..., K)
        Support targets (here: residuals of the pooled model).
    noise_support, noise_query : ndarray, shape (..., K) and (..., Q)
        Noise variance of each galaxy (intrinsic scatter plus its own measurement error squared).
    z_query : ndarray, shape (..., Q, p)
    mean : ndarray, shape (p,)
    cov : ndarray, shape (p, p)

    Returns
    -------
    mean_q, var_q : ndarray, shape (..., Q)
        The predictive mean and variance of each query galaxy's measured value.
    """
    zc_q = z_query @ cov
    mean_q = z_query @ mean
    var_q = np.sum(zc_q * z_query, axis=-1) + noise_query
    if z_support.shape[-2] == 0:
        return mean_q, var_q
    c_ss = z_support @ cov @ np.swapaxes(z_support, -1, -2)
    c_ss = c_ss + noise_support[..., :, None] * np.eye(z_support.shape[-2])
    c_qs = zc_q @ np.swapaxes(z_support, -1, -2)
    a = np.linalg.solve(c_ss, (r_support - z_support @ mean)[..., None])[..., 0]
    b = np.linalg.solve(c_ss, np.swapaxes(c_qs, -1, -2))
    mean_q = mean_q + np.sum(c_qs * a[..., None, :], axis=-1)
    var_q = var_q - np.sum(c_qs * np.swapaxes(b, -1, -2), axis=-1)
    return mean_q, var_q


def gaussian_nll(residuals, variance):
    """Negative log-likelihood of each residual under N(0, variance), in nats (lower is better)."""
    with np.errstate(all="ignore"):
        return 0.5 * np.log(2 * np.pi * variance) + 0.5 * residuals ** 2 / variance


def estimate_slice_prior(z, r, measurement_var, slice_ids):
    """Empirical-Bayes prior of the slice coefficients by the method of moments.

    1. Fit each meta-train slice by least squares: ``beta_hat_t`` with sampling covariance ``V_t``.
    2. The intrinsic scatter ``s^2``: the pooled residual variance around each slice's own fit, minus the
       mean squared measurement error (floored at :data:`MIN_SCATTER2`).
    3. The prior mean is the mean of the ``beta_hat_t``; the prior covariance is their covariance minus the
       mean sampling covariance (what the slices differ by, beyond what fitting noise explains), with
       negative eigenvalues set to zero.

    With ``z`` a column of ones this gives the between-slice variance ``tau^2`` and within-slice variance of
    :func:`galmeta.baselines.offset_shrinkage`.

    Parameters
    ----------
    z : ndarray, shape (n, p)
        Random-effect inputs of meta-train galaxies (:func:`design`).
    r : ndarray, shape (n,)
        Their residuals from the pooled model.
    measurement_var : ndarray, shape (n,)
        Each galaxy's measurement error squared.
    slice_ids : ndarray, shape (n,)
        The meta-train slice of each galaxy (a galaxy in two overlapping slices appears twice).

    Returns
    -------
    SlicePrior
    """
    z, r, measurement_var, slice_ids = (np.asarray(a) for a in (z, r, measurement_var, slice_ids))
    p = z.shape[1]
    slices = np.unique(slice_ids)
    if slices.size < p + 1:
        raise ValueError(f"need more meta-train slices ({slices.size}) than coefficients ({p}) to estimate their "
                         "covariance; use fewer features or more slices")
    betas, grams, rss, dof = [], [], 0.0, 0
    for t in slices:
        rows = slice_ids == t
        if rows.sum() <= p:
            raise ValueError(f"slice {t!r} has {rows.sum()} galaxies, too few to fit {p} coefficients")
        gram = z[rows].T @ z[rows]
        beta = np.linalg.lstsq(z[rows], r[rows], rcond=None)[0]
        rss += float(np.sum((r[rows] - z[rows] @ beta) ** 2))
        dof += int(rows.sum()) - p
        betas.append(beta)
        grams.append(gram)
    scatter2 = max(rss / dof - float(np.mean(measurement_var)), MIN_SCATTER2)
    noise = scatter2 + float(np.mean(measurement_var))
    betas = np.asarray(betas)
    sampling = np.mean([noise * np.linalg.pinv(gram) for gram in grams], axis=0)
    between = np.cov(betas, rowvar=False).reshape(p, p) - sampling
    values, vectors = np.linalg.eigh(0.5 * (between + between.T))
    cov = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    return SlicePrior(betas.mean(axis=0), cov, float(scatter2), int(slices.size))


def train_slice_arrays(data):
    """Galaxy indices and slice ids of every meta-train slice (overlapping slices repeat a galaxy)."""
    galaxies = np.concatenate([t.indices for t in data.tasks["train"]])
    slice_ids = np.concatenate([np.full(t.size, i) for i, t in enumerate(data.tasks["train"])])
    return galaxies, slice_ids


class HierarchicalLinear(Learner):
    """A pooled model plus a random intercept and random slopes per slice, by empirical Bayes (closed form).

    The prior is estimated on meta-train slices (:func:`estimate_slice_prior`) from the pooled model's
    residuals; for each draw the K support galaxies give the posterior, and each query galaxy a predictive
    mean and variance (:func:`linear_predictive`), its own measurement error included. The one option is a
    factor on the prior covariance, chosen on meta-validation.

    Parameters
    ----------
    base : Learner
        A pooled learner (:class:`galmeta.baselines.PooledBoosting`, :class:`~galmeta.baselines.PooledNetwork`):
        it provides ``base_predict`` and ``training_predict`` (honest predictions for meta-train galaxies).
    prior_scales : tuple of float
    """

    bayesian = True

    def __init__(self, base, prior_scales=(0.5, 1.0, 2.0)):
        self.base = base
        self.prior_scales = tuple(float(s) for s in prior_scales)
        if not self.prior_scales or min(self.prior_scales) <= 0:
            raise ValueError(f"prior_scales must list factors > 0, got {prior_scales!r}")
        self.name = f"{base.name} + random intercept and slopes"

    def fit(self, data, seed, context):
        self.base.fit(data, seed, context)
        galaxies, slice_ids = train_slice_arrays(data)
        residuals = data.y[galaxies, 0] - self.base.training_predict(data, galaxies)
        self.prior_ = estimate_slice_prior(design(measured_inputs(data, galaxies)), residuals,
                                           data.target_err[galaxies] ** 2, slice_ids)
        return self

    def options(self, k):
        return list(self.prior_scales)

    def describe(self, option):
        return f"prior x{option:g}"

    def predictive(self, data, draws, option):
        """Predictive mean and variance of every query galaxy's u - r, shape ``draws.query.shape`` each."""
        prior = self.prior_.scaled(option)
        noise = lambda g: prior.scatter2 + data.target_err[g] ** 2  # noqa: E731
        residual_s = data.y[draws.support, 0] - self.base.base_predict(data, draws.support)
        mean, var = linear_predictive(design(measured_inputs(data, draws.support)), residual_s, noise(draws.support),
                                      design(measured_inputs(data, draws.query)), noise(draws.query), prior.mean,
                                      prior.cov)
        return self.base.base_predict(data, draws.query) + mean + data.target_mean, var

    def predict(self, data, draws, option):
        return self.predictive(data, draws, option)[0]

    def predictive_variance(self, data, draws, option):
        return self.predictive(data, draws, option)[1]
