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


@pytest.mark.parametrize("name", ["rmse", "bias", "mean", "worst_draw_rmse", "tail_fraction", "balanced_accuracy"])
def test_resampling_draw_summaries_equals_resampling_galaxies(name):
    """The bootstrap resamples per-draw summaries for metrics that combine over draws; the numbers must be
    those of resampling every galaxy (with an overflowed draw and a seed axis)."""
    from galmeta.metrics import _gather, _metric_kwargs, _resampled_metric, hierarchical_resamples, metric

    rng = np.random.default_rng(3)
    residuals = rng.normal(0, 0.3, (2, 7, 4, 6))
    residuals[1, 2, 3, 0] = np.inf
    labels = (rng.random((1, 7, 4, 6)) < 0.4)
    scores = rng.normal(size=(2, 7, 4, 6))
    slices, draws = hierarchical_resamples(rng, 7, 4, 50)
    kwargs = _metric_kwargs(name, 0.0, 0.3)
    fast = _resampled_metric(name, (residuals, labels, scores), slices, draws, kwargs, chunk=20)
    slow = metric(name, _gather(residuals, slices, draws), _gather(labels, slices, draws),
                  _gather(scores, slices, draws), **kwargs)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_sigma_nmad_by_sorting_equals_numpys_median():
    rng = np.random.default_rng(4)
    for n in (7, 8):
        values = rng.normal(size=(5, 3, n))
        values[0, 1, 2], values[2, 0, 0], values[3, 2, :2] = np.nan, np.inf, -np.inf
        expected = 1.4826 * np.median(np.abs(values - np.median(values, axis=-1, keepdims=True)), axis=-1)
        np.testing.assert_array_equal(gm.sigma_nmad(values), expected)
        np.testing.assert_array_equal(gm.sigma_nmad(np.moveaxis(values, -1, 0), axis=0), expected)
