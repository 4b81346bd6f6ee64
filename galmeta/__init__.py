"""galmeta: a course on meta-learning with real SDSS galaxies.

The package is the single source of truth for code the notebooks share. Modules
follow the course's steps:

``galmeta.config``
    Run mode (CI / laptop / full), data home, seeds and device choice.
``galmeta.data``
    SkyServer SQL builder, cached astroquery fetch and offline snapshot import
    (notebook 01).
``galmeta.tasks``
    Cleaning, redness targets, features and few-shot task sampling (notebook 02).
``galmeta.sinusoid``
    The MAML paper's sinusoid regression benchmark (notebooks 03 and 04).
``galmeta.maml_numpy``
    MAML from scratch in NumPy with exact second-order meta-gradients (notebook 03).
``galmeta.maml_torch``
    MAML and its family in PyTorch for CPU and GPU (notebook 04).
"""

__version__ = "0.1.0"

_FROM_CONFIG = ("MODE", "data_home", "seed_everything", "try_device")


def __getattr__(name):
    # lazy, so that `galmeta.cli` can report a bad GALMETA_MODE (read by galmeta.config) as a message
    if name in _FROM_CONFIG:
        from galmeta import config

        return getattr(config, name)
    raise AttributeError(f"module 'galmeta' has no attribute {name!r}")
