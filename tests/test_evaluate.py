"""Metrics, the slice bootstrap, paired differences, baselines and the protocol on a small synthetic catalogue."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from galmeta import baselines as gb
from galmeta import evaluate as ev
from galmeta import metrics as gm
from galmeta.tasks import build_catalogue, prepare_galaxy_tasks
from test_tasks import synthetic_table


def test_metrics_against_references():
    rng = np.random.default_rng(0)
    residuals = rng.standard_t(3, size=400) * 0.05
    assert np.isclose(gm.sigma_nmad(residuals), 1.4826 * np.median(np.abs(residuals - np.median(residuals))))
    labels = rng.random(300) < 0.4
    scores = np.round(labels + rng.normal(size=300), 1)  # ties on purpose
    assert np.isclose(gm.roc_auc(labels, scores), roc_auc_score(labels, scores))
    assert np.isclose(gm.balanced_accuracy(labels, scores >= 0.5), balanced_accuracy_score(labels, scores >= 0.5))
    np.testing.assert_allclose(gm.roc_auc(np.stack([labels, labels]), np.stack([scores, -scores])),
                               [roc_auc_score(labels, scores), roc_auc_score(labels, -scores)])
    r = residuals.reshape(1, 4, 5, 20)
    assert np.isclose(gm.metric("rmse", r), np.sqrt(np.mean(residuals ** 2)))
    draw_rmse = np.sqrt(np.mean(r ** 2, axis=-1)).ravel()
    assert np.isclose(gm.metric("worst_draw_rmse", r), draw_rmse.max())
    assert np.isclose(gm.metric("tail_fraction", r, tail=0.06), np.mean(draw_rmse > 0.06))


def _offset_residuals(seed=0, n_seeds=3, S=20, D=6, Q=15, between=0.1, within=0.05):
    rng = np.random.default_rng(seed)
    return rng.normal(0, between, (S, 1, 1)) + rng.normal(0, within, (n_seeds, S, D, Q))


def test_slice_bootstrap_is_wider_than_draw_bootstrap_when_slices_differ():
    residuals = _offset_residuals()
    slices = gm.bootstrap("rmse", residuals, n_resamples=400, level="slices")
    draws = gm.bootstrap("rmse", residuals, n_resamples=400, level="draws")
    assert slices.estimate == draws.estimate
    assert (slices.hi - slices.lo) > 1.5 * (draws.hi - draws.lo)
    assert slices.lo < slices.estimate < slices.hi
    assert gm.bootstrap("rmse", residuals, n_resamples=50, seed=3) == gm.bootstrap("rmse", residuals, n_resamples=50, seed=3)


def test_paired_difference_sees_what_marginal_intervals_cannot():
    residuals = _offset_residuals()
    better = residuals * 0.95  # 5% smaller errors on every draw: a small, consistent gain
    paired = gm.paired_difference("rmse", better, residuals, n_resamples=400)
    a, b = gm.bootstrap("rmse", better, n_resamples=400), gm.bootstrap("rmse", residuals, n_resamples=400)
    assert paired.hi < 0, "paired: the gain is resolved"
    assert a.hi > b.lo, "marginal intervals overlap"
    assert np.isclose(paired.estimate, a.estimate - b.estimate)
    assert paired.seed_sd >= 0


def test_offset_shrinkage_recovers_planted_variances():
    rng = np.random.default_rng(1)
    task_ids = np.repeat(np.arange(300), 50)
    residuals = rng.normal(0, 0.2, 300)[task_ids] + rng.normal(0, 0.5, task_ids.size)
    tau2, sigma2 = gb.offset_shrinkage(residuals, task_ids)
    assert abs(np.sqrt(sigma2) - 0.5) < 0.02 and abs(np.sqrt(tau2) - 0.2) < 0.03
    with pytest.raises(ValueError, match="two tasks"):
        gb.offset_shrinkage(residuals[:50], task_ids[:50])


def test_per_task_ridge_matches_scikit_learn():
    from sklearn.linear_model import Ridge

    data = prepare_galaxy_tasks(synthetic_table(3000), min_size=45)
    draws = ev.make_draws(data, "test", 8, 2, 10, seed=0)
    predicted = gb.PerTaskRidge().predict(data, draws, 1.0)
    s, q = draws.support[0, 1], draws.query[0, 1]
    reference = Ridge(alpha=1.0).fit(data.X[s], data.y[s, 0]).predict(data.X[q]) + data.target_mean
    np.testing.assert_allclose(predicted[0, 1], reference, rtol=1e-8, atol=1e-10)


def test_protocol_on_a_synthetic_catalogue(tmp_path):
    catalogue = build_catalogue(synthetic_table(6000))
    config = ev.EvaluationConfig(ks=(1, 5), folds=(0, 1), seeds=(0, 1), n_draws=3, n_val_draws=2, n_query=10,
                                 meta_iterations=20, pooled_epochs=2, algorithms=(("MAML", "maml"), ("MAML++", "maml++")))
    learners = ev.default_learners(config, device="cpu")
    results = ev.run_evaluation(catalogue, learners, config, min_size=45)
    names = set(results.learners)
    mamlpp = results.learners["MAML++"]
    assert mamlpp.support_range == (1, 5) and mamlpp.model.config.step_lrs and mamlpp.model.config.inner_steps == 5
    assert {"MAML", "MAML++", "MAML (NumPy check)", "pooled network + slice offset", "pooled ridge + slice offset",
            "ceiling: perfect u - r", "best single-feature cut"} <= names
    n_slices = len(results.slices)
    assert n_slices == sum(len(catalogue.fold(f, min_size=45).tasks["test"]) for f in (0, 1))
    assert results.residuals("MAML", 5).shape == (2, n_slices, 3, 10)
    # every learner saw the same draws, which come from meta-test slices only
    for k in (1, 5):
        for fold_index, fold in enumerate((0, 1)):
            data = catalogue.fold(fold, min_size=45)
            used = results.draws_of(k)[fold_index].query
            assert np.isin(used, data.indices("test")).all() and not np.isin(used, data.indices("val")).any()
    np.testing.assert_array_equal(results.residuals("ceiling: perfect u - r", 5), 0.0)
    assert results.best_baseline(5) in results.names("baseline")
    summary, paired = results.write(tmp_path, n_resamples=30)
    assert (tmp_path / "redness_per_slice.csv").read_text().count("\n") == 1 + len(names) * 2 * 2 * n_slices
    assert "| 5 | MAML |" in (tmp_path / "redness_paired.md").read_text()
    assert all(np.isfinite(r["rmse"].estimate) for r in paired)
    for row in paired:  # simultaneous over the family: wider than each block interval, same centre
        if row["group"] == "meta-learner" and row["rmse_blocks"] is not None:
            simultaneous, single = row["rmse_simultaneous"], row["rmse_blocks"]
            assert simultaneous.estimate == single.estimate
            assert simultaneous.lo <= single.lo and simultaneous.hi >= single.hi
    from galmeta.plots import save_figures

    paths = save_figures(results, paired, summary, tmp_path / "figures", k=5)
    assert all(p.stat().st_size > 1000 for p in paths)
    # saved as data (JSON + NumPy, no pickle) and loaded back, the result gives the same tables and figures
    from galmeta.results_files import load_results, save_results

    loaded = load_results(save_results(results, tmp_path / "saved"))
    loaded.write(tmp_path / "again", n_resamples=30)
    for table in ("redness_per_slice.csv", "redness_summary.md", "redness_paired.md"):
        assert (tmp_path / "again" / table).read_text() == (tmp_path / table).read_text(), table
    assert len(save_figures(loaded, paired, summary, tmp_path / "figures_again", k=5)) == len(paths)
    for key, variance in results.variances.items():   # every regressor has a predictive variance, saved with it
        np.testing.assert_array_equal(loaded.variances[key], variance)
        assert np.all(variance > 0) == results.learners[key[0]].regression
    # the per-draw file holds what the tables need, byte-identical when written again
    from galmeta import metrics as gm
    from galmeta import result_tables as rt
    from galmeta.reports import write_per_draw

    path = write_per_draw(results, tmp_path / "per_draw.csv.gz", "sdss")
    first = path.read_bytes()
    assert write_per_draw(loaded, path, "sdss").read_bytes() == first
    per_draw = rt.read_per_draw(path)
    assert len(per_draw["k"]) == len(names) * 2 * 2 * n_slices * 3
    for row in rt.summary_rows(per_draw):
        if results.learners[row["learner"]].regression:
            expected = float(np.mean(gm.metric("rmse", results.residuals(row["learner"], row["K"]))))
            assert row["rmse"] == pytest.approx(expected, rel=1e-5), row
    for row in rt.headline_rows(per_draw):
        assert row["reference"] == results.best_baseline(row["K"]) and row["lo"] <= row["d_rmse"] <= row["hi"]
        assert row["headline"] == (row["learner"] == results.best_meta_learner(row["K"]))
    # folds run in separate processes, saved and loaded, merge into exactly the same result
    parts = [load_results(save_results(
        ev.run_evaluation(catalogue, ev.default_learners(replace(config, folds=(f,)), device="cpu"),
                          replace(config, folds=(f,)), min_size=45), tmp_path / f"part{f}")) for f in (1, 0)]
    merged = ev.EvaluationResults.merge(parts)
    assert merged.config.folds == (0, 1) and merged.slices == results.slices
    for name in ("MAML", "MAML++", "pooled network + slice offset"):
        np.testing.assert_array_equal(merged.residuals(name, 5), results.residuals(name, 5))
        np.testing.assert_array_equal(merged.scores(name, 1), results.scores(name, 1))
    with pytest.raises(ValueError, match="share folds"):
        ev.EvaluationResults.merge([parts[0], parts[0]])
    # one learner re-run alone (the same draws) replaces its entries exactly; other draws are refused
    alone = ev.run_evaluation(catalogue, [l for l in ev.default_learners(config, device="cpu") if l.name == "MAML++"],
                              config, min_size=45)
    combined = merged.with_learners_from(alone)
    assert list(combined.learners) == list(results.learners)
    np.testing.assert_array_equal(combined.residuals("MAML++", 5), results.residuals("MAML++", 5))
    with pytest.raises(ValueError, match="draw_seed|different support"):
        merged.with_learners_from(ev.run_evaluation(catalogue, [gb.PooledRidge()], replace(config, draw_seed=1), min_size=45))


def test_an_overflowed_prediction_counts_as_an_infinite_error():
    rng = np.random.default_rng(0)
    residuals = rng.normal(0, 0.1, size=(2, 30, 4, 10))
    residuals[0, 3, 1, 2] = np.inf  # what EvaluationResults.residuals makes of a NaN prediction
    rmse = gm.bootstrap("rmse", residuals, n_resamples=200)
    assert rmse.estimate == np.inf and np.isfinite(rmse.lo) and rmse.hi == np.inf
    tail = gm.bootstrap("tail_fraction", residuals, tail=0.3, n_resamples=50)
    assert tail.estimate == pytest.approx(0.5 / 120)  # one draw of 120 in one seed of two
    worst = gm.metric("worst_draw_rmse", residuals)
    assert worst[0] == np.inf and np.isfinite(worst[1])


def test_population_training_gives_the_separate_trainings_results():
    """The evaluation trains meta-learners as one population per learner (galmeta.population); the
    predictions equal those of separate trainings up to float32 rounding."""
    catalogue = build_catalogue(synthetic_table(6000))
    config = ev.EvaluationConfig(ks=(1, 5), folds=(0, 1), seeds=(0, 1), n_draws=2, n_val_draws=2, n_query=10,
                                 meta_iterations=20, include_numpy_check=False, algorithms=(("MAML", "maml"),))
    runs = {}
    for population in (False, True):
        learners = [ev.GradientMetaLearner("MAML", "maml", 20, n_support=(1, 5), n_query=10, device="cpu")]
        runs[population] = ev.run_evaluation(catalogue, learners, config, min_size=45, population=population)
    assert set(runs[True].predictions) == set(runs[False].predictions)
    for key, separate in runs[False].predictions.items():
        np.testing.assert_allclose(runs[True].predictions[key], separate, atol=1e-4)
        assert runs[True].chosen[key] == runs[False].chosen[key]
    assert runs[True].fit_seconds["MAML"] > 0
