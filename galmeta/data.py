"""SDSS galaxies: the SkyServer SQL, a cached astroquery fetch, and offline snapshots.

Introduced in ``notebooks/01_fetch_sdss.py``.

Three ways a table reaches the course, tried in this order by :func:`load_galaxies`:

1. the cache of a live query (``<data home>/sdss/query-<hash>.ecsv``);
2. an imported snapshot (``<data home>/snapshots/<name>.ecsv``), made by
   :func:`import_snapshot` or ``galmeta data import PATH``: this is how offline
   classrooms and CI run;
3. a live fetch with :func:`fetch_galaxies` (``astroquery.sdss.SDSS.query_sql``),
   when ``download_if_missing`` is true.

The data home is ``$GALMETA_DATA`` or ``~/galmeta_data`` (see
:func:`galmeta.config.data_home`). Files are written atomically (a temporary file
renamed into place), so an interrupted fetch never leaves half a table, and a
failed fetch never touches what is already cached.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Iterable

import numpy as np

from galmeta.config import data_home as _data_home

__all__ = [
    "BANDS",
    "CORE_COLUMNS",
    "OPTIONAL_COLUMN_GROUPS",
    "GalaxyQuery",
    "GalmetaDataError",
    "NoDataError",
    "SkyServerError",
    "CorruptCacheError",
    "MissingColumnsError",
    "fetch_galaxies",
    "import_snapshot",
    "load_galaxies",
    "cache_info",
    "validate_table",
]

BANDS = ("u", "g", "r", "i", "z")

#: Columns every galaxy table must have (those of the course's default query that
#: the offline snapshot shares).
CORE_COLUMNS = (
    ("objID", "type")
    + tuple(c for band in BANDS for c in (f"dered_{band}", f"err_{band}"))
    + ("z", "zErr", "zWarning", "class", "subClass", "photoZ", "photoErr")
)

_DEFAULT_SELECT = (
    ("specObjID", "s.specObjID"),
    ("objID", "p.objID"),
    ("ra", "p.ra"),
    ("dec", "p.dec"),
    ("type", "p.type"),
    *((name, f"p.{name}") for band in BANDS for name in (f"dered_{band}", f"err_{band}")),
    ("z", "s.z"),
    ("zErr", "s.zErr"),
    ("zWarning", "s.zWarning"),
    ("class", "s.class"),
    ("subClass", "s.subClass"),
    ("photoZ", "pz.z"),
    ("photoErr", "pz.zErr"),
)

#: Extra columns a live query can add, by group name.
OPTIONAL_COLUMN_GROUPS = {
    "size": (("petroR50_r", "p.petroR50_r"), ("petroR90_r", "p.petroR90_r")),
    "shape": (("expAB_r", "p.expAB_r"), ("deVAB_r", "p.deVAB_r"), ("fracDeV_r", "p.fracDeV_r")),
    # MPA-JHU value-added catalogue (Brinchmann et al. 2004; Kauffmann et al. 2003; Tremonti et al. 2004)
    "mpa_jhu": (
        ("lgm_tot_p50", "gse.lgm_tot_p50"),
        ("sfr_tot_p50", "gse.sfr_tot_p50"),
        ("specsfr_tot_p50", "gse.specsfr_tot_p50"),
        ("oh_p50", "gse.oh_p50"),
    ),
}

#: SkyServer's SQL search returns at most this many rows per query.
SKYSERVER_MAX_ROWS = 500_000

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CACHE_FORMAT_VERSION = 1


class GalmetaDataError(RuntimeError):
    """Base class of the data layer's errors; the message says what to do."""


class NoDataError(GalmetaDataError):
    """No cached table, no snapshot, and no way to fetch one."""


class SkyServerError(GalmetaDataError):
    """SkyServer answered with an error or an unreadable response."""


class CorruptCacheError(GalmetaDataError):
    """A cached table or snapshot file cannot be read or fails validation."""


class MissingColumnsError(GalmetaDataError):
    """A table lacks columns the course needs."""


def _identifier(name: str, what: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(
            f"{what}={name!r} is not a plain SQL identifier (letters, digits, underscore); "
            "column names are checked so that no user text is pasted into SQL"
        )
    return name


# ---------------------------------------------------------------------------
# The query
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GalaxyQuery:
    """The course's SkyServer query for spectroscopic galaxies.

    The query joins ``SpecObj`` (science-primary spectra) to ``PhotoObj``
    (primary photometry) on ``bestObjID``, left-joins the photometric redshifts
    of ``Photoz`` and, on request, the MPA-JHU ``galSpecExtra`` table. Rows are
    ordered by ``specObjID`` and pages are cut by ``specObjID`` ranges, so the
    same query always returns the same rows (no ``ORDER BY newId()``) and a long
    fetch can resume where it stopped. ``sample_every`` keeps one fibre in N on
    every plate, which spreads a modest sample over the whole survey instead of
    the first plates.

    Parameters
    ----------
    n_rows : int, default 25000
        Number of galaxies wanted (fetched in pages of ``page_size``).
    data_release : int, default 17
    page_size : int, default 50000
        Rows per SkyServer request; at most 500,000 (SkyServer's limit).
    sample_every : int, default 16
        Keep spectra with ``fiberID % sample_every = 0``; 1 keeps all.
    max_mag_err : float, default 0.1
        Quality cut on every band's ``err_*``.
    z_min, z_max : float
        Spectroscopic redshift range.
    extra : tuple of str
        Optional column groups from :data:`OPTIONAL_COLUMN_GROUPS`
        (``"size"``, ``"shape"``, ``"mpa_jhu"``).
    extra_photo_columns : tuple of str
        Further ``PhotoObj`` columns by name (validated identifiers).

    Examples
    --------
    >>> print(GalaxyQuery(n_rows=10, sample_every=1).sql())  # doctest: +ELLIPSIS
    SELECT TOP 10
      s.specObjID AS specObjID,
    ...
    """

    n_rows: int = 25_000
    data_release: int = 17
    page_size: int = 50_000
    sample_every: int = 16
    max_mag_err: float = 0.1
    z_min: float = 0.0
    z_max: float = 1.0
    extra: tuple = ()
    extra_photo_columns: tuple = ()

    def __post_init__(self):
        if int(self.n_rows) < 1:
            raise ValueError(f"n_rows must be >= 1, got {self.n_rows!r}")
        if not 1 <= int(self.page_size) <= SKYSERVER_MAX_ROWS:
            raise ValueError(f"page_size must be between 1 and {SKYSERVER_MAX_ROWS} (SkyServer's row limit), got {self.page_size!r}")
        if int(self.sample_every) < 1:
            raise ValueError(f"sample_every must be >= 1, got {self.sample_every!r}")
        if not (0 < float(self.max_mag_err) <= 10):
            raise ValueError(f"max_mag_err must be in (0, 10], got {self.max_mag_err!r}")
        if not float(self.z_min) < float(self.z_max):
            raise ValueError(f"z_min must be below z_max, got {self.z_min!r} and {self.z_max!r}")
        if not isinstance(self.data_release, int) or not 8 <= self.data_release <= 19:
            raise ValueError(f"data_release must be an integer SDSS release 8..19, got {self.data_release!r}")
        object.__setattr__(self, "extra", tuple(self.extra))
        object.__setattr__(self, "extra_photo_columns", tuple(self.extra_photo_columns))
        for group in self.extra:
            if group not in OPTIONAL_COLUMN_GROUPS:
                raise ValueError(f"extra={group!r} is unknown; choose from {sorted(OPTIONAL_COLUMN_GROUPS)}")
        for name in self.extra_photo_columns:
            _identifier(name, "extra_photo_columns")

    @property
    def columns(self) -> tuple:
        """``(alias, SQL expression)`` pairs of the SELECT list."""
        cols = list(_DEFAULT_SELECT)
        for group in self.extra:
            cols.extend(OPTIONAL_COLUMN_GROUPS[group])
        taken = {alias for alias, _ in cols}
        cols.extend((name, f"p.{name}") for name in self.extra_photo_columns if name not in taken)
        return tuple(cols)

    def sql(self, after_spec_obj_id: int | None = None, top: int | None = None) -> str:
        """The SQL of one page.

        Parameters
        ----------
        after_spec_obj_id : int, optional
            Only rows with a larger ``specObjID`` (the previous page's last one).
        top : int, optional
            Rows in this page; defaults to ``min(n_rows, page_size)``.
        """
        top = int(top if top is not None else min(self.n_rows, self.page_size))
        select = ",\n  ".join(f"{expr} AS {alias}" for alias, expr in self.columns)
        joins = [
            "FROM SpecObj AS s",
            "  JOIN PhotoObj AS p ON p.objID = s.bestObjID",
            "  LEFT OUTER JOIN Photoz AS pz ON pz.objID = p.objID",
        ]
        if "mpa_jhu" in self.extra:
            joins.append("  LEFT OUTER JOIN galSpecExtra AS gse ON gse.specObjID = s.specObjID")
        err = repr(float(self.max_mag_err))
        where = [
            "s.class = 'GALAXY'",
            "s.zWarning = 0",
            f"s.z BETWEEN {float(self.z_min)!r} AND {float(self.z_max)!r}",
            "s.zErr BETWEEN 0.0 AND 0.1",
            *(f"p.dered_{b} > 0" for b in BANDS),
            *(f"p.err_{b} BETWEEN 0 AND {err}" for b in BANDS),
        ]
        if int(self.sample_every) > 1:
            where.append(f"s.fiberID % {int(self.sample_every)} = 0")
        if after_spec_obj_id is not None:
            where.append(f"s.specObjID > {int(after_spec_obj_id)}")
        return (
            f"SELECT TOP {top}\n  {select}\n" + "\n".join(joins) + "\nWHERE " + "\n  AND ".join(where)
            + "\nORDER BY s.specObjID"
        )

    def cache_key(self) -> str:
        """A short hash of everything that changes the rows returned."""
        text = json.dumps({"sql": self.sql(top=0), **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Reading and writing tables
# ---------------------------------------------------------------------------
def _atomic_write(table, path: Path):
    """Write an ECSV table so that a crash never leaves a partial file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validate_table(table, source: str, required: Iterable[str] = CORE_COLUMNS, expected_rows: int | None = None):
    """Check a galaxy table's columns and row count.

    Raises
    ------
    MissingColumnsError
        If columns are missing (the message names them).
    CorruptCacheError
        If the row count differs from ``expected_rows`` or the table is empty.
    """
    missing = [c for c in required if c not in table.colnames]
    if missing:
        raise MissingColumnsError(
            f"{source} lacks the column(s) {missing}. galmeta needs {list(required)}; "
            "re-export the table with those columns (see the SQL in galmeta.data.GalaxyQuery)."
        )
    if len(table) == 0:
        raise CorruptCacheError(f"{source} has no rows.")
    if expected_rows is not None and len(table) != expected_rows:
        raise CorruptCacheError(
            f"{source} has {len(table)} rows but its header says {expected_rows}: the file is truncated "
            "or was edited. Delete it and fetch or import again."
        )
    return table


def _read_cached(path: Path, required=CORE_COLUMNS):
    from astropy.table import Table

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # astropy raises many kinds for broken files
        raise CorruptCacheError(
            f"cannot read the cached table {path} ({type(exc).__name__}: {exc}). It is damaged or "
            f"truncated: delete it (rm '{path}') and fetch again, or re-import your snapshot with "
            "`galmeta data import PATH`."
        ) from exc
    expected = table.meta.get("galmeta", {}).get("n_rows")
    return validate_table(table, str(path), required=required, expected_rows=expected)


def _read_snapshot_file(path: Path):
    from astropy.table import Table

    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        kwargs = dict(format="ascii.csv", comment="#", fast_reader={"exponent_style": "E"})
    elif name.endswith((".ecsv", ".ecsv.gz")):
        kwargs = dict(format="ascii.ecsv")
    elif name.endswith((".fits", ".fit", ".fits.gz")):
        kwargs = dict(format="fits")
    else:
        raise ValueError(f"{path} has an unknown file type; give a .csv, .csv.gz, .ecsv or .fits file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return Table.read(path, **kwargs)
            except TypeError:  # fast_reader options differ between astropy versions
                kwargs.pop("fast_reader", None)
                return Table.read(path, **kwargs)
    except (OSError, EOFError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise CorruptCacheError(
            f"cannot read the snapshot {path} ({type(exc).__name__}: {exc}). The file is damaged or "
            "truncated (an interrupted copy?): copy it again from its source."
        ) from exc
    except Exception as exc:
        raise CorruptCacheError(f"cannot parse the snapshot {path} ({type(exc).__name__}: {exc}).") from exc


def _normalise_columns(table):
    """Make SkyServer's and CSV readers' column types uniform."""
    from astropy.table import MaskedColumn

    for id_column in ("objID", "specObjID"):
        if id_column in table.colnames and table[id_column].dtype.kind in "iu":
            table[id_column] = table[id_column].astype(np.int64)
    for text_column in ("class", "subClass"):
        if text_column in table.colnames and table[text_column].dtype.kind not in "US":
            # an all-empty text column is read as masked numbers
            col = table[text_column]
            mask = getattr(col, "mask", np.zeros(len(col), bool))
            table[text_column] = MaskedColumn(np.where(mask, "", col.astype(str)), mask=mask)
    return table


# ---------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------
def _is_transient(exc: BaseException) -> bool:
    try:
        import requests
    except ImportError:  # pragma: no cover
        requests = None
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if requests is not None:
        if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
            return True
        if isinstance(exc, requests.exceptions.HTTPError):
            status = getattr(exc.response, "status_code", None)
            return status is not None and (status >= 500 or status == 429)
    return False


def _is_offline(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("name resolution", "nodename", "unreachable", "failed to resolve",
                                         "name or service not known", "network is unreachable"))


def _query_page(sql: str, data_release: int, timeout: float, retries: int, backoff: float):
    """One SkyServer request with a bounded retry on transient failures."""
    from astroquery.exceptions import RemoteServiceError
    from astroquery.sdss import SDSS

    attempt = 0
    while True:
        attempt += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = SDSS.query_sql(sql, timeout=timeout, data_release=data_release, cache=False)
            return result
        except RemoteServiceError as exc:
            raise SkyServerError(
                f"SkyServer rejected the query: {str(exc)[:500]}. Check the SQL (GalaxyQuery.sql()) and the "
                "data release; nothing cached was changed."
            ) from exc
        except Exception as exc:
            if _is_transient(exc) and attempt <= retries and not _is_offline(exc):
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            if _is_transient(exc):
                hint = (
                    "No network? Import an offline snapshot instead: `galmeta data import PATH` "
                    "(see README, 'Offline and classroom use')."
                    if _is_offline(exc)
                    else "SkyServer may be busy or the query too slow: try again later, or lower page_size."
                )
                reason = str(exc)
                reason = reason if len(reason) < 200 else reason[:90] + " ... " + reason[-100:]
                raise NoDataError(
                    f"could not reach SkyServer after {attempt} attempt(s) ({type(exc).__name__}: {reason}). {hint} "
                    "Nothing cached was changed."
                ) from exc
            if type(exc).__module__.startswith(("astropy.io.ascii", "astropy.table")) or isinstance(exc, (ValueError, IndexError)):
                raise SkyServerError(
                    f"SkyServer's response could not be read as a table ({type(exc).__name__}: {str(exc)[:300]}). "
                    "It may be an error page: check the SQL with GalaxyQuery.sql() in SkyServer's SQL search."
                ) from exc
            raise


def fetch_galaxies(
    query: GalaxyQuery | None = None,
    data_home=None,
    download_if_missing: bool = True,
    refresh: bool = False,
    timeout: float = 300.0,
    retries: int = 2,
    backoff: float = 2.0,
    progress: bool = True,
):
    """Fetch the course's galaxy table from SkyServer, or load it from the cache.

    The SQL (``GalaxyQuery().sql()``) reads, for the default query::

        SELECT TOP 25000
          s.specObjID AS specObjID, p.objID AS objID, p.ra AS ra, p.dec AS dec, p.type AS type,
          p.dered_u AS dered_u, p.err_u AS err_u, ... (g, r, i, z likewise),
          s.z AS z, s.zErr AS zErr, s.zWarning AS zWarning, s.class AS class,
          s.subClass AS subClass, pz.z AS photoZ, pz.zErr AS photoErr
        FROM SpecObj AS s
          JOIN PhotoObj AS p ON p.objID = s.bestObjID
          LEFT OUTER JOIN Photoz AS pz ON pz.objID = p.objID
        WHERE s.class = 'GALAXY' AND s.zWarning = 0 AND s.z BETWEEN 0.0 AND 1.0
          AND s.zErr BETWEEN 0.0 AND 0.1
          AND p.dered_u > 0 AND ... AND p.err_u BETWEEN 0 AND 0.1 AND ...
          AND s.fiberID % 16 = 0
          [AND s.specObjID > <last specObjID of the previous page>]
        ORDER BY s.specObjID

    Parameters
    ----------
    query : GalaxyQuery, optional
        Defaults to ``GalaxyQuery()``.
    data_home : path-like, optional
        Cache folder (default :func:`galmeta.config.data_home`).
    download_if_missing : bool, default True
        If False and the table is not cached, raise :class:`NoDataError`
        instead of fetching.
    refresh : bool, default False
        Fetch again even if cached (the old file stays until the new one is complete).
    timeout : float, default 300
        Seconds per request.
    retries : int, default 2
        Extra attempts on timeouts, connection errors and HTTP 5xx.
    backoff : float, default 2
        Seconds before the first retry; doubled each time.
    progress : bool, default True
        tqdm progress bar over pages.

    Returns
    -------
    astropy.table.Table
        With ``table.meta["galmeta"]`` recording the SQL, release and fetch time.
    """
    from astropy.table import vstack
    from tqdm.auto import tqdm

    query = query or GalaxyQuery()
    home = _data_home(data_home)
    key = query.cache_key()
    path = home / "sdss" / f"query-{key}.ecsv"
    if path.exists() and not refresh:
        return _read_cached(path)
    if not download_if_missing:
        raise NoDataError(
            f"the query {key} is not cached in {home} and download_if_missing=False. Fetch it with "
            "download_if_missing=True (needs network) or import a snapshot with `galmeta data import PATH`."
        )

    page_dir = home / "sdss" / f"pages-{key}"
    pages, after, remaining, index = [], None, int(query.n_rows), 0
    n_pages = -(-int(query.n_rows) // int(query.page_size))
    bar = tqdm(total=int(query.n_rows), disable=not progress, desc="SkyServer rows", unit="row")
    try:
        while remaining > 0:
            page_path = page_dir / f"page-{index:04d}.ecsv"
            top = min(remaining, int(query.page_size))
            if page_path.exists():  # resume an interrupted multi-page fetch
                try:
                    page = _read_cached(page_path)
                except GalmetaDataError:
                    page_path.unlink()
                    continue
            else:
                page = _query_page(query.sql(after, top), query.data_release, timeout, retries, backoff)
                if page is None:  # SkyServer found no (more) rows
                    break
                page = _normalise_columns(page)
                validate_table(page, f"SkyServer page {index + 1}/{n_pages}")
                page.meta["galmeta"] = {"n_rows": len(page)}
                if n_pages > 1:
                    _atomic_write(page, page_path)
            pages.append(page)
            bar.update(len(page))
            remaining -= len(page)
            after = int(page["specObjID"][-1])
            index += 1
            if len(page) < top:
                break
    finally:
        bar.close()
    if not pages:
        raise SkyServerError("SkyServer returned no rows for the query; loosen the cuts in GalaxyQuery.")
    table = vstack(pages, metadata_conflicts="silent") if len(pages) > 1 else pages[0]
    table.meta = {
        "galmeta": {
            "format_version": _CACHE_FORMAT_VERSION,
            "source": "SkyServer via astroquery.sdss.SDSS.query_sql",
            "data_release": query.data_release,
            "sql": query.sql(top=int(query.n_rows)) if n_pages == 1 else query.sql(None, int(query.page_size)),
            "query": asdict(query),
            "fetched_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "n_rows": len(table),
        }
    }
    _atomic_write(table, path)
    if page_dir.exists():
        for page_file in page_dir.glob("page-*.ecsv"):
            page_file.unlink()
        page_dir.rmdir()
    return table


# ---------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _snapshot_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".ecsv", ".fits", ".fit", ".txt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return name or "snapshot"


def import_snapshot(path, name: str | None = None, data_home=None, overwrite: bool = True):
    """Import a galaxy table file into the data home for offline use.

    Parameters
    ----------
    path : path-like
        A ``.csv``, ``.csv.gz``, ``.ecsv`` or ``.fits`` file with at least
        :data:`CORE_COLUMNS` (e.g. ``../shared/data/sdss_galaxies_random_dered_25k.csv.gz``).
    name : str, optional
        Name in the data home; defaults to the file name without extensions.
    data_home : path-like, optional
    overwrite : bool, default True
        Replace an earlier import of the same name (atomically).

    Returns
    -------
    pathlib.Path
        The imported file, ``<data home>/snapshots/<name>.ecsv``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no snapshot file at {path}; give the path of a .csv(.gz), .ecsv or .fits table")
    table = _normalise_columns(_read_snapshot_file(path))
    validate_table(table, str(path))
    name = name or _snapshot_name(path)
    _identifier(name.replace("-", "_").replace(".", "_"), "name")
    target = _data_home(data_home) / "snapshots" / f"{name}.ecsv"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True or another name")
    table.meta = {
        "galmeta": {
            "format_version": _CACHE_FORMAT_VERSION,
            "source": f"snapshot file {path.name}",
            "original_path": str(path.resolve()),
            "sha256": _sha256(path),
            "imported_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "n_rows": len(table),
        }
    }
    _atomic_write(table, target)
    return target


def cache_info(data_home=None) -> list[dict]:
    """What is in the data home: one dict per table (kind, name, rows, source, path, size)."""
    home = _data_home(data_home, create=False)
    rows = []
    for kind, pattern in (("query", "sdss/query-*.ecsv"), ("snapshot", "snapshots/*.ecsv")):
        for path in sorted(home.glob(pattern)):
            entry = {"kind": kind, "name": path.stem, "path": str(path), "bytes": path.stat().st_size}
            try:
                meta = _read_header(path)
                entry.update(rows=meta.get("n_rows"), source=meta.get("source"),
                             when=meta.get("fetched_utc") or meta.get("imported_utc"))
            except Exception as exc:  # report, never delete
                entry.update(rows=None, source=f"unreadable header ({type(exc).__name__})", when=None)
            rows.append(entry)
    return rows


def _read_header(path: Path) -> dict:
    """Read only the ECSV YAML header (fast, for :func:`cache_info`)."""
    import yaml  # astropy depends on PyYAML

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_constructor("tag:yaml.org,2002:omap", _Loader.construct_sequence)

    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            lines.append(line[2:] if line.startswith("# ") else line[1:])
    header = yaml.load("".join(lines[1:]), Loader=_Loader) if lines else {}
    meta = (header or {}).get("meta", {})
    if isinstance(meta, list):  # astropy writes the meta as an ordered map (a list of pairs)
        merged = {}
        for item in meta:
            merged.update(item if isinstance(item, dict) else dict([item]))
        meta = merged
    return meta.get("galmeta", {})


def load_galaxies(query: GalaxyQuery | None = None, data_home=None, download_if_missing: bool = True,
                  snapshot: str | None = None):
    """The galaxy table for the course, from the cache, a snapshot, or SkyServer.

    Parameters
    ----------
    query : GalaxyQuery, optional
        The live query whose cache is looked up first (default ``GalaxyQuery()``).
    data_home : path-like, optional
    download_if_missing : bool, default True
        Fetch from SkyServer when neither a cache nor a snapshot exists.
    snapshot : str, optional
        Use this imported snapshot by name (skips the query cache).

    Returns
    -------
    astropy.table.Table
        ``table.meta["galmeta"]["source"]`` says where it came from.
    """
    home = _data_home(data_home)
    if snapshot is not None:
        path = home / "snapshots" / f"{snapshot}.ecsv"
        if not path.exists():
            known = [p.stem for p in sorted((home / "snapshots").glob("*.ecsv"))]
            raise NoDataError(f"no imported snapshot named {snapshot!r} in {home}; imported: {known or 'none'}")
        return _read_cached(path)
    query = query or GalaxyQuery()
    cached = home / "sdss" / f"query-{query.cache_key()}.ecsv"
    if cached.exists():
        return _read_cached(cached)
    snapshots = sorted((home / "snapshots").glob("*.ecsv"), key=lambda p: p.stat().st_mtime, reverse=True)
    if snapshots:
        return _read_cached(snapshots[0])
    if not download_if_missing:
        raise NoDataError(
            f"no galaxy table in {home}: neither a cached query nor an imported snapshot. Either fetch "
            "with network (`galmeta data fetch`) or import a snapshot file: `galmeta data import PATH` "
            "(README, 'Offline and classroom use')."
        )
    return fetch_galaxies(query, data_home=home)
