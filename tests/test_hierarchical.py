"""Hierarchical Bayes: the closed form, empirical Bayes, the meta-learned Bayesian last layer, the sealed sample."""
import copy

import numpy as np
import pytest
import torch

from galmeta import baselines as gb
from galmeta import hierarchical as hb
from galmeta import maml_numpy as mn
from galmeta.bayesian_last_layer import MetaLearnedBayesianLayer, torch_linear_predictive
from galmeta.evaluate import point_variance, validation_halves
from galmeta.learners import FitContext, make_draws
from galmeta.tasks import build_catalogue

from test_tasks import synthetic_table


def random_problem(rng, batch=(3,), k=6, q=4, p=3):
    z_s, z_q = rng.normal(size=batch + (k, p)), rng.normal(size=batch + (q, p))
    root = rng.normal(size=(p, p))
    return (z_s, rng.normal(size=batch + (k,)), rng.uniform(0.1, 0.5, batch + (k,)), z_q,
            rng.uniform(0.1, 0.5, batch + (q,)), rng.normal(size=p), root @ root.T + 0.1 * np.eye(p))


def test_the_predictive_equals_the_posterior_in_precision_form():
    z_s, r_s, n_s, z_q, n_q, mean, cov = random_problem(np.random.default_rng(0))
    got_mean, got_var = hb.linear_predictive(z_s, r_s, n_s, z_q, n_q, mean, cov)
    for t in range(z_s.shape[0]):  # textbook: precision = prior precision + Z' W Z, mean = precision^-1 (...)
        precision = np.linalg.inv(cov) + z_s[t].T @ np.diag(1 / n_s[t]) @ z_s[t]
        post_cov = np.linalg.inv(precision)
        post_mean = post_cov @ (np.linalg.solve(cov, mean) + z_s[t].T @ (r_s[t] / n_s[t]))
        np.testing.assert_allclose(got_mean[t], z_q[t] @ post_mean, rtol=1e-10)
        np.testing.assert_allclose(got_var[t], np.einsum("qi,ij,qj->q", z_q[t], post_cov, z_q[t]) + n_q[t], rtol=1e-10)
    prior_mean, prior_var = hb.linear_predictive(z_s[:, :0], r_s[:, :0], n_s[:, :0], z_q, n_q, mean, cov)
    np.testing.assert_allclose(prior_mean, z_q @ mean)
    np.testing.assert_allclose(prior_var, np.einsum("tqi,ij,tqj->tq", z_q, cov, z_q) + n_q)


def test_pytorch_predictive_equals_numpy():
    arrays = random_problem(np.random.default_rng(1))
    expected = hb.linear_predictive(*arrays)
    got = torch_linear_predictive(*(torch.from_numpy(np.asarray(a)) for a in arrays))
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-10)


def test_empirical_bayes_recovers_a_planted_prior():
    rng = np.random.default_rng(2)
    mean, sd, scatter = np.array([0.1, -0.3, 0.2]), np.array([0.2, 0.1, 0.05]), 0.1
    z, r, ids = [], [], []
    for t in range(400):
        zt = np.column_stack([np.ones(200), rng.normal(size=(200, 2))])
        beta = mean + sd * rng.normal(size=3)
        z.append(zt)
        r.append(zt @ beta + rng.normal(0, scatter, 200))
        ids.append(np.full(200, t))
    prior = hb.estimate_slice_prior(np.concatenate(z), np.concatenate(r), np.zeros(80_000), np.concatenate(ids))
    np.testing.assert_allclose(prior.mean, mean, atol=0.03)
    np.testing.assert_allclose(np.sqrt(np.diag(prior.cov)), sd, rtol=0.15)
    assert abs(np.sqrt(prior.scatter2) - scatter) < 0.005


def test_an_intercept_alone_is_the_offset_baseline():
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(30), rng.integers(20, 60, 30))
    residuals = rng.normal(0, 0.1, ids.size) + rng.normal(0, 0.05, 30)[ids]
    prior = hb.estimate_slice_prior(np.ones((ids.size, 1)), residuals, np.zeros(ids.size), ids)
    tau2, sigma2 = gb.offset_shrinkage(residuals, ids)
    np.testing.assert_allclose([prior.cov[0, 0], prior.scatter2], [tau2, sigma2], rtol=1e-10)


@pytest.fixture(scope="module")
def fold():
    catalogue = build_catalogue(synthetic_table(6000))
    return catalogue.fold(0, min_size=45)


def test_the_bayesian_layer_starts_as_the_hierarchical_model(fold):
    context = FitContext(pooled_epochs=2)
    hierarchical = hb.HierarchicalLinear(gb.PooledBoosting()).fit(fold, 0, context)
    layer = MetaLearnedBayesianLayer(iterations=0, learned_sd=0.0).fit(fold, 0, context)
    for k in (1, 5):
        draws = make_draws(fold, "test", k, 2, 10, seed=0)
        for got, expected in zip(layer.predictive(fold, draws), hierarchical.predictive(fold, draws, 1.0)):
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    trained = MetaLearnedBayesianLayer(iterations=30, eval_every=10, k_max=5).fit(fold, 0, context)
    mean, var = trained.predictive(fold, make_draws(fold, "test", 5, 2, 10, seed=0))
    assert np.all(np.isfinite(mean)) and np.all(var > 0) and trained.iterations_run_ > 0


def test_the_bayesian_layer_trains_as_a_population_exactly_as_alone():
    """fit_population (one batched computation over members, K padded and masked) gives every member
    what its own fit gives: the same parameters, losses, stop and best validation likelihood (float64)."""
    catalogue = build_catalogue(synthetic_table(6000))
    folds = [catalogue.fold(0, min_size=45), catalogue.fold(1, min_size=45)]
    members = [(folds[0], 0), (folds[0], 1), (folds[1], 0)]
    contexts = [FitContext(pooled_epochs=2) for _ in members]
    # patience 1 and a short interval: members stop at different iterations, so masking is exercised
    template = MetaLearnedBayesianLayer(iterations=40, eval_every=4, patience=1, k_max=6, meta_batch=6)
    separate = [copy.copy(template).fit(data, seed, context) for (data, seed), context in zip(members, contexts)]
    together = template.fit_population([(data, seed, context) for (data, seed), context in zip(members, contexts)])
    assert len({layer.iterations_run_ for layer in separate}) > 1
    for alone, member in zip(separate, together):
        assert member.iterations_run_ == alone.iterations_run_ and member.diverged_at == alone.diverged_at
        np.testing.assert_allclose(member.losses_, alone.losses_, rtol=1e-10)
        assert member.best_val_nll_ == pytest.approx(alone.best_val_nll_, rel=1e-10)
        for name, value in alone.model_.state_dict().items():
            np.testing.assert_allclose(member.model_.state_dict()[name].numpy(), value.numpy(), rtol=1e-9,
                                       atol=1e-12, err_msg=name)


def test_clipped_task_gradients_are_at_most_the_bound():
    rng = np.random.default_rng(4)
    grads = [(rng.normal(size=(3, 4, 5)) * scale, rng.normal(size=(3, 5)) * scale) for scale in (1.0, 10.0)]
    grads[0] = (grads[0][0] * np.array([1e-3, 1, 1])[:, None, None], grads[0][1] * np.array([1e-3, 1, 1])[:, None])
    grads[1] = (grads[1][0] * np.array([1e-3, 1, 1])[:, None, None], grads[1][1] * np.array([1e-3, 1, 1])[:, None])
    clipped = mn.clip_task_gradients(grads, 1.0)
    norm = lambda g: np.sqrt(sum(np.sum(a.reshape(3, -1) ** 2, axis=1) for pair in g for a in pair))  # noqa: E731
    assert norm(grads)[0] < 1 and np.all(norm(grads)[1:] > 1)
    np.testing.assert_allclose(norm(clipped)[1:], 1.0)
    np.testing.assert_allclose(norm(clipped)[0], norm(grads)[0])   # a short gradient is left alone


def test_validation_halves_and_point_variance():
    options, score = validation_halves(7)
    assert set(options) | set(score) == set(range(7)) and not set(options) & set(score)
    assert [list(h) for h in validation_halves(1)] == [[0], [0]]
    truth = np.zeros(1000)
    err = np.full(1000, 0.05)
    predictions = np.random.default_rng(5).normal(0, np.sqrt(0.01 + 0.05 ** 2), 1000)
    assert abs(point_variance(predictions, truth, err) - 0.01) < 0.002
    assert point_variance(np.full(3, np.inf), np.zeros(3), np.zeros(3)) == np.inf
