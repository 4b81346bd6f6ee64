"""Intervals that hold their promise: coverage measured on synthetic data where the truth is known.

Slices of one redshift block are correlated. On synthetic data with 10 blocks x 4 slices, an intraclass
correlation of the paired differences near 0.9 and a true difference of 0, the block jackknife's nominal
95% interval must cover 0 in at least 90% of replicates (the slice bootstrap, the contrast, does not).
"""
from __future__ import annotations

import numpy as np
import pytest

from galmeta import metrics as gm

N_BLOCKS, SLICES_PER_BLOCK, DRAWS, QUERIES = 10, 4, 3, 10


def correlated_pair(rng, block_sd=0.15, slice_sd=0.02, noise=0.15):
    """Residuals of two exchangeable learners (true RMSE difference 0) whose errors move together by block.

    Each learner has its own offset per block (shared by the block's four slices) and per slice; the
    galaxies' scatter is common to both (paired draws). Returns residuals_a, residuals_b, blocks.
    """
    n_slices = N_BLOCKS * SLICES_PER_BLOCK
    blocks = np.repeat(np.arange(N_BLOCKS), SLICES_PER_BLOCK)
    common = rng.normal(0, noise, (n_slices, DRAWS, QUERIES))
    out = []
    for _ in range(2):
        offset = rng.normal(0, block_sd, N_BLOCKS)[blocks] + rng.normal(0, slice_sd, n_slices)
        out.append(common + offset[:, None, None] + rng.normal(0, 0.02, (n_slices, DRAWS, QUERIES)))
    return out[0], out[1], blocks


def test_the_block_jackknife_covers_the_truth_on_block_correlated_slices():
    rng = np.random.default_rng(0)
    covered, iccs, n_replicates = 0, [], 300
    for _ in range(n_replicates):
        a, b, blocks = correlated_pair(rng)
        interval = gm.block_jackknife("rmse", blocks, a, b)
        covered += interval.lo <= 0.0 <= interval.hi
        iccs.append(gm.intraclass_correlation(gm.per_slice("rmse", a) - gm.per_slice("rmse", b), blocks))
    coverage, icc = covered / n_replicates, float(np.median(iccs))
    print(f"block jackknife: nominal 95%, covered {coverage:.3f} of {n_replicates}; median ICC {icc:.2f}")
    assert 0.8 < icc < 0.97, "the synthetic slices must be strongly correlated within blocks (ICC near 0.9)"
    assert coverage >= 0.90


def test_the_slice_bootstrap_is_too_narrow_there_which_is_why_blocks_are_the_unit():
    rng = np.random.default_rng(1)
    covered, n_replicates = 0, 60
    for _ in range(n_replicates):
        a, b, blocks = correlated_pair(rng)
        interval = gm.paired_difference("rmse", a, b, n_resamples=300, seed=int(rng.integers(1 << 30)))
        covered += interval.lo <= 0.0 <= interval.hi
    print(f"slice bootstrap: nominal 95%, covered {covered / n_replicates:.3f}")
    assert covered / n_replicates < 0.85


def test_block_jackknife_and_icc_basics():
    rng = np.random.default_rng(2)
    a, b, blocks = correlated_pair(rng)
    single = gm.block_jackknife("rmse", blocks, a)
    assert single.lo < gm.metric("rmse", a[None])[0] < single.hi
    paired = gm.block_jackknife("rmse", blocks, a, b)
    assert paired.estimate == pytest.approx(float(gm.metric("rmse", a[None])[0] - gm.metric("rmse", b[None])[0]))
    with pytest.raises(ValueError, match="block of each of the 40 slices"):
        gm.block_jackknife("rmse", blocks[:-1], a)
    with pytest.raises(ValueError, match="at least 3 blocks"):
        gm.block_jackknife("rmse", np.zeros(40, int), a)
    assert gm.intraclass_correlation(rng.normal(size=400), np.repeat(np.arange(100), 4)) < 0.2
