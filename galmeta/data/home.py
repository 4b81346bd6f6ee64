"""The data home: where every cached or imported table lives, the rule for names, atomic table writes.

Layout of ``<data home>`` (``$GALMETA_DATA``, see :func:`galmeta.config.data_home`)::

    sdss/query-<hash>.ecsv        a cached live query (galmeta data fetch)
    sdss/pages-<hash>/page-N.ecsv pages of an interrupted fetch, resumed next time
    snapshots/<name>.ecsv         an imported table (galmeta data import)
    snapshots/ACTIVE              the name of the snapshot the course uses
    snapshots/.<name>.lock        held while <name> is imported

Every path is spelled out once, in :class:`DataHome`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from galmeta.config import data_home as _resolve_data_home
from galmeta.data.errors import CorruptCacheError, GalmetaDataError, SnapshotNameError
from galmeta.data.query import CORE_COLUMNS
from galmeta.safe_files import atomic_write, remove_stale_parts, stale_parts

__all__ = ["DataHome", "check_snapshot_name", "snapshot_name_from_file", "write_table", "read_cached_table",
           "read_header", "CACHE_FORMAT_VERSION"]

CACHE_FORMAT_VERSION = 1

#: The one rule for snapshot names (import, use, GALMETA_SOURCE=snapshot:NAME).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
#: Names Windows reserves for devices (with any extension): a file called con.ecsv cannot be opened there.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def check_snapshot_name(name) -> str:
    """Return ``name`` if it is a valid snapshot name, else raise :class:`SnapshotNameError`.

    A name is 1 to 64 letters, digits, ``_`` and ``-``, does not start with ``-``, and is not a device name
    that Windows reserves (``con``, ``nul``, ``com1``, ...). So a name is always one plain file in the data
    home: no ``/``, no ``..``, no hidden file, nothing read from outside.

    Examples
    --------
    >>> check_snapshot_name("dr17_sample-2")
    'dr17_sample-2'
    >>> check_snapshot_name("../outside")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    galmeta.data.errors.SnapshotNameError: the snapshot name '../outside' is not allowed: ...
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.lower() in _RESERVED:
        why = ("it is a device name Windows reserves" if isinstance(name, str) and name.lower() in _RESERVED
               else "use 1 to 64 letters, digits, '_' and '-', not starting with '-' (no '.', '/' or spaces)")
        raise SnapshotNameError(f"the snapshot name {name!r} is not allowed: {why}. When importing, choose a name with --name "
                                "(for example --name sdss_dr17).")
    return name


def snapshot_name_from_file(path) -> str:
    """The default snapshot name of a file: its name without extensions, other characters as ``_``."""
    name = Path(path).name
    for suffix in (".gz", ".csv", ".ecsv", ".fits", ".fit", ".txt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:64] or "snapshot"
    return name + "_table" if name.lower() in _RESERVED else name


@dataclass(frozen=True)
class DataHome:
    """The paths of one data home (the folder is created on request only)."""

    root: Path

    @classmethod
    def resolve(cls, path=None, create: bool = True) -> "DataHome":
        return cls(_resolve_data_home(path, create=create))

    # -- live queries ------------------------------------------------------
    def query_cache(self, key: str) -> Path:
        return self.root / "sdss" / f"query-{key}.ecsv"

    def query_pages(self, key: str) -> Path:
        return self.root / "sdss" / f"pages-{key}"

    def cached_queries(self) -> list[Path]:
        return sorted(self.root.glob("sdss/query-*.ecsv"))

    # -- snapshots ---------------------------------------------------------
    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    def snapshot(self, name: str) -> Path:
        return self.snapshots / f"{check_snapshot_name(name)}.ecsv"

    def snapshot_lock(self, name: str) -> Path:
        return self.snapshots / f".{check_snapshot_name(name)}.lock"

    @property
    def active_marker(self) -> Path:
        return self.snapshots / "ACTIVE"

    def snapshot_names(self) -> list[str]:
        return [p.stem for p in sorted(self.snapshots.glob("*.ecsv"))]

    # -- abandoned temporary files -------------------------------------------
    def stale_parts(self) -> list[Path]:
        """``*.part`` files left by a killed fetch or import (nobody is writing them)."""
        return stale_parts(self.root) if self.root.is_dir() else []

    def remove_stale_parts(self) -> list[Path]:
        return remove_stale_parts(self.root) if self.root.is_dir() else []


def write_table(table, path: Path):
    """Write an ECSV table atomically (a unique ``*.part`` file renamed into place), readable per the umask."""
    try:
        with atomic_write(path) as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
    except PermissionError as exc:
        raise GalmetaDataError(
            f"cannot write into the data home {path.parent} ({exc.strerror or exc}). Point GALMETA_DATA at a "
            "folder you can write to (e.g. export GALMETA_DATA=~/galmeta_data)."
        ) from exc


def read_cached_table(path: Path, required=CORE_COLUMNS):
    """Read a table that galmeta wrote into the data home, checking its columns and its row count."""
    from astropy.table import Table

    from galmeta.data.tables import validate_table

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


def read_header(path: Path) -> dict:
    """Read only the galmeta part of an ECSV file's YAML header (fast, for listings)."""
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
