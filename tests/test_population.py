"""Population training (galmeta.population): each member ends exactly where its own training would."""
import numpy as np
import pytest
import torch

from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt
from galmeta.population import PopulationMetaLearner, fit_population, pad_support
from galmeta.sinusoid import task_sampler

SIZES = (1, 16, 16, 1)

CONFIGS = {
    "maml": dict(algorithm="maml"),
    "fomaml": dict(algorithm="fomaml"),
    "metasgd": dict(algorithm="metasgd"),
    "anil": dict(algorithm="anil"),
    "reptile": dict(algorithm="reptile", reptile_steps=3),
    "maml++": dict(algorithm="maml", inner_steps=3, step_lrs=True, multi_step_iterations=6, inner_grad_clip=0.5),
}


def member(seed, **config):
    init = mn.init_mlp(SIZES, np.random.default_rng(seed))
    return mt.MetaLearner(mt.MLP.from_numpy(init), device="cpu", dtype=torch.float64, inner_lr=0.02, meta_lr=3e-3,
                          meta_batch=4, seed=seed, **config)


def sampler(member_index):
    """Member 0 draws K from 1..6 per meta-batch (different Ks in one population step), member 1 has K = 5,
    member 2 K = 2 (and different amplitudes): padding and masking are exercised."""
    samples = {k: task_sampler(4, k, 7) for k in range(1, 7)}

    def sample(rng, n_tasks):
        k = int(rng.integers(1, 7)) if member_index == 0 else (5 if member_index == 1 else 2)
        xs, ys, xq, yq = samples[k](rng)
        return xs, ys * (1 + member_index), xq, yq * (1 + member_index)

    return sample


def validation(member_index):
    rng = np.random.default_rng(100 + member_index)
    return [task_sampler(10, k, 7)(rng) for k in (1, 5)]


def train_both(config, n_iterations=12, patience=2, eval_every=2, samplers=None, **kwargs):
    seeds = (0, 1, 2)
    samplers = samplers or [sampler(i) for i in range(3)]
    separate = []
    for i, seed in enumerate(seeds):
        learner = member(seed, **config)
        learner.fit(samplers[i], n_iterations, val_tasks=validation(i), eval_every=eval_every, patience=patience,
                    progress=False, rng=np.random.default_rng(seed + 7), **kwargs)
        separate.append(learner)
    population = [member(seed, **config) for seed in seeds]
    fit_population(population, samplers, n_iterations, val_tasks=[validation(i) for i in range(3)],
                   eval_every=eval_every, patience=patience, progress=False,
                   rngs=[np.random.default_rng(seed + 7) for seed in seeds], **kwargs)
    return separate, population


def assert_same_training(a, b, rtol=1e-9, atol=1e-12):
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=rtol, atol=atol, err_msg=name)
    if a.inner_lrs:
        for name in a.inner_lrs:
            np.testing.assert_allclose(b.inner_lrs[name].detach().numpy(), a.inner_lrs[name].detach().numpy(),
                                       rtol=rtol, atol=atol, err_msg=name)
    assert b.iteration == a.iteration
    assert b.diverged_at == a.diverged_at
    assert b.history["val_iteration"] == a.history["val_iteration"]
    np.testing.assert_allclose(b.history["train_loss"], a.history["train_loss"], rtol=rtol)
    np.testing.assert_allclose(b.history["val_loss"], a.history["val_loss"], rtol=rtol)
    # Adam's moments too: a member continues training exactly as its own run would
    for p, q in zip(a.optimiser.param_groups[0]["params"], b.optimiser.param_groups[0]["params"]):
        sa, sb = a.optimiser.state[p], b.optimiser.state[q]
        assert int(sa["step"]) == int(sb["step"])
        np.testing.assert_allclose(sb["exp_avg"].numpy(), sa["exp_avg"].numpy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(sb["exp_avg_sq"].numpy(), sa["exp_avg_sq"].numpy(), rtol=rtol, atol=1e-20)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_member_equals_its_separate_training(name):
    separate, population = train_both(CONFIGS[name])
    for a, b in zip(separate, population):
        assert a.iteration > 0
        assert_same_training(a, b)
        assert b.is_fitted_


def test_members_stop_at_different_iterations_and_are_masked():
    """With patience 1 the members stop at different iterations; the stopped ones must not move afterwards."""
    separate, population = train_both(CONFIGS["maml"], n_iterations=40, patience=1, eval_every=1)
    stops = [a.iteration for a in separate]
    assert len(set(stops)) > 1, stops  # the test exercises masking only if they differ
    for a, b in zip(separate, population):
        assert_same_training(a, b)


def test_a_diverging_member_stops_alone():
    healthy = sampler(1)

    def sometimes_huge(rng, n_tasks):  # now and then a batch whose loss is a million times the first ones
        xs, ys, xq, yq = healthy(rng, n_tasks)
        return (xs, ys * 1e5, xq, yq * 1e5) if rng.random() < 0.15 else (xs, ys, xq, yq)

    samplers = [sampler(0), sometimes_huge, sampler(2)]
    with pytest.warns(RuntimeWarning, match="training stopped|its training stopped"):
        separate, population = train_both(CONFIGS["maml"], n_iterations=30, patience=None, samplers=samplers,
                                          on_divergence="stop")
    assert separate[1].diverged_at is not None
    for a, b in zip(separate, population):
        assert_same_training(a, b)
    assert population[0].diverged_at is None and population[0].iteration == 30


def test_divergence_raises_naming_the_member():
    def bad(rng, n_tasks):
        xs, ys, xq, yq = task_sampler(4, 3, 7)(rng)
        return (xs, ys * 1e5, xq, yq * 1e5) if rng.random() < 0.2 else (xs, ys, xq, yq)

    learners = [member(0), member(1)]
    with pytest.raises(FloatingPointError, match="population member 1"):
        fit_population(learners, [sampler(0), bad], 30, progress=False)


def test_checkpoints_per_member_resume_like_their_own_training(tmp_path):
    config = CONFIGS["metasgd"]
    paths = [tmp_path / f"member{i}.pt" for i in range(3)]
    population = [member(seed, **config) for seed in (0, 1, 2)]
    fit_population(population, [sampler(i) for i in range(3)], 6, eval_every=3, checkpoints=paths, progress=False,
                   rngs=[np.random.default_rng(s + 7) for s in (0, 1, 2)])
    separate = member(1, **config).fit(sampler(1), 6, eval_every=3, progress=False, rng=np.random.default_rng(8))
    restored = member(1, **config).load(paths[1])
    assert_same_training(separate, restored)
    # and both continue identically: a separate continuation against one of the restored member
    separate.fit(sampler(1), 3, progress=False, rng=np.random.default_rng(9))
    restored.fit(sampler(1), 3, progress=False, rng=np.random.default_rng(9))
    assert_same_training(separate, restored)


def test_a_population_can_continue_from_trained_members():
    config = CONFIGS["maml"]
    separate = [member(s, **config).fit(sampler(i), 4, progress=False, rng=np.random.default_rng(s))
                for i, s in enumerate((0, 1, 2))]
    population = [member(s, **config).fit(sampler(i), 4, progress=False, rng=np.random.default_rng(s))
                  for i, s in enumerate((0, 1, 2))]
    for i, learner in enumerate(separate):
        learner.fit(sampler(i), 3, progress=False, rng=np.random.default_rng(50 + i))
    fit_population(population, [sampler(i) for i in range(3)], 3, progress=False,
                   rngs=[np.random.default_rng(50 + i) for i in range(3)])
    for a, b in zip(separate, population):
        assert_same_training(a, b)


def test_members_must_share_one_configuration():
    with pytest.raises(ValueError, match="inner_lr"):
        PopulationMetaLearner([member(0), mt.MetaLearner(mt.MLP(SIZES, dtype=torch.float64), dtype=torch.float64,
                                                         inner_lr=0.5, meta_lr=3e-3, meta_batch=4)])
    with pytest.raises(ValueError, match="architecture"):
        PopulationMetaLearner([member(0), mt.MetaLearner(mt.MLP((1, 8, 1), dtype=torch.float64), dtype=torch.float64,
                                                         inner_lr=0.02, meta_lr=3e-3, meta_batch=4)])
    with pytest.raises(ValueError, match="one entry per member"):
        fit_population([member(0), member(1)], [sampler(0)], 2)
    with pytest.raises(ValueError, match="at least one"):
        PopulationMetaLearner([])


def test_padding_masks_the_missing_support_points():
    rng = np.random.default_rng(0)
    a, b = task_sampler(2, 1, 3)(rng), task_sampler(2, 4, 3)(rng)
    xs, ys, xq, yq, mask = pad_support([a, b], torch.float64, "cpu")
    assert xs.shape == (4, 4, 1) and xq.shape == (4, 3, 1)
    assert mask[:2].sum(1).tolist() == [1, 1] and mask[2:].sum(1).tolist() == [4, 4]
    # the masked loss of a padded task is the plain loss of the original one
    out = torch.zeros_like(ys)
    plain = mt.task_mse(torch.zeros(2, 1, 1, dtype=torch.float64), torch.as_tensor(a[1]))
    np.testing.assert_allclose(mt.task_mse(out, ys, mask)[:2].numpy(), plain.numpy(), rtol=1e-15)


def test_bad_tasks_get_the_single_learners_message():
    def with_nan(rng, n_tasks):
        xs, ys, xq, yq = task_sampler(4, 3, 7)(rng)
        return xs, ys * np.nan, xq, yq

    with pytest.raises(ValueError, match="ys contains NaN or inf"):
        fit_population([member(0), member(1)], [sampler(0), with_nan], 2, progress=False)
