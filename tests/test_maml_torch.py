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


# ---------------------------------------------------------------------------
# MAML++ stabilisers: learned per-step rates, multi-step loss, inner-gradient clipping
# ---------------------------------------------------------------------------
def _learner64(params, **config):
    return mt.MetaLearner(mt.MLP.from_numpy(params), device="cpu", dtype=torch.float64, meta_lr=1e-3, **config)


def _meta_grads(learner, arrays):
    learner.optimiser.zero_grad(set_to_none=True)
    loss, _ = learner._training_loss(*arrays)
    loss.backward()
    return float(loss.detach()), np.concatenate([t.grad.detach().numpy().ravel() for pair in learner.model.pairs() for t in pair])


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_per_step_rates_at_their_initial_value_are_plain_maml_exactly(inner_steps):
    params, arrays = _problem()
    plain = _learner64(params, inner_lr=0.05, inner_steps=inner_steps)
    stepped = _learner64(params, inner_lr=0.05, inner_steps=inner_steps, step_lrs=True)
    assert {n: tuple(v.shape) for n, v in stepped.inner_lrs.items()} == {n: (inner_steps,) for n in stepped.names}
    loss_a, grad_a = _meta_grads(plain, arrays)
    loss_b, grad_b = _meta_grads(stepped, arrays)
    assert loss_a == loss_b
    np.testing.assert_array_equal(grad_a, grad_b)
    # and the same as the NumPy from-scratch meta-gradient
    loss_np, grads_np = mn.meta_gradient(params, *arrays, 0.05, inner_steps)
    np.testing.assert_allclose(grad_b, _flat(grads_np), rtol=1e-10, atol=1e-13)
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in stepped.inner_lrs.values())


def test_multi_step_loss_is_the_weighted_sum_of_the_query_losses_after_each_step():
    params, arrays = _problem(T=3)
    learner = _learner64(params, inner_lr=0.05, inner_steps=3, step_lrs=True, multi_step_iterations=100)
    per_step = [float(learner.meta_loss(*arrays, steps=s, create_graph=False).detach()) for s in (1, 2, 3)]
    for iteration in (0, 50, 100, 1000):
        learner.iteration = iteration
        weights = mt.multi_step_weights(3, iteration, 100)
        total, last = learner._training_loss(*arrays)
        assert abs(float(total.detach()) - float(np.dot(weights, per_step))) < 1e-12
        assert abs(last - per_step[-1]) < 1e-12
    assert np.isclose(mt.multi_step_weights(3, 100, 100)[-1], 0.98) and mt.multi_step_weights(5, 7, 10).sum() == pytest.approx(1)


def test_inner_gradient_clipping_bounds_each_tasks_step():
    params, (xs, ys, xq, yq) = _problem(T=5)
    ys = ys * np.array([1, 1, 1, 1, 100.0])[:, None, None]  # one task with a huge gradient
    lr, clip = 0.01, 0.5
    learner = _learner64(params, inner_lr=lr, inner_grad_clip=clip).fit(None, 0, progress=False)
    unclipped = _learner64(params, inner_lr=lr, inner_grad_clip=1e9).fit(None, 0, progress=False)
    plain = _learner64(params, inner_lr=lr).fit(None, 0, progress=False)
    start = np.concatenate([p.detach().numpy().ravel() for p in learner.model.parameters()])  # per_task's order
    moved = [np.linalg.norm(np.concatenate([v[t].numpy().ravel() for v in learner.adapt(xs, ys, steps=1).per_task.values()])
                            - start) for t in range(5)]
    assert max(moved) <= lr * clip * (1 + 1e-12)
    assert moved[-1] == pytest.approx(lr * clip, rel=1e-9)  # the outlier task is clipped to exactly the bound
    np.testing.assert_array_equal(unclipped.adapt(xs, ys, steps=3).predict(xq), plain.adapt(xs, ys, steps=3).predict(xq))


def test_mamlpp_trains_learns_rates_and_checkpoints(tmp_path):
    rng = np.random.default_rng(3)
    init = mn.init_mlp((1, 40, 40, 1), rng, weight_std=PAPER_WEIGHT_STD)
    config = mt.mamlpp_config(inner_steps=3, multi_step_iterations=20, inner_grad_clip=40.0, inner_lr=0.01, meta_batch=10)
    learner = mt.MetaLearner(mt.MLP.from_numpy(init, dtype=torch.float32), config=config, device="cpu")
    sample = task_sampler(10, 5, 10, dtype=np.float32)
    learner.fit(lambda r, n: sample(r), 40, rng=np.random.default_rng(0), checkpoint=tmp_path / "pp.pt", eval_every=20)
    rates = {n: v.detach().clone() for n, v in learner.inner_lrs.items()}
    assert any(not torch.allclose(v, torch.full_like(v, 0.01)) for v in rates.values()), "rates were not learned"
    again = mt.MetaLearner(mt.MLP.from_numpy(init, dtype=torch.float32), config=config, device="cpu").load(tmp_path / "pp.pt")
    assert all(torch.equal(again.inner_lrs[n], rates[n]) for n in rates)
    xs, ys, xq, yq = sample(np.random.default_rng(9))
    curve = again.adaptation_predictions(xs, ys, xq, max_steps=6)  # beyond the 3 trained steps: the last rates
    assert curve.shape == (7, 10, 10, 1) and np.isfinite(curve).all()
    np.testing.assert_allclose(curve[3], again.adapt(xs, ys, steps=3).predict(xq), rtol=1e-5, atol=1e-6)
    plain = mt.MetaLearner(mt.MLP.from_numpy(init, dtype=torch.float32), device="cpu", algorithm="maml")
    with pytest.raises(mt.CheckpointError, match="learned inner rates"):
        plain.load(tmp_path / "pp.pt")


@pytest.mark.parametrize("bad, message", [
    (dict(algorithm="metasgd", step_lrs=True), "step_lrs=True"),
    (dict(algorithm="reptile", step_lrs=True), "step_lrs=True"),
    (dict(inner_grad_clip=0.0), "inner_grad_clip"),
    (dict(inner_grad_clip=float("nan")), "inner_grad_clip"),
    (dict(multi_step_iterations=-1), "multi_step_iterations"),
])
def test_stabiliser_options_are_validated(bad, message):
    with pytest.raises(ValueError, match=message):
        mt.MetaConfig(**bad)


def test_clipping_is_differentiable_at_a_zero_inner_gradient():
    # sqrt's derivative is infinite at zero: the second-order meta-gradient must still be finite
    params, _ = _problem()
    learner = _learner64(params, inner_grad_clip=1.0)
    grads = [torch.zeros(3, 4, dtype=torch.float64, requires_grad=True),
             torch.tensor([[0.0], [5.0], [0.1]], dtype=torch.float64, requires_grad=True)]
    clipped = learner._clipped(grads)
    (sum(c.sum() for c in clipped)).backward()
    assert all(torch.isfinite(g.grad).all() for g in grads)
    np.testing.assert_allclose(clipped[1].detach().numpy().ravel(), [0.0, 1.0, 0.1])


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "anil", "fomaml"])
def test_the_multi_step_loss_differentiates_as_the_algorithm_says(algorithm):
    """The training loss with MAML++'s multi-step weights is second order exactly when the algorithm is
    (Meta-SGD with the multi-step loss once trained first order while meta_loss said second order)."""
    from galmeta.algorithms import ALGORITHMS

    init = mn.init_mlp((1, 16, 1), np.random.default_rng(0))
    learner = mt.MetaLearner(mt.MLP.from_numpy(init), algorithm=algorithm, inner_steps=2, multi_step_iterations=100,
                             device="cpu", dtype=torch.float64)
    batch = [torch.as_tensor(a) for a in task_sampler(5, 4, 6)(np.random.default_rng(1))]
    params = list(learner.model.parameters())
    loss, _ = learner._training_loss(*batch)
    got = torch.autograd.grad(loss, params)
    weights = mt.multi_step_weights(2, learner.iteration, 100)
    for second_order, name in ((True, "second"), (False, "first")):
        path = learner._adapted(batch[0], batch[1], 2, create_graph=second_order, trajectory=True)
        reference = sum(float(w) * mt.task_mse(mt.batched_forward(learner.model, p, batch[2]), batch[3]).mean()
                        for w, p in zip(weights, path))
        expected = torch.autograd.grad(reference, params)
        same = all(torch.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(got, expected))
        assert same == (second_order == ALGORITHMS[algorithm].second_order), f"{algorithm}: {name} order"
