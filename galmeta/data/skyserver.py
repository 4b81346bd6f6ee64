"""The SkyServer client: one page with bounded retries, and the cached, resumable multi-page fetch."""
from __future__ import annotations

import datetime as _dt
import math
import time
import warnings
from dataclasses import asdict

import numpy as np

from galmeta.data.errors import GalmetaDataError, NoDataError, SkyServerError
from galmeta.data.home import CACHE_FORMAT_VERSION, DataHome, read_cached_table, write_table
from galmeta.data.query import GalaxyQuery
from galmeta.data.tables import normalise_columns, validate_table

__all__ = ["TRANSIENT_HTTP_STATUSES", "fetch_page", "fetch_galaxies", "check_timeout"]

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


def check_timeout(timeout) -> float:
    """``timeout`` if it is a number of seconds > 0, else ValueError naming it."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a number of seconds > 0 (SkyServer needs time to answer), got {timeout!r}")
    return float(timeout)


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
    check_timeout(timeout)
    page = _query_page(query.sql(after_spec_obj_id), query.data_release, timeout, retries, backoff=1.0)
    if page is None:
        raise SkyServerError("SkyServer found no rows for this page; loosen the cuts in GalaxyQuery.")
    page = normalise_columns(page, "SkyServer page")
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
    check_timeout(timeout)
    home = DataHome.resolve(data_home)
    key = query.cache_key()
    path = home.query_cache(key)
    if path.exists() and not refresh:
        return read_cached_table(path)
    if not download_if_missing:
        raise NoDataError(
            f"the query {key} is not cached in {home.root} and download_if_missing=False. Fetch it with "
            "download_if_missing=True (needs network) or import a snapshot with `galmeta data import PATH`."
        )

    home.remove_stale_parts()  # left by a fetch or import that was killed
    page_dir = home.query_pages(key)
    pages, after, index = [], None, 0
    bar = progress_bar(desc="SkyServer rows", unit="row", disable=None if progress is None else not progress)
    try:
        while True:
            page_path = page_dir / f"page-{index:04d}.ecsv"
            if page_path.exists():  # resume an interrupted multi-page fetch
                try:
                    page = read_cached_table(page_path)
                except GalmetaDataError:
                    page_path.unlink()
                    continue
            else:
                bar.set_postfix_str(f"waiting for page {index + 1} (up to {query.page_size} rows)")
                page = _query_page(query.sql(after), query.data_release, timeout, retries, backoff)
                if page is None:  # SkyServer found no (more) rows
                    break
                page = normalise_columns(page, f"SkyServer page {index + 1}")
                validate_table(page, f"SkyServer page {index + 1}")
                page.meta["galmeta"] = {"n_rows": len(page)}
                write_table(page, page_path)
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
            "format_version": CACHE_FORMAT_VERSION,
            "source": "SkyServer via astroquery.sdss.SDSS.query_sql",
            "data_release": query.data_release,
            "sql_of_first_page": query.sql(),
            "query": asdict(query),
            "rows_in_strided_set": n_strided,
            "fetched_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "n_rows": len(table),
        }
    }
    write_table(table, path)
    for page_file in page_dir.glob("page-*.ecsv"):
        page_file.unlink()
    if page_dir.exists():
        page_dir.rmdir()
    return table


