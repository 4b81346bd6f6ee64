"""Cleaning SDSS galaxies with every count reported, the redness target, and the g, r, i, z features.

Introduced in ``notebooks/02_clean_and_tasks.py`` (steps 1-3 of the pipeline in :mod:`galmeta.tasks`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["STRATEVA_UR_CUT", "SENTINELS", "MAGNITUDE_RANGE", "COLOUR_RANGES", "CleaningReport", "clean_galaxies",
           "TARGET_NAME", "FEATURE_BANDS", "FEATURE_SOURCES", "FORBIDDEN_SOURCES", "redness_targets",
           "galaxy_features"]

#: Strateva et al. (2001, AJ 122, 1861): the u - r = 2.22 cut separates the red
#: (early-type) and blue (late-type) SDSS galaxies.
STRATEVA_UR_CUT = 2.22

#: Values SDSS uses for "no measurement".
SENTINELS = (-9999.0, -999.0, -99.0)

#: Plausible ranges for magnitudes and colours (mag); outside them the photometry
#: is broken (deblending, cosmic rays, saturation) rather than unusual.
MAGNITUDE_RANGE = (10.0, 25.0)
COLOUR_RANGES = {
    ("u", "g"): (-0.5, 3.5),
    ("g", "r"): (-0.5, 2.0),
    ("r", "i"): (-0.5, 1.5),
    ("i", "z"): (-1.0, 1.2),
}



# ---------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------
@dataclass
class CleaningReport:
    """Row counts through the cleaning steps (``steps`` is a list of (step, removed, left))."""

    n_input: int
    steps: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    @property
    def n_output(self) -> int:
        return self.steps[-1][2] if self.steps else self.n_input

    def as_text(self) -> str:
        width = max([44] + [len(step) for step, _, _ in self.steps])
        lines = [f"{'input rows':<{width}s} {self.n_input:>7d}"]
        for step, removed, left in self.steps:
            lines.append(f"{step:<{width}s} {-removed:>7d}  -> {left:d}")
        for key, value in self.notes.items():
            lines.append(f"  note: {key}: {value}")
        return "\n".join(lines)

    def __str__(self):
        return self.as_text()


def _column(table, name, dtype=float):
    col = table[name]
    mask = np.asarray(getattr(col, "mask", np.zeros(len(col), bool)), dtype=bool)
    if dtype is float:
        values = np.asarray(col.filled(np.nan) if hasattr(col, "filled") else col, dtype=float)
        values = np.where(mask, np.nan, values)
        return values
    values = np.asarray(col.filled("") if hasattr(col, "filled") else col).astype(str)
    return np.where(mask, "", values)


def clean_galaxies(table):
    """Clean a galaxy table the way a careful astronomer would, counting each step.

    Steps, in order:

    1. keep galaxies only (``class == 'GALAXY'``);
    2. duplicate ``objID``: keep the spectrum with the smallest ``zErr`` (one
       photometric object can have several spectra);
    3. sentinels (-9999, -999, -99) and empty values become NaN; an empty or
       ``null`` ``subClass`` becomes ``""`` (no emission-line subclass);
    4. non-physical or unreliable redshifts: ``z <= 0``, ``zWarning != 0``,
       ``zErr`` missing or above 0.01;
    5. missing or out-of-range magnitudes (outside 10-25 mag) or errors;
    6. outlier colours (broken photometry): outside :data:`COLOUR_RANGES`.

    Parameters
    ----------
    table : astropy.table.Table
        As returned by :func:`galmeta.data.load_galaxies`.

    Returns
    -------
    clean : astropy.table.Table
        A new table; ``photoZ``/``photoErr`` as float with NaN for missing.
    report : CleaningReport
    """
    from astropy.table import Table

    from galmeta.data.tables import normalise_columns, validate_table

    validate_table(table, "the galaxy table")
    table = normalise_columns(table.copy(copy_data=False), "the galaxy table")  # types checked, ids exact
    report = CleaningReport(n_input=len(table))
    ids = {name: np.asarray(table[name]) for name in ("objID", "specObjID") if name in table.colnames}
    # numbers become float with NaN for missing; other text columns (source_file, notes) pass through as text
    columns = {name: (_column(table, name) if table[name].dtype.kind in "iufb" else _column(table, name, str))
               for name in table.colnames if name not in ("class", "subClass", *ids)}
    columns["class"] = _column(table, "class", str)
    subclass = np.char.strip(_column(table, "subClass", str))
    subclass = np.where(np.isin(np.char.lower(subclass), ["null", "none", "nan"]), "", subclass)
    columns["subClass"] = subclass
    columns.update(ids)
    keep = np.ones(len(table), bool)

    def step(name, new_keep):
        nonlocal keep
        removed = int(np.sum(keep & ~new_keep))
        keep &= new_keep
        report.steps.append((name, removed, int(keep.sum())))

    step("not a galaxy (class != GALAXY)", np.char.upper(columns["class"]) == "GALAXY")

    # duplicates: sort by (objID, zErr) and keep the first of each objID among survivors
    z_err = columns["zErr"]
    order = np.lexsort((np.nan_to_num(z_err, nan=np.inf), columns["objID"]))
    order = order[keep[order]]
    first = np.ones(order.size, bool)
    first[1:] = columns["objID"][order][1:] != columns["objID"][order][:-1]
    unique_keep = np.zeros(len(table), bool)
    unique_keep[order[first]] = True
    step("duplicate objID (kept smallest zErr)", unique_keep)

    n_sentinel = 0
    for name, values in columns.items():
        if values.dtype.kind == "f":
            bad = np.isin(values, SENTINELS)
            n_sentinel += int(np.sum(bad & keep))
            values[bad] = np.nan
    report.notes["sentinel values set to NaN"] = n_sentinel

    z = columns["z"]
    good_z = (z > 0) & np.isfinite(z) & (columns["zWarning"] == 0) & (z_err >= 0) & (z_err <= 0.01)
    step("non-physical/unreliable redshift", good_z)

    mags_ok = np.ones(len(table), bool)
    for band in "ugriz":
        mag, err = columns[f"dered_{band}"], columns[f"err_{band}"]
        mags_ok &= np.isfinite(mag) & (mag >= MAGNITUDE_RANGE[0]) & (mag <= MAGNITUDE_RANGE[1])
        mags_ok &= np.isfinite(err) & (err >= 0)
    step("missing or out-of-range magnitude", mags_ok)

    colours_ok = np.ones(len(table), bool)
    for (a, b), (lo, hi) in COLOUR_RANGES.items():
        colour = columns[f"dered_{a}"] - columns[f"dered_{b}"]
        colours_ok &= (colour >= lo) & (colour <= hi)
    step("outlier colour (broken photometry)", colours_ok)

    report.notes["photoZ missing (clean rows)"] = int(np.sum(np.isnan(columns["photoZ"]) & keep))
    report.notes["subClass empty (clean rows; no strong emission lines)"] = int(np.sum((columns["subClass"] == "") & keep))
    clean = Table({name: values[keep] for name, values in columns.items()})
    clean.meta["cleaning"] = report.as_text()
    return clean, report


# ---------------------------------------------------------------------------
# Targets and features
# ---------------------------------------------------------------------------
#: Target and label: the u - r colour (the red-sequence / blue-cloud separator of
#: Strateva et al. 2001) needs the shallow, often missing u band.
TARGET_NAME = "u - r"

#: The photometric bands the features may use (the target's u band never enters).
FEATURE_BANDS = ("g", "r", "i", "z")


def redness_targets(clean):
    """Observed-frame ``u - r`` (with its error) and the red-sequence label.

    The use case: SDSS measures u with the lowest signal; deeper or newer
    surveys often lack it. Given g, r, i, z photometry of every galaxy and
    full ugriz photometry of K galaxies in a new redshift slice, estimate
    each galaxy's ``u - r`` and whether it lies on the red sequence.

    Returns
    -------
    u_r : ndarray
        ``dered_u - dered_r`` in mag.
    u_r_err : ndarray
        ``sqrt(err_u**2 + err_r**2)``.
    is_red : ndarray of bool
        ``u - r >= 2.22`` (Strateva et al. 2001): a threshold on the target
        itself, never on an input.
    """
    u_r = np.asarray(clean["dered_u"], float) - np.asarray(clean["dered_r"], float)
    u_r_err = np.hypot(np.asarray(clean["err_u"], float), np.asarray(clean["err_r"], float))
    return u_r, u_r_err, u_r >= STRATEVA_UR_CUT


#: The table columns each feature of :func:`galaxy_features` is computed from.
FEATURE_SOURCES = {
    "dered_r": ("dered_r",),
    "g_minus_r": ("dered_g", "dered_r"),
    "r_minus_i": ("dered_r", "dered_i"),
    "i_minus_z": ("dered_i", "dered_z"),
    **{f"log_err_{band}": (f"err_{band}",) for band in FEATURE_BANDS},
    "photoZ": ("photoZ",),
    "photoErr": ("photoErr",),
}

#: Columns no feature may be computed from (:func:`galmeta.leaks.refuse_target_sources`), and why.
FORBIDDEN_SOURCES = {
    "dered_u": "the target's band", "err_u": "the target's error",
    **{column: "measured from the spectrum" for column in ("z", "zErr", "zWarning", "class", "subClass")},
    "photoZ": "estimated from all five bands, u included", "photoErr": "estimated from all five bands, u included",
}


def galaxy_features(clean, include_photoz: bool = False):
    """Input features from the g, r, i and z bands only.

    ``dered_r`` (brightness), the colours ``g - r``, ``r - i``, ``i - z`` and
    the base-10 logarithm of the four photometric errors (errors span a decade;
    on a log scale no galaxy sits twenty standard deviations out). No
    spectroscopic column enters: ``subClass`` comes from the spectrum, and
    ``z`` is the hidden variable that makes tasks differ.

    Parameters
    ----------
    clean : astropy.table.Table
        Output of :func:`clean_galaxies`.
    include_photoz : bool, default False
        Add ``photoZ`` and ``photoErr``. **Leaks**: the photometric redshift is
        computed from all five magnitudes, u included, and estimates the hidden
        redshift. Only for the demonstration in notebook 02.

    Returns
    -------
    X : ndarray, shape (n_galaxies, n_features)
    names : list of str
    """
    g, r, i, zb = (np.asarray(clean[f"dered_{b}"], float) for b in FEATURE_BANDS)
    columns = {"dered_r": r, "g_minus_r": g - r, "r_minus_i": r - i, "i_minus_z": i - zb}
    for band in FEATURE_BANDS:
        with np.errstate(divide="ignore", invalid="ignore"):
            columns[f"log_err_{band}"] = np.log10(np.asarray(clean[f"err_{band}"], float))
    if include_photoz:
        columns["photoZ"] = np.asarray(clean["photoZ"], float)
        columns["photoErr"] = np.asarray(clean["photoErr"], float)
    names = list(columns)
    X = np.column_stack([np.asarray(columns[n], float) for n in names])
    return X, names
