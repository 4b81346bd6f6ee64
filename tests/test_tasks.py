"""Cleaning, targets, leak guards, redshift splits and the task sampler."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from galmeta import tasks as gt


def synthetic_table(n=3000, seed=0):
    """A table in the snapshot's layout, with planted problems."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.01, 0.21, n)
    red = rng.random(n) < 0.5
    r = rng.uniform(14.5, 17.7, n)
    g_r = np.where(red, 0.75, 0.45) + 2.0 * z + rng.normal(0, 0.04, n)
    # u - g has a scatter of its own (what the g, r, i, z features cannot know), as in real galaxies
    mags = {"u": r + g_r + np.where(red, 1.7, 1.1) + rng.normal(0, 0.1, n), "g": r + g_r, "r": r,
            "i": r - 0.3 - 0.5 * z, "z": r - 0.5 - z}
    cols = {"objID": np.arange(n, dtype=np.int64) + 1237650000000000000, "type": np.full(n, 3)}
    for b in "ugriz":
        cols[f"err_{b}"] = rng.uniform(0.002, 0.05, n)
        cols[f"dered_{b}"] = mags[b] + rng.normal(0, 1, n) * cols[f"err_{b}"]  # measured with that error
    cols.update(z=z, zErr=np.full(n, 1e-5), zWarning=np.zeros(n, int), **{"class": np.full(n, "GALAXY")})
    cols["subClass"] = np.where(red, "null", np.where(rng.random(n) < 0.8, "STARFORMING", "AGN BROADLINE"))
    photo = z + rng.normal(0, 0.02, n)
    table = Table(cols)
    table["photoZ"] = MaskedColumn(photo, mask=np.arange(n) % 5 == 0)
    table["photoErr"] = MaskedColumn(np.full(n, 0.01), mask=np.arange(n) % 5 == 0)
    # planted problems
    table["objID"][10] = table["objID"][11]          # a duplicate object
    table["zErr"][10] = 1e-4                          # ... with a worse redshift: row 10 must go
    table["z"][20] = -0.0005                          # non-physical redshift
    table["dered_u"][30] = -9999.0                    # sentinel
    table["dered_g"][40] = table["dered_r"][40] + 5.0  # broken photometry
    table["photoZ"][50] = -9999.0
    return table


def test_cleaning_counts_every_step():
    clean, report = gt.clean_galaxies(synthetic_table())
    removed = {name: n for name, n, _ in report.steps}
    assert removed["duplicate objID (kept smallest zErr)"] == 1
    assert removed["non-physical/unreliable redshift"] == 1
    assert removed["missing or out-of-range magnitude"] == 1
    assert removed["outlier colour (broken photometry)"] == 1
    assert report.n_output == len(clean) == 3000 - 4
    assert report.notes["sentinel values set to NaN"] == 2
    assert len(np.unique(clean["objID"])) == len(clean)
    assert 11 + 1237650000000000000 in set(clean["objID"])
    assert np.isnan(clean["photoZ"]).sum() == report.notes["photoZ missing (clean rows)"]
    assert set(np.unique(clean["subClass"])) == {"", "STARFORMING", "AGN BROADLINE"}


def test_targets_and_label():
    clean, _ = gt.clean_galaxies(synthetic_table())
    u_r, u_r_err, is_red = gt.redness_targets(clean)
    np.testing.assert_allclose(u_r, clean["dered_u"] - clean["dered_r"], rtol=1e-12)
    np.testing.assert_allclose(u_r_err ** 2, clean["err_u"] ** 2 + clean["err_r"] ** 2, rtol=1e-12)
    np.testing.assert_array_equal(is_red, u_r >= gt.STRATEVA_UR_CUT)


def test_features_use_griz_only_and_no_spectroscopic_column():
    clean, _ = gt.clean_galaxies(synthetic_table())
    X, names = gt.galaxy_features(clean)
    assert X.shape == (len(clean), len(names))
    assert not [n for n in names if "u" in n.split("_")], names
    assert not {"subClass", "photoZ", "z", "zErr"} & set(names)
    assert set(names) == {"dered_r", "g_minus_r", "r_minus_i", "i_minus_z", "log_err_g", "log_err_r", "log_err_i",
                          "log_err_z"}


def test_best_threshold_accuracy_against_a_brute_force_search():
    rng = np.random.default_rng(4)
    values = np.round(rng.normal(size=300), 1)  # ties on purpose
    labels = values + rng.normal(size=300) > 0.3
    best = max(0.5 * (np.mean(values[labels] >= c) + np.mean(values[~labels] < c)) for c in np.unique(values))
    worst = min(0.5 * (np.mean(values[labels] >= c) + np.mean(values[~labels] < c)) for c in np.unique(values))
    score, threshold, direction = gt.best_threshold_accuracy(values, labels)
    assert np.isclose(score, max(best, 1 - worst)) and direction == 1
    predicted = values >= threshold
    assert np.isclose(0.5 * (predicted[labels].mean() + (~predicted[~labels]).mean()), score)
    assert gt.best_threshold_accuracy(-values, labels)[2] == -1


def test_the_measured_leak_check_catches_what_names_cannot():
    """u - i has an innocent name but carries the u - r label; g - r does not reach the label's ceiling."""
    clean, _ = gt.clean_galaxies(synthetic_table(4000))
    X, names = gt.galaxy_features(clean)
    u_r, u_r_err, is_red = gt.redness_targets(clean)
    report = gt.measure_leaks(X, names, u_r, u_r_err, is_red)
    report.check()  # the course's features pass
    assert report.ceiling > report.worst[1]
    leaky = np.column_stack([X, np.asarray(clean["dered_u"]) - np.asarray(clean["dered_i"])])
    report = gt.measure_leaks(leaky, names + ["colour_a"], u_r, u_r_err, is_red)
    assert "linear fit of all features" in report.leaking  # r - i beside it gives u - r exactly
    assert report.feature_scores["colour_a"] == max(report.feature_scores.values())
    with pytest.raises(gt.TargetLeakError, match="(colour_a.*balanced accuracy)|(better than its own measurement)"):
        report.check()
    assert "LEAK" in report.as_text()


def test_splits_are_disjoint_and_cover_no_shared_galaxy():
    clean, _ = gt.clean_galaxies(synthetic_table())
    splits = gt.redshift_splits()
    assert [s for _, _, s in splits][:5] == ["train", "train", "test", "train", "val"]
    tasks, _ = gt.build_tasks(clean["z"], splits, min_size=10)
    ranges = {s: [(t.z_lo, t.z_hi) for t in tasks[s]] for s in tasks}
    galaxies = {s: set(np.concatenate([t.indices for t in tasks[s]])) for s in tasks}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not galaxies[a] & galaxies[b]
        for lo1, hi1 in ranges[a]:
            for lo2, hi2 in ranges[b]:
                assert hi1 <= lo2 + 1e-12 or hi2 <= lo1 + 1e-12, (a, b, lo1, hi1, lo2, hi2)
    assert all(len(tasks[s]) > 0 for s in tasks)
    # windows of validation and test tasks do not overlap each other
    for s in ("val", "test"):
        idx = np.concatenate([t.indices for t in tasks[s]])
        assert idx.size == np.unique(idx).size


def test_folds_rotate_every_block_through_meta_test_once():
    n_blocks = len(gt.redshift_splits())
    roles = np.array([[split for _, _, split in gt.redshift_splits(fold)] for fold in range(5)])
    assert roles.shape == (5, n_blocks)
    assert all((roles[:, b] == "test").sum() == 1 and (roles[:, b] == "val").sum() == 1 for b in range(n_blocks))
    with pytest.raises(ValueError, match="fold must be in 0..4"):
        gt.redshift_splits(fold=5)


def test_preprocessor_is_fitted_on_meta_train_only():
    data = gt.prepare_galaxy_tasks(synthetic_table(), min_size=10, include_photoz=True, clip=None)
    train = data.train_indices()
    assert "photoZ_missing" in data.feature_names
    # standardised on meta-train galaxies: mean 0 there, not on the whole catalogue
    np.testing.assert_allclose(data.X[train].mean(axis=0)[:6], 0.0, atol=1e-10)
    assert abs(data.target_mean - data.target[train].mean()) < 1e-12
    assert np.all(np.isfinite(data.X))


def test_scaled_features_are_clipped():
    table = synthetic_table()
    table["err_i"][5] = 0.0999  # far out on the log-error scale
    data = gt.prepare_galaxy_tasks(table, min_size=10, clip=3.0)
    assert np.abs(data.X).max() <= 3.0
    unclipped = gt.prepare_galaxy_tasks(table, min_size=10, clip=None)
    assert np.abs(unclipped.X).max() > 3.0


def test_sampler_is_reproducible_and_support_query_disjoint():
    data = gt.prepare_galaxy_tasks(synthetic_table(), min_size=10)
    sampler = data.sampler("train", n_support=5, n_query=7)
    s1, q1, t1 = sampler.sample_indices(np.random.default_rng(3), n_tasks=6)
    s2, q2, t2 = sampler.sample_indices(np.random.default_rng(3), n_tasks=6)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(q1, q2)
    for row in range(6):
        assert not set(s1[row]) & set(q1[row])
        task = sampler.tasks[t1[row]]
        assert set(s1[row]) | set(q1[row]) <= set(task.indices)
    xs, ys, xq, yq = sampler.sample(np.random.default_rng(0), n_tasks=4)
    assert xs.shape == (4, 5, data.X.shape[1]) and yq.shape == (4, 7, 1)


def test_too_few_galaxies_names_the_task():
    task = gt.Task("z0.1000-0.1050", "test", 0.1, 0.105, np.arange(6))
    with pytest.raises(gt.TooFewGalaxiesError, match=r"z0\.1000-0\.1050.*6 galaxies"):
        gt.TaskSampler(np.zeros((10, 2)), np.zeros(10), [task], n_support=5, n_query=5)
    with pytest.raises(ValueError, match="shape|same n"):
        gt.TaskSampler(np.zeros((10, 2)), np.zeros(9), [task], n_support=1, n_query=1)


def test_cleaning_rejects_a_table_without_core_columns():
    from galmeta.data import MissingColumnsError

    table = synthetic_table(80)
    table.remove_column("photoZ")
    with pytest.raises(MissingColumnsError, match="photoZ"):
        gt.clean_galaxies(table)


def test_missingness_indicators_stay_zero_or_one():
    table = synthetic_table()
    data = gt.prepare_galaxy_tasks(table, min_size=10, include_photoz=True)
    indicators = [j for j, name in enumerate(data.feature_names) if name.endswith("_missing")]
    assert indicators and set(np.unique(data.X[:, indicators])) <= {0.0, 1.0}
    measured = [j for j in range(len(data.feature_names)) if j not in indicators]
    spread = data.X[data.train_indices()][:, measured].std(axis=0)  # scaled (a constant column stays 0)
    assert np.all((np.abs(spread - 1.0) < 0.2) | (spread == 0.0)), spread


@pytest.mark.parametrize("dataset", ["sdss", "sami"])
def test_no_standardised_meta_train_feature_is_extreme_on_the_real_tables(dataset):
    """The course's tables, every fold: no meta-train input beyond +-8, and clipping touches almost nothing."""
    if dataset == "sdss":
        from galmeta.data import load_galaxies

        catalogue, min_size = gt.build_catalogue(load_galaxies(source="embedded")), 40
    else:
        from galmeta.sami import build_sami_catalogue

        catalogue, min_size = build_sami_catalogue(), 25
    for fold in range(5):
        data = catalogue.fold(fold, min_size=min_size)
        X = data.X[data.train_indices()]
        assert np.abs(X).max() <= 8.0, f"fold {fold}: a meta-train feature reaches {np.abs(X).max():.1f}"
        raw = catalogue.fold(fold, min_size=min_size, clip=None).X[data.train_indices()]
        assert np.mean(np.abs(raw) > 5.0) < 0.002, "clipping must touch a handful of values, not reshape the features"
        indicators = [j for j, name in enumerate(data.feature_names) if name.endswith("_missing")]
        assert set(np.unique(X[:, indicators])) <= {0.0, 1.0}


def test_a_leak_that_no_single_feature_shows_is_caught_by_the_joint_fits():
    """u - g alone separates red from blue less well than the target, but beside g - r it is u - r."""
    from galmeta.data import load_galaxies

    clean, _ = gt.clean_galaxies(load_galaxies())
    X, names = gt.galaxy_features(clean)
    u_r, u_r_err, is_red = gt.redness_targets(clean)
    course = gt.measure_leaks(X, names, u_r, u_r_err, is_red)
    assert not course.leaking and min(course.model_rmse.values()) > 2 * course.noise_floor
    u_minus_g = np.asarray(clean["dered_u"], float) - np.asarray(clean["dered_g"], float)
    report = gt.measure_leaks(np.column_stack([X, u_minus_g]), names + ["u_minus_g"], u_r, u_r_err, is_red)
    assert report.feature_scores["u_minus_g"] < report.ceiling, "the single-feature scan alone would pass it"
    assert report.model_rmse["linear"] < 1e-6 and "linear fit of all features" in report.leaking
    with pytest.raises(gt.TargetLeakError, match="better than its own measurement errors allow.*linear"):
        report.check()


def test_features_built_from_target_or_spectral_columns_are_refused_by_construction():
    gt.refuse_target_sources({name: gt.FEATURE_SOURCES[name] for name in gt.galaxy_features(
        gt.clean_galaxies(synthetic_table(500))[0])[1]}, gt.FORBIDDEN_SOURCES)  # the course's features pass
    for feature, columns, why in (("u_minus_g", ("dered_u", "dered_g"), "the target's band"),
                                  ("u_error", ("err_u",), "the target's error"),
                                  ("redshift", ("z",), "measured from the spectrum"),
                                  ("photoZ", ("photoZ",), "u included")):
        with pytest.raises(gt.TargetLeakError, match=f"feature '{feature}' is computed from .*{why}"):
            gt.refuse_target_sources({feature: columns}, gt.FORBIDDEN_SOURCES)
