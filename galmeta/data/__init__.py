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

The package, one module per job:

* :mod:`galmeta.data.query`: :class:`GalaxyQuery`, the columns and the SQL;
* :mod:`galmeta.data.skyserver`: the SkyServer client (retries, time-outs) and the cached, resumable fetch;
* :mod:`galmeta.data.tables`: reading a table file, its size limits, exact ids, typed columns;
* :mod:`galmeta.data.home`: every path in the data home, the naming rule, atomic table writes;
* :mod:`galmeta.data.snapshots`: imports, the active snapshot, the embedded table, listings;
* :mod:`galmeta.data.errors`: the errors, each with a message that says what to do.
"""
from __future__ import annotations

import os

from galmeta.data.errors import (CorruptCacheError, GalmetaDataError, MalformedTableError, MissingColumnsError,
                                 NoDataError, SkyServerError, SnapshotExistsError, SnapshotNameError,
                                 TableTooLargeError)
from galmeta.data.home import DataHome, check_snapshot_name
from galmeta.data.query import BANDS, CORE_COLUMNS, OPTIONAL_COLUMN_GROUPS, GalaxyQuery
from galmeta.data.skyserver import fetch_galaxies, fetch_page
from galmeta.data.snapshots import (active_snapshot, cache_info, embedded_table_path, import_snapshot, load_embedded,
                                    load_snapshot, use_snapshot)
from galmeta.data.tables import ImportLimits, exact_ids, read_table_file, sniff_file, validate_table

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
    "SnapshotNameError",
    "TableTooLargeError",
    "ImportLimits",
    "DataHome",
    "check_snapshot_name",
    "fetch_galaxies",
    "fetch_page",
    "active_snapshot",
    "use_snapshot",
    "embedded_table_path",
    "import_snapshot",
    "load_galaxies",
    "load_snapshot",
    "cache_info",
    "validate_table",
    "sniff_file",
    "exact_ids",
    "read_table_file",
    "load_embedded",
    "which_source",
]

#: Where the course's table comes from when no argument says: ``GALMETA_SOURCE`` (``auto``, ``live``,
#: ``embedded`` or ``snapshot:NAME``).
SOURCE_VARIABLE = "GALMETA_SOURCE"


def which_source(source: str | None = None, data_home=None) -> str:
    """The source :func:`load_galaxies` will use, resolved (``query``, ``snapshot:NAME``, ``embedded``, ``live``)."""
    source = (source or os.environ.get(SOURCE_VARIABLE) or "auto").strip()
    if source not in ("auto", "live", "embedded") and not source.startswith("snapshot:"):
        raise ValueError(f"{SOURCE_VARIABLE}={source!r} is not one of auto, live, embedded, snapshot:NAME")
    if source.startswith("snapshot:"):
        check_snapshot_name(source.split(":", 1)[1])  # the one naming rule: nothing outside the data home
    if source != "auto":
        return source
    home = DataHome.resolve(data_home, create=False)
    if home.query_cache(GalaxyQuery().cache_key()).exists():
        return "query"
    active = active_snapshot(home.root)
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
    home = DataHome.resolve(data_home, create=False)
    if resolved.startswith("snapshot:"):
        return load_snapshot(resolved.split(":", 1)[1], home.root)
    if resolved == "embedded":
        return load_embedded()
    query = query or GalaxyQuery()
    if home.query_cache(query.cache_key()).exists():
        return fetch_galaxies(query, data_home=home.root, download_if_missing=False)
    if not download_if_missing:
        raise NoDataError(
            f"the live query is not cached in {home.root} and download_if_missing=False. Fetch it with network "
            "(`galmeta data fetch`), or use the embedded table (GALMETA_SOURCE=embedded, the default without a "
            "cache) or an imported snapshot (`galmeta data import PATH`)."
        )
    return fetch_galaxies(query, data_home=home.root)
