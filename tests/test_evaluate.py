"""Evaluation metrics, bootstrap intervals and the protocol on a small synthetic catalogue."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from galmeta import evaluate as ev
from galmeta.tasks import prepare_galaxy_tasks
from test_tasks import synthetic_table


def test_metrics_against_references():
    rng = np.random.default_rng(0)
    residuals = rng.standard_t(3, size=400) * 0.05
    stats = ev.regression_metrics(residuals)
    assert np.isclose(stats["rmse"], np.sqrt(np.mean(residuals ** 2)))
    mad = np.median(np.abs(residuals - np.median(residuals)))
    assert np.isclose(stats["sigma_nmad"], 1.4826 * mad)
    assert np.isclose(stats["outlier_fraction"], np.mean(np.abs(residuals) > 0.15))
    labels = rng.random(300) < 0.4
    scores = np.round(labels + rng.normal(size=300), 1)  # ties on purpose
    got = ev.classification_metrics(labels, scores, 0.5)
    assert np.isclose(got["roc_auc"], roc_auc_score(labels, scores))
    assert np.isclose(got["balanced_accuracy"], balanced_accuracy_score(labels, scores >= 0.5))
    # vectorised over bootstrap resamples
    batch = np.stack([scores, -scores])
    np.testing.assert_allclose(ev.roc_auc(np.stack([labels, labels]), batch),
                               [roc_auc_score(labels, scores), roc_auc_score(labels, -scores)])


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    values = np.random.default_rng(1).normal(0.1, 0.02, size=(50, 30))
    stat = lambda r: np.sqrt(np.mean(r ** 2, axis=-1))
    a = ev.bootstrap_interval({"r": values}, stat, 300, np.random.default_rng(2))
    b = ev.bootstrap_interval({"r": values}, stat, 300, np.random.default_rng(2))
    assert a == b and a[1] < a[0] < a[2]


def test_protocol_on_a_synthetic_catalogue(tmp_path):
    data = prepare_galaxy_tasks(synthetic_table(6000), min_size=60)
    learners, pooled, oracle = ev.train_learners(data, meta_iterations=30, pooled_epochs=3, device="cpu",
                                                 include_numpy=True)
    table = ev.evaluate_learners(data, {"MAML": learners["MAML"], "MAML (NumPy check)": learners["MAML (NumPy check)"]},
                                 pooled, oracle, ks=(1, 5), n_tasks=12, n_val_tasks=8, n_query=10, max_steps=3,
                                 n_resamples=50, progress=False)
    names = {r["learner"] for r in table.rows}
    assert names == {"MAML", "MAML (NumPy check)", "pooled + fine-tuning", "pooled (no adaptation)",
                     "per-task ridge / logistic", "k nearest neighbours", "oracle: pooled + redshift"}
    assert len(table.rows) == 2 * len(names)
    for row in table.rows:
        for metric in ("rmse", "sigma_nmad", "balanced_accuracy"):
            estimate, lo, hi = row[metric]
            assert lo <= hi and np.isfinite(estimate)
    # the same draws for everyone, from meta-test tasks only
    test_galaxies = np.concatenate([t.indices for t in data.tasks["test"]])
    for draws in table.details["test_draws"].values():
        assert np.isin(draws.query, test_galaxies).all()
    folder = table.write(tmp_path)
    assert (folder / "redness_results.csv").read_text().startswith("learner,K,chosen,rmse,rmse_lo,rmse_hi")
    assert "| MAML | 1 |" in (folder / "redness_results.md").read_text()
    paths = ev.save_figures(table, data, tmp_path / "figures", k=5, learners=("MAML", "pooled + fine-tuning"))
    assert all(p.stat().st_size > 1000 for p in paths)
