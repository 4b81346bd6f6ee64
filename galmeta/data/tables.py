"""Reading and checking galaxy tables: what a file really is, limits, exact ids, typed columns."""
from __future__ import annotations

import csv
import gzip
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from galmeta.data.errors import CorruptCacheError, MalformedTableError, MissingColumnsError, TableTooLargeError
from galmeta.data.query import BANDS, CORE_COLUMNS

__all__ = ["ImportLimits", "validate_table", "sniff_file", "check_table_size", "exact_ids", "normalise_columns",
           "read_table_file"]


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


@dataclass(frozen=True)
class ImportLimits:
    """How large a table file may be before galmeta refuses to parse it.

    Parsing takes about 12 times the uncompressed size in memory, so the checks run first, on a stream
    that stops at the limit (a small ``.csv.gz`` can expand to gigabytes). Override them for a larger
    table on a larger machine: ``import_snapshot(..., limits=ImportLimits(max_megabytes=2048))`` or
    ``galmeta data import PATH --max-megabytes 2048 --max-rows 5000000 --max-columns 5000``.

    Parameters
    ----------
    max_megabytes : float, default 256
        Uncompressed size (MB, 10^6 bytes). The course's table is 5.5 MB.
    max_rows : int, default 2,000,000
        Lines of data (the course's table has 25,000).
    max_columns : int, default 1,000
        Columns (the course needs 19).
    """

    max_megabytes: float = 256.0
    max_rows: int = 2_000_000
    max_columns: int = 1_000

    def __post_init__(self):
        for name in ("max_megabytes", "max_rows", "max_columns"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_megabytes * 1e6)


_TEXT_SUFFIXES = (".csv", ".ecsv", ".txt", ".csv.gz", ".ecsv.gz", ".txt.gz")
_FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")


def sniff_file(path: Path):
    """Say what a file really is before a parser gives a confusing message about it.

    Raises
    ------
    CorruptCacheError
        For an empty file, a ``.gz`` that is not gzip, a damaged gzip stream, or text that is not UTF-8.
    """
    path = Path(path)
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
    if path.name.lower().endswith(_TEXT_SUFFIXES):
        if is_gzip:
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


def _open_stream(path: Path):
    with open(path, "rb") as handle:
        is_gzip = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _too_large(path: Path, what: str, limits: ImportLimits, option: str):
    return TableTooLargeError(
        f"{path} {what}; galmeta refuses to parse it (reading a table takes about 12 times its size in memory) "
        f"and nothing was changed. If the table is meant to be this large, raise the limit ({option}, or "
        "ImportLimits in Python); otherwise select the rows and columns you need first."
    )


def _text_header_line(first_lines: bytes, ecsv: bool) -> tuple[str, str]:
    """The column-name line of a CSV or ECSV file (the first line not starting with '#'), and its delimiter."""
    delimiter = " " if ecsv else ","  # ECSV's default is a space; it writes "delimiter: ','" when it uses commas
    for line in first_lines.split(b"\n"):
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        if text.startswith("#"):
            if ecsv and text.replace(" ", "").startswith("#delimiter:"):
                delimiter = "," if "," in text.split(":", 1)[1] else " "
            continue
        if text.strip():
            return text, delimiter
    return "", delimiter


def check_table_size(path, limits: ImportLimits | None = None) -> dict:
    """Stream through a table file and refuse it, before any parsing, if it breaks the limits or repeats a column.

    Returns
    -------
    dict
        ``bytes`` (uncompressed), ``lines`` and ``columns`` (the column names).

    Raises
    ------
    TableTooLargeError
        Naming the limit that was passed and how to raise it.
    MalformedTableError
        When a column name appears twice (a reader would silently rename the second copy).
    """
    path = Path(path)
    limits = limits or ImportLimits()
    name = path.name.lower()
    total, lines, head = 0, 0, b""
    header_done = False
    with _open_stream(path) as stream:
        while True:
            try:
                chunk = stream.read(1 << 20)
            except (OSError, EOFError) as exc:
                raise CorruptCacheError(f"{path} is a damaged or truncated gzip file ({exc}): copy it again.") from exc
            if not chunk:
                break
            total += len(chunk)
            lines += chunk.count(b"\n")
            if total > limits.max_bytes:
                raise _too_large(path, f"is larger than {limits.max_megabytes:g} MB uncompressed", limits,
                                 "--max-megabytes")
            if lines > limits.max_rows + 10_000:  # a few thousand header/comment lines are allowed for
                raise _too_large(path, f"has more than {limits.max_rows:,} rows", limits, "--max-rows")
            if not header_done and name.endswith(_TEXT_SUFFIXES):
                head += chunk
                complete_lines = head.split(b"\n")[:-1]  # the last piece may continue in the next chunk
                header_done = len(head) > limits.max_columns * 200 or any(
                    line.strip() and not line.startswith(b"#") for line in complete_lines)
    if name.endswith(_FITS_SUFFIXES):
        return {"bytes": total, "lines": None, "columns": _fits_columns(path, limits)}
    text, delimiter = _text_header_line(head, name.endswith((".ecsv", ".ecsv.gz")))
    if text.count(delimiter) + 1 > limits.max_columns:
        raise _too_large(path, f"has more than {limits.max_columns:,} columns", limits,
                         "--max-columns")
    columns = next(csv.reader([text], delimiter=delimiter, skipinitialspace=delimiter == " "), [])
    _refuse_duplicates([c.strip() for c in columns], path)
    return {"bytes": total, "lines": lines, "columns": columns}


def _fits_columns(path: Path, limits: ImportLimits) -> list:
    from astropy.io import fits

    try:
        header = fits.getheader(path, ext=1)
    except Exception as exc:
        raise CorruptCacheError(f"{path} has no readable FITS table in its first extension ({exc}).") from exc
    n_columns, n_rows = int(header.get("TFIELDS", 0)), int(header.get("NAXIS2", 0))
    if n_columns > limits.max_columns:
        raise _too_large(path, f"has {n_columns:,} columns, more than {limits.max_columns:,}", limits, "--max-columns")
    if n_rows > limits.max_rows:
        raise _too_large(path, f"has {n_rows:,} rows, more than {limits.max_rows:,}", limits, "--max-rows")
    columns = [str(header.get(f"TTYPE{i}", "")).strip() for i in range(1, n_columns + 1)]
    _refuse_duplicates(columns, path)
    return columns


def _refuse_duplicates(columns, path):
    seen = set()
    for column in columns:
        if column in seen:
            raise MalformedTableError(
                f"{path}: the column {column!r} appears more than once, so it is not clear which copy holds the "
                "values; remove or rename the extra copy and import again. Nothing was changed."
            )
        seen.add(column)


def _read_snapshot_file(path: Path, limits: ImportLimits | None = None):
    from astropy.table import Table

    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
        kwargs = dict(format="ascii.csv", comment="#", fast_reader={"exponent_style": "E"})
    elif name.endswith((".ecsv", ".ecsv.gz")):
        kwargs = dict(format="ascii.ecsv")
    elif name.endswith(_FITS_SUFFIXES):
        kwargs = dict(format="fits")
    else:
        raise ValueError(f"{path} has an unknown file type; give a .csv, .csv.gz, .ecsv or .fits file")
    sniff_file(path)
    check_table_size(path, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return Table.read(path, **kwargs)
            except TypeError:  # fast_reader options differ between astropy versions
                kwargs.pop("fast_reader", None)
                return Table.read(path, **kwargs)
    except MemoryError as exc:
        raise TableTooLargeError(
            f"{path} does not fit in this machine's memory while it is parsed; nothing was changed. Lower the "
            "import limits (ImportLimits) or select the rows and columns you need first."
        ) from exc
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


def normalise_columns(table, source: str = "the table"):
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



def read_table_file(path, source: str | None = None, limits: ImportLimits | None = None):
    """Read and check a galaxy table file (.csv, .csv.gz, .ecsv, .fits) without importing it.

    ``limits`` (:class:`ImportLimits`) bound its uncompressed size, rows and columns before parsing.

    Raises
    ------
    TableTooLargeError
        When the file breaks ``limits``.
    CorruptCacheError, MissingColumnsError, MalformedTableError
        With a message that names the file (and the column and row, where one is at fault).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no snapshot file at {path}; give the path of a .csv(.gz), .ecsv or .fits table")
    source = source or str(path)
    table = _read_snapshot_file(path, limits)
    validate_table(table, source)
    return normalise_columns(table, source)

