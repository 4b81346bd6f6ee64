"""A meta-learned Bayesian last layer (ALPaCA: Harrison, Sharma & Pavone 2018), started at the hierarchical model.

Introduced in ``notebooks/05_hierarchical_bayes.py``.

A slice's galaxies are modelled as ``y = phi(x) . beta + eps`` with features

    phi(x) = [1, x, f(x), g_theta(x)]

(an intercept, the standardised inputs, the pooled gradient-boosting prediction ``f`` and the outputs of a
small network ``g_theta``), coefficients ``beta ~ N(mu, A A')`` shared in distribution by all slices, and
noise ``eps ~ N(0, s^2 + e^2)`` with ``e`` the galaxy's own measurement error. Given a slice's K support
galaxies, the predictive distribution of its other galaxies is Gaussian in closed form (the same formula
as :func:`galmeta.hierarchical.linear_predictive`; K = 0 gives the prior, a pooled model). Meta-training
adjusts ``theta``, ``mu``, ``A`` and ``s^2`` by gradient descent on the negative log-likelihood of query
galaxies under that predictive distribution: no inner gradient steps, the adaptation is exact Bayesian
linear regression.

It starts equal to :class:`galmeta.hierarchical.HierarchicalLinear` on pooled gradient boosting: ``mu`` and
``A A'`` are the empirical-Bayes prior on ``[1, x]``, the coefficient of ``f`` is 1 with (almost) no
variance and the network's coefficients are 0 with (almost) no variance. Meta-learning moves it from the
strong baseline wherever the meta-train likelihood says it should.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from galmeta.config import apply_thread_policy
from galmeta.learners import Learner
from galmeta.training import EarlyStopping

apply_thread_policy()  # small matrices: one thread unless GALMETA_THREADS says otherwise (galmeta.config)

__all__ = ["BayesianLastLayer", "torch_linear_predictive", "MetaLearnedBayesianLayer"]


def torch_linear_predictive(z_support, r_support, noise_support, z_query, noise_query, mean, cov):
    """:func:`galmeta.hierarchical.linear_predictive` in PyTorch (differentiable in every argument)."""
    zc_q = z_query @ cov
    mean_q = z_query @ mean
    var_q = (zc_q * z_query).sum(-1) + noise_query
    if z_support.shape[-2] == 0:
        return mean_q, var_q
    c_ss = z_support @ cov @ z_support.transpose(-1, -2) + torch.diag_embed(noise_support)
    c_qs = zc_q @ z_support.transpose(-1, -2)
    chol = torch.linalg.cholesky(c_ss)
    a = torch.cholesky_solve((r_support - z_support @ mean)[..., None], chol)[..., 0]
    b = torch.cholesky_solve(c_qs.transpose(-1, -2), chol)
    return mean_q + (c_qs * a[..., None, :]).sum(-1), var_q - (c_qs * b.transpose(-1, -2)).sum(-1)


class BayesianLastLayer(torch.nn.Module):
    """Features ``[1, x, f, g_theta(x)]`` and a learned Gaussian prior over their coefficients.

    Parameters
    ----------
    n_inputs : int
        Input features of the network.
    n_linear : int, optional
        How many of the first inputs enter the linear part ``x`` (default: all; the missingness indicators,
        which come last, feed the network only).
    hidden : tuple of int, default (32, 32)
        Widths of the feature network ``g_theta``.
    n_learned : int, default 8
        Features the network adds.
    """

    def __init__(self, n_inputs, hidden=(32, 32), n_learned=8, n_linear=None):
        super().__init__()
        layers, width = [], n_inputs
        for size in hidden:
            layers += [torch.nn.Linear(width, size, dtype=torch.float64), torch.nn.Tanh()]
            width = size
        self.network = torch.nn.Sequential(*layers, torch.nn.Linear(width, n_learned, dtype=torch.float64))
        self.n_inputs, self.n_learned = int(n_inputs), int(n_learned)
        self.n_linear = self.n_inputs if n_linear is None else int(n_linear)
        p = 2 + self.n_linear + self.n_learned
        self.prior_mean = torch.nn.Parameter(torch.zeros(p, dtype=torch.float64))
        self.prior_factor = torch.nn.Parameter(torch.eye(p, dtype=torch.float64) * 0.1)
        self.log_scatter2 = torch.nn.Parameter(torch.tensor(np.log(0.01), dtype=torch.float64))

    @classmethod
    def from_prior(cls, prior, n_inputs, learned_sd=1e-2, n_linear=None, **kwargs):
        """Start equal to the hierarchical linear model with ``prior`` (:class:`galmeta.hierarchical.SlicePrior`).

        ``learned_sd``: prior standard deviation given to the coefficients of ``f`` and of the network's
        features (0 makes the start exactly the hierarchical model, but then their variance has no gradient).
        """
        model = cls(n_inputs, n_linear=n_linear, **kwargs)
        p_linear = 1 + model.n_linear
        values, vectors = np.linalg.eigh(prior.cov)
        factor = np.zeros((model.prior_mean.numel(),) * 2)
        factor[:p_linear, :p_linear] = vectors * np.sqrt(np.clip(values, 0, None))
        factor[p_linear:, p_linear:] = np.eye(factor.shape[0] - p_linear) * learned_sd
        mean = np.concatenate([prior.mean, [1.0], np.zeros(model.n_learned)])
        with torch.no_grad():
            model.prior_mean.copy_(torch.from_numpy(mean))
            model.prior_factor.copy_(torch.from_numpy(factor))
            model.log_scatter2.fill_(float(np.log(prior.scatter2)))
        return model

    def features(self, x, f):
        ones = torch.ones(x.shape[:-1] + (1,), dtype=x.dtype)
        return torch.cat([ones, x[..., : self.n_linear], f[..., None], self.network(x)], dim=-1)

    def predictive(self, xs, fs, ys, es2, xq, fq, eq2, support_mask=None):
        """Predictive mean and variance of the query galaxies given the support, batched over tasks.

        ``xs (T, K, d)``, ``fs``, ``ys``, ``es2 (T, K)`` (pooled prediction, target, measurement variance);
        ``xq (T, Q, d)``, ``fq``, ``eq2 (T, Q)``. K may be 0. ``support_mask (T, K)``: 0 marks padding (tasks
        of one batch with different K, :meth:`MetaLearnedBayesianLayer.fit_population`); a padded galaxy has
        no features, no residual and unit noise, so it changes nothing.
        """
        scatter2 = self.log_scatter2.exp()
        cov = self.prior_factor @ self.prior_factor.T
        z_support, noise_support = self.features(xs, fs), scatter2 + es2
        if support_mask is not None:
            z_support, ys = z_support * support_mask[..., None], ys * support_mask
            noise_support = torch.where(support_mask > 0, noise_support, torch.ones_like(noise_support))
        return torch_linear_predictive(z_support, ys, noise_support, self.features(xq, fq), scatter2 + eq2,
                                       self.prior_mean, cov)

    def nll(self, *task_arrays, support_mask=None):
        """Mean negative log-likelihood of the query targets (nats per galaxy): the meta-training loss."""
        *inputs, yq = task_arrays
        mean, var = self.predictive(*inputs, support_mask=support_mask)
        return (0.5 * torch.log(2 * np.pi * var) + 0.5 * (yq - mean) ** 2 / var).mean()

    def forward(self, *task_arrays, support_mask=None):
        """:meth:`nll` (so that ``torch.func.functional_call`` can run it with stacked parameters)."""
        return self.nll(*task_arrays, support_mask=support_mask)


class MetaLearnedBayesianLayer(Learner):
    """The meta-learned Bayesian last layer as a learner of the evaluation (:mod:`galmeta.evaluate`).

    Parameters
    ----------
    iterations : int
        Most meta-iterations (early stopping on the meta-validation likelihood decides).
    k_max : int, default 20
        Meta-training tasks draw K uniformly from 0..k_max (K = 0: the prior alone).
    n_query, meta_batch, lr, eval_every, patience
        Query galaxies per task, tasks per meta-batch, Adam's step size, evaluation interval and patience.
    learned_sd : float, default 1e-2
        Starting prior standard deviation of the pooled prediction's and the network's coefficients
        (:meth:`BayesianLastLayer.from_prior`; 0 starts exactly at the hierarchical linear model).
    """

    name = "Bayesian last layer, meta-learned"
    group = "meta-learner"
    bayesian = True

    def __init__(self, iterations, k_max=20, n_query=20, meta_batch=25, lr=1e-3, eval_every=50, patience=20,
                 hidden=(32, 32), n_learned=8, learned_sd=1e-2):
        self.iterations, self.k_max, self.n_query, self.meta_batch = int(iterations), int(k_max), int(n_query), int(meta_batch)
        self.lr, self.eval_every, self.patience = float(lr), int(eval_every), int(patience)
        self.hidden, self.n_learned, self.learned_sd = tuple(hidden), int(n_learned), float(learned_sd)

    def fit(self, data, seed, context):
        self._start(data, seed, context)
        self._fit(data, np.random.default_rng(seed))
        return self

    def fit_population(self, members):
        """:meth:`fit` for many ``(data, seed, context)`` at once, trained as one batched computation (one
        Adam, early stopping and divergence check per member; :mod:`galmeta.population` explains the idea).
        Returns one fitted copy of this learner per member, in order; each equals its own :meth:`fit`."""
        twins = [copy.copy(self)._start(data, seed, context) for data, seed, context in members]
        _train_population(twins, [data for data, _, _ in members], [np.random.default_rng(seed) for _, seed, _ in members])
        return twins

    def _start(self, data, seed, context):
        """Everything :meth:`fit` does before meta-training: the pooled prediction, the empirical-Bayes prior
        and the model that starts at it."""
        from galmeta.baselines import PooledBoosting
        from galmeta.hierarchical import design, estimate_slice_prior, measured_inputs, train_slice_arrays

        if self.iterations < 0 or self.k_max < 0:
            raise ValueError(f"iterations and k_max must be >= 0, got {self.iterations!r}, {self.k_max!r}")
        pooled = PooledBoosting().fit(data, seed, context)
        train = data.indices("train")
        self.pooled_ = pooled.base_predict(data, np.arange(len(data.X))).copy()
        self.pooled_[train] = pooled.training_predict(data, train)  # honest residuals for meta-training
        galaxies, slice_ids = train_slice_arrays(data)
        prior = estimate_slice_prior(design(measured_inputs(data, galaxies)), data.y[galaxies, 0] - self.pooled_[galaxies],
                                     data.target_err[galaxies] ** 2, slice_ids)
        torch.manual_seed(seed)
        self.model_ = BayesianLastLayer.from_prior(prior, data.X.shape[1], learned_sd=self.learned_sd, hidden=self.hidden,
                                                   n_learned=self.n_learned, n_linear=data.preprocessor.n_measured_)
        self.initial_state_ = copy.deepcopy(self.model_.state_dict())
        return self

    def task_tensors(self, data, support, query):
        """The model's inputs for support and query galaxy indices ``(T, K)``, ``(T, Q)``, and the query targets."""
        def arrays(g):
            return [torch.from_numpy(np.ascontiguousarray(a)) for a in
                    (data.X[g], self.pooled_[g], data.y[g, 0], data.target_err[g] ** 2)]

        xs, fs, ys, es2 = arrays(support)
        xq, fq, yq, eq2 = arrays(query)
        return xs, fs, ys, es2, xq, fq, eq2, yq

    def _sample(self, data, rng, k, n_tasks):
        sampler = data.sampler("train", max(k, 1), self.n_query)
        support, query, _ = sampler.sample_indices(rng, n_tasks)
        return self.task_tensors(data, support[:, :k], query)

    def _validation_tasks(self, data, rng):
        val_rng = np.random.default_rng([int(rng.integers(2 ** 31)), 1])
        val_tasks = []
        for k in sorted({0, 1, 5, self.k_max}):
            sampler = data.sampler("val", max(k, 1), self.n_query)
            support, query, _ = sampler.sample_indices(val_rng, 50)
            val_tasks.append(self.task_tensors(data, support[:, :k], query))
        return val_tasks

    def _fit(self, data, rng):
        optimiser = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        val_tasks = self._validation_tasks(data, rng)
        stopper = EarlyStopping(self.patience)
        self.diverged_at, self.losses_ = None, []
        for iteration in range(self.iterations + 1):
            if iteration % self.eval_every == 0 or iteration == self.iterations:
                with torch.no_grad():
                    val = float(np.mean([self.model_.nll(*t).item() for t in val_tasks]))
                if stopper.update(val, lambda: copy.deepcopy(self.model_.state_dict())):
                    break
            if iteration == self.iterations:
                break
            k = int(rng.integers(0, self.k_max + 1))
            loss = self.model_.nll(*self._sample(data, rng, k, self.meta_batch))
            if not torch.isfinite(loss):
                self.diverged_at = iteration
                break
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            self.losses_.append(loss.item())
        self.model_.load_state_dict(stopper.best_state)
        self.best_val_nll_, self.iterations_run_ = stopper.best, len(self.losses_)

    def predictive(self, data, draws, option=None):
        """Predictive mean and variance of every query galaxy's u - r, shape ``draws.query.shape`` each."""
        support = draws.support.reshape(-1, draws.k)
        query = draws.query.reshape(-1, draws.query.shape[-1])
        *inputs, _ = self.task_tensors(data, support, query)
        with torch.no_grad():
            mean, var = self.model_.predictive(*inputs)
        return (mean.numpy().reshape(draws.query.shape) + data.target_mean, var.numpy().reshape(draws.query.shape))

    def predict(self, data, draws, option=None):
        return self.predictive(data, draws)[0]

    def predictive_variance(self, data, draws, option=None):
        return self.predictive(data, draws)[1]


def _pad_members(batches):
    """Stack the members' task tensors ``(xs, fs, ys, es2, xq, fq, eq2, yq)`` along a leading member axis,
    padding the support sets to the largest K; returns the stacked tensors and the support mask ``(A, T, K)``."""
    k_max = max(b[0].shape[1] for b in batches)
    stacked, masks = [], []
    for xs, fs, ys, es2, *query in batches:
        pad = k_max - xs.shape[1]
        mask = torch.ones(xs.shape[0], k_max, dtype=xs.dtype)
        mask[:, xs.shape[1]:] = 0
        masks.append(mask)
        stacked.append([torch.nn.functional.pad(xs, (0, 0, 0, pad)), *(torch.nn.functional.pad(a, (0, pad))
                                                                        for a in (fs, ys, es2)), *query])
    return [torch.stack(column) for column in zip(*stacked)], torch.stack(masks)


def _train_population(learners, datas, rngs):
    """:meth:`MetaLearnedBayesianLayer._fit` for every learner at once (``learners[p]`` on ``datas[p]`` with
    ``rngs[p]``): the same draws, steps, evaluations and stops as separate fits, batched over members."""
    from torch.func import functional_call, stack_module_state, vmap

    from galmeta.population import stacked_adam_step

    first, size = learners[0], len(learners)
    params, _ = stack_module_state([learner.model_ for learner in learners])
    params = {name: tensor.detach().clone().requires_grad_(True) for name, tensor in params.items()}
    template = copy.deepcopy(first.model_).to("meta")

    def member_nll(member_params, *arrays):
        *tasks, mask = arrays
        return functional_call(template, member_params, tuple(tasks), {"support_mask": mask})

    batched_nll = vmap(member_nll)
    val_tasks = [learner._validation_tasks(data, rng) for learner, data, rng in zip(learners, datas, rngs)]
    stoppers = [EarlyStopping(first.patience) for _ in range(size)]
    exp_avg = {n: torch.zeros_like(t) for n, t in params.items()}
    exp_avg_sq = {n: torch.zeros_like(t) for n, t in params.items()}
    for learner in learners:
        learner.diverged_at, learner.losses_ = None, []
    active, adam_steps = list(range(size)), 0

    def rows(index):
        return {n: t.index_select(0, index) for n, t in params.items()}

    for iteration in range(first.iterations + 1):
        if not active:
            break
        if iteration % first.eval_every == 0 or iteration == first.iterations:
            index = torch.tensor(active)
            with torch.no_grad():
                per_set = []
                for s in range(len(val_tasks[active[0]])):
                    arrays, mask = _pad_members([val_tasks[p][s] for p in active])
                    per_set.append(batched_nll(rows(index), *arrays, mask))
            values = torch.stack(per_set).numpy()
            for i, p in enumerate(list(active)):
                val = float(np.mean([v.item() for v in values[:, i]]))
                state = lambda p=p: {n: t[p].detach().clone() for n, t in params.items()}  # noqa: E731
                if stoppers[p].update(val, state):
                    active.remove(p)
        if iteration == first.iterations or not active:
            break
        batches = []
        for p in active:
            k = int(rngs[p].integers(0, first.k_max + 1))
            batches.append(learners[p]._sample(datas[p], rngs[p], k, first.meta_batch))
        arrays, mask = _pad_members(batches)
        index = torch.tensor(active)
        losses = batched_nll(rows(index), *arrays, mask)
        finite = torch.isfinite(losses)
        for i, p in enumerate(list(active)):
            if not bool(finite[i]):  # as _fit: a member whose loss is not finite stops, keeping its best state
                learners[p].diverged_at = iteration
                active.remove(p)
        if not active:
            break
        grads = torch.autograd.grad(losses[finite].sum(), list(params.values()))
        adam_steps += 1
        stacked_adam_step(params, dict(zip(params, grads)), exp_avg, exp_avg_sq, adam_steps, first.lr,
                          torch.tensor(active))
        for loss, ok, p in zip(losses.detach().tolist(), finite.tolist(), index.tolist()):
            if ok:
                learners[p].losses_.append(loss)
    for p, learner in enumerate(learners):
        learner.model_.load_state_dict(stoppers[p].best_state)
        learner.best_val_nll_, learner.iterations_run_ = stoppers[p].best, len(learner.losses_)
