"""Few-shot galaxy tasks: cleaning, target, features and leaks (re-exported), redshift slices, folds, sampling.

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

# the pipeline's first steps live in their own modules; their names stay importable from here
from galmeta.cleaning import (FEATURE_BANDS, FEATURE_SOURCES, FORBIDDEN_SOURCES, SENTINELS, STRATEVA_UR_CUT,
                              TARGET_NAME, CleaningReport, clean_galaxies, galaxy_features, redness_targets)
from galmeta.leaks import LeakReport, TargetLeakError, best_threshold_accuracy, measure_leaks, refuse_target_sources

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
    "refuse_target_sources",
    "FEATURE_SOURCES",
    "FORBIDDEN_SOURCES",
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

class TooFewGalaxiesError(ValueError):
    """A task has fewer galaxies than support plus query size."""



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
    #: Which galaxies belong to the sealed confirmation sample (:mod:`galmeta.samples`); None: none do.
    sealed: np.ndarray | None = None

    def fold(self, fold=0, n_folds=5, window=0.005, min_size=40, splits=None, clip=5.0, check_leaks=True,
             test_sample="development"):
        """Tasks, splits and preprocessing of one fold (see :func:`prepare_galaxy_tasks`).

        Meta-train and meta-validation tasks hold development galaxies only. ``test_sample="confirmation"``
        cuts the meta-test tasks from the sealed galaxies instead (a catalogue built with ``sample="all"``).
        """
        splits = splits or redshift_splits(fold, n_folds)
        sealed = np.zeros(self.redshift.shape, bool) if self.sealed is None else self.sealed
        if test_sample not in ("development", "confirmation"):
            raise ValueError(f"test_sample must be 'development' or 'confirmation', got {test_sample!r}")
        if test_sample == "confirmation" and not sealed.any():
            raise ValueError("this catalogue holds no sealed galaxy; build it with build_catalogue(table, sample='all')")
        tasks, dropped = build_tasks(np.where(sealed, np.nan, self.redshift), splits, window=window, min_size=min_size)
        if test_sample == "confirmation":
            sealed_tasks, sealed_dropped = build_tasks(np.where(sealed, self.redshift, np.nan), splits, window=window,
                                                       min_size=min_size)
            tasks["test"], dropped["test"] = sealed_tasks["test"], sealed_dropped["test"]
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


def build_catalogue(table, include_photoz=False, sample="development"):
    """Clean a galaxy table and compute raw features, target and label (notebook 02 in one call).

    ``sample``: ``"development"`` (default) leaves out the galaxies of the sealed confirmation sample
    (:mod:`galmeta.samples`), so that nothing tuned or looked at ever sees them; ``"all"`` keeps them and
    marks them (for ``benchmarks/redness_evaluation.py --confirm``). A table without ``objID`` has no
    sealed galaxies.
    """
    from galmeta.samples import SAMPLES, sealed_galaxies

    if sample not in ("development", "all"):
        raise ValueError(f"sample must be 'development' or 'all' (the sealed galaxies are evaluated through "
                         f"fold(..., test_sample='confirmation') of an 'all' catalogue), got {sample!r}; "
                         f"samples are {SAMPLES}")
    clean, report = clean_galaxies(table)
    sealed = sealed_galaxies(clean["objID"]) if "objID" in clean.colnames else np.zeros(len(clean), bool)
    if sample == "development" and sealed.any():
        clean = clean[~sealed]
        report.steps.append(("sealed confirmation sample (set aside)", int(sealed.sum()), len(clean)))
        sealed = np.zeros(len(clean), bool)
    if len(clean) == 0:
        raise TooFewGalaxiesError(
            "cleaning left no galaxy: every row failed a step (see the cleaning report below). A column may be "
            f"empty or all sentinel values; check the table's source.\n{report}"
        )
    X_raw, names = galaxy_features(clean, include_photoz=include_photoz)
    if not include_photoz:  # include_photoz is notebook 02's deliberate leak, measured there
        refuse_target_sources({name: FEATURE_SOURCES[name] for name in names}, FORBIDDEN_SOURCES)
    target, target_err, is_red = redness_targets(clean)
    return GalaxyCatalogue(clean=clean, report=report, X_raw=X_raw, feature_names=names, target=target,
                           target_err=target_err, is_red=is_red, redshift=np.asarray(clean["z"], float),
                           sealed=sealed)


@dataclass
class GalaxyTaskData:
    """One fold of the galaxy tasks: what notebooks 03-07 need, built by :func:`prepare_galaxy_tasks`."""

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
