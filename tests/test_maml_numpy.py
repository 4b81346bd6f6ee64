"""NumPy MAML: gradients, Hessian-vector products and meta-gradients against references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt
from galmeta.sinusoid import sample_sinusoid_tasks, task_sampler


def _problem(seed=0, T=3, K=5, Q=7, sizes=(2, 8, 8, 3), dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = mn.init_mlp(sizes, rng, dtype=dtype)
    d_in, d_out = sizes[0], sizes[-1]
    xs, xq = rng.normal(size=(T, K, d_in)).astype(dtype), rng.normal(size=(T, Q, d_in)).astype(dtype)
    ys, yq = rng.normal(size=(T, K, d_out)).astype(dtype), rng.normal(size=(T, Q, d_out)).astype(dtype)
    return params, xs, ys, xq, yq


def _flat(pairs):
    return np.concatenate([np.asarray(a).ravel() for pair in pairs for a in pair])


def _unflat(vector, like):
    out, start = [], 0
    for W, b in like:
        W2 = vector[start:start + W.size].reshape(W.shape); start += W.size
        b2 = vector[start:start + b.size].reshape(b.shape); start += b.size
        out.append((W2, b2))
    return out


def _relative_error(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def _min_abs_preactivation(params, x):
    h, smallest = x, np.inf
    for W, b in params[:-1]:
        z = h @ W + b
        smallest, h = min(smallest, np.abs(z).min()), np.maximum(z, 0)
    return smallest


def test_gradient_matches_central_differences():
    params, xs, ys, _, _ = _problem(2)
    # finite differences are only valid away from ReLU kinks: no pre-activation within the step
    assert _min_abs_preactivation(params, xs) > 1e-3
    theta = _flat(params)
    losses, grads = mn.loss_and_gradient(params, xs, ys)
    analytic = _flat([(dW.sum(0), db.sum(0)) for dW, db in grads])  # gradient of the summed task losses
    h = 1e-6
    numeric = np.empty_like(theta)
    for k in range(theta.size):
        e = np.zeros_like(theta); e[k] = h
        numeric[k] = (mn.task_losses(_unflat(theta + e, params), xs, ys).sum()
                      - mn.task_losses(_unflat(theta - e, params), xs, ys).sum()) / (2 * h)
    assert _relative_error(analytic, numeric) < 1e-7


def test_hessian_vector_product_matches_differences_of_gradients():
    params, xs, ys, _, _ = _problem(1)
    T = xs.shape[0]
    rng = np.random.default_rng(2)
    vector = [(rng.normal(size=(T,) + W.shape), rng.normal(size=(T,) + b.shape)) for W, b in params]
    per_task = mn._per_task(params, T)
    hvp = mn.hessian_vector_product(per_task, xs, ys, vector)
    h = 1e-5
    plus = [(W + h * vW, b + h * vb) for (W, b), (vW, vb) in zip(per_task, vector)]
    minus = [(W - h * vW, b - h * vb) for (W, b), (vW, vb) in zip(per_task, vector)]
    numeric = [((gp[0] - gm[0]) / (2 * h), (gp[1] - gm[1]) / (2 * h))
               for gp, gm in zip(mn.loss_and_gradient(plus, xs, ys)[1], mn.loss_and_gradient(minus, xs, ys)[1])]
    assert _relative_error(_flat(hvp), _flat(numeric)) < 1e-6


@pytest.mark.parametrize("inner_steps", [1, 2, 5])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_pytorch_autograd(inner_steps, first_order):
    params, xs, ys, xq, yq = _problem(3)
    loss, grads = mn.meta_gradient(params, xs, ys, xq, yq, inner_lr=0.1, inner_steps=inner_steps, first_order=first_order)
    tparams = [(torch.tensor(W), torch.tensor(b)) for W, b in params]
    ref_loss, ref_grads = mt.loop_meta_gradient(tparams, *(torch.tensor(a) for a in (xs, ys, xq, yq)),
                                                inner_lr=0.1, inner_steps=inner_steps, first_order=first_order)
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)
    assert _relative_error(_flat(grads), _flat([(g[0].numpy(), g[1].numpy()) for g in ref_grads])) < 1e-10


def test_second_order_differs_from_first_order():
    params, xs, ys, xq, yq = _problem(4)
    _, second = mn.meta_gradient(params, xs, ys, xq, yq, 0.5, 1)
    _, first = mn.meta_gradient(params, xs, ys, xq, yq, 0.5, 1, first_order=True)
    assert _relative_error(_flat(second), _flat(first)) > 1e-3


def test_float32_is_kept_and_close_to_float64():
    params64, xs, ys, xq, yq = _problem(5)
    params32 = [(W.astype(np.float32), b.astype(np.float32)) for W, b in params64]
    loss32, grads32 = mn.meta_gradient(params32, *(a.astype(np.float32) for a in (xs, ys, xq, yq)), 0.1, 2)
    loss64, grads64 = mn.meta_gradient(params64, xs, ys, xq, yq, 0.1, 2)
    assert all(g.dtype == np.float32 for pair in grads32 for g in pair)
    assert all(g.dtype == np.float64 for pair in grads64 for g in pair)
    assert _relative_error(_flat(grads32), _flat(grads64)) < 1e-4
    adapted = mn.adapt(params32, xs.astype(np.float32), ys.astype(np.float32), 0.1, 3)
    assert adapted[0][0].dtype == np.float32 and adapted[0][0].shape == (3,) + params32[0][0].shape


def test_adapt_lowers_the_support_loss():
    params, xs, ys, _, _ = _problem(6)
    before = mn.task_losses(params, xs, ys)
    after = mn.task_losses(mn.adapt(params, xs, ys, 0.05, 5), xs, ys)
    assert np.all(after < before)


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "xs": a["xs"][0]}, "shape"),
    (lambda a: {**a, "ys": a["ys"][:, :3]}, "points"),
    (lambda a: {**a, "xq": a["xq"][:2]}, "tasks"),
    (lambda a: {**a, "xs": np.concatenate([a["xs"], a["xs"]], axis=2)}, "features"),
    (lambda a: {**a, "yq": np.where(a["yq"] > 1, np.nan, a["yq"])}, "NaN"),
    (lambda a: {**a, "inner_steps": 0}, "inner_steps"),
    (lambda a: {**a, "inner_lr": float("inf")}, "inner_lr"),
])
def test_validation_messages(change, message):
    params, xs, ys, xq, yq = _problem(7)
    args = dict(xs=xs, ys=ys, xq=xq, yq=yq, inner_lr=0.1, inner_steps=1)
    with pytest.raises(ValueError, match=message):
        mn.meta_gradient(params, **change(args))


def test_meta_training_on_sinusoids_lowers_the_post_adaptation_loss():
    rng = np.random.default_rng(0)
    params = mn.init_mlp((1, 40, 40, 1), rng)
    eval_tasks = sample_sinusoid_tasks(np.random.default_rng(99), 100, 10, 10)[:4]
    before, _ = mn.meta_gradient(params, *eval_tasks, 0.01)
    result = mn.meta_train(params, task_sampler(), 400, rng, progress=False)
    after, _ = mn.meta_gradient(result.params, *eval_tasks, 0.01)
    assert after < 0.5 * before
    assert result.losses.shape == (400,) and np.all(np.isfinite(result.losses))


def test_diverging_training_stops_with_a_clear_error():
    rng = np.random.default_rng(0)
    params = mn.init_mlp((1, 40, 40, 1), rng)
    with pytest.raises(FloatingPointError, match="lower meta_lr or inner_lr"):
        with np.errstate(all="ignore"):
            mn.meta_train(params, task_sampler(), 50, rng, inner_lr=50.0, inner_steps=5, progress=False)


def test_adaptation_predictions_match_adapt_then_forward():
    params, xs, ys, xq, yq = _problem(8)
    predictions = mn.adaptation_predictions(params, xs, ys, xq, 0.05, 4)
    assert predictions.shape == (5,) + yq.shape
    np.testing.assert_allclose(predictions[0], mn.forward(params, xq), rtol=1e-12)
    np.testing.assert_allclose(predictions[3], mn.forward(mn.adapt(params, xs, ys, 0.05, 3), xq), rtol=1e-12)
    curve = mn.adaptation_curve(params, xs, ys, xq, yq, 0.05, 4)
    np.testing.assert_allclose(curve[3], mn.task_losses(mn.adapt(params, xs, ys, 0.05, 3), xq, yq), rtol=1e-12)
