"""Cleaning, redness targets, features and few-shot galaxy tasks.

Introduced in ``notebooks/02_clean_and_tasks.py``.

The pipeline is

1. :func:`clean_galaxies` removes duplicate objects, turns sentinels and empty
   values into NaN, drops non-physical redshifts and outlier photometry, and
   reports every count.
2. :func:`redness_targets` gives the observed-frame ``g - r`` colour (regression
   target, with its measurement error) and a red-sequence label from Strateva
   et al. (2001), ``u - r >= 2.22``.
3. :func:`galaxy_features` builds the inputs from the **u, i, z** bands, the
   errors and the spectral subclass. ``g`` and ``r`` never enter (they are the
   target), and ``photoZ`` (computed from all five magnitudes) only on request
   to show what such a leak does.
4. :func:`redshift_splits` and :func:`build_tasks` cut the catalogue into narrow
   redshift windows (``cosmic slices``) whose redshift is hidden from the
   features, and put disjoint redshift ranges into meta-train, meta-validation
   and meta-test.
5. :class:`FeaturePreprocessor` imputes (with missingness indicators) and
   scales, fitted on meta-train galaxies only; :class:`TaskSampler` draws K-shot
   support and query sets with a seeded :class:`numpy.random.Generator`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "STRATEVA_UR_CUT",
    "SENTINELS",
    "CleaningReport",
    "clean_galaxies",
    "redness_targets",
    "SUBCLASS_FLAGS",
    "galaxy_features",
    "assert_no_target_leak",
    "Task",
    "redshift_splits",
    "build_tasks",
    "FeaturePreprocessor",
    "TaskSampler",
    "TooFewGalaxiesError",
    "GalaxyTaskData",
    "prepare_galaxy_tasks",
]

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

#: Emission-line subclasses of SDSS spectra turned into indicator features.
SUBCLASS_FLAGS = ("STARFORMING", "STARBURST", "AGN", "BROADLINE")


class TooFewGalaxiesError(ValueError):
    """A task has fewer galaxies than support plus query size."""


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
        lines = [f"{'input rows':<44s} {self.n_input:>7d}"]
        for step, removed, left in self.steps:
            lines.append(f"{step:<44s} {-removed:>7d}  -> {left:d}")
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

    from galmeta.data import validate_table

    validate_table(table, "the galaxy table")
    report = CleaningReport(n_input=len(table))
    columns = {name: _column(table, name) for name in table.colnames if name not in ("class", "subClass", "source_file")}
    columns["class"] = _column(table, "class", str)
    subclass = np.char.strip(_column(table, "subClass", str))
    subclass = np.where(np.isin(np.char.lower(subclass), ["null", "none", "nan"]), "", subclass)
    columns["subClass"] = subclass
    if "objID" in table.colnames:
        columns["objID"] = np.asarray(table["objID"], dtype=np.int64)
    if "specObjID" in table.colnames:
        columns["specObjID"] = np.asarray(table["specObjID"], dtype=np.int64)
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
def redness_targets(clean):
    """Observed-frame ``g - r`` (with its error) and the red-sequence label.

    Returns
    -------
    g_r : ndarray
        ``dered_g - dered_r`` in mag.
    g_r_err : ndarray
        ``sqrt(err_g**2 + err_r**2)``: use as noise weights ``1 / g_r_err**2``.
    is_red : ndarray of bool
        ``u - r >= 2.22`` (Strateva et al. 2001).
    """
    g_r = np.asarray(clean["dered_g"], float) - np.asarray(clean["dered_r"], float)
    g_r_err = np.hypot(np.asarray(clean["err_g"], float), np.asarray(clean["err_r"], float))
    is_red = (np.asarray(clean["dered_u"], float) - np.asarray(clean["dered_r"], float)) >= STRATEVA_UR_CUT
    return g_r, g_r_err, is_red


def galaxy_features(clean, include_photoz: bool = False):
    """Input features that do not leak the redness target.

    From the u, i and z bands only: ``dered_i`` (brightness), ``u - i``,
    ``i - z``, the three errors, and indicator flags of the spectral
    ``subClass`` (plus ``subclass_missing``, which is itself informative: it
    marks spectra without strong emission lines). Missing values stay NaN; the
    :class:`FeaturePreprocessor` imputes them.

    Parameters
    ----------
    clean : astropy.table.Table
        Output of :func:`clean_galaxies`.
    include_photoz : bool, default False
        Add ``photoZ`` and ``photoErr``. **Leaks**: the photometric redshift is
        computed from all five magnitudes (g and r included) and estimates the
        hidden task variable. Only for the demonstration in notebook 02.

    Returns
    -------
    X : ndarray, shape (n_galaxies, n_features)
    names : list of str
    """
    u, i, zb = (np.asarray(clean[f"dered_{b}"], float) for b in "uiz")
    columns = {
        "dered_i": i,
        "u_minus_i": u - i,
        "i_minus_z": i - zb,
        "err_u": np.asarray(clean["err_u"], float),
        "err_i": np.asarray(clean["err_i"], float),
        "err_z": np.asarray(clean["err_z"], float),
    }
    subclass = np.asarray(clean["subClass"]).astype(str)
    columns["subclass_missing"] = (subclass == "").astype(float)
    for flag in SUBCLASS_FLAGS:
        columns[f"subclass_{flag.lower()}"] = np.char.find(np.char.upper(subclass), flag) >= 0
    if include_photoz:
        columns["photoZ"] = np.asarray(clean["photoZ"], float)
        columns["photoErr"] = np.asarray(clean["photoErr"], float)
    names = list(columns)
    X = np.column_stack([np.asarray(columns[n], float) for n in names])
    assert_no_target_leak(names, allow_photoz=include_photoz)
    return X, names


_LEAKY = ("dered_g", "dered_r", "g_minus_r", "u_minus_r", "g_r", "is_red", "red")


def assert_no_target_leak(feature_names, allow_photoz: bool = False):
    """Raise if a feature is (or is computed from) the g - r target or the u - r label.

    Parameters
    ----------
    feature_names : list of str
    allow_photoz : bool, default False
        ``photoZ`` is built from g and r: allowed only to demonstrate the leak.
    """
    names = [str(n) for n in feature_names]
    lowered = [n.lower() for n in names]
    bad = [n for n, low in zip(names, lowered) if low in _LEAKY or "g_minus" in low or "minus_r" in low]
    if "dered_g" in lowered and "dered_r" in lowered:
        bad.append("dered_g and dered_r together")
    if not allow_photoz:
        bad += [n for n, low in zip(names, lowered) if low.startswith("photoz") or low == "photoerr"]
    if any(low in ("z", "redshift") for low in lowered):
        bad += [n for n, low in zip(names, lowered) if low in ("z", "redshift")]
    if bad:
        raise ValueError(
            f"features {bad} leak the redness target or the hidden redshift; drop them "
            "(g and r are the target's bands; photoZ is computed from them)"
        )


# ---------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """A few-shot task: the galaxies of one narrow redshift window."""

    name: str
    split: str
    z_lo: float
    z_hi: float
    indices: np.ndarray = field(repr=False, compare=False)

    @property
    def size(self) -> int:
        return int(self.indices.size)


def redshift_splits(z_min=0.01, z_max=0.21, block=0.02,
                    pattern=("train", "train", "test", "train", "val")):
    """Cut ``[z_min, z_max)`` into blocks and deal them to the splits in a repeating pattern.

    Interleaving keeps every split spread over the redshift range; the ranges of
    different splits never overlap.

    Returns
    -------
    list of (z_lo, z_hi, split)
    """
    if not z_min < z_max or block <= 0:
        raise ValueError(f"need z_min < z_max and block > 0, got {z_min}, {z_max}, {block}")
    unknown = set(pattern) - {"train", "val", "test"}
    if unknown:
        raise ValueError(f"pattern may only name 'train', 'val' and 'test', not {sorted(unknown)}")
    n_blocks = int(round((z_max - z_min) / block))
    edges = z_min + block * np.arange(n_blocks + 1)
    return [(round(float(lo), 6), round(float(hi), 6), pattern[k % len(pattern)])
            for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]


def build_tasks(redshift, splits, window=0.005, train_stride=0.0025, min_size=40):
    """Sliding redshift windows inside each split's blocks.

    Meta-train windows overlap (stride ``train_stride``) so meta-training sees
    many tasks; meta-validation and meta-test windows do not overlap, so their
    tasks are independent. A window never crosses a block edge, so no galaxy
    and no redshift range belongs to two splits.

    Parameters
    ----------
    redshift : ndarray
        Spectroscopic redshift of every galaxy (hidden from the features).
    splits : list of (z_lo, z_hi, split)
        From :func:`redshift_splits`.
    window : float, default 0.005
        Width of a task's redshift window.
    train_stride : float, default 0.0025
    min_size : int, default 40
        Windows with fewer galaxies are dropped (counted in ``dropped``).

    Returns
    -------
    tasks : dict
        ``{"train": [Task, ...], "val": [...], "test": [...]}``
    dropped : dict
        Number of windows dropped per split for having fewer than ``min_size`` galaxies.
    """
    redshift = np.asarray(redshift, float)
    tasks = {"train": [], "val": [], "test": []}
    dropped = {"train": 0, "val": 0, "test": 0}
    for lo, hi, split in splits:
        stride = train_stride if split == "train" else window
        n_windows = int(np.floor((hi - lo - window) / stride + 1e-9)) + 1
        for k in range(max(n_windows, 0)):
            w_lo = lo + k * stride
            w_hi = min(w_lo + window, hi)
            indices = np.flatnonzero((redshift >= w_lo) & (redshift < w_hi))
            if indices.size < min_size:
                dropped[split] += 1
                continue
            tasks[split].append(Task(f"z{w_lo:.4f}-{w_hi:.4f}", split, round(w_lo, 6), round(w_hi, 6), indices))
    return tasks, dropped


class FeaturePreprocessor:
    """Median imputation with missingness indicators, then standard scaling.

    A thin wrapper over scikit-learn's ``SimpleImputer(add_indicator=True)`` and
    ``StandardScaler`` that keeps feature names. Fit it on meta-train galaxies
    only.
    """

    def __init__(self):
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.pipeline = make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                                      StandardScaler())
        self.feature_names_out_: list[str] | None = None

    def fit(self, X, names):
        X = np.asarray(X, float)
        if X.ndim != 2 or X.shape[1] != len(names):
            raise ValueError(f"X must be 2-D with one column per name; got shape {X.shape} and {len(names)} names")
        self.pipeline.fit(X)
        imputer = self.pipeline[0]
        missing = [names[j] + "_missing" for j in imputer.indicator_.features_] if imputer.indicator_ is not None else []
        self.feature_names_out_ = list(names) + missing
        return self

    def transform(self, X):
        if self.feature_names_out_ is None:
            raise RuntimeError("call fit() on meta-train galaxies before transform()")
        return self.pipeline.transform(np.asarray(X, float))


class TaskSampler:
    """Draws K-shot support and query sets from galaxy tasks.

    Parameters
    ----------
    X : ndarray, shape (n_galaxies, d_in)
        Preprocessed features.
    y : ndarray, shape (n_galaxies,) or (n_galaxies, d_out)
        Targets.
    tasks : list of Task
    n_support : int
        K, galaxies per support set.
    n_query : int
        Galaxies per query set (disjoint from the support set).

    Raises
    ------
    TooFewGalaxiesError
        If a task has fewer than ``n_support + n_query`` galaxies (the message
        names the task).
    """

    def __init__(self, X, y, tasks, n_support, n_query):
        X = np.asarray(X)
        y = np.asarray(y)
        if y.ndim == 1:
            y = y[:, None]
        if X.ndim != 2 or y.ndim != 2 or X.shape[0] != y.shape[0]:
            raise ValueError(f"X must be (n, d_in) and y (n,) or (n, d_out) with the same n; got {X.shape}, {y.shape}")
        if not tasks:
            raise ValueError("tasks is empty: no task to sample from (check the redshift splits and min_size)")
        if int(n_support) < 1 or int(n_query) < 1:
            raise ValueError(f"n_support and n_query must be >= 1, got {n_support}, {n_query}")
        need = int(n_support) + int(n_query)
        for task in tasks:
            if task.size < need:
                raise TooFewGalaxiesError(
                    f"task {task.name} ({task.split}) has {task.size} galaxies but n_support + n_query = {need}; "
                    "lower K or the query size, widen the window, or raise build_tasks(min_size=...)"
                )
        self.X, self.y, self.tasks = X, y, list(tasks)
        self.n_support, self.n_query = int(n_support), int(n_query)

    def sample_indices(self, rng, n_tasks=None, task_ids=None):
        """Galaxy indices ``(support (T, K), query (T, Q))`` and the task ids drawn."""
        if task_ids is None:
            task_ids = rng.integers(len(self.tasks), size=int(n_tasks))
        task_ids = np.asarray(task_ids)
        support = np.empty((task_ids.size, self.n_support), dtype=np.int64)
        query = np.empty((task_ids.size, self.n_query), dtype=np.int64)
        for row, t in enumerate(task_ids):
            pick = rng.choice(self.tasks[t].indices, size=self.n_support + self.n_query, replace=False)
            support[row], query[row] = pick[: self.n_support], pick[self.n_support:]
        return support, query, task_ids

    def sample(self, rng, n_tasks=None, task_ids=None):
        """A meta-batch ``(xs, ys, xq, yq)`` with shapes ``(T, K, d_in)`` etc."""
        support, query, _ = self.sample_indices(rng, n_tasks, task_ids)
        return self.X[support], self.y[support], self.X[query], self.y[query]

    def __call__(self, rng, n_tasks=25):
        return self.sample(rng, n_tasks)


@dataclass
class GalaxyTaskData:
    """Everything later notebooks need from notebook 02, built by :func:`prepare_galaxy_tasks`."""

    clean: object
    report: CleaningReport
    X: np.ndarray
    feature_names: list
    g_r: np.ndarray
    g_r_err: np.ndarray
    is_red: np.ndarray
    redshift: np.ndarray
    tasks: dict
    dropped: dict
    preprocessor: FeaturePreprocessor
    target_mean: float

    @property
    def y(self):
        """Centred g - r target (``g_r - target_mean``, mean of meta-train galaxies)."""
        return (self.g_r - self.target_mean)[:, None]

    def sampler(self, split, n_support, n_query):
        return TaskSampler(self.X, self.y, self.tasks[split], n_support, n_query)

    def train_indices(self):
        return np.unique(np.concatenate([t.indices for t in self.tasks["train"]]))


def prepare_galaxy_tasks(table, window=0.005, min_size=40, splits=None, include_photoz=False):
    """Clean, build features and targets, cut tasks and fit the preprocessor on meta-train.

    The whole of notebook 02 in one call, for notebooks 03-05.
    """
    clean, report = clean_galaxies(table)
    raw_X, names = galaxy_features(clean, include_photoz=include_photoz)
    g_r, g_r_err, is_red = redness_targets(clean)
    redshift = np.asarray(clean["z"], float)
    splits = splits or redshift_splits()
    tasks, dropped = build_tasks(redshift, splits, window=window, min_size=min_size)
    if not tasks["train"]:
        raise TooFewGalaxiesError("no meta-train task has enough galaxies; widen the window or lower min_size")
    train = np.unique(np.concatenate([t.indices for t in tasks["train"]]))
    preprocessor = FeaturePreprocessor().fit(raw_X[train], names)
    X = preprocessor.transform(raw_X)
    return GalaxyTaskData(clean=clean, report=report, X=X, feature_names=preprocessor.feature_names_out_,
                          g_r=g_r, g_r_err=g_r_err, is_red=is_red, redshift=redshift, tasks=tasks,
                          dropped=dropped, preprocessor=preprocessor, target_mean=float(g_r[train].mean()))
