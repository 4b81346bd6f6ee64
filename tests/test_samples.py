"""The sealed confirmation sample: split by imaging run, never seen by notebooks, tuning or development runs."""
from pathlib import Path

import numpy as np
import pytest

from galmeta import baselines as gb
from galmeta import evaluate as ev
from galmeta.data import load_galaxies
from galmeta.samples import imaging_run, is_sealed_run, sealed_galaxies
from galmeta.tasks import build_catalogue

from test_tasks import synthetic_table

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_the_run_is_read_from_the_objid_and_the_rule_is_fixed():
    assert imaging_run([(756 << 32) + (1 << 29) + 5]) == [756]
    assert [is_sealed_run(r) for r in (94, 756, 1000, 1054)] == [True, True, False, False]


def test_the_course_never_sees_a_sealed_galaxy():
    table = load_galaxies()
    runs = imaging_run(table["objID"])
    sealed_runs = {r for r in np.unique(runs) if is_sealed_run(r)}
    assert 0.15 < len(sealed_runs) / len(np.unique(runs)) < 0.25          # about a fifth of the runs
    development = build_catalogue(table)
    assert not np.isin(imaging_run(development.clean["objID"]), list(sealed_runs)).any()
    everything = build_catalogue(table, sample="all")
    assert everything.sealed.sum() == len(everything.target) - len(development.target) > 0
    np.testing.assert_array_equal(everything.sealed, sealed_galaxies(everything.clean["objID"]))
    for notebook in NOTEBOOKS.glob("*.py"):  # no notebook asks for the sealed galaxies
        assert "sample=\"all\"" not in notebook.read_text() and "test_sample=" not in notebook.read_text(), notebook
    with pytest.raises(ValueError, match="sample must be"):
        build_catalogue(table, sample="confirmation")


def test_a_confirmation_run_trains_on_development_and_tests_on_sealed_galaxies():
    table = synthetic_table(8000)
    runs = np.array([94, 756, 1000, 1054, 1100])[np.arange(len(table)) % 5]
    table["objID"] = (runs.astype(np.int64) << 32) + np.arange(len(table))
    catalogue = build_catalogue(table, sample="all")
    assert catalogue.sealed.mean() == pytest.approx(0.4, abs=0.01)
    config = ev.EvaluationConfig(ks=(1, 5), folds=(0,), seeds=(0,), n_draws=2, n_val_draws=2, n_query=10,
                                 meta_iterations=5, pooled_epochs=1, algorithms=(), include_numpy_check=False)
    runs_by_sample = ev.run_confirmation(catalogue, [gb.PooledRidge(), gb.PooledPlusOffset(gb.PooledRidge())], config,
                                         min_size=30)
    data = catalogue.fold(0, min_size=30)
    assert not catalogue.sealed[np.concatenate([data.indices("train"), data.indices("val")])].any()
    for sample, results in runs_by_sample.items():
        assert results.sample == sample
        used = np.concatenate([d.query.ravel() for d in results.draws_of(5)] + [d.support.ravel() for d in results.draws_of(5)])
        assert catalogue.sealed[used].all() == (sample == "confirmation")
        assert not catalogue.sealed[used].any() or sample == "confirmation"
    development = runs_by_sample["development"]
    alone = ev.run_evaluation(catalogue, [gb.PooledRidge(), gb.PooledPlusOffset(gb.PooledRidge())], config, min_size=30)
    np.testing.assert_array_equal(alone.residuals("pooled ridge", 5), development.residuals("pooled ridge", 5))
