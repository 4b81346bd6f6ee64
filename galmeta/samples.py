"""The sealed confirmation sample: SDSS galaxies that no notebook, no tuning and no development run sees.

Introduced in ``notebooks/02_clean_and_tasks.py``.

The meta-test slices were looked at while the learners were revised, so a claim about them is a claim
after selection. A fifth of the SDSS imaging runs is therefore set aside, deterministically, before
anything else: a galaxy's run is encoded in its ``objID`` (bits 32-47; SDSS's photometric object
identifier), and a run is sealed when the SHA-256 hash of ``"run <number>"`` falls in its first
:data:`SEALED_PERCENT` percent. The rule needs no random seed and no list, so it gives the same split on
every machine and for every table fetched with the course's query; galaxies of one run (one night's
drift scan: shared calibration and seeing) stay on one side.

:func:`galmeta.tasks.build_catalogue` keeps the development sample unless told otherwise;
``benchmarks/redness_evaluation.py --confirm`` meta-trains and tunes on development galaxies and
evaluates the frozen learners once on the sealed galaxies of the same meta-test redshift blocks.
"""
from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["SEALED_PERCENT", "SAMPLES", "imaging_run", "is_sealed_run", "sealed_galaxies"]

#: Percentage of imaging runs in the sealed confirmation sample.
SEALED_PERCENT = 20
#: The samples a catalogue can hold: ``"development"``, ``"confirmation"`` (sealed) or ``"all"``.
SAMPLES = ("development", "confirmation", "all")


def imaging_run(obj_ids):
    """The SDSS imaging run of each ``objID`` (bits 32-47 of the 64-bit identifier)."""
    return (np.asarray(obj_ids).astype(np.int64) >> 32) & 0xFFFF


def is_sealed_run(run) -> bool:
    """True when imaging run ``run`` belongs to the sealed confirmation sample.

    Examples
    --------
    >>> [is_sealed_run(r) for r in (94, 756, 1000, 1054)]
    [True, True, False, False]
    """
    digest = hashlib.sha256(f"run {int(run)}".encode()).hexdigest()
    return int(digest, 16) % 100 < SEALED_PERCENT


def sealed_galaxies(obj_ids):
    """Boolean mask: which galaxies belong to the sealed confirmation sample."""
    runs = imaging_run(obj_ids)
    unique = np.unique(runs)
    sealed = np.array([is_sealed_run(r) for r in unique], bool)
    return sealed[np.searchsorted(unique, runs)]
