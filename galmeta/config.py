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
"""
from __future__ import annotations

import os
import random
from pathlib import Path

MODES = ("ci", "laptop", "full")


def _read_mode() -> str:
    mode = os.environ.get("GALMETA_MODE", "laptop").strip().lower()
    if mode not in MODES:
        raise ValueError(
            f"GALMETA_MODE={mode!r} is not one of {MODES}; unset it or choose one of those."
        )
    return mode


#: The run mode, read once at import time.
MODE: str = _read_mode()

DEFAULT_SEED = 20170703  # MAML's arXiv v3 date; any fixed number would do.


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
        "full": "full mode: paper-scale runs (GPU recommended for notebooks 04-05)",
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
    if create:
        home.mkdir(parents=True, exist_ok=True)
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
