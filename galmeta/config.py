"""Run mode, data home, seeds and device choice: read in one place.

The course has one switch, the environment variable ``GALMETA_MODE``:

``ci``
    Tiny sizes so that every notebook and test runs in a few minutes on two CPU cores.
    ``make test`` sets it.
``laptop`` (default)
    What a reader runs: minutes per notebook on a laptop CPU.
``full``
    Opt-in heavy runs: the paper's 70,000 meta-iterations, full evaluation grids.

The mode changes *how much* is computed (galaxies, tasks, iterations), never *what*.

A second variable, ``GALMETA_THREADS``, sets PyTorch's CPU threads (:func:`apply_thread_policy`): 1 by
default, because galmeta's networks are small and PyTorch's threads spin while they wait for each other,
which turns a machine shared with a browser or a second notebook into a crawl.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

MODES = ("ci", "laptop", "full")


class ConfigError(ValueError):
    """An environment variable of galmeta has a value it does not understand."""


def _read_mode() -> str:
    mode = os.environ.get("GALMETA_MODE", "laptop").strip().lower()
    if mode not in MODES:
        raise ConfigError(
            f"GALMETA_MODE={mode!r} is not one of {', '.join(MODES)}: unset it (laptop mode) or choose one of those, "
            "e.g. `export GALMETA_MODE=ci` for a quick run."
        )
    return mode


#: The run mode, read once at import time.
MODE: str = _read_mode()

DEFAULT_SEED = 20170703  # MAML's arXiv v3 date; any fixed number would do.

#: PyTorch CPU threads when ``GALMETA_THREADS`` is unset. galmeta's networks are small (40-40 MLPs):
#: one matrix product takes microseconds, so a second thread mostly waits, spinning, for the first. Measured
#: by ``benchmarks/thread_policy.py`` on a 2-core machine: alone, 1 and 2 threads run a sinusoid MAML step
#: at about the same rate; beside one busy process, 2 threads fall to a fraction of it while 1 keeps it.
DEFAULT_THREADS = 1


def _read_threads() -> int | None:
    """``GALMETA_THREADS``: a whole number of threads >= 1, or ``torch`` for PyTorch's own default (None)."""
    value = os.environ.get("GALMETA_THREADS", str(DEFAULT_THREADS)).strip().lower()
    if value in ("torch", "default"):
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            f"GALMETA_THREADS={value!r} is not a number of threads >= 1 (or 'torch' for PyTorch's default): "
            "unset it (one thread, the fastest for galmeta's small networks) or e.g. `export GALMETA_THREADS=2`."
        )
    return int(value)


#: PyTorch's CPU threads as galmeta sets them (None: PyTorch's default), read once at import time.
THREADS: int | None = _read_threads()


def apply_thread_policy():
    """Set PyTorch's intra-op CPU threads to :data:`THREADS` (once, before any work; GPU kernels are unaffected).

    Called when :mod:`galmeta.maml_torch` is imported, so every PyTorch learner of the course, and every rank
    of the data-parallel launcher, runs with one thread unless ``GALMETA_THREADS`` says otherwise. Returns the
    number of threads PyTorch now uses.
    """
    import torch

    if THREADS is not None and torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)
    return torch.get_num_threads()


def by_mode(ci, laptop, full=None):
    """Pick a size for the current :data:`MODE`.

    Parameters
    ----------
    ci, laptop, full : object
        Values for each mode; ``full`` defaults to ``laptop``.

    Examples
    --------
    >>> n_iterations = by_mode(ci=200, laptop=5_000, full=70_000)
    """
    return {"ci": ci, "laptop": laptop, "full": laptop if full is None else full}[MODE]


def describe_mode() -> str:
    """One line that every notebook prints, so a reader knows what was shrunk."""
    text = {
        "ci": "CI mode: tiny sizes, numbers are illustrations only (set GALMETA_MODE=laptop for real runs)",
        "laptop": "laptop mode: sizes for a laptop CPU (GALMETA_MODE=full for the paper-scale runs)",
        "full": "full mode: paper-scale runs (GPU recommended for notebooks 04-06)",
    }[MODE]
    return f"galmeta {text}"


def data_home(path: str | os.PathLike | None = None, create: bool = True) -> Path:
    """Folder where fetched tables and imported snapshots are cached.

    Resolution order: the ``path`` argument, then ``$GALMETA_DATA``, then the
    ``data/`` folder of the repository when galmeta runs from a clone (as the
    README installs it), else ``~/galmeta_data``.

    Parameters
    ----------
    path : path-like, optional
        Explicit folder.
    create : bool, default True
        Create the folder if it does not exist.
    """
    if path is None:
        path = os.environ.get("GALMETA_DATA") or _default_data_home()
    home = Path(path).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise NotADirectoryError(
            f"the data home {home} is a file, not a folder. Point GALMETA_DATA at a folder "
            "(e.g. export GALMETA_DATA=~/galmeta_data) or unset it."
        )
    if create:
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermissionError(
                f"cannot create the data home {home} ({exc.strerror or exc}). Point GALMETA_DATA at a folder "
                "you can write to (e.g. export GALMETA_DATA=~/galmeta_data)."
            ) from exc
    return home


def _default_data_home() -> Path:
    checkout_data = Path(__file__).resolve().parent.parent / "data"
    if (checkout_data / "README.md").is_file():
        return checkout_data
    return Path.home() / "galmeta_data"


def seed_everything(seed: int = DEFAULT_SEED, deterministic_torch: bool = True):
    """Seed Python, PyTorch (if installed) and return a fresh NumPy ``Generator``.

    NumPy randomness in galmeta always goes through an explicit
    :class:`numpy.random.Generator`, never the global state, so the returned
    generator is what a notebook passes on.

    Parameters
    ----------
    seed : int
        The seed.
    deterministic_torch : bool, default True
        Ask PyTorch for deterministic algorithms where they exist (``warn_only``).

    Returns
    -------
    numpy.random.Generator
    """
    import numpy as np

    random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but the NumPy part stands alone
        torch = None
    if torch is not None:
        torch.manual_seed(seed)
        if deterministic_torch:
            torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def try_device(prefer: str | None = None):
    """Pick the best available torch device: CUDA, then Apple MPS, then CPU.

    Parameters
    ----------
    prefer : str, optional
        Force a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``). The
        environment variable ``GALMETA_DEVICE`` does the same without code changes.

    Returns
    -------
    torch.device
    """
    import torch

    prefer = prefer or os.environ.get("GALMETA_DEVICE")
    if prefer:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} was asked for but CUDA is not available here; use 'cpu'.")
        if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise RuntimeError(f"device {prefer!r} was asked for but MPS is not available here; use 'cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def show_progress() -> bool:
    """Whether progress bars are drawn: not when ``GALMETA_PROGRESS=0`` (batch execution of the notebooks sets it)."""
    return os.environ.get("GALMETA_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def _in_notebook_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def progress_bar(iterable=None, disable=None, **kwargs):
    """A tqdm progress bar that fits where it runs.

    In JupyterLab with ``ipywidgets``: a widget. In a terminal: one line that updates in place.
    In batch execution (``GALMETA_PROGRESS=0``, set by ``galmeta course run`` and ``make test``) or
    when ``disable`` is true: nothing, so executed notebooks and the static site stay readable.
    A notebook kernel without ``ipywidgets`` gets no bar rather than one printed line per update.

    Parameters
    ----------
    iterable : iterable, optional
    disable : bool, optional
        Force the bar off (True) or on where possible (False); default: :func:`show_progress`.
    **kwargs
        Passed to tqdm (``desc``, ``total``, ``unit``, ``mininterval`` ...).
    """
    off = (not show_progress()) if disable is None else bool(disable)
    if _in_notebook_kernel():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm
        except ImportError:
            from tqdm.std import tqdm
            off = True
    else:
        from tqdm.std import tqdm
        kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=off, **kwargs)
