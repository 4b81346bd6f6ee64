"""SAMI Galaxy Survey DR3: redness from element abundance, size and shape, with environments as tasks.

Introduced in ``notebooks/07_sami_abundance_size_shape.py``.

The course's first question asked for a galaxy's **redness from its element abundance, its size and its
shape**. SAMI DR3 (Croom et al. 2021) measures all three for the same galaxies: stellar metallicity
``[Z/H]`` and ``[alpha/Fe]`` from full-spectrum fitting within one effective radius, the effective radius
``r_e`` and ellipticity from Sersic photometry, and the ``g - i`` colour, for a stellar-mass-selected sample
at ``z < 0.12`` in three GAMA fields and eight clusters. The tables ship with galmeta
(``galmeta/datasets/sami_dr3/``, provenance and citations beside them).

* :func:`read_sami_tables` reads the six embedded tables unchanged;
* :func:`build_sami_catalogue` joins and cleans them (every removal counted), converts sizes to kpc with
  an astropy cosmology, keeps missing values visible, and cuts the galaxies into **environments**: each
  cluster, and redshift/sky sub-regions of the GAMA fields;
* :meth:`SamiCatalogue.fold` deals the environments to meta-train, meta-validation and meta-test
  (rotating over folds, disjoint by environment) and returns a :class:`galmeta.tasks.GalaxyTaskData`, so the
  evaluation of :mod:`galmeta.evaluate` runs on it unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from galmeta.tasks import CleaningReport, FeaturePreprocessor, GalaxyTaskData, Task, TooFewGalaxiesError, measure_leaks

__all__ = [
    "SAMI_TABLES",
    "CLUSTERS",
    "GAMA_FIELDS",
    "COSMOLOGY",
    "sami_data_dir",
    "read_sami_tables",
    "build_sami_catalogue",
    "SamiCatalogue",
    "valley_threshold",
]

#: The embedded tables, by short name.
SAMI_TABLES = {
    "gama": "sami_InputCatGAMADR3.csv.gz",
    "clusters": "sami_InputCatClustersDR3.csv.gz",
    "ssp": "sami_SSPAperturesDR3.csv.gz",
    "mge": "sami_MGEPhotomUnregDR3.csv.gz",
    "morphology": "sami_VisualMorphologyDR3.csv.gz",
    "cubes": "sami_CubeObs.csv.gz",
}

#: SAMI's eight clusters, by the leading digits of a cluster galaxy's ``catid`` (Owers et al. 2017).
CLUSTERS = {90085: "A85", 90119: "A119", 90168: "A168", 90442: "EDCC0442", 90917: "APMCC0917", 92399: "A2399",
            93880: "A3880", 94038: "A4038"}

#: The three GAMA equatorial fields of SAMI, by right ascension (deg).
GAMA_FIELDS = {"G09": (125.0, 145.0), "G12": (170.0, 190.0), "G15": (205.0, 230.0)}

#: Sizes in kpc use a flat Lambda-CDM cosmology with H0 = 70 km/s/Mpc and Omega_m = 0.3 (SAMI's own choice).
COSMOLOGY = {"H0": 70.0, "Om0": 0.3}

#: SAMI writes -99 for "not measured".
SENTINEL = -99.0

#: Effective radii above this (arcsec) are failed photometry (a handful of rows; the SAMI bundles are 15" wide).
MAX_RE_ARCSEC = 60.0


def sami_data_dir() -> Path:
    """Folder of the embedded SAMI DR3 tables."""
    return Path(__file__).resolve().parent / "datasets" / "sami_dr3"


def read_sami_tables(folder=None) -> dict:
    """The six SAMI DR3 tables as astropy Tables (unchanged; the unnamed index column dropped).

    Raises
    ------
    galmeta.data.NoDataError
        If a table is missing (the message names it).
    """
    from astropy.table import Table

    from galmeta.data import NoDataError, sniff_file

    folder = Path(folder) if folder is not None else sami_data_dir()
    tables = {}
    for key, name in SAMI_TABLES.items():
        path = folder / name
        if not path.is_file():
            raise NoDataError(f"the SAMI table {name} is missing from {folder}; reinstall galmeta or point "
                              "read_sami_tables(folder=...) at a folder holding the six SAMI DR3 files")
        sniff_file(path)
        table = Table.read(path, format="ascii.csv")
        if "col0" in table.colnames:
            table.remove_column("col0")
        tables[key] = table
    return tables


def _numbers(column):
    values = np.asarray(getattr(column, "filled", lambda v: column)(np.nan), dtype=float)
    return np.where(values == SENTINEL, np.nan, values)


def valley_threshold(values, seed=0):
    """The colour between the two populations of a two-Gaussian mixture where either is equally likely.

    Used to define red and blue from meta-train galaxies only (SAMI has no published cut in ``g - i``).
    """
    from sklearn.mixture import GaussianMixture

    values = np.asarray(values, float)
    values = values[np.isfinite(values)][:, None]
    mixture = GaussianMixture(2, random_state=seed).fit(values)
    low, high = np.sort(mixture.means_.ravel())
    grid = np.linspace(low, high, 2001)[:, None]
    posterior = mixture.predict_proba(grid)[:, int(np.argmax(mixture.means_.ravel()))]
    return float(grid[int(np.argmin(np.abs(posterior - 0.5))), 0])


@dataclass
class SamiCatalogue:
    """Cleaned SAMI galaxies with raw features, the g - i target and their environments.

    Made by :func:`build_sami_catalogue`; :meth:`fold` gives the tasks of one fold.
    """

    clean: dict
    report: CleaningReport
    X_raw: np.ndarray
    feature_names: list
    target: np.ndarray
    target_err: np.ndarray
    redshift: np.ndarray
    environment: np.ndarray
    environments: list = field(default_factory=list)
    target_name: str = "g − i"

    def environment_folds(self, n_folds=5):
        """Fold number of every environment: clusters and GAMA regions interleaved, then dealt round-robin."""
        clusters = [e for e in self.environments if not e.startswith("G")]
        regions = [e for e in self.environments if e.startswith("G")]
        order = []
        for i in range(max(len(clusters), len(regions))):
            order += ([regions[i]] if i < len(regions) else []) + ([clusters[i]] if i < len(clusters) else [])
        return {name: i % int(n_folds) for i, name in enumerate(order)}

    def fold(self, fold=0, n_folds=5, window=None, min_size=40, splits=None, clip=5.0, check_leaks=True):
        """Meta-train, meta-validation and meta-test environments of one fold, as :class:`GalaxyTaskData`.

        Fold ``f`` tests the environments dealt to ``f`` and validates on those dealt to ``f + 1``; every
        environment is meta-test in exactly one fold. ``window`` is ignored (tasks are environments). The
        red/blue threshold is the valley of ``g - i`` among meta-train galaxies.
        """
        if not 0 <= int(fold) < int(n_folds):
            raise ValueError(f"fold must be in 0..{int(n_folds) - 1}, got {fold!r}")
        assignment = self.environment_folds(n_folds)
        tasks, dropped = {"train": [], "val": [], "test": []}, {"train": 0, "val": 0, "test": 0}
        for name in self.environments:
            role = (assignment[name] - int(fold)) % int(n_folds)
            split = "test" if role == 0 else ("val" if role == 1 else "train")
            indices = np.flatnonzero(self.environment == name)
            if indices.size < min_size:
                dropped[split] += 1
                continue
            z = self.redshift[indices]
            tasks[split].append(Task(name, split, round(float(z.min()), 4), round(float(z.max()), 4), indices))
        for split in tasks:
            if not tasks[split]:
                raise TooFewGalaxiesError(f"fold {fold} has no meta-{split} environment with {min_size} galaxies")
        train = np.unique(np.concatenate([t.indices for t in tasks["train"]]))
        threshold = valley_threshold(self.target[train])
        is_red_train = self.target[train] >= threshold
        leaks = measure_leaks(self.X_raw[train], self.feature_names, self.target[train], self.target_err[train],
                              is_red_train)
        if check_leaks:
            leaks.check()
        preprocessor = FeaturePreprocessor(clip=clip).fit(self.X_raw[train], self.feature_names)
        return GalaxyTaskData(catalogue=self, fold=int(fold), n_folds=int(n_folds), splits=[], X=preprocessor.transform(self.X_raw),
                              feature_names=preprocessor.feature_names_out_, tasks=tasks, dropped=dropped,
                              preprocessor=preprocessor, target_mean=float(self.target[train].mean()), leaks=leaks,
                              label_threshold=threshold)


#: Feature sets: the seed's question (abundance, size, shape), and the optional extras.
FEATURES = {
    "abundance": ("z_re_mge", "alpha_re_mge"),
    "size": ("log_re_kpc",),
    "shape": ("ellip",),
    "morphology": ("morphology",),
    "age": ("log_age_re_mge",),
    "mass": ("mstar",),
}


def build_sami_catalogue(features=("abundance", "size", "shape"), n_gama_z=3, n_gama_ra=2, tables=None):
    """Join, clean and cut the SAMI DR3 tables into environments.

    Steps (each counted in ``report``):

    1. stellar populations (``SSPAperturesDR3``) joined to their cube (``CubeObs``); keep the best cube of
       each galaxy (``isbest``), and drop cubes with a redshift warning (``warnz``) or several objects in the
       bundle (``warnmult``);
    2. joined to the GAMA and cluster input catalogues on ``catid``; drop ``bad_class != 0`` and cluster
       galaxies that are not members (``is_mem = 0``): a cluster's task is its members;
    3. -99 becomes missing (kept, imputed later with an indicator); rows without the ``g - i`` target or a
       redshift are dropped; ``r_e`` above 60" (failed photometry) is dropped;
    4. sizes in kpc: ``r_e`` times the angular diameter distance (flat Lambda-CDM, H0 = 70, Omega_m = 0.3).

    Parameters
    ----------
    features : tuple of str
        Keys of :data:`FEATURES`: ``abundance``, ``size``, ``shape`` (the question), and optionally
        ``morphology``, ``age``, ``mass`` (``mass`` leaks: SAMI derives stellar mass from ``g - i``).
    n_gama_z, n_gama_ra : int
        Each GAMA field is cut into ``n_gama_z`` redshift bins times ``n_gama_ra`` strips in right ascension.

    Returns
    -------
    SamiCatalogue
    """
    import astropy.units as u
    from astropy.cosmology import FlatLambdaCDM

    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ValueError(f"features {sorted(unknown)} are unknown; choose from {sorted(FEATURES)}")
    tables = tables or read_sami_tables()
    report = CleaningReport(n_input=len(tables["ssp"]))
    ssp, cubes = tables["ssp"], tables["cubes"]

    # 1. the best cube of each galaxy, without redshift or multiple-object warnings
    cube_row = {str(c): i for i, c in enumerate(cubes["cubeid"])}
    rows = np.array([cube_row.get(str(c), -1) for c in ssp["cubeid"]])
    keep = rows >= 0
    report.steps.append(("cube not in CubeObs", int((~keep).sum()), int(keep.sum())))
    isbest = np.array([str(cubes["isbest"][r]).strip() == "True" if r >= 0 else False for r in rows])
    step_keep = keep & isbest
    report.steps.append(("not the best cube of its galaxy (isbest)", int((keep & ~isbest).sum()), int(step_keep.sum())))
    keep = step_keep
    for flag, label in (("warnz", "cube redshift warning (warnz)"), ("warnmult", "several objects in the bundle (warnmult)")):
        bad = np.array([int(cubes[flag][r]) != 0 if r >= 0 else True for r in rows])
        report.steps.append((label, int((keep & bad).sum()), int((keep & ~bad).sum())))
        keep &= ~bad
    catid = np.asarray(ssp["catid"], dtype=np.int64)
    _, first = np.unique(catid[keep], return_index=True)
    unique_keep = np.zeros(len(ssp), bool)
    unique_keep[np.flatnonzero(keep)[first]] = True
    report.steps.append(("second cube of the same galaxy", int((keep & ~unique_keep).sum()), int(unique_keep.sum())))
    keep = unique_keep

    # 2. the input catalogues
    gama, clusters = tables["gama"], tables["clusters"]
    source = {}
    for kind, table in (("gama", gama), ("clusters", clusters)):
        for i, c in enumerate(np.asarray(table["catid"], dtype=np.int64)):
            source[int(c)] = (kind, i)
    found = np.array([int(c) in source for c in catid])
    report.steps.append(("not in the GAMA or cluster input catalogue", int((keep & ~found).sum()), int((keep & found).sum())))
    keep &= found

    def input_value(column, default=np.nan):
        out = np.full(len(ssp), default, dtype=float)
        for j in np.flatnonzero(keep):
            kind, i = source[int(catid[j])]
            table = gama if kind == "gama" else clusters
            if column in table.colnames:
                value = table[column][i]
                out[j] = np.nan if np.ma.is_masked(value) else float(value)
        return out

    in_cluster = np.array([source[int(c)][0] == "clusters" if int(c) in source else False for c in catid])
    bad_class = input_value("bad_class", 0.0)
    step_keep = keep & (bad_class == 0)
    report.steps.append(("bad_class != 0 (not a good SAMI target)", int((keep & ~step_keep).sum()), int(step_keep.sum())))
    keep = step_keep
    member = input_value("is_mem", 1.0)
    step_keep = keep & ~(in_cluster & (member != 1))
    report.steps.append(("cluster field galaxy, not a member (is_mem = 0)", int((keep & ~step_keep).sum()), int(step_keep.sum())))
    keep = step_keep

    # 3. values, sentinels, target and redshift
    g_i, z_spec, r_e, ellip = (np.where(input_value(c) == SENTINEL, np.nan, input_value(c)) for c in ("g_i", "z_spec", "r_e", "ellip"))
    mstar, ra = input_value("mstar"), input_value("ra_obj")
    columns = {name: _numbers(ssp[name]) for name in ("z_re_mge", "alpha_re_mge", "age_re_mge")}
    report.notes["-99 set to missing: [Z/H], [alpha/Fe], age"] = ", ".join(
        str(int(np.sum((np.asarray(ssp[n], float) == SENTINEL) & keep))) for n in ("z_re_mge", "alpha_re_mge", "age_re_mge"))
    step_keep = keep & np.isfinite(g_i) & np.isfinite(z_spec) & (z_spec > 0)
    report.steps.append(("no g - i colour or redshift", int((keep & ~step_keep).sum()), int(step_keep.sum())))
    keep = step_keep
    step_keep = keep & ~(r_e > MAX_RE_ARCSEC)
    report.steps.append((f"r_e above {MAX_RE_ARCSEC:.0f} arcsec (failed photometry)", int((keep & ~step_keep).sum()), int(step_keep.sum())))
    keep = step_keep

    # 4. sizes in kpc
    cosmology = FlatLambdaCDM(**COSMOLOGY)
    distance_kpc = cosmology.angular_diameter_distance(np.where(keep, z_spec, 0.05)).to(u.kpc).value
    with np.errstate(divide="ignore", invalid="ignore"):
        r_e_kpc = r_e * distance_kpc / 206264.806
        log_re = np.log10(r_e_kpc)
        log_age = np.log10(columns["age_re_mge"])
    morphology = np.full(len(ssp), np.nan)
    morph_of = {int(c): float(t) for c, t in zip(tables["morphology"]["catid"], tables["morphology"]["type"])}
    for j in np.flatnonzero(keep):
        value = morph_of.get(int(catid[j]), np.nan)
        morphology[j] = np.nan if value < 0 or value > 3 else value  # -9 unclassified, 5 "unknown"
    values = {"z_re_mge": columns["z_re_mge"], "alpha_re_mge": columns["alpha_re_mge"], "log_re_kpc": log_re,
              "ellip": ellip, "morphology": morphology, "log_age_re_mge": log_age, "mstar": mstar}

    # environments
    index = np.flatnonzero(keep)
    environment = np.empty(index.size, dtype=object)
    for n, j in enumerate(index):
        if in_cluster[j]:
            environment[n] = CLUSTERS.get(int(catid[j]) // 100_000, f"cluster {int(catid[j]) // 100_000}")
        else:
            field_name = next((f for f, (lo, hi) in GAMA_FIELDS.items() if lo <= ra[j] <= hi), "G?")
            environment[n] = field_name
    z_kept, ra_kept = z_spec[index], ra[index]
    for field_name in GAMA_FIELDS:
        members = np.flatnonzero(environment == field_name)
        if members.size == 0:
            continue
        z_edges = np.quantile(z_kept[members], np.linspace(0, 1, n_gama_z + 1))
        ra_edges = np.quantile(ra_kept[members], np.linspace(0, 1, n_gama_ra + 1))
        z_bin = np.clip(np.searchsorted(z_edges, z_kept[members], side="right") - 1, 0, n_gama_z - 1)
        ra_bin = np.clip(np.searchsorted(ra_edges, ra_kept[members], side="right") - 1, 0, n_gama_ra - 1)
        for m, zb, rb in zip(members, z_bin, ra_bin):
            environment[m] = (f"{field_name} z{z_edges[zb]:.3f}-{z_edges[zb + 1]:.3f} "
                              f"RA{ra_edges[rb]:.1f}-{ra_edges[rb + 1]:.1f}")
    environment = environment.astype(str)
    names = [name for key in features for name in FEATURES[key]]
    X_raw = np.column_stack([values[name][index] for name in names])
    clean = {"catid": catid[index], "ra": ra[index], "z": z_kept, "g_i": g_i[index], "r_e_arcsec": r_e[index],
             "r_e_kpc": r_e_kpc[index], "in_cluster": in_cluster[index], "environment": environment,
             **{name: values[name][index] for name in values}}
    report.notes["environments"] = len(np.unique(environment))
    return SamiCatalogue(clean=clean, report=report, X_raw=X_raw, feature_names=names, target=g_i[index],
                         target_err=np.zeros(index.size), redshift=z_kept, environment=environment,
                         environments=sorted(np.unique(environment)))
