"""Imported snapshots, the active one, the embedded table, and what the data home holds."""
from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path

from galmeta.data.errors import NoDataError, SnapshotExistsError
from galmeta.data.home import (CACHE_FORMAT_VERSION, DataHome, check_snapshot_name, read_cached_table, read_header,
                               snapshot_name_from_file, write_table)
from galmeta.data.tables import ImportLimits, read_table_file
from galmeta.safe_files import atomic_write, exclusive_lock

__all__ = ["EMBEDDED_TABLE", "embedded_table_path", "load_embedded", "import_snapshot", "active_snapshot",
           "use_snapshot", "load_snapshot", "cache_info"]

#: The course's default table, shipped inside the package (see galmeta/datasets/PROVENANCE.md).
EMBEDDED_TABLE = "sdss_galaxies_random_dered_25k.csv.gz"

#: Seconds an import waits for another import of the same name to finish.
LOCK_TIMEOUT = 60.0


def embedded_table_path() -> Path:
    """Path of the SDSS table that ships with galmeta (25,000 random DR17-era spectroscopic galaxies; CC0)."""
    return Path(__file__).resolve().parent.parent / "datasets" / EMBEDDED_TABLE


def load_embedded():
    """The SDSS table that ships with galmeta, read and checked like an imported snapshot."""
    path = embedded_table_path()
    table = read_table_file(path, source=f"the embedded table {path.name}")
    table.meta["galmeta"] = {"source": f"embedded table {path.name} (galmeta/datasets, see PROVENANCE.md)",
                             "n_rows": len(table)}
    return table


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_snapshot(path, name: str | None = None, data_home=None, force: bool = False, activate: bool | None = None,
                    limits: ImportLimits | None = None, lock_timeout: float = LOCK_TIMEOUT):
    """Import a galaxy table file into the data home for offline use.

    Parameters
    ----------
    path : path-like
        A ``.csv``, ``.csv.gz``, ``.ecsv`` or ``.fits`` file with at least
        :data:`galmeta.data.CORE_COLUMNS` (e.g. ``../shared/data/sdss_galaxies_random_dered_25k.csv.gz``).
    name : str, optional
        Name in the data home (:func:`galmeta.data.home.check_snapshot_name`); defaults to the file name
        without extensions.
    data_home : path-like, optional
    force : bool, default False
        Replace an earlier import of the same name made from a *different* file. Without it, that is an
        error (re-importing the same file is fine).
    activate : bool, optional
        Make this the snapshot the course uses (:func:`active_snapshot`). Default: when no snapshot is
        active yet.
    limits : ImportLimits, optional
        Largest uncompressed size, row and column count accepted (checked before parsing).
    lock_timeout : float
        Seconds to wait while another process imports the same name.

    Returns
    -------
    pathlib.Path
        The imported file, ``<data home>/snapshots/<name>.ecsv``.

    Raises
    ------
    SnapshotNameError, SnapshotExistsError, TableTooLargeError, CorruptCacheError, MissingColumnsError,
    MalformedTableError, galmeta.safe_files.LockTimeout
        Each leaves every file already in the data home as it was.
    """
    path = Path(path).expanduser()
    name = check_snapshot_name(name) if name is not None else snapshot_name_from_file(path)
    home = DataHome.resolve(data_home)
    home.remove_stale_parts()  # left by an import or fetch that was killed
    table = read_table_file(path, limits=limits)
    target = home.snapshot(name)
    digest = _sha256(path)
    table.meta = {
        "galmeta": {
            "format_version": CACHE_FORMAT_VERSION,
            "source": f"snapshot file {path.name}",
            "original_path": str(path.resolve()),
            "sha256": digest,
            "imported_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "n_rows": len(table),
        }
    }
    # the check and the write happen under one lock: two imports of one name cannot both pass the check
    with exclusive_lock(home.snapshot_lock(name), f"the snapshot {name!r}", timeout=lock_timeout):
        if not _refuse_a_different_snapshot(target, name, digest, force):
            write_table(table, target)
    if activate or (activate is None and active_snapshot(home.root) is None):
        use_snapshot(name, home.root)
    return target


def _refuse_a_different_snapshot(target: Path, name: str, digest: str, force: bool) -> bool:
    """Raise if ``target`` holds a different import; returns True when it already holds this very file."""
    if not target.exists() or force:
        return False
    try:
        previous = read_header(target).get("sha256")
    except Exception:  # an unreadable earlier import is replaced only on request too
        previous = None
    if previous == digest:
        return True  # the same file again: nothing to change
    raise SnapshotExistsError(
        f"a different snapshot named {name!r} is already imported ({target}); nothing was changed. "
        f"Import under another name (--name NEW_NAME) or replace it on purpose with --force."
    )


def active_snapshot(data_home=None) -> str | None:
    """Name of the imported snapshot the course uses (set by :func:`use_snapshot`), or None."""
    home = DataHome.resolve(data_home, create=False)
    if not home.active_marker.is_file():
        return None
    name = home.active_marker.read_text().strip()
    try:
        return name if home.snapshot(name).is_file() else None
    except ValueError:  # a marker edited by hand to hold a bad name: no snapshot is active
        return None


def _no_such_snapshot(name: str, home: DataHome) -> NoDataError:
    return NoDataError(f"no imported snapshot named {name!r} in {home.root}; imported: {home.snapshot_names() or 'none'}")


def use_snapshot(name: str | None, data_home=None):
    """Make the imported snapshot ``name`` the course's table (``None``: go back to the embedded table)."""
    home = DataHome.resolve(data_home)
    if name is None:
        home.active_marker.unlink(missing_ok=True)
        return None
    if not home.snapshot(name).is_file():  # checks the name first: nothing outside the data home is read
        raise _no_such_snapshot(name, home)
    with atomic_write(home.active_marker) as tmp:  # readable per the umask, like every file galmeta writes
        tmp.write_text(name + "\n")
    return name


def load_snapshot(name: str, data_home=None):
    """The imported snapshot ``name``, read and checked."""
    home = DataHome.resolve(data_home, create=False)
    path = home.snapshot(name)
    if not path.exists():
        raise _no_such_snapshot(name, home)
    return read_cached_table(path)


def cache_info(data_home=None) -> list[dict]:
    """What is in the data home: one dict per table (kind, name, rows, source, path, size, active).

    Temporary files left by a fetch or import that was killed are listed as kind ``"leftover"`` (the next
    fetch or import removes them).
    """
    home = DataHome.resolve(data_home, create=False)
    active = active_snapshot(home.root)
    rows = []
    for kind, paths in (("query", home.cached_queries()), ("snapshot", sorted(home.snapshots.glob("*.ecsv")))):
        for path in paths:
            entry = {"kind": kind, "name": path.stem, "path": str(path), "bytes": path.stat().st_size,
                     "active": kind == "snapshot" and path.stem == active}
            try:
                meta = read_header(path)
                entry.update(rows=meta.get("n_rows"), source=meta.get("source"),
                             when=meta.get("fetched_utc") or meta.get("imported_utc"))
            except Exception as exc:  # report, never delete
                entry.update(rows=None, source=f"unreadable header ({type(exc).__name__})", when=None)
            rows.append(entry)
    for part in home.stale_parts():
        rows.append({"kind": "leftover", "name": part.name, "path": str(part), "bytes": part.stat().st_size,
                     "active": False, "rows": None, "when": None,
                     "source": "left by an interrupted fetch or import; removed by the next one"})
    return rows
