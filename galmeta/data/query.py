"""The course's SkyServer query: columns, cuts, paging and the SQL it sends."""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass

__all__ = ["BANDS", "CORE_COLUMNS", "OPTIONAL_COLUMN_GROUPS", "SKYSERVER_MAX_ROWS", "GalaxyQuery", "sql_identifier"]

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


def sql_identifier(name: str, what: str) -> str:
    """``name`` if it is a plain SQL identifier, else ValueError naming ``what`` (no user text is pasted into SQL)."""
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
            sql_identifier(name, "extra_photo_columns")

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

