"""Nothing silently wrong: every bad input a careful but unlucky user can produce gets a clear message.

Each test feeds one generated bad input to import, cleaning, task building, a learner or the command line,
and checks the message (and, where a good table was there before, that it still loads unchanged).
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
import requests
import torch

from conftest import fixture_bytes
from galmeta import data as gd
from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt
from galmeta import tasks as gt

BIG_SPEC_OBJ_ID = 13510798882111488000  # plate 10475 exists in DR17; above 2**63


def _csv(tmp_path, name="snap.csv", edit=None, text=None):
    text = text if text is not None else fixture_bytes("skyserver_all.csv").decode()
    lines = text.splitlines()
    if edit:
        lines = edit(lines)
    path = tmp_path / name
    body = "\n".join(lines) + "\n"
    path.write_bytes(gzip.compress(body.encode()) if name.endswith(".gz") else body.encode())
    return path


def _set_cell(column, row, value):
    def edit(lines):
        header = lines[1].split(",")
        cells = lines[2 + row].split(",")
        cells[header.index(column)] = value
        lines[2 + row] = ",".join(cells)
        return lines
    return edit


@pytest.fixture
def good_snapshot(data_home, tmp_path):
    """A good snapshot imported first: every failure below must leave it loading unchanged."""
    target = gd.import_snapshot(_csv(tmp_path, "course.csv"), name="course")
    return target, target.read_bytes()


def _still_good(good_snapshot):
    target, before = good_snapshot
    assert target.read_bytes() == before
    assert len(gd.load_galaxies()) == 6


# --- ids ------------------------------------------------------------------------------------
def test_spec_obj_ids_above_2_63_stay_exact_through_import_cache_and_cleaning(data_home, tmp_path):
    path = _csv(tmp_path, edit=_set_cell("specObjID", 0, str(BIG_SPEC_OBJ_ID)))
    target = gd.import_snapshot(path)
    table = gd.load_galaxies(snapshot=target.stem)
    assert table["specObjID"].dtype == np.uint64 and int(table["specObjID"][0]) == BIG_SPEC_OBJ_ID
    clean, _ = gt.clean_galaxies(table)
    assert BIG_SPEC_OBJ_ID in {int(v) for v in clean["specObjID"]}
    assert f"s.specObjID > {BIG_SPEC_OBJ_ID}" in gd.GalaxyQuery().sql(after_spec_obj_id=np.uint64(BIG_SPEC_OBJ_ID))


def test_keyset_paging_continues_after_an_id_above_2_63(data_home, replay):
    text = fixture_bytes("skyserver_page1.csv").decode().splitlines()
    header = text[1].split(",")
    row = text[-1].split(",")
    row[header.index("specObjID")] = str(BIG_SPEC_OBJ_ID)
    text[-1] = ",".join(row)
    fake = replay(lambda sql: "\n".join(text).encode() if "specObjID >" not in sql else "\n".join(text[:2]).encode())
    gd.fetch_galaxies(gd.GalaxyQuery(n_rows=None, page_size=3, sample_every=1), progress=False)
    assert f"s.specObjID > {BIG_SPEC_OBJ_ID}" in fake.calls[1], "int64 would have wrapped to a negative id"


def test_float_ids_are_refused(data_home, tmp_path, good_snapshot):
    from astropy.table import Table

    table = Table.read(fixture_bytes("skyserver_all.csv").decode(), format="ascii.csv", comment="#")
    table["objID"] = table["objID"].astype(float)
    table.write(tmp_path / "floats.fits")
    with pytest.raises(gd.MalformedTableError, match="objID.*floating-point"):
        gd.import_snapshot(tmp_path / "floats.fits")
    _still_good(good_snapshot)


# --- types and blanks -----------------------------------------------------------------------------
@pytest.mark.parametrize("column, value, message", [
    ("dered_g", "bright", r"'dered_g' must hold numbers but row 2 is 'bright'"),
    ("zWarning", "", r"'zWarning' is empty in row 2"),
    ("objID", "", r"'objID' is empty in row 2"),
    ("objID", "12ab", r"'objID' row 2 is '12ab'"),
])
def test_wrong_types_and_blanks_name_the_column_and_row(data_home, tmp_path, good_snapshot, column, value, message):
    with pytest.raises(gd.MalformedTableError, match=message):
        gd.import_snapshot(_csv(tmp_path, "bad.csv", edit=_set_cell(column, 1, value)))
    _still_good(good_snapshot)


def test_an_extra_text_column_imports_and_cleans(data_home, tmp_path):
    def add_notes(lines):
        lines[1] += ",notes"
        lines[2:] = [line + ",looks fine" for line in lines[2:]]
        return lines
    target = gd.import_snapshot(_csv(tmp_path, "notes.csv", edit=add_notes))
    clean, report = gt.clean_galaxies(gd.load_galaxies(snapshot=target.stem))
    assert report.n_output == len(clean) > 0 and set(clean["notes"]) == {"looks fine"}


@pytest.mark.parametrize("content, name, message", [
    (b"", "empty.csv", "is empty"),
    (b"specObjID,objID\n1,2\n", "plain.csv.gz", "not gzip-compressed"),
    (b"specObjID,objID\n\xff\xfe\x00\x81 binary\n" + b"x" * 40, "latin.csv", "not UTF-8"),
])
def test_files_that_are_not_what_their_names_say(data_home, tmp_path, good_snapshot, content, name, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(gd.CorruptCacheError, match=message):
        gd.import_snapshot(tmp_path / name)
    _still_good(good_snapshot)


# --- snapshots: never replaced silently, the active one explicit, readable by others ------------------------------
def test_a_different_file_with_the_same_name_does_not_replace_a_snapshot(data_home, tmp_path, good_snapshot):
    (tmp_path / "elsewhere").mkdir()
    other = _csv(tmp_path / "elsewhere", "course.csv", edit=lambda lines: lines[:4])  # parsable, but other galaxies
    with pytest.raises(gd.SnapshotExistsError, match="--force"):
        gd.import_snapshot(other)
    _still_good(good_snapshot)
    gd.import_snapshot(_csv(tmp_path, "course.csv"), name="course")  # the same file again is fine
    gd.import_snapshot(other, force=True)
    assert len(gd.load_galaxies()) == 2


def test_with_two_snapshots_the_active_one_is_explicit(data_home, tmp_path, good_snapshot):
    gd.import_snapshot(_csv(tmp_path, "second.csv", edit=lambda lines: lines[:5]))
    assert gd.active_snapshot() == "course", "a second import does not take over silently"
    assert len(gd.load_galaxies()) == 6
    gd.use_snapshot("second")
    assert len(gd.load_galaxies()) == 3 and gd.which_source() == "snapshot:second"
    info = subprocess.run([sys.executable, "-m", "galmeta.cli", "data", "info"], capture_output=True, text=True)
    assert "* snapshot second" in info.stdout and "the course uses: snapshot:second" in info.stdout
    gd.use_snapshot(None)
    assert gd.which_source() == "embedded"
    with pytest.raises(gd.NoDataError, match="imported: \\['course', 'second'\\]"):
        gd.use_snapshot("third")


def test_written_files_follow_the_umask(data_home, tmp_path):
    old = os.umask(0o022)
    try:
        target = gd.import_snapshot(_csv(tmp_path))
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644, "a shared classroom data home must be readable by others"


def test_a_data_home_that_is_a_file_or_cannot_be_made(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("GALMETA_DATA", str(tmp_path / "a_file"))
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        gd.import_snapshot(_csv(tmp_path))
    monkeypatch.setenv("GALMETA_DATA", str(tmp_path / "a_file" / "below"))
    with pytest.raises(PermissionError, match="cannot create the data home"):
        gd.import_snapshot(_csv(tmp_path))
    done = subprocess.run([sys.executable, "-m", "galmeta.cli", "data", "import", str(_csv(tmp_path))],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "cannot create the data home" in done.stderr and "Traceback" not in done.stderr


# --- the SkyServer query ------------------------------------------------------------------------------
class _Response:
    def __init__(self, status, text):
        self.status_code, self.text = status, text


def test_http_500_is_an_sql_error_shown_not_retried(data_home, replay):
    error = requests.exceptions.HTTPError("500 Server Error", response=_Response(500, "Incorrect syntax near 'FORM'."))
    fake = replay(lambda sql: error)
    with pytest.raises(gd.SkyServerError, match="HTTP 500: Incorrect syntax near 'FORM'"):
        gd.fetch_galaxies(gd.GalaxyQuery(n_rows=6, sample_every=1), retries=3, backoff=0, progress=False)
    assert len(fake.calls) == 1


def test_busy_server_is_retried_and_a_slow_query_is_not(data_home, replay):
    answers = [requests.exceptions.HTTPError("503", response=_Response(503, "busy")), fixture_bytes("skyserver_all.csv")]
    fake = replay(lambda sql: answers.pop(0))
    gd.fetch_galaxies(gd.GalaxyQuery(n_rows=6, sample_every=1), retries=2, backoff=0, progress=False)
    assert len(fake.calls) == 2
    fake = replay(lambda sql: requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(gd.NoDataError, match="did not answer within 5 s.*lower page_size"):
        gd.fetch_galaxies(gd.GalaxyQuery(n_rows=7, sample_every=1), timeout=5, retries=3, backoff=0, progress=False)
    assert len(fake.calls) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"z_max": float("inf")}, "finite"), ({"z_min": float("nan")}, "finite"),
    ({"extra_photo_columns": ("petroR50_r\n",)}, "extra_photo_columns"), ({"n_rows": 0}, "n_rows"),
])
def test_query_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gd.GalaxyQuery(**kwargs)


def test_the_default_sample_spans_the_survey(data_home, replay):
    """All pages of the strided set are read, then n_rows kept at random: not the first plates only."""
    text = fixture_bytes("skyserver_all.csv").decode().splitlines()
    fake = replay(lambda sql: "\n".join(text).encode() if "specObjID >" not in sql else "\n".join(text[:2]).encode())
    table = gd.fetch_galaxies(gd.GalaxyQuery(n_rows=3, page_size=6, sample_every=1), progress=False)
    assert len(fake.calls) == 2 and len(table) == 3
    assert table.meta["galmeta"]["rows_in_strided_set"] == 6
    again = gd.fetch_galaxies(gd.GalaxyQuery(n_rows=3, page_size=6, sample_every=1, sample_seed=1), progress=False)
    assert set(again["specObjID"]) != set(table["specObjID"]) or len(set(table["specObjID"])) == 3


# --- the PyTorch learner validates what the NumPy one validates ---------------------------------------------
def _batch(seed=0, T=3, K=4, Q=5, d_in=2, d_out=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(T, n, d)) for n, d in ((K, d_in), (K, d_out), (Q, d_in), (Q, d_out))]


@pytest.mark.parametrize("change, message", [
    (lambda b, lr: ([b[0], b[1][..., [0, 0]], b[2], b[3]], lr), "ys has 2 features .* expects 1"),
    (lambda b, lr: ([b[0][..., :1], b[1], b[2], b[3]], lr), "xs has 1 features .* expects 2"),
    (lambda b, lr: (b, -0.1), "inner_lr must be a finite number >= 0"),
    (lambda b, lr: (b, float("nan")), "inner_lr must be a finite number >= 0"),
    (lambda b, lr: ([b[0][:, :0], b[1][:, :0], b[2], b[3]], lr), "xs has no points"),
])
def test_both_learners_reject_the_same_bad_batches(change, message):
    params = mn.init_mlp((2, 8, 1), np.random.default_rng(0))
    batch, lr = change(_batch(), 0.01)
    with pytest.raises(ValueError, match=message):
        mn.meta_gradient(params, *batch, lr)
    tensors = [(torch.tensor(W), torch.tensor(b)) for W, b in params]
    with pytest.raises(ValueError, match=message):
        mt.meta_gradient(tensors, *batch, lr)  # NumPy input is accepted by the PyTorch learner too


def test_numpy_input_to_the_pytorch_meta_gradient():
    params = mn.init_mlp((2, 8, 1), np.random.default_rng(0))
    tensors = [(torch.tensor(W), torch.tensor(b)) for W, b in params]
    batch = _batch()
    loss_np, _ = mt.meta_gradient(tensors, *batch, 0.01)
    loss_t, _ = mt.meta_gradient(tensors, *(torch.tensor(a) for a in batch), 0.01)
    assert loss_np == loss_t


def _learner(**kwargs):
    return mt.MetaLearner(mt.MLP.from_numpy(mn.init_mlp((2, 8, 1), np.random.default_rng(0))), device="cpu",
                          dtype=torch.float64, **kwargs)


def test_zero_steps_means_zero_steps():
    learner = _learner(inner_steps=2, eval_inner_steps=3).fit(None, 0)
    xs, ys, xq, _ = _batch()
    before = learner.model(torch.tensor(xq)).detach().numpy()
    np.testing.assert_allclose(learner.adapt(xs, ys, steps=0).predict(xq), before, rtol=1e-12, atol=1e-15)
    assert learner.adaptation_predictions(xs, ys, xq, max_steps=0).shape == (1, *xq.shape[:2], 1)
    assert not np.allclose(learner.adapt(xs, ys).predict(xq), before), "default: eval_inner_steps"


@pytest.mark.parametrize("kwargs, message", [
    ({"eval_inner_steps": -2}, "eval_inner_steps"), ({"inner_steps": 0}, "inner_steps"),
    ({"meta_lr": 0.0}, "meta_lr"), ({"meta_batch": 2.5}, "meta_batch"), ({"inner_lr": float("inf")}, "inner_lr"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mt.MetaConfig(**kwargs)


def test_the_callers_config_is_not_changed():
    config = mt.MetaConfig(algorithm="anil")
    learner = mt.MetaLearner(mt.MLP((2, 8, 1)), config=config, device="cpu")
    assert config.head_names == () and learner.config.head_names == ("weights.1", "biases.1")


def test_adapt_before_fit_is_an_error():
    from sklearn.exceptions import NotFittedError

    xs, ys, xq, _ = _batch()
    with pytest.raises(NotFittedError, match="call fit"):
        _learner().adapt(xs, ys)


def test_diverging_training_warns_then_stops(monkeypatch):
    sample = lambda rng, n: [a * 10 for a in _batch(int(rng.integers(1000)), T=n)]
    with pytest.raises(FloatingPointError, match="diverges|became"):  # inner_lr=50: the loss explodes at once
        _learner(inner_lr=50.0, inner_steps=3).fit(sample, 200, progress=False)
    learner = _learner()
    losses = iter([1.0] * 10 + [5e3, 2e6])  # a loss that grows a thousand-fold, then a million-fold
    monkeypatch.setattr(learner, "step", lambda *batch: next(losses))
    with pytest.warns(RuntimeWarning, match="diverging"), pytest.raises(FloatingPointError, match="grew from"):
        learner.fit(sample, 12, progress=False)


def test_diverging_training_can_stop_and_keep_its_best_state(monkeypatch):
    sample = lambda rng, n: _batch(int(rng.integers(1000)), T=n)
    val = _batch(99, T=4)
    learner = _learner()
    real_step = learner.step
    calls = iter(range(10_000))

    def step(*batch):  # trains normally, then the loss grows a billion-fold at iteration 31
        return real_step(*batch) if next(calls) < 30 else 1e30

    monkeypatch.setattr(learner, "step", step)
    with pytest.warns(RuntimeWarning, match="training stopped, keeping the best validation state"):
        learner.fit(sample, 100, val_tasks=val, eval_every=10, progress=False, on_divergence="stop")
    assert learner.diverged_at == 30 and learner.is_fitted_
    assert learner.evaluate(*val) == pytest.approx(min(learner.history["val_loss"]), rel=1e-6)
    fresh = _learner()
    start = [p.detach().clone() for p in fresh.model.parameters()]
    def nan_step(*batch):  # what MetaLearner.step does when the meta-loss is not finite
        raise FloatingPointError("meta-loss became nan at iteration 0")

    monkeypatch.setattr(fresh, "step", nan_step)
    with pytest.warns(RuntimeWarning, match="keeping the parameters it started from"):
        fresh.fit(sample, 5, progress=False, on_divergence="stop")
    assert fresh.diverged_at == 0 and all(torch.equal(a, b) for a, b in zip(start, fresh.model.parameters()))
    with pytest.raises(ValueError, match="on_divergence"):
        fresh.fit(sample, 1, progress=False, on_divergence="ignore")


def test_a_checkpoint_is_written_without_validation_tasks(tmp_path):
    sample = lambda rng, n: _batch(int(rng.integers(1000)), T=n)
    _learner().fit(sample, 7, eval_every=5, checkpoint=tmp_path / "c.pt", progress=False)
    assert _learner().load(tmp_path / "c.pt").iteration == 7


# --- checkpoints --------------------------------------------------------------------------------------
def test_a_crafted_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(mt.CheckpointError, match="evil.pt.*refuses to load"):
        _learner().load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_failed_load_changes_nothing(tmp_path):
    sample = lambda rng, n: _batch(int(rng.integers(1000)), T=n)
    source = mt.MetaLearner(mt.MLP((2, 16, 1)), device="cpu", dtype=torch.float64).fit(sample, 3, progress=False)
    source.save(tmp_path / "other.pt")
    target = _learner().fit(sample, 2, progress=False)
    before = [p.detach().clone() for p in target.model.parameters()]
    with pytest.raises(mt.CheckpointError, match="other.pt.*shape"):
        target.load(tmp_path / "other.pt")
    assert target.iteration == 2 and all(torch.equal(a, b) for a, b in zip(before, target.model.parameters()))
    good = tmp_path / "good.pt"
    target.save(good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:300])
    with pytest.raises(mt.CheckpointError, match="cut.pt is not a readable galmeta checkpoint"):
        target.load(tmp_path / "cut.pt")
    with pytest.raises(mt.CheckpointError, match="no checkpoint file"):
        target.load(tmp_path / "missing.pt")


# --- tasks and configuration -------------------------------------------------------------------------
def test_task_building_arguments():
    z = np.random.default_rng(0).uniform(0.01, 0.21, 1000)
    for kwargs in ({"window": 0}, {"train_stride": 0}, {"window": float("nan")}):
        with pytest.raises(ValueError, match="positive redshift width"):
            gt.build_tasks(z, gt.redshift_splits(), **kwargs)
    with pytest.raises(ValueError, match="finite edges"):
        gt.build_tasks(z, [(float("nan"), 0.1, "train")])
    with pytest.raises(ValueError, match="finite z_min < z_max"):
        gt.redshift_splits(z_max=float("nan"))


def test_a_column_of_missing_errors_is_explained_not_cleaned_to_nothing():
    from test_tasks import synthetic_table

    table = synthetic_table(500)
    table["err_r"] = np.nan
    with pytest.raises(gt.TooFewGalaxiesError, match="(?s)cleaning left no galaxy.*missing or out-of-range magnitude"):
        gt.build_catalogue(table)


def test_an_unknown_mode_is_a_clear_message_on_the_command_line():
    env = {**os.environ, "GALMETA_MODE": "turbo"}
    done = subprocess.run([sys.executable, "-m", "galmeta.cli", "data", "info"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "GALMETA_MODE='turbo' is not one of ci, laptop, full" in done.stderr
    assert "Traceback" not in done.stderr


# === Nothing run, nothing lost (races forced deterministically, never by luck) ==========================
# --- result files cannot run code ---------------------------------------------------------------------
def test_a_crafted_results_folder_cannot_run_code(tmp_path):
    from galmeta.results_files import FORMAT_VERSION, ResultsFileError, load_results

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "crafted"
    crafted.mkdir()
    (crafted / "results.json").write_text('{"format": "galmeta-evaluation-results", "format_version": %d}' % FORMAT_VERSION)
    with open(crafted / "results.npz", "wb") as handle:
        np.savez(handle, prediction=np.array([Evil()], dtype=object))
    with pytest.raises(ResultsFileError, match="results.npz holds Python objects, which galmeta refuses to load"):
        load_results(crafted)
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.pickle").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ResultsFileError, match="results.json is missing.*results.pickle files .* could run code"):
        load_results(old)
    (crafted / "results.json").write_text("{ not json")
    with pytest.raises(ResultsFileError, match="not readable JSON"):
        load_results(crafted)
    # the benchmark's --replot, --merge and --replace-from all read through load_results
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "redness_evaluation.py")
    for args in (["--replot", "--out", str(old)], ["--merge", str(old), "--out", str(tmp_path / "merged")]):
        done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
        assert done.returncode == 2 and "could run code" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


# --- student copies -------------------------------------------------------------------------------------
def _edited_student_copy(tmp_path):
    from galmeta import course

    out = tmp_path / "student"
    target = course.make_student_copies(out, ["01"])[0]
    edited = target.read_bytes().replace(b'"cells": [', b'"cells": [{"cell_type": "markdown", "id": "mine", '
                                        b'"metadata": {}, "source": "my notes"},', 1)
    target.write_bytes(edited)
    return course, out, target, edited


def test_two_student_runs_into_one_folder_never_lose_an_edit(tmp_path, monkeypatch):
    from galmeta.safe_files import LockTimeout

    course, out, target, edited = _edited_student_copy(tmp_path)
    keep = course._keep_exclusively
    seen = []

    def second_run_arrives_mid_way(*args):
        kept = keep(*args)  # the first run has judged the copy and kept it; now a second run starts
        with pytest.raises(LockTimeout, match="another galmeta process is writing student copies"):
            course.make_student_copies(out, ["01"], lock_timeout=0)
        seen.append(kept)
        return kept

    monkeypatch.setattr(course, "_keep_exclusively", second_run_arrives_mid_way)
    course.make_student_copies(out, ["01"])
    assert len(seen) == 1 and seen[0].read_bytes() == edited
    assert sorted(p.name for p in out.glob("01_*.kept-*")) == [seen[0].name]


def test_a_kept_copy_is_never_written_over_another_file(tmp_path, monkeypatch):
    course, out, target, edited = _edited_student_copy(tmp_path)
    monkeypatch.setattr(course.time, "strftime", lambda *a: "20261130-120000")
    taken = out / "01_fetch_sdss.kept-20261130-120000.ipynb"
    taken.write_bytes(b"another student's file")
    course.make_student_copies(out, ["01"])
    assert taken.read_bytes() == b"another student's file"
    assert (out / "01_fetch_sdss.kept-20261130-120000-1.ipynb").read_bytes() == edited


def test_an_identical_read_only_student_copy_is_left_alone(tmp_path):
    from galmeta import course

    target = course.make_student_copies(tmp_path, ["01"])[0]
    before = target.read_bytes()
    target.chmod(0o444)
    assert course.make_student_copies(tmp_path, ["01"]) == [target]
    assert target.read_bytes() == before and not list(tmp_path.glob("*.kept-*"))


# --- snapshot imports -----------------------------------------------------------------------------------
def test_two_imports_of_one_name_at_once_cannot_both_win(data_home, tmp_path, monkeypatch):
    from galmeta.data import snapshots
    from galmeta.safe_files import LockTimeout

    first, second = _csv(tmp_path, "a.csv"), _csv(tmp_path, "b.csv", edit=lambda lines: lines[:5])
    check = snapshots._refuse_a_different_snapshot
    outcome = []

    def second_import_arrives_mid_way(*args):
        # the first import holds the lock between its check and its write; a second one must wait, not pass
        with pytest.raises(LockTimeout, match="another galmeta process is writing the snapshot 'course'"):
            gd.import_snapshot(second, name="course", lock_timeout=0)
        outcome.append("refused")
        return check(*args)

    with monkeypatch.context() as patch:
        patch.setattr(snapshots, "_refuse_a_different_snapshot", second_import_arrives_mid_way)
        target = gd.import_snapshot(first, name="course")
    assert outcome == ["refused"] and len(gd.load_galaxies(snapshot="course")) == 6
    with pytest.raises(gd.SnapshotExistsError, match="--force"):  # once the first is done, the second is told
        gd.import_snapshot(second, name="course")
    assert len(gd.load_galaxies(snapshot="course")) == 6 and target.exists()


def test_a_repeated_column_is_refused_by_name(good_snapshot, tmp_path):
    def repeat_dered_u(lines):
        lines[1] += ",dered_u"
        lines[2:] = [line + ",0.0" for line in lines[2:]]
        return lines

    for name in ("twice.csv", "twice.csv.gz"):
        with pytest.raises(gd.MalformedTableError, match="the column 'dered_u' appears more than once"):
            gd.import_snapshot(_csv(tmp_path, name, edit=repeat_dered_u), name="twice")
    _still_good(good_snapshot)


@pytest.mark.parametrize("name", [".", "..", "-", ".hidden", "con", "CON", "com1", "-rf", "a/b", "../outside",
                                  "x" * 65, "", "two words"])
def test_one_naming_rule_for_import_use_and_the_source_variable(good_snapshot, tmp_path, monkeypatch, name):
    with pytest.raises(gd.SnapshotNameError, match="the snapshot name .* is not allowed"):
        gd.import_snapshot(_csv(tmp_path, "x.csv"), name=name)
    with pytest.raises(gd.SnapshotNameError, match="is not allowed"):
        gd.use_snapshot(name)
    monkeypatch.setenv("GALMETA_SOURCE", f"snapshot:{name}")
    with pytest.raises(gd.SnapshotNameError, match="is not allowed"):
        gd.load_galaxies()
    monkeypatch.delenv("GALMETA_SOURCE")
    assert sorted(p.name for p in (good_snapshot[0].parent).iterdir() if not p.name.startswith(".")) == \
        ["ACTIVE", "course.ecsv"]
    _still_good(good_snapshot)


def test_nothing_outside_the_data_home_is_read_through_a_name(good_snapshot, tmp_path):
    outside = tmp_path / "outside.ecsv"
    outside.write_bytes(good_snapshot[0].read_bytes())
    env = {**os.environ, "GALMETA_SOURCE": "snapshot:../../outside"}
    for command, environment in ((["data", "use", "../../outside"], os.environ), (["data", "info"], env)):
        done = subprocess.run([sys.executable, "-m", "galmeta.cli", *command], capture_output=True, text=True,
                              env=environment)
        assert done.returncode == 2 and "the snapshot name '../../outside' is not allowed" in done.stderr
    assert gd.active_snapshot() == "course"
    assert gd.check_snapshot_name("dr17_sample-2") == "dr17_sample-2"
    from galmeta.data.home import snapshot_name_from_file

    assert snapshot_name_from_file(tmp_path / "con.csv.gz") == "con_table"
    assert snapshot_name_from_file(tmp_path / ".sdss dr17.v2.csv") == "sdss_dr17_v2"


# --- oversized tables --------------------------------------------------------------------------------------
def _bomb(path, megabytes, header="objID,type,notes\n", row="1,3," + "x" * 190 + "\n"):
    """A gzip file that expands to ``megabytes`` MB, written in pieces (never the whole text in memory)."""
    import zlib

    block = (row * (1_000_000 // len(row))).encode()
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    with open(path, "wb") as handle:
        handle.write(compressor.compress(header.encode()))
        for _ in range(int(megabytes)):
            handle.write(compressor.compress(block))
        handle.write(compressor.flush())
    return path


def test_a_table_that_expands_past_the_limit_is_refused_before_parsing(good_snapshot, tmp_path):
    import resource
    import time

    bomb = _bomb(tmp_path / "bomb.csv.gz", 300)  # 300 MB of text in a file of about 1 MB
    assert bomb.stat().st_size < 2e6
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(gd.TableTooLargeError, match="bomb.csv.gz is larger than 256 MB uncompressed.*--max-megabytes"):
        gd.import_snapshot(bomb)
    assert time.perf_counter() - start < 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before < 200_000  # kB: streamed, not read
    small = gd.ImportLimits(max_megabytes=1)
    with pytest.raises(gd.TableTooLargeError, match="larger than 1 MB"):
        gd.import_snapshot(_bomb(tmp_path / "two.csv.gz", 2), limits=small)
    _still_good(good_snapshot)


def test_too_many_rows_or_columns_are_refused_with_the_limit_to_raise(good_snapshot, tmp_path):
    wide = tmp_path / "wide.csv.gz"
    wide.write_bytes(gzip.compress((",".join(f"c{i}" for i in range(1_000_000)) + "\n" + "1," * 999_999 + "1\n").encode()))
    with pytest.raises(gd.TableTooLargeError, match="more than 1,000 columns.*--max-columns"):
        gd.import_snapshot(wide)
    many = _csv(tmp_path, "many.csv", edit=lambda lines: lines[:2] + lines[2:] * 5_000)  # 30,000 rows
    with pytest.raises(gd.TableTooLargeError, match="many.csv has more than 10 rows.*--max-rows"):
        gd.import_snapshot(many, limits=gd.ImportLimits(max_rows=10))
    with pytest.raises(ValueError, match="max_rows must be a number > 0"):
        gd.ImportLimits(max_rows=0)
    _still_good(good_snapshot)


def test_leftover_part_files_are_shown_then_removed(good_snapshot, tmp_path):
    from galmeta.safe_files import atomic_write

    folder = good_snapshot[0].parent
    stale = folder / "course.ecsv.abc123.part"
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (0, 0))  # written long ago by an import that was killed
    assert [e["kind"] for e in gd.cache_info() if e["name"] == stale.name] == ["leftover"]
    info = subprocess.run([sys.executable, "-m", "galmeta.cli", "data", "info"], capture_output=True, text=True)
    assert "leftover" in info.stdout and stale.name in info.stdout
    with atomic_write(folder / "busy.ecsv") as busy:  # a writer at work right now: its file is never removed
        busy.write_bytes(b"y")
        os.utime(busy, (0, 0))
        gd.import_snapshot(_csv(tmp_path, "course.csv"), name="course")  # the same file again: a no-op import
        assert not stale.exists() and busy.exists()
    assert not list(folder.glob("*.part"))
    _still_good(good_snapshot)


# --- checkpoints and training -----------------------------------------------------------------------------
def test_a_second_training_on_one_checkpoint_is_refused_before_it_trains(tmp_path):
    from galmeta.safe_files import LockTimeout, exclusive_lock

    sample = lambda rng, n: _batch(int(rng.integers(1000)), T=n)
    checkpoint = tmp_path / "m.pt"
    first = _learner().fit(sample, 3, checkpoint=checkpoint, progress=False)
    saved = checkpoint.read_bytes()
    with exclusive_lock(tmp_path / "m.pt.lock", "the checkpoint"):  # as the first training holds it while it runs
        second = _learner()
        with pytest.raises(LockTimeout, match="another galmeta process is writing the checkpoint .*m.pt"):
            second.fit(sample, 3, checkpoint=checkpoint, progress=False)
    assert second.iteration == 0 and checkpoint.read_bytes() == saved and first.iteration == 3


def test_checkpoint_writes_use_unique_temporary_names(tmp_path, monkeypatch):
    learner = _learner().fit(None, 0)
    path = tmp_path / "m.pt"
    save, names = torch.save, []

    def save_twice_at_once(payload, target, *args, **kwargs):
        names.append(os.path.basename(target))
        if len(names) == 1:
            learner.save(path)  # another writer of the same checkpoint, in the middle of this write
        return save(payload, target, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(mt.torch, "save", save_twice_at_once)
        learner.save(path)
    assert len(names) == 2 and names[0] != names[1] and all(n.endswith(".part") for n in names)
    assert _learner().load(path).iteration == 0 and not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("setting, value", [("meta_lr", 0.5), ("inner_lr", 0.05), ("meta_batch", 7), ("inner_steps", 2)])
def test_resuming_with_other_settings_is_refused(tmp_path, setting, value):
    sample = lambda rng, n: _batch(int(rng.integers(1000)), T=n)
    _learner().fit(sample, 2, checkpoint=tmp_path / "c.pt", progress=False)
    other = _learner(**{setting: value})
    with pytest.raises(mt.CheckpointError, match=f"trained with other settings: {setting}=.* in the checkpoint, "
                                                 f"{value!r} here.*Nothing was changed"):
        other.load(tmp_path / "c.pt")
    assert other.iteration == 0 and other.optimiser.param_groups[0]["lr"] == other.config.meta_lr
    resumed = _learner().load(tmp_path / "c.pt")  # the same settings resume, Adam's with them
    assert resumed.iteration == 2 and resumed.optimiser.param_groups[0]["lr"] == resumed.config.meta_lr


# --- learners' inputs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, error, message", [
    (1e30, ValueError, "xs holds a value of 1e\\+30, beyond ±1e\\+06"),
    (1e39, ValueError, "xs holds a value of 1e\\+39, beyond ±1e\\+06"),
    (np.inf, ValueError, "xs contains NaN or inf"),
    (1j, TypeError, "xs must hold real numbers \\(floating point or integer\\), got dtype complex128"),
])
def test_both_learners_apply_the_same_input_rules(value, error, message):
    batch = _batch()
    batch[0] = batch[0] + value
    params = mn.init_mlp((2, 8, 1), np.random.default_rng(0))
    with pytest.raises(error, match=message):
        mn.meta_gradient(params, *batch, 0.01)
    with pytest.raises(error, match=message):
        _learner().step(*batch)
    with pytest.raises(error, match=message):
        mt.meta_gradient([(torch.tensor(W), torch.tensor(b)) for W, b in params], *batch, 0.01)
    if error is TypeError:
        with pytest.raises(TypeError, match="xs must hold real numbers .* torch.complex"):
            _learner().step(torch.tensor(batch[0]), *batch[1:])


def test_evaluation_settings_are_checked_where_they_are_given():
    from galmeta import evaluate as ev

    for kwargs, message in (({"ks": (2.5,)}, "ks must list whole numbers >= 1 .* 2.5"),
                            ({"ks": (5, 5)}, "ks lists a value twice"),
                            ({"seeds": ()}, "seeds must list at least one"),
                            ({"folds": (7,)}, "folds must lie in 0..n_folds-1"),
                            ({"n_draws": 0}, "n_draws must be a whole number >= 1")):
        with pytest.raises(ValueError, match=message):
            ev.EvaluationConfig(**kwargs)
    data = gt.prepare_galaxy_tasks(__import__("test_tasks").synthetic_table(3000), min_size=45)
    with pytest.raises(ValueError, match="k must be a whole number of support galaxies >= 1, got 0"):
        ev.make_draws(data, "test", 0, 2, 10, seed=0)


def test_a_fetch_time_out_must_be_positive():
    for value in ("0", "-1", "nan"):
        done = subprocess.run([sys.executable, "-m", "galmeta.cli", "data", "fetch", "--timeout", value],
                              capture_output=True, text=True)
        assert done.returncode == 2 and "timeout must be a number of seconds > 0" in done.stderr


# --- the site and the Colab cell ---------------------------------------------------------------------------
def test_the_site_escapes_what_it_reads(tmp_path):
    import json

    import nbformat

    from galmeta import course

    executed = tmp_path / "executed"
    executed.mkdir()
    # (a notebook's own Markdown may hold HTML, as in Jupyter; what the site reads from summary.json may not)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · A title")])
    nbformat.write(notebook, executed / "01_demo.ipynb")
    (executed / "summary.json").write_text(json.dumps({"mode": "<script>alert(2)</script>", "notebooks": [
        {"notebook": "01_demo", "seconds": 1.0, "results": ["<img src=x onerror=alert(3)>"]}]}))
    index = course.render_html(executed, tmp_path / "site").read_text()
    assert "<script>alert" not in index and "<img src=x" not in index
    assert "&lt;script&gt;alert(2)" in index and "&lt;img src=x onerror=alert(3)&gt;" in index
    hostile = executed / '02_a"><img src=x onerror=alert(1)>.ipynb'
    nbformat.write(notebook, hostile)
    with pytest.raises(ValueError, match="is not a course notebook name"):
        course.render_html(executed, tmp_path / "site2")


def test_the_colab_cell_pins_the_course_commit_and_guards_the_url(tmp_path, monkeypatch):
    from galmeta import course

    path = course.generate_notebooks(tmp_path, ["01"])[0]
    cell = next(c for c in __import__("nbformat").read(path, as_version=4).cells if c.cell_type == "code")
    assert '"fetch", "-q", "--depth=1", "--", url.strip(), commit]' in cell.source
    commit = course.source_commit(course.repository_root() / "notebooks")
    assert f'COURSE_COMMIT = "{commit or "main"}"' in cell.source
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))  # nothing may be run
    monkeypatch.setenv("GALMETA_REPOSITORY", "--upload-pack=touch /tmp/x")
    source = cell.source.replace('importlib.util.find_spec("galmeta") is None', "True")
    with pytest.raises(ValueError, match="is not a repository URL"):
        exec(compile(source, "cell", "exec"), {"__name__": "colab"})
    assert calls == [], "a URL starting with '-' must be refused before git runs"


# --- threads ------------------------------------------------------------------------------------------------
def test_pytorch_runs_one_thread_unless_told_otherwise():
    script = "import torch, galmeta.maml_torch; print(torch.get_num_threads())"
    env = {k: v for k, v in os.environ.items() if k != "GALMETA_THREADS"}
    one = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert one.stdout.strip() == "1", one.stderr
    two = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**env, "GALMETA_THREADS": "2"})
    assert two.stdout.strip() == "2", two.stderr
    bad = subprocess.run([sys.executable, "-m", "galmeta.cli", "data", "info"], capture_output=True, text=True,
                         env={**env, "GALMETA_THREADS": "many"})
    assert bad.returncode == 2 and "GALMETA_THREADS='many' is not a number of threads >= 1" in bad.stderr
