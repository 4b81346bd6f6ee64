"""The SDSS data layer: SQL builder, cached fetch with replayed responses, snapshots."""
from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest
import requests

from conftest import fixture_bytes
from galmeta import data as gd
from galmeta.data import GalaxyQuery


# --- the query --------------------------------------------------------------
def test_sql_has_the_course_columns_and_cuts():
    sql = GalaxyQuery().sql()
    for column in gd.CORE_COLUMNS:
        assert f"AS {column}" in sql
    assert "NULLIF(pz.z, -9999) AS photoZ" in sql and "NULLIF(pz.zErr, -9999) AS photoErr" in sql
    assert "JOIN PhotoPrimary AS p ON p.objID = s.bestObjID" in sql, "primary photometry only (mode = 1)"
    assert "s.zWarning = 0" in sql and "p.err_r BETWEEN 0 AND 0.1" in sql
    assert "ORDER BY s.specObjID" in sql
    assert "newid" not in sql.lower()
    assert sql.startswith("SELECT TOP 50000"), "a page of the strided set, not the first n_rows"


def test_sql_is_reproducible_and_pages_by_specobjid():
    query = GalaxyQuery(n_rows=120_000, page_size=50_000)
    assert query.sql() == GalaxyQuery(n_rows=120_000, page_size=50_000).sql()
    assert query.cache_key() == GalaxyQuery(n_rows=120_000, page_size=50_000).cache_key()
    assert query.cache_key() != GalaxyQuery(n_rows=120_000, page_size=50_000, data_release=16).cache_key()
    assert "s.specObjID > 123" in query.sql(after_spec_obj_id=123)
    assert query.sql().startswith("SELECT TOP 50000")


def test_optional_columns():
    sql = GalaxyQuery(extra=("size", "shape", "mpa_jhu"), extra_photo_columns=("petroR50_g",)).sql()
    for name in ("petroR50_r", "petroR90_r", "expAB_r", "deVAB_r", "fracDeV_r", "lgm_tot_p50", "sfr_tot_p50",
                 "oh_p50", "petroR50_g"):
        assert f"AS {name}" in sql
    assert "LEFT OUTER JOIN galSpecExtra AS gse ON gse.specObjID = s.specObjID" in sql


@pytest.mark.parametrize("bad", ["petroR50_r; DROP TABLE x", "a b", "1abc", "x--", ""])
def test_user_column_names_never_reach_sql_unchecked(bad):
    with pytest.raises(ValueError, match="extra_photo_columns"):
        GalaxyQuery(extra_photo_columns=(bad,))


@pytest.mark.parametrize("kwargs, word", [
    ({"page_size": 600_000}, "page_size"), ({"n_rows": 0}, "n_rows"), ({"extra": ("colour",)}, "extra"),
    ({"z_min": 0.5, "z_max": 0.1}, "z_min"), ({"sample_every": 0}, "sample_every"), ({"data_release": 3}, "data_release"),
])
def test_query_validation_names_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        GalaxyQuery(**kwargs)


# --- fetching with replayed SkyServer responses ------------------------------
def test_fetch_parses_caches_and_then_stays_offline(data_home, replay):
    fake = replay(lambda sql: fixture_bytes("skyserver_all.csv"))
    query = GalaxyQuery(n_rows=10, sample_every=1)
    table = gd.fetch_galaxies(query, progress=False)
    assert len(table) == 6 and len(fake.calls) == 1
    assert table["objID"].dtype == np.int64
    assert table.meta["galmeta"]["sql_of_first_page"].startswith("SELECT TOP 50000")
    cached = list((data_home / "sdss").glob("query-*.ecsv"))
    assert len(cached) == 1

    replay(lambda sql: AssertionError("must not touch the network when cached"))
    again = gd.load_galaxies(query, download_if_missing=False)
    np.testing.assert_array_equal(np.asarray(again["dered_r"]), np.asarray(table["dered_r"]))


def test_multi_page_fetch_resumes_after_an_interruption(data_home, replay):
    query = GalaxyQuery(n_rows=6, page_size=3, sample_every=1)
    first = replay(lambda sql: fixture_bytes("skyserver_page1.csv") if "specObjID >" not in sql
                   else requests.exceptions.ConnectionError("Failed to resolve host"))
    with pytest.raises(gd.NoDataError, match="galmeta data import"):
        gd.fetch_galaxies(query, retries=0, progress=False)
    assert len(first.calls) == 2
    assert not list((data_home / "sdss").glob("query-*.ecsv")), "no half table may be cached"
    assert len(list((data_home / "sdss").glob("pages-*/page-0000.ecsv"))) == 1

    header_only = fixture_bytes("skyserver_page2.csv").decode().splitlines()[:2]
    second = replay(lambda sql: fixture_bytes("skyserver_page2.csv") if "s.specObjID > 299489677444950016" in sql
                    else "\n".join(header_only).encode())  # past the last page SkyServer finds no rows
    table = gd.fetch_galaxies(query, retries=0, progress=False)
    assert len(second.calls) == 2, "page 1 must come from the resume cache; page 3 is empty"
    assert "s.specObjID > 299489677444950016" in second.calls[0]
    assert len(table) == 6 and np.all(np.diff(np.asarray(table["specObjID"])) > 0)
    assert not list((data_home / "sdss").glob("pages-*"))


def test_transient_failures_are_retried_a_bounded_number_of_times(data_home, replay):
    answers = [requests.exceptions.Timeout("slow"), requests.exceptions.Timeout("slow"), fixture_bytes("skyserver_all.csv")]
    fake = replay(lambda sql: answers.pop(0))
    table = gd.fetch_galaxies(GalaxyQuery(n_rows=6, sample_every=1), retries=2, backoff=0, progress=False)
    assert len(table) == 6 and len(fake.calls) == 3

    fake = replay(lambda sql: requests.exceptions.Timeout("slow"))
    with pytest.raises(gd.NoDataError, match="after 3 attempt"):
        gd.fetch_galaxies(GalaxyQuery(n_rows=7, sample_every=1), retries=2, backoff=0, progress=False)
    assert len(fake.calls) == 3


def test_skyserver_error_text_is_reported_and_cache_kept(data_home, replay):
    replay(lambda sql: fixture_bytes("skyserver_all.csv"))
    query = GalaxyQuery(n_rows=6, sample_every=1)
    gd.fetch_galaxies(query, progress=False)
    cached = next((data_home / "sdss").glob("query-*.ecsv"))
    before = cached.read_bytes()

    replay(lambda sql: fixture_bytes("skyserver_error.txt"))
    with pytest.raises(gd.SkyServerError, match="Invalid column name"):
        gd.fetch_galaxies(query, refresh=True, progress=False)
    assert cached.read_bytes() == before


def test_response_with_missing_columns(data_home, replay):
    text = fixture_bytes("skyserver_all.csv").decode().replace("photoErr", "photoErrX")
    replay(lambda sql: text.encode())
    with pytest.raises(gd.MissingColumnsError, match="photoErr"):
        gd.fetch_galaxies(GalaxyQuery(n_rows=6, sample_every=1), progress=False)


def test_without_network_or_cache_the_embedded_table_is_used(data_home, replay):
    replay(lambda sql: AssertionError("the default source never touches the network"))
    table = gd.load_galaxies()
    assert len(table) == 25_000 and "embedded" in table.meta["galmeta"]["source"]
    assert gd.which_source() == "embedded"
    with pytest.raises(gd.NoDataError, match="galmeta data fetch"):
        gd.load_galaxies(source="live", download_if_missing=False)


# --- the cache and snapshots ----------------------------------------------------
def _write_snapshot(tmp_path, drop=None, gzip_it=True):
    text = fixture_bytes("skyserver_all.csv").decode()
    if drop:
        lines = [line.split(",") for line in text.splitlines()[1:]]
        keep = [i for i, name in enumerate(lines[0]) if name != drop]
        text = "\n".join(",".join(row[i] for i in keep) for row in lines) + "\n"
    path = tmp_path / ("snap.csv.gz" if gzip_it else "snap.csv")
    path.write_bytes(gzip.compress(text.encode()) if gzip_it else text.encode())
    return path


def test_import_snapshot_then_load_offline(data_home, tmp_path):
    target = gd.import_snapshot(_write_snapshot(tmp_path))
    assert target.parent == data_home / "snapshots"
    table = gd.load_galaxies(download_if_missing=False)
    assert len(table) == 6 and table.meta["galmeta"]["source"] == "snapshot file snap.csv.gz"
    assert "missing" not in str(table["subClass"][1]).lower()
    info = gd.cache_info()
    assert info[0]["kind"] == "snapshot" and info[0]["rows"] == 6


def test_import_rejects_missing_columns(data_home, tmp_path):
    with pytest.raises(gd.MissingColumnsError, match="photoZ"):
        gd.import_snapshot(_write_snapshot(tmp_path, drop="photoZ"))


def test_import_rejects_a_truncated_gzip_and_keeps_the_previous_import(data_home, tmp_path):
    good = _write_snapshot(tmp_path)
    target = gd.import_snapshot(good, name="course")
    before = target.read_bytes()
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(gd.CorruptCacheError, match="damaged or truncated"):
        gd.import_snapshot(broken, name="course")
    assert target.read_bytes() == before


def test_truncated_cache_file_is_detected_not_deleted(data_home, tmp_path):
    target = gd.import_snapshot(_write_snapshot(tmp_path))
    lines = target.read_text().splitlines(keepends=True)
    target.write_text("".join(lines[:-2]))  # lose two rows, keep the header's row count
    with pytest.raises(gd.CorruptCacheError, match="truncated"):
        gd.load_galaxies(download_if_missing=False)
    assert target.exists()
    target.write_text("# %ECSV 1.0\n# ---\n# garbage: [\n")
    with pytest.raises(gd.CorruptCacheError, match="delete it"):
        gd.load_galaxies(download_if_missing=False)


def test_import_of_a_missing_file():
    with pytest.raises(FileNotFoundError, match="no snapshot file"):
        gd.import_snapshot("/nonexistent/table.csv.gz")


# --- the command line ------------------------------------------------------------
def test_cli_import_info_and_errors(data_home, tmp_path):
    run = lambda *args: subprocess.run([sys.executable, "-m", "galmeta.cli", *args], capture_output=True, text=True)
    done = run("data", "import", str(_write_snapshot(tmp_path)))
    assert done.returncode == 0, done.stderr
    info = run("data", "info")
    assert info.returncode == 0 and "snap" in info.stdout and "6 rows" in info.stdout
    bad = run("data", "import", str(tmp_path / "nope.csv"))
    assert bad.returncode == 2 and "no snapshot file" in bad.stderr
    sql = run("data", "fetch", "--page-size", "10", "--show-sql")
    assert sql.returncode == 0 and sql.stdout.startswith("SELECT TOP 10")
    assert run("--help").returncode == 0


# --- live ---------------------------------------------------------------------------
@pytest.mark.network
def test_live_skyserver_small_query(data_home):
    table = gd.fetch_galaxies(GalaxyQuery(n_rows=20), progress=False)
    assert len(table) == 20
    gd.validate_table(table, "live")


@pytest.mark.parametrize("suffix, fmt", [(".fits", "fits"), (".ecsv", "ascii.ecsv")])
def test_import_fits_and_ecsv(data_home, tmp_path, suffix, fmt):
    from astropy.table import Table

    table = Table.read(fixture_bytes("skyserver_all.csv").decode(), format="ascii.csv", comment="#")
    path = tmp_path / f"snap{suffix}"
    table.write(path, format=fmt)
    target = gd.import_snapshot(path)
    loaded = gd.load_galaxies(snapshot=target.stem, download_if_missing=False)
    np.testing.assert_allclose(np.asarray(loaded["dered_r"]), np.asarray(table["dered_r"]))
    with pytest.raises(gd.NoDataError, match="imported: \\['snap'\\]"):
        gd.load_galaxies(snapshot="other", download_if_missing=False)
