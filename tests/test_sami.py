"""SAMI DR3: the embedded tables, cleaning counts, kpc sizes, environments as tasks, the label threshold."""
from __future__ import annotations

import numpy as np
import pytest

from galmeta import sami


@pytest.fixture(scope="module")
def catalogue():
    return sami.build_sami_catalogue()


def test_the_embedded_tables_are_there_unchanged():
    import hashlib

    expected = {"sami_InputCatGAMADR3.csv.gz": "27c43103d8797730188449af3c0273e3",
                "sami_SSPAperturesDR3.csv.gz": "5ecf99b6a8e2550b2ce5c56c5ecfb48b",
                "sami_CubeObs.csv.gz": "771d8e5eddd569f8ff4c9cc12c847da6"}
    for name, md5 in expected.items():
        assert hashlib.md5((sami.sami_data_dir() / name).read_bytes()).hexdigest() == md5
    assert "Croom et al. (2021)" in (sami.sami_data_dir() / "PROVENANCE.md").read_text()


def test_cleaning_counts_every_step(catalogue):
    report = catalogue.report
    assert report.n_input == 3375
    assert report.n_output == len(catalogue.target) == sum(1 for _ in catalogue.environment)
    removed = {step: n for step, n, _ in report.steps}
    assert removed["not the best cube of its galaxy (isbest)"] > 0
    assert all(n >= 0 for n in removed.values())
    assert np.unique(catalogue.clean["catid"]).size == catalogue.clean["catid"].size, "one row per galaxy"
    assert np.nanmax(catalogue.clean["r_e_arcsec"]) <= sami.MAX_RE_ARCSEC
    assert not np.any(catalogue.X_raw == sami.SENTINEL), "-99 is never a value"
    assert np.isnan(catalogue.X_raw).any(), "missing values stay visible"


def test_sizes_in_kpc():
    from astropy.cosmology import FlatLambdaCDM

    cat = sami.build_sami_catalogue()
    j = int(np.flatnonzero(np.isfinite(cat.clean["r_e_arcsec"]))[3])
    d_kpc = FlatLambdaCDM(H0=70, Om0=0.3).angular_diameter_distance(cat.clean["z"][j]).to("kpc").value
    assert np.isclose(cat.clean["r_e_kpc"][j], cat.clean["r_e_arcsec"][j] * d_kpc / 206264.806, rtol=1e-9)


def test_environments_are_disjoint_tasks_and_each_is_meta_test_once(catalogue):
    assert len(catalogue.environments) == 26
    assert sum(not e.startswith("G") for e in catalogue.environments) == 8
    tested = []
    for fold in range(5):
        data = catalogue.fold(fold, min_size=25)
        members = {s: set(np.concatenate([t.indices for t in data.tasks[s]])) for s in data.tasks}
        assert not members["train"] & members["test"] and not members["val"] & members["test"]
        tested += [t.name for t in data.tasks["test"]]
        threshold = data.label_threshold
        assert 0.7 < threshold < 1.2
        np.testing.assert_array_equal(data.is_red, data.target >= threshold)
    kept = [e for e in catalogue.environments if np.sum(catalogue.environment == e) >= 25]
    assert sorted(tested) == sorted(kept)


def test_valley_threshold_on_two_planted_populations():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.7, 0.08, 3000), rng.normal(1.1, 0.08, 3000)])
    assert abs(sami.valley_threshold(values) - 0.9) < 0.02


def test_features_and_the_mass_leak():
    with pytest.raises(ValueError, match="features"):
        sami.build_sami_catalogue(features=("abundance", "colour"))
    with_mass = sami.build_sami_catalogue(features=("abundance", "size", "shape", "mass"))
    assert with_mass.feature_names[-1] == "mstar"
    scores = with_mass.fold(0, min_size=25, check_leaks=False).leaks.feature_scores
    assert scores["mstar"] > scores["ellip"], "mass, derived from the colour, separates red from blue far better"
