"""PyTorch MAML: parity with NumPy, the family, estimator interface, checkpoints, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt
from galmeta.sinusoid import PAPER_WEIGHT_STD, sample_sinusoid_tasks, task_sampler


def _flat(pairs):
    return np.concatenate([np.asarray(a.detach() if torch.is_tensor(a) else a).ravel() for pair in pairs for a in pair])


def _problem(seed=0, T=4, K=6, Q=9, sizes=(2, 16, 16, 3)):
    rng = np.random.default_rng(seed)
    params = mn.init_mlp(sizes, rng)
    arrays = (rng.normal(size=(T, K, sizes[0])), rng.normal(size=(T, K, sizes[-1])),
              rng.normal(size=(T, Q, sizes[0])), rng.normal(size=(T, Q, sizes[-1])))
    return params, arrays


@pytest.mark.parametrize("inner_steps", [1, 2, 5])
@pytest.mark.parametrize("first_order", [False, True])
def test_parity_with_numpy_float64(inner_steps, first_order):
    params, arrays = _problem()
    loss_np, grads_np = mn.meta_gradient(params, *arrays, 0.1, inner_steps, first_order)
    tparams = [(torch.tensor(W), torch.tensor(b)) for W, b in params]
    loss_t, grads_t = mt.meta_gradient(tparams, *(torch.tensor(a) for a in arrays), 0.1, inner_steps, first_order)
    assert abs(loss_t - loss_np) <= 1e-12 * loss_np
    a, b = _flat(grads_t), _flat(grads_np)
    assert np.max(np.abs(a - b)) / np.max(np.abs(b)) < 1e-10
    assert all(g.dtype == torch.float64 for pair in grads_t for g in pair)


def test_same_seed_same_training_trajectory_as_numpy():
    rng = np.random.default_rng(1)
    init = mn.init_mlp((1, 40, 40, 1), rng, weight_std=PAPER_WEIGHT_STD)
    sample = task_sampler(25, 10, 10)
    data = [sample(np.random.default_rng(100 + i)) for i in range(5)]
    params = [(W.copy(), b.copy()) for W, b in init]
    adam = mn.Adam(params)
    learner = mt.MetaLearner(mt.MLP.from_numpy(init), algorithm="maml", inner_lr=0.01, device="cpu", dtype=torch.float64)
    for batch in data:
        loss_np, grads = mn.meta_gradient(params, *batch, inner_lr=0.01)
        adam.step(params, grads)
        loss_t = learner.step(*batch)
        assert abs(loss_np - loss_t) <= 1e-10 * loss_np
    a, b = _flat(learner.model.pairs()), _flat(params)
    assert np.max(np.abs(a - b)) / np.max(np.abs(b)) < 1e-10


def test_any_module_gives_the_same_meta_loss_as_the_mlp():
    params, arrays = _problem(2)
    mlp = mt.MLP.from_numpy(params)
    layers = []
    for i, (W, b) in enumerate(params):
        linear = torch.nn.Linear(*W.shape, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(W.T))
            linear.bias.copy_(torch.tensor(b))
        layers += [linear, torch.nn.ReLU()] if i < len(params) - 1 else [linear]
    sequential = torch.nn.Sequential(*layers)
    fast = mt.MetaLearner(mlp, inner_lr=0.1, inner_steps=2, device="cpu", dtype=torch.float64)
    generic = mt.MetaLearner(sequential, inner_lr=0.1, inner_steps=2, device="cpu", dtype=torch.float64)
    loss_fast, loss_generic = fast.meta_loss(*arrays), generic.meta_loss(*arrays)
    assert abs(loss_fast.item() - loss_generic.item()) < 1e-12
    assert generic.config.head_names == ("4.weight", "4.bias")
    loss_fast.backward()
    loss_generic.backward()
    np.testing.assert_allclose(fast.model.weights[0].grad.numpy(), sequential[0].weight.grad.numpy().T, rtol=1e-10)


@pytest.mark.parametrize("algorithm", mt.ALGORITHMS)
def test_every_algorithm_learns_sinusoids(algorithm):
    init = mn.init_mlp((1, 40, 40, 1), np.random.default_rng(0), dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
    learner = mt.MetaLearner(mt.MLP.from_numpy(init), algorithm=algorithm, device="cpu")
    eval_tasks = tuple(a.astype(np.float32) for a in sample_sinusoid_tasks(np.random.default_rng(9), 100, 10, 10)[:4])
    before = learner.evaluate(*eval_tasks)
    sample = task_sampler(25, 10, 10, dtype=np.float32)
    learner.fit(lambda rng, n: sample(rng), 300, progress=False)
    after = learner.evaluate(*eval_tasks)
    assert after < before
    if algorithm == "metasgd":
        rates = torch.cat([r.detach().ravel() for r in learner.inner_lrs.values()])
        assert not torch.allclose(rates, torch.full_like(rates, 0.01))


def test_anil_adapts_only_the_head():
    params, arrays = _problem(3)
    learner = mt.MetaLearner(mt.MLP.from_numpy(params), algorithm="anil", device="cpu", dtype=torch.float64).fit(None, 0)
    adapted = learner.adapt(arrays[0], arrays[1], steps=3)
    head = set(learner.config.head_names)
    assert head == {"weights.2", "biases.2"}
    for name, value in adapted.per_task.items():
        shared = dict(learner.model.named_parameters())[name].detach()
        changed = not torch.allclose(value, shared.expand_as(value))
        assert changed == (name in head), name


def test_estimator_interface_single_and_batched():
    params, arrays = _problem(4, sizes=(2, 16, 16, 1))
    learner = mt.MetaLearner(mt.MLP.from_numpy(params), device="cpu", dtype=torch.float64).fit(None, 0)
    one = learner.adapt(arrays[0][0], arrays[1][0, :, 0], steps=2)
    assert one.predict(arrays[2][0]).shape == (arrays[2].shape[1], 1)
    many = learner.adapt(arrays[0], arrays[1], steps=2)
    prediction = many.predict(arrays[2])
    assert prediction.shape == arrays[3].shape
    np.testing.assert_allclose(one.predict(arrays[2][0]), prediction[0], rtol=1e-12)
    reference = mn.forward(mn.adapt(params, arrays[0], arrays[1], 0.01, 2), arrays[2])
    np.testing.assert_allclose(prediction, reference, rtol=1e-10)
    with pytest.raises(ValueError, match="adapted to one task"):
        one.predict(arrays[2])


def test_checkpoint_resume_continues_exactly(tmp_path):
    init = mn.init_mlp((1, 40, 40, 1), np.random.default_rng(0), weight_std=PAPER_WEIGHT_STD)
    sample = task_sampler(25, 10, 10)
    data = [sample(np.random.default_rng(i)) for i in range(4)]
    make = lambda: mt.MetaLearner(mt.MLP.from_numpy(init), algorithm="metasgd", device="cpu", dtype=torch.float64)
    straight = make()
    for batch in data:
        straight.step(*batch)
    first = make()
    for batch in data[:2]:
        first.step(*batch)
    first.save(tmp_path / "ckpt.pt")
    resumed = make().load(tmp_path / "ckpt.pt")
    assert resumed.iteration == 2
    for batch in data[2:]:
        resumed.step(*batch)
    np.testing.assert_array_equal(_flat(resumed.model.pairs()), _flat(straight.model.pairs()))
    with pytest.raises(mt.CheckpointError, match="checkpoint is for"):
        mt.MetaLearner(mt.MLP.from_numpy(init), algorithm="maml", device="cpu", dtype=torch.float64).load(tmp_path / "ckpt.pt")


def test_early_stopping_restores_the_best_parameters():
    init = mn.init_mlp((1, 40, 40, 1), np.random.default_rng(0), dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
    learner = mt.MetaLearner(mt.MLP.from_numpy(init), meta_lr=0.05, device="cpu")  # too large: it will wander
    val = tuple(a.astype(np.float32) for a in sample_sinusoid_tasks(np.random.default_rng(5), 50, 10, 10)[:4])
    sample = task_sampler(25, 10, 10, dtype=np.float32)
    learner.fit(lambda rng, n: sample(rng), 2000, val_tasks=val, eval_every=10, patience=3, progress=False)
    assert learner.iteration < 2000, "patience must stop training"
    assert abs(learner.evaluate(*val) - min(learner.history["val_loss"])) < 1e-5


def test_non_finite_loss_stops_training():
    init = mn.init_mlp((1, 40, 40, 1), np.random.default_rng(0), dtype=np.float32)
    learner = mt.MetaLearner(mt.MLP.from_numpy(init), inner_lr=100.0, inner_steps=5, device="cpu")
    sample = task_sampler(25, 10, 10, dtype=np.float32)
    with pytest.raises(FloatingPointError, match="lower meta_lr or inner_lr"):
        learner.fit(lambda rng, n: sample(rng), 50, progress=False)


def test_validation_errors():
    with pytest.raises(ValueError, match="algorithm"):
        mt.MetaConfig(algorithm="maml++")
    with pytest.raises(ValueError, match="inner_steps"):
        mt.MetaConfig(inner_steps=0)
    params, arrays = _problem(5)
    learner = mt.MetaLearner(mt.MLP.from_numpy(params), device="cpu", dtype=torch.float64)
    with pytest.raises(ValueError, match="xq has 3 tasks"):
        learner.meta_loss(arrays[0], arrays[1], arrays[2][:3], arrays[3][:3])
    with pytest.raises(ValueError, match="NaN"):
        learner.meta_loss(arrays[0] * np.nan, *arrays[1:])
    with pytest.raises(ValueError, match="head_names"):
        mt.MetaLearner(mt.MLP.from_numpy(params), head_names=("nope",), device="cpu")


def test_device_is_chosen_automatically():
    learner = mt.MetaLearner(mt.MLP((1, 4, 1)))
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert learner.device.type == expected
