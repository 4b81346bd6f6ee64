"""Cleaning, the redness target, features, leak measurement and few-shot galaxy tasks.

Introduced in ``notebooks/02_clean_and_tasks.py``.

The pipeline is

1. :func:`clean_galaxies` removes duplicate objects, turns sentinels and empty
   values into NaN, drops non-physical redshifts and outlier photometry, and
   reports every count.
2. :func:`redness_targets` gives the observed-frame ``u - r`` colour (regression
   target, with its measurement error) and the red-sequence label of Strateva
   et al. (2001), ``u - r >= 2.22``: the target thresholded.
3. :func:`galaxy_features` builds the inputs from the **g, r, i, z** bands and
   their errors: the u band (the target's) never enters, and no spectroscopic
   column does. :func:`measure_leaks` checks by measurement that no single
   feature predicts the label as well as the target itself.
4. :func:`redshift_splits` and :func:`build_tasks` cut the catalogue into narrow
   redshift windows (``cosmic slices``) whose redshift is hidden from the
   features; blocks of redshift rotate through meta-train, meta-validation and
   meta-test over ``n_folds`` folds, so every block is meta-test once.
5. :class:`FeaturePreprocessor` imputes (with missingness indicators), scales
   and clips, fitted on meta-train galaxies only; :class:`TaskSampler` draws
   K-shot support and query sets with a seeded :class:`numpy.random.Generator`.
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
    "TARGET_NAME",
    "FEATURE_BANDS",
    "galaxy_features",
    "TargetLeakError",
    "LeakReport",
    "measure_leaks",
    "best_threshold_accuracy",
    "Task",
    "redshift_splits",
    "build_tasks",
    "FeaturePreprocessor",
    "TaskSampler",
    "TooFewGalaxiesError",
    "GalaxyTaskData",
    "GalaxyCatalogue",
    "build_catalogue",
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


class TargetLeakError(ValueError):
    """A single input feature predicts the label at least as well as the measured target does."""


def best_threshold_accuracy(values, labels):
    """Best balanced accuracy of a one-feature threshold rule (either direction), and its threshold.

    Missing values (NaN) are ignored.

    Returns
    -------
    balanced_accuracy : float
    threshold : float
    direction : int
        +1: ``values >= threshold`` predicts the positive class; -1: ``values < threshold`` does.

    Examples
    --------
    >>> best_threshold_accuracy([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
    (1.0, 0.5, 1)
    """
    values, labels = np.asarray(values, float), np.asarray(labels, bool)
    keep = np.isfinite(values)
    values, labels = values[keep], labels[keep]
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("labels must contain both classes to measure a threshold rule")
    order = np.argsort(values, kind="stable")
    sorted_values, sorted_labels = values[order], labels[order]
    # cut k: the k smallest values are predicted negative; only cuts between distinct values count
    below_pos = np.concatenate([[0], np.cumsum(sorted_labels)])
    below_neg = np.concatenate([[0], np.cumsum(~sorted_labels)])
    upward = 0.5 * ((n_pos - below_pos) / n_pos + below_neg / n_neg)
    valid = np.ones(values.size + 1, bool)
    valid[1:-1] = sorted_values[1:] > sorted_values[:-1]
    scores = np.where(valid, np.maximum(upward, 1.0 - upward), -np.inf)
    k = int(np.argmax(scores))
    edges = np.concatenate([[-np.inf], sorted_values])
    threshold = float(sorted_values[k] if k < values.size else np.inf)
    if 0 < k < values.size:
        threshold = 0.5 * (edges[k] + sorted_values[k])
    return float(scores[k]), float(threshold), (1 if upward[k] >= 0.5 else -1)


@dataclass
class LeakReport:
    """What :func:`measure_leaks` found: each feature's balanced accuracy against the label's ceiling."""

    feature_scores: dict
    ceiling: float
    noiseless_ceiling: float = 1.0

    @property
    def worst(self):
        name = max(self.feature_scores, key=self.feature_scores.get)
        return name, self.feature_scores[name]

    @property
    def leaking(self) -> list:
        return [n for n, v in self.feature_scores.items() if v >= self.ceiling]

    def as_text(self) -> str:
        lines = [f"{'feature':<14s} balanced accuracy of its best threshold"]
        for name, value in sorted(self.feature_scores.items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:<14s} {value:.3f}" + ("   <- LEAK" if value >= self.ceiling else ""))
        lines.append(f"{'ceiling':<14s} {self.ceiling:.3f}  (thresholding the target re-measured with its own errors)")
        return "\n".join(lines)

    def check(self):
        """Raise :class:`TargetLeakError` if any feature reaches the ceiling."""
        if self.leaking:
            name, value = self.worst
            raise TargetLeakError(
                f"feature {name!r} alone predicts the red/blue label with balanced accuracy {value:.3f}, at least "
                f"as well as the measured target does ({self.ceiling:.3f}): it carries the label's information "
                f"(leaking: {self.leaking}). Drop it from the features."
            )
        return self


def measure_leaks(X, names, target, target_err, labels, seed=0):
    """Measure, feature by feature, how well one input alone predicts the label.

    The ceiling is what a perfect estimate of the true target reaches on the
    label as measured: the target re-drawn with its own measurement errors,
    thresholded at the best cut. An input that separates the label as well as
    that ceiling carries the label's own information (as ``u - i`` would for a
    ``u - r`` label): that is a leak, whatever its name.

    Parameters
    ----------
    X : ndarray, shape (n, d)
        Raw (unscaled) features; measure them on meta-train galaxies.
    names : list of str
    target, target_err : ndarray, shape (n,)
    labels : ndarray of bool, shape (n,)
    seed : int
        Seed of the re-measurement.

    Returns
    -------
    LeakReport
        Call ``.check()`` to raise on a leak.
    """
    X = np.asarray(X, float)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"X must be (n, len(names)); got {X.shape} and {len(names)} names")
    scores = {name: best_threshold_accuracy(X[:, j], labels)[0] for j, name in enumerate(names)}
    rng = np.random.default_rng(seed)
    remeasured = np.asarray(target, float) + rng.normal(size=len(target)) * np.asarray(target_err, float)
    ceiling = best_threshold_accuracy(remeasured, labels)[0]
    return LeakReport(scores, ceiling)


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


def redshift_splits(fold=0, n_folds=5, z_min=0.01, z_max=0.21, block=0.02):
    """Cut ``[z_min, z_max)`` into blocks and deal them to meta-train, meta-validation and meta-test.

    Block ``k`` is meta-test in fold ``(k - 2) mod n_folds`` and meta-validation
    in fold ``(k - 4) mod n_folds``; the rest is meta-train. Rotating ``fold``
    over ``0 .. n_folds - 1`` makes every block meta-test exactly once (k-fold
    over blocks), and every split stays spread over the redshift range; the
    ranges of different splits never overlap. Fold 0 deals the blocks
    train, train, test, train, val, ...

    Returns
    -------
    list of (z_lo, z_hi, split)

    Examples
    --------
    >>> [split for _, _, split in redshift_splits(fold=0)]
    ['train', 'train', 'test', 'train', 'val', 'train', 'train', 'test', 'train', 'val']
    >>> [split for _, _, split in redshift_splits(fold=1)][:5]
    ['val', 'train', 'train', 'test', 'train']
    """
    if not (np.isfinite(z_min) and np.isfinite(z_max) and z_min < z_max):
        raise ValueError(f"need finite z_min < z_max, got z_min={z_min!r}, z_max={z_max!r}")
    if not (np.isfinite(block) and block > 0):
        raise ValueError(f"block must be a positive redshift width, got {block!r}")
    if int(n_folds) < 3:
        raise ValueError(f"n_folds must be >= 3 (one test, one validation and one training block each), got {n_folds!r}")
    if not 0 <= int(fold) < int(n_folds):
        raise ValueError(f"fold must be in 0..{int(n_folds) - 1}, got {fold!r}")
    n_blocks = int(round((z_max - z_min) / block))
    if n_blocks < n_folds:
        raise ValueError(f"{n_blocks} blocks of {block} between {z_min} and {z_max} cannot fill {n_folds} folds")
    edges = z_min + block * np.arange(n_blocks + 1)
    splits = []
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        role = (k - int(fold)) % int(n_folds)
        split = "test" if role == 2 % int(n_folds) else ("val" if role == 4 % int(n_folds) else "train")
        splits.append((round(float(lo), 6), round(float(hi), 6), split))
    return splits


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
    for name, value in (("window", window), ("train_stride", train_stride)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive redshift width, got {value!r}")
    for lo, hi, split in splits:
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"split block ({lo!r}, {hi!r}, {split!r}) must have finite edges with lo < hi")
        if split not in ("train", "val", "test"):
            raise ValueError(f"split block names {split!r}; use 'train', 'val' or 'test'")
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
    """Median imputation with missingness indicators, standard scaling, then clipping.

    Built from scikit-learn's ``SimpleImputer(add_indicator=True)`` and
    ``StandardScaler``, keeping feature names. Fit it on meta-train galaxies
    only. The measured features are scaled and clipped to ``[-clip, clip]``:
    a handful of galaxies with unusual colours would otherwise sit ten or more
    standard deviations out, where a network adapted to K galaxies extrapolates
    wildly. The missingness indicators stay 0/1: scaled, a rare indicator
    (1% missing) would put every galaxy that has it near +10.

    Parameters
    ----------
    clip : float or None, default 5.0
        Bound on the scaled features (None: no clipping).

    Attributes
    ----------
    imputer : sklearn.impute.SimpleImputer
    scaler : sklearn.preprocessing.StandardScaler
        Fitted on the measured features only (not on the indicators).
    feature_names_out_ : list of str
        The names, then ``NAME_missing`` for each indicator.
    """

    def __init__(self, clip: float | None = 5.0):
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import StandardScaler

        if clip is not None and not (np.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive number or None, got {clip!r}")
        self.clip = clip
        self.imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
        self.scaler = StandardScaler()
        self.feature_names_out_: list[str] | None = None
        self.n_measured_ = 0

    def fit(self, X, names):
        X = np.asarray(X, float)
        if X.ndim != 2 or X.shape[1] != len(names):
            raise ValueError(f"X must be 2-D with one column per name; got shape {X.shape} and {len(names)} names")
        if X.shape[0] == 0:
            raise ValueError("X has no rows: there are no meta-train galaxies to fit the preprocessing on")
        self.n_measured_ = X.shape[1]
        imputed = self.imputer.fit_transform(np.where(np.isinf(X), np.nan, X))
        self.scaler.fit(imputed[:, : self.n_measured_])
        indicator = self.imputer.indicator_
        missing = [names[j] + "_missing" for j in indicator.features_] if indicator is not None else []
        self.feature_names_out_ = list(names) + missing
        return self

    def transform(self, X):
        if self.feature_names_out_ is None:
            raise RuntimeError("call fit() on meta-train galaxies before transform()")
        X = np.asarray(X, float)
        imputed = self.imputer.transform(np.where(np.isinf(X), np.nan, X))
        scaled = self.scaler.transform(imputed[:, : self.n_measured_])
        if self.clip is not None:
            scaled = np.clip(scaled, -self.clip, self.clip)
        return np.column_stack([scaled, imputed[:, self.n_measured_:]])


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
class GalaxyCatalogue:
    """The cleaned catalogue with raw features, target and label: built once, cut into folds.

    Made by :func:`build_catalogue`; :meth:`fold` gives the tasks of one fold.
    """

    clean: object
    report: CleaningReport
    X_raw: np.ndarray
    feature_names: list
    target: np.ndarray
    target_err: np.ndarray
    is_red: np.ndarray
    redshift: np.ndarray
    target_name: str = "u − r"

    def fold(self, fold=0, n_folds=5, window=0.005, min_size=40, splits=None, clip=5.0, check_leaks=True):
        """Tasks, splits and preprocessing of one fold (see :func:`prepare_galaxy_tasks`)."""
        splits = splits or redshift_splits(fold, n_folds)
        tasks, dropped = build_tasks(self.redshift, splits, window=window, min_size=min_size)
        for split in ("train", "val", "test"):
            if not tasks[split]:
                raise TooFewGalaxiesError(
                    f"no meta-{split} task of fold {fold} has {min_size} galaxies (windows of {window} in redshift); "
                    "lower min_size, widen the window, or check that the table covers redshifts 0.01-0.21"
                )
        train = np.unique(np.concatenate([t.indices for t in tasks["train"]]))
        leaks = measure_leaks(self.X_raw[train], self.feature_names, self.target[train], self.target_err[train],
                              self.is_red[train])
        if check_leaks:
            leaks.check()
        preprocessor = FeaturePreprocessor(clip=clip).fit(self.X_raw[train], self.feature_names)
        return GalaxyTaskData(catalogue=self, fold=int(fold), n_folds=int(n_folds), splits=splits,
                              X=preprocessor.transform(self.X_raw), feature_names=preprocessor.feature_names_out_,
                              tasks=tasks, dropped=dropped, preprocessor=preprocessor,
                              target_mean=float(self.target[train].mean()), leaks=leaks,
                              label_threshold=STRATEVA_UR_CUT)


def build_catalogue(table, include_photoz=False):
    """Clean a galaxy table and compute raw features, target and label (notebook 02 in one call)."""
    clean, report = clean_galaxies(table)
    if len(clean) == 0:
        raise TooFewGalaxiesError(
            "cleaning left no galaxy: every row failed a step (see the cleaning report below). A column may be "
            f"empty or all sentinel values; check the table's source.\n{report}"
        )
    X_raw, names = galaxy_features(clean, include_photoz=include_photoz)
    target, target_err, is_red = redness_targets(clean)
    return GalaxyCatalogue(clean=clean, report=report, X_raw=X_raw, feature_names=names, target=target,
                           target_err=target_err, is_red=is_red, redshift=np.asarray(clean["z"], float))


@dataclass
class GalaxyTaskData:
    """One fold of the galaxy tasks: what notebooks 03-05 need, built by :func:`prepare_galaxy_tasks`."""

    catalogue: GalaxyCatalogue
    fold: int
    n_folds: int
    splits: list
    X: np.ndarray
    feature_names: list
    tasks: dict
    dropped: dict
    preprocessor: FeaturePreprocessor
    target_mean: float
    leaks: LeakReport
    label_threshold: float = STRATEVA_UR_CUT

    # the catalogue's per-galaxy arrays, for convenience
    clean = property(lambda self: self.catalogue.clean)
    report = property(lambda self: self.catalogue.report)
    target = property(lambda self: self.catalogue.target)
    target_err = property(lambda self: self.catalogue.target_err)
    redshift = property(lambda self: self.catalogue.redshift)
    target_name = property(lambda self: getattr(self.catalogue, "target_name", "u − r"))

    @property
    def is_red(self):
        """The label: the target at or above this fold's threshold (SDSS: Strateva's 2.22 in u - r)."""
        return self.target >= self.label_threshold

    @property
    def y(self):
        """Centred u - r target (``target - target_mean``, mean of meta-train galaxies), shape (n, 1)."""
        return (self.target - self.target_mean)[:, None]

    def sampler(self, split, n_support, n_query):
        return TaskSampler(self.X, self.y, self.tasks[split], n_support, n_query)

    def indices(self, split):
        """Every galaxy of a split's tasks (sorted, unique)."""
        return np.unique(np.concatenate([t.indices for t in self.tasks[split]]))

    def train_indices(self):
        return self.indices("train")


def prepare_galaxy_tasks(table, fold=0, n_folds=5, window=0.005, min_size=40, splits=None, include_photoz=False,
                         clip=5.0, check_leaks=True):
    """Clean, build features and targets, cut tasks and fit the preprocessor on meta-train.

    Parameters
    ----------
    table : astropy.table.Table or GalaxyCatalogue
        The galaxy table (cleaned here) or a catalogue from :func:`build_catalogue`.
    fold, n_folds : int
        Which rotation of the redshift blocks (:func:`redshift_splits`).
    window, min_size : float, int
        Task width in redshift and smallest task kept (:func:`build_tasks`).
    include_photoz : bool
        Add the leaking photo-z (only for notebook 02's demonstration; implies no leak check).
    check_leaks : bool, default True
        Raise :class:`TargetLeakError` when a feature alone predicts the label as well as the target does.

    Returns
    -------
    GalaxyTaskData
    """
    catalogue = table if isinstance(table, GalaxyCatalogue) else build_catalogue(table, include_photoz=include_photoz)
    return catalogue.fold(fold, n_folds, window=window, min_size=min_size, splits=splits, clip=clip,
                          check_leaks=check_leaks and not include_photoz)
