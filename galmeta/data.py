"""SDSS galaxies: the SkyServer SQL, a cached astroquery fetch, and offline snapshots.

Introduced in ``notebooks/01_fetch_sdss.py``.

Where the course's table comes from, chosen by :func:`load_galaxies` (or
``GALMETA_SOURCE``):

1. the cache of a live query (``<data home>/sdss/query-<hash>.ecsv``), made by
   :func:`fetch_galaxies` (``astroquery.sdss.SDSS.query_sql``) or
   ``galmeta data fetch``;
2. the active imported snapshot (``<data home>/snapshots/<name>.ecsv``), made by
   :func:`import_snapshot` or ``galmeta data import PATH``;
3. the table embedded in the package (``galmeta/datasets/``, with its
   provenance): a fresh machine without network runs the course on it.

A live fetch happens only when asked for (``GALMETA_SOURCE=live`` or
``galmeta data fetch``). The data home is ``$GALMETA_DATA``, by default the
clone's ``data/`` folder (see :func:`galmeta.config.data_home`). Files are written atomically (a temporary file
renamed into place), so an interrupted fetch never leaves half a table, and a
failed fetch never touches what is already cached.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
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
    "MalformedTableError",
    "SnapshotExistsError",
    "fetch_galaxies",
    "fetch_page",
    "active_snapshot",
    "use_snapshot",
    "embedded_table_path",
    "import_snapshot",
    "load_galaxies",
    "cache_info",
    "validate_table",
    "exact_ids",
    "read_table_file",
    "load_embedded",
    "which_source",
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
    ("photoZ", "NULLIF(pz.z, -9999)"),
    ("photoErr", "NULLIF(pz.zErr, -9999)"),
)

#: Extra columns a live query can add, by group name.
OPTIONAL_COLUMN_GROUPS = {
    "size": (("petroR50_r", "p.petroR50_r"), ("petroR90_r", "p.petroR90_r")),
    "shape": (("expAB_r", "p.expAB_r"), ("deVAB_r", "p.deVAB_r"), ("fracDeV_r", "p.fracDeV_r")),
    # MPA-JHU value-added catalogue (Brinchmann et al. 2004; Kauffmann et al. 2003; Tremonti et al. 2004)
    # galSpecExtra writes -9999 for "no estimate": NULLIF turns it into a missing value
    "mpa_jhu": (
        ("lgm_tot_p50", "NULLIF(gse.lgm_tot_p50, -9999)"),
        ("sfr_tot_p50", "NULLIF(gse.sfr_tot_p50, -9999)"),
        ("specsfr_tot_p50", "NULLIF(gse.specsfr_tot_p50, -9999)"),
        ("oh_p50", "NULLIF(gse.oh_p50, -9999)"),
    ),
}

#: SkyServer's SQL search returns at most this many rows per query.
SKYSERVER_MAX_ROWS = 500_000

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
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


class MalformedTableError(GalmetaDataError):
    """A table has the course's columns, but a value of the wrong type, a blank where a value is needed, or an inexact id."""


class SnapshotExistsError(GalmetaDataError):
    """An import would replace a different snapshot of the same name."""


def _identifier(name: str, what: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
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

    The query joins ``SpecObj`` (science-primary spectra) to ``PhotoPrimary``
    (primary photometry, ``mode = 1``) on ``bestObjID``, left-joins the
    photometric redshifts of ``Photoz`` and, on request, the MPA-JHU
    ``galSpecExtra`` table (their -9999 "no value" becomes a missing value).

    **What the sample is.** Every spectrum on every plate whose ``fiberID`` is a
    multiple of ``sample_every`` and that passes the cuts: a systematic one-in-N
    sample of the whole survey, all plates and all years. It is fetched in pages
    cut by ``specObjID`` (``ORDER BY specObjID``, keyset paging, so the same query
    returns the same rows and an interrupted fetch resumes), and then
    ``n_rows`` of its rows are kept by a seeded random choice (``sample_seed``).
    Taking the *first* ``n_rows`` by ``specObjID`` instead would give only the
    lowest-numbered plates (``specObjID`` starts with the plate number), i.e. the
    SDSS-I era. The cost: the whole strided set is downloaded once (about one
    spectrum in ``sample_every``).

    Parameters
    ----------
    n_rows : int or None, default 25000
        Galaxies kept (None: every row of the strided set).
    data_release : int, default 17
    page_size : int, default 50000
        Rows per SkyServer request; at most 500,000 (SkyServer's limit).
    sample_every : int, default 16
        Keep spectra with ``fiberID % sample_every = 0``; 1 keeps all.
    sample_seed : int, default 0
        Seed of the random choice of ``n_rows`` rows from the strided set.
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
    >>> print(GalaxyQuery(page_size=10, sample_every=1).sql())  # doctest: +ELLIPSIS
    SELECT TOP 10
      s.specObjID AS specObjID,
    ...
    """

    n_rows: int | None = 25_000
    data_release: int = 17
    page_size: int = 50_000
    sample_every: int = 16
    sample_seed: int = 0
    max_mag_err: float = 0.1
    z_min: float = 0.0
    z_max: float = 1.0
    extra: tuple = ()
    extra_photo_columns: tuple = ()

    def __post_init__(self):
        if self.n_rows is not None and (isinstance(self.n_rows, bool) or int(self.n_rows) < 1):
            raise ValueError(f"n_rows must be >= 1 (or None for every row), got {self.n_rows!r}")
        if not 1 <= int(self.page_size) <= SKYSERVER_MAX_ROWS:
            raise ValueError(f"page_size must be between 1 and {SKYSERVER_MAX_ROWS} (SkyServer's row limit), got {self.page_size!r}")
        if int(self.sample_every) < 1:
            raise ValueError(f"sample_every must be >= 1, got {self.sample_every!r}")
        if not (0 < float(self.max_mag_err) <= 10):
            raise ValueError(f"max_mag_err must be in (0, 10], got {self.max_mag_err!r}")
        if not (math.isfinite(float(self.z_min)) and math.isfinite(float(self.z_max))):
            raise ValueError(f"z_min and z_max must be finite numbers, got {self.z_min!r} and {self.z_max!r}")
        if not float(self.z_min) < float(self.z_max):
            raise ValueError(f"z_min must be below z_max, got {self.z_min!r} and {self.z_max!r}")
        if self.n_rows is not None and int(self.n_rows) != self.n_rows:
            raise ValueError(f"n_rows must be a whole number, got {self.n_rows!r}")
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
            Rows in this page; defaults to ``page_size``.
        """
        top = int(top if top is not None else self.page_size)
        select = ",\n  ".join(f"{expr} AS {alias}" for alias, expr in self.columns)
        joins = [
            "FROM SpecObj AS s",
            "  JOIN PhotoPrimary AS p ON p.objID = s.bestObjID",
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
            # a Python int: exact for specObjIDs above 2**63 (plates >= 8192), which int64 would wrap
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise GalmetaDataError(
            f"cannot write into the data home {path.parent} ({exc.strerror or exc}). Point GALMETA_DATA at a "
            "folder you can write to (e.g. export GALMETA_DATA=~/galmeta_data)."
        ) from exc
    os.close(fd)
    try:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a shared classroom data home must be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def _sniff(path: Path):
    """Say what a file really is before a parser gives a confusing message about it."""
    size = path.stat().st_size
    if size == 0:
        raise CorruptCacheError(f"{path} is empty (0 bytes): an interrupted copy? Copy it again from its source.")
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    is_gzip = head[:2] == b"\x1f\x8b"
    if path.name.lower().endswith(".gz") and not is_gzip:
        raise CorruptCacheError(
            f"{path} is named .gz but is not gzip-compressed (it starts with {head[:20]!r}). Rename it without "
            "'.gz' if it is plain text, or copy the original file again."
        )
    if path.name.lower().endswith((".csv", ".ecsv", ".txt", ".csv.gz", ".ecsv.gz", ".txt.gz")):
        if is_gzip:
            import gzip

            try:
                with gzip.open(path, "rb") as handle:
                    head = handle.read(1 << 16)
            except (OSError, EOFError) as exc:
                raise CorruptCacheError(f"{path} is a damaged or truncated gzip file ({exc}): copy it again.") from exc
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # not just a multi-byte character cut by the 64 kB window
                raise CorruptCacheError(
                    f"{path} is not UTF-8 text (byte {head[exc.start:exc.start + 1]!r} at offset {exc.start}): a "
                    "binary file or another encoding. Export the table as UTF-8 CSV, ECSV or FITS."
                ) from exc


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
    _sniff(path)
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


#: Core columns that must hold a number in every row (photoZ/photoErr may be missing, subClass empty).
_REQUIRED_NUMBERS = ("type", "z", "zErr", "zWarning") + tuple(f"{k}_{b}" for b in BANDS for k in ("dered", "err"))
_ID_COLUMNS = ("objID", "specObjID")


def _row_of(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0]) + 1


def exact_ids(column, name: str, source: str):
    """An id column as exact integers: int64 when every value fits, else uint64; never float.

    SDSS ``specObjID`` exceeds 2**63 for plates >= 8192, so int64 would wrap it to a negative number, and
    float64 keeps only 15-16 digits of its 19-20 (distinct galaxies would merge).

    Raises
    ------
    MalformedTableError
        For floats, blanks, negative or non-integer values (naming the column and the first bad row).

    Examples
    --------
    >>> ids = exact_ids(np.array(["13510798882111488000", "299489677444933632"]), "specObjID", "example")
    >>> ids.dtype, int(ids[0])
    (dtype('uint64'), 13510798882111488000)
    """
    mask = np.asarray(getattr(column, "mask", np.zeros(len(column), bool)), bool)
    if mask.any():
        raise MalformedTableError(f"{source}: column {name!r} is empty in row {_row_of(mask)}; every galaxy needs its id.")
    values = np.asarray(column)
    if values.dtype.kind == "f":
        raise MalformedTableError(
            f"{source}: column {name!r} holds floating-point numbers, which cannot represent SDSS ids exactly "
            f"(e.g. {values[0]!r}). Export the ids as integers or text (in TOPCAT or astropy: as int64/uint64)."
        )
    if values.dtype.kind in "iu":
        if values.dtype.kind == "i" and (values < 0).any():
            raise MalformedTableError(f"{source}: column {name!r} has a negative id in row {_row_of(values < 0)}.")
        return values.astype(np.uint64 if values.dtype.kind == "u" and values.max() > np.iinfo(np.int64).max else np.int64)
    text = np.char.strip(values.astype(str))
    bad = ~np.char.isdigit(text)
    if bad.any():
        row = _row_of(bad)
        raise MalformedTableError(
            f"{source}: column {name!r} row {row} is {str(text[row - 1])!r}, not a whole non-negative number."
        )
    as_int = [int(v) for v in text]
    if max(as_int) >= 2 ** 64:
        raise MalformedTableError(f"{source}: column {name!r} has an id above 2**64 in row {_row_of(np.array(as_int) >= 2 ** 64)}.")
    dtype = np.uint64 if max(as_int) > np.iinfo(np.int64).max else np.int64
    return np.array(as_int, dtype=dtype)


def _normalise_columns(table, source: str = "the table"):
    """Make the column types uniform and check them: exact ids, numbers where numbers belong, text for class.

    Raises
    ------
    MalformedTableError
        Naming the column and the first offending row.
    """
    from astropy.table import MaskedColumn

    for name in _ID_COLUMNS:
        if name in table.colnames:
            table[name] = exact_ids(table[name], name, source)
    for name in _REQUIRED_NUMBERS + ("photoZ", "photoErr"):
        if name not in table.colnames:
            continue
        column = table[name]
        mask = np.asarray(getattr(column, "mask", np.zeros(len(column), bool)), bool)
        if column.dtype.kind not in "iuf":
            text = np.char.strip(np.asarray(column).astype(str))
            parsed = np.full(len(text), np.nan)
            bad = np.zeros(len(text), bool)
            for i, value in enumerate(text):
                if mask[i] or value == "":
                    mask[i] = True
                    continue
                try:
                    parsed[i] = float(value)
                except ValueError:
                    bad[i] = True
            if bad.any():
                row = _row_of(bad)
                raise MalformedTableError(
                    f"{source}: column {name!r} must hold numbers but row {row} is {str(text[row - 1])!r}; "
                    "fix or remove that row and import again."
                )
            column = MaskedColumn(parsed, mask=mask, name=name)
            table[name] = column
        if name in _REQUIRED_NUMBERS and mask.any():
            raise MalformedTableError(
                f"{source}: column {name!r} is empty in row {_row_of(mask)} (and {int(mask.sum()) - 1} more); "
                "the course needs a value in every row of it."
            )
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
#: HTTP statuses worth retrying: the server or a proxy is busy. SkyServer answers an SQL error with
#: 500, which retrying cannot fix.
TRANSIENT_HTTP_STATUSES = (429, 502, 503, 504)


def _http_status(exc):
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_transient(exc: BaseException) -> bool:
    try:
        import requests
    except ImportError:  # pragma: no cover
        requests = None
    if requests is not None:
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return False  # the server is working on it: a retry would only queue the same slow query again
        if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
            return True
        if isinstance(exc, requests.exceptions.HTTPError):
            return _http_status(exc) in TRANSIENT_HTTP_STATUSES
    return isinstance(exc, (TimeoutError, ConnectionError))


def _is_offline(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("name resolution", "nodename", "unreachable", "failed to resolve",
                                         "name or service not known", "network is unreachable"))


def _query_page(sql: str, data_release: int, timeout: float, retries: int, backoff: float):
    """One SkyServer request with a bounded retry on transient failures."""
    import requests
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
        except requests.exceptions.ReadTimeout as exc:
            raise NoDataError(
                f"SkyServer did not answer within {timeout:.0f} s. The query is too slow for one request: lower "
                "page_size (galmeta data fetch --page-size) or raise --timeout; nothing cached was changed, and "
                "pages already fetched are kept for the next try."
            ) from exc
        except Exception as exc:
            status = _http_status(exc)
            if status is not None and status not in TRANSIENT_HTTP_STATUSES:
                text = getattr(exc.response, "text", "") or ""
                raise SkyServerError(
                    f"SkyServer answered HTTP {status}: {text.strip()[:500] or exc}. For SkyServer this usually "
                    "means an error in the SQL (check GalaxyQuery.sql()); nothing cached was changed."
                ) from exc
            if _is_transient(exc) and attempt <= retries and not _is_offline(exc):
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            if _is_transient(exc):
                hint = (
                    "No network? The course runs on its embedded table without one; for another table, import "
                    "a snapshot: `galmeta data import PATH`."
                    if _is_offline(exc)
                    else "SkyServer may be busy: try again later, or lower page_size."
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


def fetch_page(query: GalaxyQuery | None = None, after_spec_obj_id: int | None = None, timeout: float = 60.0,
               retries: int = 0):
    """One page of the query, straight from SkyServer, not cached: the smallest live request.

    Notebook 01 uses it to show a live answer when the network is there.

    Raises
    ------
    NoDataError
        No network or no answer in ``timeout`` seconds (quickly, when the host does not resolve).
    SkyServerError
        SkyServer answered with an error.
    """
    query = query or GalaxyQuery(page_size=100)
    page = _query_page(query.sql(after_spec_obj_id), query.data_release, timeout, retries, backoff=1.0)
    if page is None:
        raise SkyServerError("SkyServer found no rows for this page; loosen the cuts in GalaxyQuery.")
    page = _normalise_columns(page, "SkyServer page")
    return validate_table(page, "SkyServer page")


def fetch_galaxies(
    query: GalaxyQuery | None = None,
    data_home=None,
    download_if_missing: bool = True,
    refresh: bool = False,
    timeout: float = 660.0,
    retries: int = 2,
    backoff: float = 2.0,
    progress: bool | None = None,
):
    """Fetch the course's galaxy table from SkyServer, or load it from the cache.

    The SQL of one page (``GalaxyQuery().sql()``) reads, for the default query::

        SELECT TOP 50000
          s.specObjID AS specObjID, p.objID AS objID, p.ra AS ra, p.dec AS dec, p.type AS type,
          p.dered_u AS dered_u, p.err_u AS err_u, ... (g, r, i, z likewise),
          s.z AS z, s.zErr AS zErr, s.zWarning AS zWarning, s.class AS class,
          s.subClass AS subClass, NULLIF(pz.z, -9999) AS photoZ, NULLIF(pz.zErr, -9999) AS photoErr
        FROM SpecObj AS s
          JOIN PhotoPrimary AS p ON p.objID = s.bestObjID
          LEFT OUTER JOIN Photoz AS pz ON pz.objID = p.objID
        WHERE s.class = 'GALAXY' AND s.zWarning = 0 AND s.z BETWEEN 0.0 AND 1.0
          AND s.zErr BETWEEN 0.0 AND 0.1
          AND p.dered_u > 0 AND ... AND p.err_u BETWEEN 0 AND 0.1 AND ...
          AND s.fiberID % 16 = 0
          [AND s.specObjID > <last specObjID of the previous page>]
        ORDER BY s.specObjID

    Pages follow each other until SkyServer returns a short page; then ``n_rows`` rows
    are kept by a seeded random choice (see :class:`GalaxyQuery`).

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
    timeout : float, default 660
        Seconds to wait for one page. SkyServer stops a query after 10 minutes and says so; waiting a little
        longer lets that message arrive instead of a bare time-out.
    retries : int, default 2
        Extra attempts on connection errors and HTTP 429/502/503/504 (not on time-outs or SQL errors).
    backoff : float, default 2
        Seconds before the first retry; doubled each time.
    progress : bool, optional
        Progress bar over rows (default: :func:`galmeta.config.show_progress`).

    Returns
    -------
    astropy.table.Table
        With ``table.meta["galmeta"]`` recording the SQL, release and fetch time.
    """
    from astropy.table import vstack

    from galmeta.config import progress_bar

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
    pages, after, index = [], None, 0
    bar = progress_bar(desc="SkyServer rows", unit="row", disable=None if progress is None else not progress)
    try:
        while True:
            page_path = page_dir / f"page-{index:04d}.ecsv"
            if page_path.exists():  # resume an interrupted multi-page fetch
                try:
                    page = _read_cached(page_path)
                except GalmetaDataError:
                    page_path.unlink()
                    continue
            else:
                bar.set_postfix_str(f"waiting for page {index + 1} (up to {query.page_size} rows)")
                page = _query_page(query.sql(after), query.data_release, timeout, retries, backoff)
                if page is None:  # SkyServer found no (more) rows
                    break
                page = _normalise_columns(page, f"SkyServer page {index + 1}")
                validate_table(page, f"SkyServer page {index + 1}")
                page.meta["galmeta"] = {"n_rows": len(page)}
                _atomic_write(page, page_path)
            last = int(page["specObjID"][-1])
            if after is not None and last <= after:
                raise SkyServerError(f"SkyServer page {index + 1} did not advance past specObjID {after}; "
                                     "the response is not ordered as asked. Nothing cached was changed.")
            pages.append(page)
            bar.update(len(page))
            after, index = last, index + 1
            if len(page) < int(query.page_size):
                break
    finally:
        bar.close()
    if not pages:
        raise SkyServerError("SkyServer returned no rows for the query; loosen the cuts in GalaxyQuery.")
    table = vstack(pages, metadata_conflicts="silent") if len(pages) > 1 else pages[0]
    n_strided = len(table)
    if query.n_rows is not None and n_strided > int(query.n_rows):
        keep = np.sort(np.random.default_rng(query.sample_seed).choice(n_strided, int(query.n_rows), replace=False))
        table = table[keep]
    table.meta = {
        "galmeta": {
            "format_version": _CACHE_FORMAT_VERSION,
            "source": "SkyServer via astroquery.sdss.SDSS.query_sql",
            "data_release": query.data_release,
            "sql_of_first_page": query.sql(),
            "query": asdict(query),
            "rows_in_strided_set": n_strided,
            "fetched_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "n_rows": len(table),
        }
    }
    _atomic_write(table, path)
    for page_file in page_dir.glob("page-*.ecsv"):
        page_file.unlink()
    if page_dir.exists():
        page_dir.rmdir()
    return table


# ---------------------------------------------------------------------------
# Snapshots and the embedded table
# ---------------------------------------------------------------------------
#: The course's default table, shipped inside the package (see galmeta/datasets/PROVENANCE.md).
EMBEDDED_TABLE = "sdss_galaxies_random_dered_25k.csv.gz"


def embedded_table_path() -> Path:
    """Path of the SDSS table that ships with galmeta (25,000 random DR17-era spectroscopic galaxies; CC0)."""
    return Path(__file__).resolve().parent / "datasets" / EMBEDDED_TABLE


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


def read_table_file(path, source: str | None = None):
    """Read and check a galaxy table file (.csv, .csv.gz, .ecsv, .fits) without importing it.

    Raises
    ------
    CorruptCacheError, MissingColumnsError, MalformedTableError
        With a message that names the file (and the column and row, where one is at fault).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no snapshot file at {path}; give the path of a .csv(.gz), .ecsv or .fits table")
    source = source or str(path)
    table = _read_snapshot_file(path)
    validate_table(table, source)
    return _normalise_columns(table, source)


def import_snapshot(path, name: str | None = None, data_home=None, force: bool = False, activate: bool | None = None):
    """Import a galaxy table file into the data home for offline use.

    Parameters
    ----------
    path : path-like
        A ``.csv``, ``.csv.gz``, ``.ecsv`` or ``.fits`` file with at least
        :data:`CORE_COLUMNS` (e.g. ``../shared/data/sdss_galaxies_random_dered_25k.csv.gz``).
    name : str, optional
        Name in the data home; defaults to the file name without extensions.
    data_home : path-like, optional
    force : bool, default False
        Replace an earlier import of the same name made from a *different* file. Without it, that is an
        error (re-importing the same file is fine).
    activate : bool, optional
        Make this the snapshot the course uses (:func:`active_snapshot`). Default: when no snapshot is
        active yet.

    Returns
    -------
    pathlib.Path
        The imported file, ``<data home>/snapshots/<name>.ecsv``.
    """
    path = Path(path).expanduser()
    table = read_table_file(path)
    name = name or _snapshot_name(path)
    _identifier(name.replace("-", "_").replace(".", "_"), "name")
    home = _data_home(data_home)
    target = home / "snapshots" / f"{name}.ecsv"
    digest = _sha256(path)
    if target.exists() and not force:
        try:
            previous = _read_header(target).get("sha256")
        except Exception:  # an unreadable earlier import is replaced only on request too
            previous = None
        if previous != digest:
            raise SnapshotExistsError(
                f"a different snapshot named {name!r} is already imported ({target}); nothing was changed. "
                f"Import under another name (--name NEW_NAME) or replace it on purpose with --force."
            )
    table.meta = {
        "galmeta": {
            "format_version": _CACHE_FORMAT_VERSION,
            "source": f"snapshot file {path.name}",
            "original_path": str(path.resolve()),
            "sha256": digest,
            "imported_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "n_rows": len(table),
        }
    }
    _atomic_write(table, target)
    if activate or (activate is None and active_snapshot(home) is None):
        use_snapshot(name, home)
    return target


def _active_file(home: Path) -> Path:
    return home / "snapshots" / "ACTIVE"


def active_snapshot(data_home=None) -> str | None:
    """Name of the imported snapshot the course uses (set by :func:`use_snapshot`), or None."""
    home = _data_home(data_home, create=False)
    marker = _active_file(home)
    if not marker.is_file():
        return None
    name = marker.read_text().strip()
    return name if (home / "snapshots" / f"{name}.ecsv").is_file() else None


def use_snapshot(name: str | None, data_home=None):
    """Make the imported snapshot ``name`` the course's table (``None``: go back to the embedded table)."""
    home = _data_home(data_home)
    marker = _active_file(home)
    if name is None:
        marker.unlink(missing_ok=True)
        return None
    if not (home / "snapshots" / f"{name}.ecsv").is_file():
        known = [p.stem for p in sorted((home / "snapshots").glob("*.ecsv"))]
        raise NoDataError(f"no imported snapshot named {name!r} in {home}; imported: {known or 'none'}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(name + "\n")
    os.chmod(marker, 0o666 & ~_umask())
    return name


def cache_info(data_home=None) -> list[dict]:
    """What is in the data home: one dict per table (kind, name, rows, source, path, size, active)."""
    home = _data_home(data_home, create=False)
    active = active_snapshot(home)
    rows = []
    for kind, pattern in (("query", "sdss/query-*.ecsv"), ("snapshot", "snapshots/*.ecsv")):
        for path in sorted(home.glob(pattern)):
            entry = {"kind": kind, "name": path.stem, "path": str(path), "bytes": path.stat().st_size,
                     "active": kind == "snapshot" and path.stem == active}
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


def load_embedded():
    """The SDSS table that ships with galmeta, read and checked like an imported snapshot."""
    path = embedded_table_path()
    table = read_table_file(path, source=f"the embedded table {path.name}")
    table.meta["galmeta"] = {"source": f"embedded table {path.name} (galmeta/datasets, see PROVENANCE.md)",
                             "n_rows": len(table)}
    return table


#: Where the course's table comes from when no argument says: ``GALMETA_SOURCE`` (``auto``, ``live``,
#: ``embedded`` or ``snapshot:NAME``).
SOURCE_VARIABLE = "GALMETA_SOURCE"


def which_source(source: str | None = None, data_home=None) -> str:
    """The source :func:`load_galaxies` will use, resolved (``query``, ``snapshot:NAME``, ``embedded``, ``live``)."""
    source = (source or os.environ.get(SOURCE_VARIABLE) or "auto").strip()
    if source not in ("auto", "live", "embedded") and not source.startswith("snapshot:"):
        raise ValueError(f"{SOURCE_VARIABLE}={source!r} is not one of auto, live, embedded, snapshot:NAME")
    if source != "auto":
        return source
    home = _data_home(data_home, create=False)
    if (home / "sdss" / f"query-{GalaxyQuery().cache_key()}.ecsv").exists():
        return "query"
    active = active_snapshot(home)
    return f"snapshot:{active}" if active else "embedded"


def load_galaxies(query: GalaxyQuery | None = None, data_home=None, download_if_missing: bool = True,
                  snapshot: str | None = None, source: str | None = None):
    """The galaxy table for the course.

    Which table (``source``, or the environment variable ``GALMETA_SOURCE``):

    ``auto`` (default)
        the cached live query if there is one, else the active imported snapshot
        (:func:`use_snapshot`), else the table embedded in the package. Never touches the network.
    ``live``
        the cached live query, fetched from SkyServer when missing (needs network).
    ``embedded``
        the embedded table.
    ``snapshot:NAME``
        an imported snapshot.

    Parameters
    ----------
    query : GalaxyQuery, optional
        The live query (default ``GalaxyQuery()``); giving one implies ``source="live"``.
    data_home : path-like, optional
    download_if_missing : bool, default True
        With ``live``: fetch when not cached.
    snapshot : str, optional
        Shorthand for ``source="snapshot:NAME"``.

    Returns
    -------
    astropy.table.Table
        ``table.meta["galmeta"]["source"]`` says where it came from.
    """
    if snapshot is not None:
        source = f"snapshot:{snapshot}"
    elif query is not None and source is None:
        source = "live"
    resolved = which_source(source, data_home)
    home = _data_home(data_home, create=False)
    if resolved.startswith("snapshot:"):
        name = resolved.split(":", 1)[1]
        path = home / "snapshots" / f"{name}.ecsv"
        if not path.exists():
            known = [p.stem for p in sorted((home / "snapshots").glob("*.ecsv"))]
            raise NoDataError(f"no imported snapshot named {name!r} in {home}; imported: {known or 'none'}")
        return _read_cached(path)
    if resolved == "embedded":
        return load_embedded()
    query = query or GalaxyQuery()
    cached = home / "sdss" / f"query-{query.cache_key()}.ecsv"
    if cached.exists():
        return _read_cached(cached)
    if not download_if_missing:
        raise NoDataError(
            f"the live query is not cached in {home} and download_if_missing=False. Fetch it with network "
            "(`galmeta data fetch`), or use the embedded table (GALMETA_SOURCE=embedded, the default without a "
            "cache) or an imported snapshot (`galmeta data import PATH`)."
        )
    return fetch_galaxies(query, data_home=home)
