# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Fetching SDSS galaxies
#
# **Learning goals**
# - know the astronomy the course uses: magnitudes, the five SDSS bands, colours, the red sequence and the
#   blue cloud, redshift and what it does to observed colours, the selection of a flux-limited sample;
# - read the SkyServer SQL that selects the course's galaxies, and know what each cut is for;
# - fetch it with `astroquery.sdss.SDSS.query_sql`, or load the course's own table (embedded, cached or imported);
# - see the red sequence and the blue cloud in colour–magnitude and colour–colour diagrams;
# - know how the photometric errors grow with magnitude (they become noise weights later).
#
# **Prerequisites:** Python and NumPy; no astronomy (the primer below covers what the course uses).
#
# **Runtime:** 5.0 s in laptop mode, 6.7 s in CI mode (measured on a 2-core CPU, embedded table); no GPU work. A live fetch depends on SkyServer's load and was not timed (our CI has no network).
#
# **Data:** the course's table (25,000 SDSS galaxies) ships inside the package, so this runs without
# network. With network, this notebook also asks SkyServer for one small live page; a live table for the
# whole course is one command away (`galmeta data fetch`, then `GALMETA_SOURCE=live`; see the README).

# %% Colab or a bare kernel: install the course package when it is missing (a no-op when it is installed)
import importlib.util, os, subprocess, sys  # noqa: E401
COURSE_COMMIT = "main"  # `galmeta course generate` writes here the commit this notebook was made from
if importlib.util.find_spec("galmeta") is None:
    url = os.environ.get("GALMETA_REPOSITORY") or input("URL of the galmeta git repository to install from: ")
    if url.strip().startswith("-"):
        raise ValueError(f"{url!r} is not a repository URL (it starts with '-')")
    commit = os.environ.get("GALMETA_COMMIT") or COURSE_COMMIT  # the course as this notebook knows it
    subprocess.run(["git", "init", "-q", "galmeta-course"], check=True)
    subprocess.run(["git", "-C", "galmeta-course", "fetch", "-q", "--depth=1", "--", url.strip(), commit], check=True)
    subprocess.run(["git", "-C", "galmeta-course", "checkout", "-q", "FETCH_HEAD"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "galmeta-course"], check=True)
    sys.path.insert(0, os.path.abspath("galmeta-course"))

# %%
import matplotlib.pyplot as plt
import numpy as np

from galmeta.config import describe_mode
from galmeta.data import CORE_COLUMNS, GalaxyQuery, NoDataError, SkyServerError, fetch_page, load_galaxies

print(describe_mode())

# %% [markdown]
# ## A short astronomy primer
#
# **Magnitudes.** Astronomers measure brightness in magnitudes: $m = -2.5\log_{10} F + \text{const}$ for a
# flux $F$. Larger is fainter; 5 magnitudes are a factor 100 in flux, 1 magnitude a factor 2.5. SDSS measures
# five: $u, g, r, i, z$, through filters centred near 355, 469, 617, 748 and 893 nm (ultraviolet to near
# infrared). "Dereddened" magnitudes (`dered_*`) are corrected for the dust of our own Galaxy.
#
# **Colours.** A colour is a difference of magnitudes, i.e. a flux *ratio*: $u - r = -2.5\log_{10}(F_u/F_r)$.
# A bigger $u-r$ means relatively less blue light: a **redder** galaxy.
#
# **Red sequence and blue cloud.** Galaxies still forming stars are full of young, hot, blue stars: the *blue
# cloud*. Galaxies that stopped are dominated by old, cool stars, whose spectrum drops sharply blueward of
# 4000 Å (the *4000 Å break*): the *red sequence*. $u-r$ straddles the break, which is why it separates the
# two so well (Strateva et al. 2001 cut at $u - r = 2.22$).
#
# **Redshift.** Light from a galaxy at redshift $z$ arrives stretched, $\lambda_\mathrm{obs} = (1+z)\,
# \lambda_\mathrm{rest}$, so the same galaxy seen farther away shows a different part of its spectrum through
# the same filters: its *observed* colours change with $z$. Undoing that is the k-correction; this course keeps
# observed-frame colours on purpose, which is what makes slices of different redshift into different tasks.
#
# **A flux-limited sample.** SDSS took spectra of galaxies brighter than $r \approx 17.8$. Nearby, that
# includes faint dwarfs; far away, only luminous galaxies pass (their absolute magnitude $M_r$, the brightness
# at a standard distance, must be high). Cuts on measurement errors select too: see the redshift section below.
#
# A **schematic** of the redshift effect (approximate Gaussian filters at the SDSS effective wavelengths and two
# toy spectra with and without a strong 4000 Å break; not real filter curves or real spectra):

# %%
FILTERS = {"u": (3551, 300), "g": (4686, 650), "r": (6166, 600), "i": (7480, 650), "z": (8932, 550)}  # Å: centre, width
wavelength = np.linspace(2500, 11000, 4000)


def toy_spectrum(rest, kind):
    """Flux per unit frequency of a schematic old (red) or star-forming (blue) galaxy."""
    if kind == "red":
        return np.where(rest < 4000, 0.35, 1.0) * (rest / 5000)
    return np.where(rest < 4000, 0.8, 1.0) * (rest / 5000) ** -0.3


def toy_magnitudes(kind, z):
    flux = toy_spectrum(wavelength / (1 + z), kind)
    weights = {band: np.exp(-0.5 * ((wavelength - c) / w) ** 2) for band, (c, w) in FILTERS.items()}
    return {band: -2.5 * np.log10(np.sum(flux * t) / np.sum(t)) for band, t in weights.items()}


fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
for ax, z_toy in zip(axes, (0.0, 0.2)):
    for band, (centre, width) in FILTERS.items():
        ax.fill_between(wavelength / 10, 0, 1.6 * np.exp(-0.5 * ((wavelength - centre) / width) ** 2), alpha=0.15)
        ax.text(centre / 10, 1.62, band, ha="center")
    for kind, colour in (("red", "tab:red"), ("blue", "tab:blue")):
        flux = toy_spectrum(wavelength / (1 + z_toy), kind)
        m = toy_magnitudes(kind, z_toy)
        ax.plot(wavelength / 10, flux, color=colour, label=f"{kind} galaxy: u−r {m['u'] - m['r']:.2f}, g−r {m['g'] - m['r']:.2f}")
    ax.axvline(400 * (1 + z_toy), color="k", ls=":", lw=0.8)
    ax.set(xlabel="observed wavelength (nm)", title=f"schematic, z = {z_toy}", ylim=(0, 1.8))
    ax.legend(fontsize=8, loc="lower right")
axes[0].set_ylabel("flux per unit frequency (arbitrary)")
plt.tight_layout()
plt.show()
red_near, red_far = toy_magnitudes("red", 0.0), toy_magnitudes("red", 0.2)
assert red_far["g"] - red_far["r"] > red_near["g"] - red_near["r"] + 0.2, "the break moves into g: g - r reddens with z"
blue_near = toy_magnitudes("blue", 0.0)
assert red_near["u"] - red_near["r"] > blue_near["u"] - blue_near["r"] + 1, "the break makes old galaxies red in u - r"

# %% [markdown]
# The dotted line is the break at 400 nm × (1 + z). At $z = 0.2$ it has moved from the $u$/$g$ boundary into
# $g$, so the same old galaxy looks much redder in $g - r$: redshift changes observed colours, and a model that
# maps one colour to another must know (or learn from a few galaxies) which redshift it is looking at.

# %% [markdown]
# ## The query
#
# `GalaxyQuery` writes the SQL. Spectroscopic galaxies (`SpecObj`, science-primary spectra) are joined
# to their primary photometry (`PhotoObj`) through `bestObjID`; photometric redshifts come from
# `Photoz` (left join: some objects have none). The cuts keep reliable measurements:
#
# * `zWarning = 0` and `zErr ≤ 0.1`: the pipeline trusts the spectroscopic redshift;
# * `dered_*`: *model magnitudes corrected for Galactic dust* ("dereddened"), positive;
# * every band's error below 0.1 mag;
# * `PhotoPrimary`: the primary photometry of each object (DR17's `PhotoObj` also holds secondary
#   detections of the same object);
# * `fiberID % 16 = 0`: one fibre in sixteen on **every** plate, all plates and all years: a systematic
#   sample of the whole survey. Pages are cut by `specObjID` (`ORDER BY specObjID`, no `ORDER BY newId()`),
#   so the same call returns the same rows and a long fetch resumes; after the last page, `n_rows` of the
#   rows are kept by a seeded random choice. (Taking the *first* `n_rows` by `specObjID` would give only the
#   lowest-numbered plates: `specObjID` starts with the plate number.)

# %%
query = GalaxyQuery()
print(query.sql())

# %% [markdown]
# Column names that reach the SQL are checked identifiers; extra column groups (size, shape, MPA-JHU
# stellar mass, star formation and oxygen abundance) are one argument away:

# %%
print(GalaxyQuery(n_rows=100, extra=("size", "shape", "mpa_jhu")).sql().split("FROM")[0][-400:])
try:
    GalaxyQuery(extra_photo_columns=("petroR50_r; DROP TABLE SpecObj",))
except ValueError as error:
    print("rejected:", error)

# %% [markdown]
# ## Ask SkyServer, then load the course's table
#
# `fetch_page` sends one page of the query (100 rows) to SkyServer through
# `astroquery.sdss.SDSS.query_sql`: the live path, in one call. Without network it fails within a second
# and we say so in one line.

# %%
try:
    live = fetch_page(GalaxyQuery(page_size=100), timeout=60)
    print(f"SkyServer answered: {len(live)} galaxies, e.g. specObjID {int(live['specObjID'][0])} at z = {live['z'][0]:.3f}")
except (NoDataError, SkyServerError) as error:
    print(f"no live answer from SkyServer ({type(error).__name__}: no network here?); the course uses its own table.")

# %% [markdown]
# `load_galaxies()` never touches the network. It returns, in this order, the cached live query (after
# `galmeta data fetch`), the snapshot you chose with `galmeta data import` / `galmeta data use`, or the table
# embedded in the package (`galmeta/datasets/`, with its provenance and the SDSS acknowledgement).

# %%
galaxies = load_galaxies()
source = galaxies.meta["galmeta"]["source"]
print(f"{len(galaxies)} rows from: {source}")
print("columns:", galaxies.colnames)
assert set(CORE_COLUMNS) <= set(galaxies.colnames)
assert len(galaxies) > 1000
print(f"RESULT: {len(galaxies)} galaxies loaded ({source})")

# %% [markdown]
# The embedded table was queried by someone else with almost the same cuts (its SQL is in
# `galmeta/datasets/PROVENANCE.md`): five random draws of 5,000 galaxies each, with no `ra`/`dec` and no
# `specObjID`, and with repeated objects that notebook 02 removes.

# %%
galaxies[:5]

# %% [markdown]
# ## A first look
#
# ### Redshift
# Most galaxies of the SDSS main sample lie at $z \approx 0.02$–$0.2$. What lies in the tail beyond is a
# question of *selection*, measured in the next cell.

# %%
z = np.asarray(galaxies["z"], float)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(z, bins=np.linspace(0, 0.4, 81), color="0.3")
ax.set(xlabel="spectroscopic redshift z", ylabel="galaxies", title="Redshift distribution")
plt.show()
print(f"median z = {np.median(z):.3f}; 90% between {np.percentile(z, 5):.3f} and {np.percentile(z, 95):.3f}")
assert 0.03 < np.median(z) < 0.3

# %% [markdown]
# **A selection effect.** The red fraction does not keep rising into the tail; it collapses. The query keeps
# only galaxies whose $u$ magnitude error is below 0.1 mag, and red galaxies are the faintest in $u$ (that is
# what being red means). Far away, a red galaxy's $u$ flux is too faint to pass the cut, a blue one's is not:
# the sample at high redshift is blue by construction, not because the universe is. Every flux-limited
# sample has such effects; notebook 06 lists this one among its limitations.

# %%
u_r_all = np.asarray(galaxies["dered_u"], float) - np.asarray(galaxies["dered_r"], float)
red_by_z = {}
for lo, hi in ((0.0, 0.05), (0.05, 0.1), (0.1, 0.15), (0.15, 0.2), (0.2, 0.3), (0.3, 1.0)):
    window = (z >= lo) & (z < hi)
    red_by_z[(lo, hi)] = (u_r_all[window] >= 2.22).mean()
    print(f"{lo:.2f} <= z < {hi:.2f}: {window.sum():6d} galaxies, red fraction {red_by_z[(lo, hi)]:.2f}")
assert red_by_z[(0.3, 1.0)] < red_by_z[(0.1, 0.15)] / 3, "the high-redshift tail is blue: the u-error cut selects it"

# %% [markdown]
# ### The red sequence and the blue cloud
# Galaxies come in two colour families. Old, passive galaxies form a tight **red sequence**;
# star-forming galaxies form a broad **blue cloud**. Strateva et al. (2001) split them at
# $u - r = 2.22$. In $g - r$ against $r$ the two families are visible as two ridges.

# %%
u, g, r, i, zmag = (np.asarray(galaxies[f"dered_{b}"], float) for b in "ugriz")
u_r, g_r = u - r, g - r
red = u_r >= 2.22
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
axes[0].hist2d(r, g_r, bins=[np.linspace(13, 18, 80), np.linspace(0.0, 1.4, 80)], cmap="Greys", cmin=1)
axes[0].set(xlabel="r (dereddened, mag)", ylabel="g − r (mag)", title="Colour–magnitude")
axes[1].scatter(g_r[~red], u_r[~red], s=1, alpha=0.3, color="tab:blue", label="blue cloud (u−r < 2.22)")
axes[1].scatter(g_r[red], u_r[red], s=1, alpha=0.3, color="tab:red", label="red sequence (u−r ≥ 2.22)")
axes[1].axhline(2.22, color="k", lw=0.8)
axes[1].set(xlim=(0, 1.4), ylim=(0.5, 4), xlabel="g − r (mag)", ylabel="u − r (mag)", title="Colour–colour")
axes[1].legend(markerscale=8, loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# Is the colour distribution really bimodal? A check that can fail: fit one Gaussian and a mixture of two to
# $u-r$ and compare the Bayesian information criterion (lower is better; BIC charges the mixture for its
# extra parameters). A single broad population would make the mixture lose.

# %%
from sklearn.mixture import GaussianMixture

x = u_r[:, None]
one, two = (GaussianMixture(n, random_state=0).fit(x) for n in (1, 2))
bic_one, bic_two = one.bic(x), two.bic(x)
means = np.sort(two.means_.ravel())
fig, ax = plt.subplots(figsize=(6.5, 3.8))
grid = np.linspace(0.5, 4.0, 400)
ax.hist(u_r, bins=np.linspace(0.5, 4.0, 71), density=True, color="0.75", label="galaxies")
ax.plot(grid, np.exp(one.score_samples(grid[:, None])), "--", color="k", label=f"one Gaussian (BIC {bic_one:,.0f})")
ax.plot(grid, np.exp(two.score_samples(grid[:, None])), color="tab:red", label=f"two Gaussians (BIC {bic_two:,.0f})")
ax.axvline(2.22, color="k", lw=0.8, ls=":", label="Strateva cut u − r = 2.22")
ax.set(xlabel="u − r (mag)", ylabel="density", title="u − r is bimodal")
ax.legend(fontsize=8)
plt.show()
print(f"mixture means {means[0]:.2f} and {means[1]:.2f} mag; BIC one {bic_one:,.0f}, two {bic_two:,.0f}; "
      f"red fraction {red.mean():.2f}")
assert bic_two < bic_one - 100, "two populations must describe u - r better than one"
assert means[0] < 2.22 < means[1], "the Strateva cut lies between the two populations"
print(f"RESULT: red fraction (u-r >= 2.22) = {red.mean():.3f}; two-population BIC gain {bic_one - bic_two:,.0f}")

# %% [markdown]
# ### Photometric errors
# Errors grow as galaxies get fainter. **At the same magnitude**, the figure shows the $z$ band's errors are
# the largest (its detector is the least sensitive, and the sky is bright there), then $u$. But galaxies are
# much fainter in $u$ than in the other bands (a median $u$ around 19.3 against $r$ around 17.0), so **per
# galaxy**, $u$ is by far the noisiest band: that is the use case of notebook 02, where $u$ is the band we do
# not have. Errors will be kept as noise weights: a colour measured to 0.01 mag deserves more trust than one
# measured to 0.08.

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for band, mag, colour in zip("ugriz", (u, g, r, i, zmag), ("purple", "green", "red", "brown", "k")):
    err = np.asarray(galaxies[f"err_{band}"], float)
    bins = np.linspace(13, 22, 19)
    which = np.digitize(mag, bins)
    med = [np.median(err[which == k]) if np.sum(which == k) > 20 else np.nan for k in range(1, len(bins))]
    ax.plot(0.5 * (bins[1:] + bins[:-1]), med, marker="o", ms=3, color=colour, label=band)
ax.set(yscale="log", xlabel="dereddened magnitude", ylabel="median error (mag)", title="Errors against magnitude")
ax.legend()
plt.show()
errors = {band: np.asarray(galaxies[f"err_{band}"], float) for band in "ugriz"}
mags = dict(zip("ugriz", (u, g, r, i, zmag)))
at_18 = {band: np.median(errors[band][(mags[band] > 17.5) & (mags[band] < 18.5)]) for band in "ugriz"}
per_galaxy = {band: np.median(errors[band]) for band in "ugriz"}
print("median error at 17.5-18.5 mag:", {b: round(float(v), 4) for b, v in at_18.items()})
print("median error per galaxy:      ", {b: round(float(v), 4) for b, v in per_galaxy.items()})
assert max(at_18, key=at_18.get) == "z", "at equal magnitude, z has the largest errors"
assert max(per_galaxy, key=per_galaxy.get) == "u", "per galaxy, u is the noisiest band"

# %% [markdown]
# ### Sky positions
# A live query adds `ra` and `dec`; the embedded table has none, so this plot appears only with
# live data.

# %%
if "ra" in galaxies.colnames:
    fig = plt.figure(figsize=(7, 3.5))
    ax = fig.add_subplot(projection="mollweide")
    ra = np.radians(np.asarray(galaxies["ra"], float))
    ax.scatter(np.where(ra > np.pi, ra - 2 * np.pi, ra), np.radians(np.asarray(galaxies["dec"], float)), s=0.5)
    ax.set_title("Sky positions")
    plt.show()
else:
    print("no ra/dec in this table (the embedded table has none): sky plot skipped")

# %% [markdown]
# ## Summary
# - The live path is one reproducible SkyServer query through astroquery (cached on first use); the course's
#   own table ships with the package, and `galmeta data import` brings in any other.
# - Galaxy colours are bimodal (two Gaussians beat one by BIC): red sequence and blue cloud, split at
#   $u - r = 2.22$.
# - A flux-limited sample with an error cut is selected: its high-redshift tail is blue by construction.
# - Errors grow with magnitude; at equal magnitude $z$ is the noisiest band, per galaxy $u$ is.
#
# ## Exercises
#
# Each exercise has a hint and a **self-check** cell: it reminds you until you have answered and fails
# if the answer is wrong. All run offline.
#
# 1. **Warm-up.** Compute the red fraction ($u-r \ge 2.22$) in the windows $0.03 \le z < 0.04$ and
#    $0.12 \le z < 0.13$ and store them in `red_low_z` and `red_mid_z`. Does the red fraction change with
#    redshift, and why might it (two reasons: the universe, and the selection)?
#    *Hint:* the arrays `z` and `red` exist already; a boolean mask selects a window.
# 2. **Core.** Build a `GalaxyQuery` that adds the `size` group and keeps every fibre (`sample_every=1`);
#    store it in `size_query`. How does its SQL differ from the default one? With network, `fetch_page(size_query)`
#    returns one live page of it.
#    *Hint:* `GalaxyQuery(extra=(...), sample_every=...)`; compare the two `sql()` texts line by line.
# 3. **Stretch.** Is $u-r$ better described by *three* Gaussians than by two? Fit them and store the BIC in
#    `bic_three`; compare with `bic_two`.
#    *Hint:* `GaussianMixture(3, random_state=0).fit(x).bic(x)`; a difference of a few tens is not much for
#    25,000 galaxies.

# %% tags=["solution"]
# Solution 1
red_low_z = red[(z >= 0.03) & (z < 0.04)].mean()
red_mid_z = red[(z >= 0.12) & (z < 0.13)].mean()
print(f"red fraction {red_low_z:.2f} at 0.03-0.04 and {red_mid_z:.2f} at 0.12-0.13: it rises. Partly selection: "
      "nearby, the flux limit still admits faint blue dwarfs that disappear farther out; and beyond z ~ 0.2 the "
      "u-error cut removes red galaxies (see the redshift section). Evolution over such short times is small.")

# %%
# Self-check 1: a reminder until you have answered, an error if the answer is wrong
if {"red_low_z", "red_mid_z"} <= set(globals()):
    assert 0 < red_low_z < red_mid_z < 1, "compute both fractions; the nearer window should be bluer"
else:
    print("exercise 1: not answered yet (define red_low_z, red_mid_z)")

# %% tags=["solution"]
# Solution 2
size_query = GalaxyQuery(sample_every=1, extra=("size",))
default_lines, size_lines = set(GalaxyQuery().sql().splitlines()), set(size_query.sql().splitlines())
print("only in the size query:", sorted(size_lines - default_lines))
print("only in the default query:", sorted(default_lines - size_lines))

# %%
# Self-check 2: a reminder until you have answered, an error if the answer is wrong
if {"size_query"} <= set(globals()):
    assert "p.petroR50_r AS petroR50_r" in size_query.sql() and "fiberID %" not in size_query.sql()
else:
    print("exercise 2: not answered yet (define size_query)")

# %% tags=["solution"]
# Solution 3
bic_three = GaussianMixture(3, random_state=0).fit(x).bic(x)
print(f"BIC one {bic_one:,.0f}, two {bic_two:,.0f}, three {bic_three:,.0f}: the step from one to two is "
      f"{bic_one - bic_two:,.0f}, from two to three {bic_two - bic_three:,.0f}; two populations carry the structure.")

# %%
# Self-check 3: a reminder until you have answered, an error if the answer is wrong
if {"bic_three"} <= set(globals()):
    assert np.isfinite(bic_three) and bic_three < bic_one
else:
    print("exercise 3: not answered yet (define bic_three)")
