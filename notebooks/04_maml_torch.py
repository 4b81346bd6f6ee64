# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · MAML in PyTorch, and its family
#
# **Learning goals**
# - write the MAML meta-gradient in a few lines with `torch.func` (`grad`, `vmap`) and check it against
#   the NumPy learner of notebook 03 to machine precision;
# - batch tasks instead of looping over them, and measure what that buys;
# - run the same code on whatever device you have (CUDA, Apple MPS or CPU);
# - use the family as options of one trainer: FOMAML, Meta-SGD (learned inner learning rates), ANIL (adapt
#   only the head) and Reptile; fit / adapt / predict, early stopping and checkpoints;
# - stabilise adaptation with MAML++ (learned per-layer, per-step rates, the multi-step loss, inner-gradient
#   clipping) and training at every support size, and measure what it does to the **tail** on galaxy tasks;
# - scale out: data-parallel meta-training on several processes with `torch.distributed` and `torchrun`;
# - train many learners (folds, seeds) as one batched computation, each equal to its own training.
#
# **Prerequisites:** notebook 03; PyTorch tensors and `autograd`.
#
# **Runtime:** on a 2-core CPU, laptop mode 213 s (the sinusoid family for 5,000 iterations); CI mode 87 s.
# GPU: not measured yet; the same cells run there unchanged (the device is picked automatically).

# %% Colab or a bare kernel: install the course package when it is missing (a no-op when it is installed)
import importlib.util, os, subprocess, sys  # noqa: E401
COURSE_COMMIT = "main"  # `galmeta course generate` writes here the commit this notebook was made from
if importlib.util.find_spec("galmeta") is None:
    url = os.environ.get("GALMETA_REPOSITORY") or input("URL of the galmeta git repository to install from: ")
    if url.strip().startswith("-"):
        raise ValueError(f"{url!r} is not a repository URL (it starts with '-')")
    commit = os.environ.get("GALMETA_COMMIT") or COURSE_COMMIT  # the course as this notebook knows it
    subprocess.run(["git", "init", "-q", "galmeta-course"], check=True)
    subprocess.run(["git", "-C", "galmeta-course", "fetch", "-q", "--depth=1", "--", url.strip(), commit], check=True)
    subprocess.run(["git", "-C", "galmeta-course", "checkout", "-q", "FETCH_HEAD"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "galmeta-course"], check=True)
    sys.path.insert(0, os.path.abspath("galmeta-course"))

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt
from galmeta.config import by_mode, describe_mode, seed_everything, try_device
from galmeta.sinusoid import (PAPER_WEIGHT_STD, format_summary, plot_adaptation_curves, sample_sinusoid_tasks,
                              summarise_errors, task_sampler)

print(describe_mode())
rng = seed_everything()
device = try_device()
print(f"running on: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

# %% [markdown]
# ## 1. The meta-gradient in a few lines of `torch.func`
#
# `torch.func.grad(f)` returns a function computing the gradient of `f`, and transforms compose: the
# gradient of a function that itself calls `grad` is the exact second-order meta-gradient, with no
# Hessian written by hand. `vmap` maps a one-task function over the task axis.

# %%
from torch.func import grad, grad_and_value, vmap


def forward(params, x):
    *hidden, (W_out, b_out) = params
    for W, b in hidden:
        x = torch.relu(x @ W + b)
    return x @ W_out + b_out


def task_loss(params, x, y):
    return ((forward(params, x) - y) ** 2).mean()


def one_task_meta_loss(params, xs, ys, xq, yq, inner_lr=0.01):
    inner_grads = grad(task_loss)(params, xs, ys)
    adapted = [(W - inner_lr * gW, b - inner_lr * gb) for (W, b), (gW, gb) in zip(params, inner_grads)]
    return task_loss(adapted, xq, yq)


def meta_loss(params, xs, ys, xq, yq):
    return vmap(one_task_meta_loss, in_dims=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq).mean()


meta_grad_and_loss = grad_and_value(meta_loss)

# %% [markdown]
# Parity with the NumPy learner, in float64:

# %%
params_np = mn.init_mlp((1, 40, 40, 1), rng)
xs, ys, xq, yq, _, _ = sample_sinusoid_tasks(rng, n_tasks=25, n_support=10, n_query=10)
loss_np, grads_np = mn.meta_gradient(params_np, xs, ys, xq, yq, inner_lr=0.01)

params_t = [(torch.tensor(W), torch.tensor(b)) for W, b in params_np]
tasks_t = [torch.tensor(a) for a in (xs, ys, xq, yq)]
grads_func, loss_func = meta_grad_and_loss(params_t, *tasks_t)
loss_lib, grads_lib = mt.meta_gradient(params_t, *tasks_t, inner_lr=0.01)


def flat(pairs):
    return np.concatenate([np.asarray(a).ravel() for pair in pairs for a in pair])


def relative_error(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


err_func = relative_error(flat([(a.numpy(), b.numpy()) for a, b in grads_func]), flat(grads_np))
err_lib = relative_error(flat([(a.numpy(), b.numpy()) for a, b in grads_lib]), flat(grads_np))
print(f"torch.func vs NumPy: relative error {err_func:.1e}; galmeta.maml_torch vs NumPy: {err_lib:.1e}")
assert err_func < 1e-10 and err_lib < 1e-10 and abs(loss_lib - loss_np) < 1e-12 * loss_np
for inner_steps in (2, 5):
    for first_order in (False, True):
        _, g_np = mn.meta_gradient(params_np, xs, ys, xq, yq, 0.01, inner_steps, first_order)
        _, g_t = mt.meta_gradient(params_t, *tasks_t, 0.01, inner_steps, first_order)
        assert relative_error(flat([(a.numpy(), b.numpy()) for a, b in g_t]), flat(g_np)) < 1e-10
print("parity holds for 1, 2 and 5 inner steps, first and second order")

# %% [markdown]
# ## 2. Batching tasks
#
# `galmeta.maml_torch` batches differently from the `vmap` above: every task gets a *view* of the shared
# weights expanded along a task axis (no copy), the forward pass is a batched matrix product, and since
# tasks do not interact, the gradient of the *sum* of task losses with respect to the views is every task's
# own gradient. We measured both on the CPU and kept the faster; here is the comparison again, with the
# loop over tasks that most tutorials write, and the NumPy learner (float32, the paper's setup).

# %%
def time_it(step, n):
    step()
    start = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - start)


params32 = mn.init_mlp((1, 40, 40, 1), rng, dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
batch32 = [a.astype(np.float32) for a in (xs, ys, xq, yq)]
p32 = [(torch.tensor(W, device=device), torch.tensor(b, device=device)) for W, b in params32]
t32 = [torch.tensor(a, device=device) for a in batch32]
n_timing = by_mode(ci=30, laptop=200)
speeds = {
    "NumPy (notebook 03)": time_it(lambda: mn.meta_gradient(params32, *batch32, 0.01), n_timing),
    "galmeta.maml_torch (views + bmm)": time_it(lambda: mt.meta_gradient(p32, *t32, 0.01), n_timing),
    "torch.func vmap(grad)": time_it(lambda: meta_grad_and_loss(p32, *t32), n_timing),
    "per-task loop (tutorial style)": time_it(lambda: mt.loop_meta_gradient(p32, *t32, 0.01), max(n_timing // 5, 5)),
}
print(f"meta-gradients per second, meta-batch 25, on {device}:")
for name, rate in speeds.items():
    print(f"  {name:<34s} {rate:8.1f}")
ratio = speeds["galmeta.maml_torch (views + bmm)"] / speeds["per-task loop (tutorial style)"]
print(f"RESULT: PyTorch MAML meta-gradient {ratio:.1f}x faster than a per-task loop on {device}")
assert all(np.isfinite(rate) and rate > 0 for rate in speeds.values())
# No assertion on the ratio itself: timings depend on what else the machine is doing. The speed targets are
# measured side by side by benchmarks/maml_torch_speed.py.

# %% [markdown]
# On a laptop CPU, with matrices of 10 × 40, every framework call costs more than its arithmetic: the
# NumPy learner, which makes few calls, is the fastest, and batching is what separates the PyTorch
# versions. `benchmarks/maml_torch_speed.py` measures this properly (with the `higher` library, peak
# memory and the fraction of the machine's peak FLOP rate). On a GPU, batching lets thousands of tasks run
# in one meta-iteration.
#
# ## 3. One trainer, five algorithms (and a stabilised MAML)
#
# `MetaLearner(model, algorithm=...)` with `"maml"`, `"fomaml"`, `"metasgd"` (Li et al. 2017: every
# parameter gets its own inner learning rate, meta-learned with the weights: "learning how to adjust the
# learning rate"), `"anil"` (Raghu et al. 2020: only the head adapts in the inner loop) and `"reptile"`
# (Nichol et al. 2018). The model is any `torch.nn.Module`; `galmeta.maml_torch.MLP` takes the fast path.
# A sixth line, `maml++`, is MAML with the stabilisers that section 5 explains. Each summary below is the mean
# over **all** test tasks (as the MAML paper computes it: no task is dropped, `inf` when one overflows), then
# the median, then how many tasks diverged (error above 10x its value before adaptation).

# %%
n_iterations = by_mode(ci=1_000, laptop=5_000, full=70_000)
sample32 = task_sampler(25, 10, 10, dtype=np.float32)
test = [a.astype(np.float32) for a in sample_sinusoid_tasks(np.random.default_rng(3), by_mode(ci=100, laptop=600), 5, 100)[:4]]
learners, curves = {}, {}
family = {name: mt.MetaConfig(algorithm=name, inner_lr=0.01, meta_batch=25)
          for name in ("maml", "fomaml", "metasgd", "anil", "reptile")}
# MAML with the stabilisers of section 5 (5 inner steps with learned rates, multi-step loss, clipping at norm 40)
family["maml++"] = mt.mamlpp_config(inner_lr=0.01, meta_batch=25, multi_step_iterations=n_iterations // 10,
                                    inner_grad_clip=40.0)
for algorithm, config in family.items():
    torch.manual_seed(0)
    learner = mt.MetaLearner(mt.MLP.from_numpy(params32), config=config, device=device)
    before = learner.evaluate(*test, steps=1)
    learner.fit(lambda r, n: sample32(r), n_iterations, progress=False, rng=np.random.default_rng(1))
    learners[algorithm] = learner
    with np.errstate(all="ignore"):
        predictions = learner.adaptation_predictions(test[0], test[1], test[2], max_steps=10).astype(float)
        curves[algorithm] = np.mean((predictions - test[3][None]) ** 2, axis=(2, 3))  # (steps + 1, tasks)
    print(f"{algorithm:>8s}: {n_iterations} iterations in {learner.seconds:5.1f} s; 5-shot test MSE after 1 / 5 / 10 steps: "
          + " / ".join(format_summary(summarise_errors(curves[algorithm][s], curves[algorithm][0])) for s in (1, 5, 10)))
    assert learner.evaluate(*test, steps=1) < before, f"{algorithm} must improve on its initialisation"
print("RESULT: sinusoid 5-shot MSE after 1 step (median over tasks): "
      + ", ".join(f"{a} {np.median(c[1]):.3f}" for a, c in curves.items()) + f" ({n_iterations} iterations)")

# %%
plot_adaptation_curves(curves, title=f"The family on 5-shot sinusoids ({n_iterations} meta-iterations)")
plt.show()

# %% [markdown]
# The paper-scale runs in the README (70,000 iterations, five seeds, one set of 600 test tasks) show the same
# pattern at full size: with step 0.01, plain MAML diverges on a few tasks after 5 and 10 steps, enough for the
# mean over all tasks to overflow while the median keeps falling; Meta-SGD is the best learner after the one
# step its rates were learned for and diverges on many tasks when they are applied again; MAML++ diverges on
# none. The counts above show how this shorter run behaves. Meta-SGD learns its own step sizes. They are no
# longer 0.01, and differ by layer:

# %%
rates = {name: value.detach().abs().mean().item() for name, value in learners["metasgd"].inner_lrs.items()}
print({name: round(rate, 4) for name, rate in rates.items()})
assert any(abs(rate - 0.01) > 1e-4 for rate in rates.values())

# %% [markdown]
# ## 4. The family on galaxies
#
# The galaxy tasks of notebook 02, with early stopping on meta-validation tasks and a checkpoint that a
# long run could resume from. The estimator interface: `fit` on meta-train tasks, `adapt(support_x,
# support_y)` for a new task, then `predict`.

# %%
import tempfile
from pathlib import Path

from galmeta.data import load_galaxies
from galmeta.tasks import prepare_galaxy_tasks

data = prepare_galaxy_tasks(load_galaxies())
K, Q = 10, 30
train_sampler = data.sampler("train", K, Q)
val_batch = [a.astype(np.float32) for a in data.sampler("val", K, Q).sample(np.random.default_rng(7), n_tasks=100)]
test_batch = [a.astype(np.float32) for a in data.sampler("test", K, Q).sample(np.random.default_rng(8), n_tasks=200)]
galaxy_iterations = by_mode(ci=400, laptop=3_000, full=20_000)
checkpoint_dir = Path(tempfile.mkdtemp())
galaxy_rmse = {}
for algorithm in ("maml", "metasgd", "anil"):
    torch.manual_seed(0)
    learner = mt.MetaLearner(mt.MLP((data.X.shape[1], 40, 40, 1)), algorithm=algorithm, inner_lr=0.01,
                             inner_steps=1, eval_inner_steps=5, device=device)
    learner.fit(lambda r, n: [a.astype(np.float32) for a in train_sampler.sample(r, n)], galaxy_iterations,
                val_tasks=val_batch, eval_every=50, patience=10, checkpoint=checkpoint_dir / f"{algorithm}.pt",
                progress=False)
    predictor = learner.adapt(test_batch[0], test_batch[1])
    galaxy_rmse[algorithm] = float(np.sqrt(np.mean((predictor.predict(test_batch[2]) - test_batch[3]) ** 2)))
    print(f"{algorithm:>8s}: stopped at iteration {learner.iteration}, best validation loss "
          f"{min(learner.history['val_loss']):.4f}; meta-test RMSE of u-r {galaxy_rmse[algorithm]:.4f} mag")
constant = float(np.sqrt(np.mean(test_batch[3] ** 2)))
print(f"RESULT: galaxy meta-test u-r RMSE (K={K}): " + ", ".join(f"{a} {r:.3f}" for a, r in galaxy_rmse.items())
      + f"; constant colour {constant:.3f} mag")
assert all(rmse < constant for rmse in galaxy_rmse.values())

# %% [markdown]
# A checkpoint holds the model, the learned rates, the optimiser, the configuration and the random state;
# loading it gives back the same predictions:

# %%
restored = mt.MetaLearner(mt.MLP((data.X.shape[1], 40, 40, 1)), algorithm="anil", inner_lr=0.01,
                          eval_inner_steps=5, device=device).load(checkpoint_dir / "anil.pt")
print("checkpoint of iteration", restored.iteration)
assert restored.iteration == learner.iteration

# %% [markdown]
# ## 5. Adaptation that does not blow up: MAML++
#
# Plain MAML has two weaknesses that show up as **tails**: a few tasks where adaptation makes things much
# worse. On sinusoids, plain SGD from the meta-learned initialisation with a fixed step of 0.01 diverges on
# some large-amplitude tasks (the counts above; the README's 600-task table counts them over five seeds). On
# galaxies, a learner meta-trained with K = 10 galaxies per task is asked to adapt to 1 or 5, on which it was
# never trained. Antoniou, Edwards & Storkey (2019, "How to train your MAML") list stabilisers; three of them
# are options of `MetaLearner` (`mt.mamlpp_config` sets them all):
#
# 1. **Learned per-layer, per-step inner rates** (`step_lrs=True`): one step size per parameter tensor and
#    inner step, meta-learned with the weights. Less freedom than Meta-SGD's one rate per weight, and a
#    different rate for the first step (a big move) than for the last (a small correction).
# 2. **The multi-step loss** (`multi_step_iterations=N`): train on a weighted sum of the query losses after
#    *every* inner step, with weights annealed towards the last step over the first N meta-iterations, so
#    every intermediate step must be good and the gradient reaches the initialisation through short paths.
# 3. **Inner-gradient clipping** (`inner_grad_clip=c`): each task's inner gradient is rescaled to a norm of
#    at most c, so one odd support galaxy cannot throw the weights far. It is differentiable, so the
#    second-order meta-gradient still flows through it.
#
# And one change of the task distribution: meta-train with **K drawn from 1 to 20** per meta-batch, the
# support sizes the evaluation uses.
#
# First, the two new pieces written out by hand and compared with the library. The multi-step weights:

# %%
def annealed_weights(n_steps, iteration, anneal_iterations):
    """Uniform at the start; steps 1..n-1 fall linearly to 0.03/n, the last step takes the rest."""
    progress = min(iteration / anneal_iterations, 1.0)
    early = (1 - progress) / n_steps + progress * 0.03 / n_steps
    return np.array([early] * (n_steps - 1) + [1 - early * (n_steps - 1)])


for iteration in (0, 250, 500, 5_000):
    np.testing.assert_allclose(annealed_weights(5, iteration, 500), mt.multi_step_weights(5, iteration, 500), rtol=1e-12)
print("weights of the query losses after steps 1..5, at iterations 0 / 250 / 500:",
      *(mt.multi_step_weights(5, i, 500).round(3).tolist() for i in (0, 250, 500)), sep="\n  ")

# %% [markdown]
# Clipping, by hand: one inner step on a batch of sinusoid tasks, with each task's gradient rescaled to norm
# at most `clip`, must give exactly what the learner's `adapt` gives.

# %%
clip, lr = 0.5, 0.01
clipped_learner = mt.MetaLearner(mt.MLP.from_numpy(params32), algorithm="maml", inner_lr=lr, inner_grad_clip=clip,
                                 device="cpu").fit(None, 0, progress=False)  # adapt the initial weights on purpose
xs_c, ys_c, _, _ = sample32(np.random.default_rng(11))
xs_t, ys_t = torch.as_tensor(xs_c), torch.as_tensor(ys_c)
names = [n for n, _ in clipped_learner.model.named_parameters()]
per_task = {n: p.detach().expand(len(xs_c), *p.shape).clone().requires_grad_(True)
            for n, p in clipped_learner.model.named_parameters()}
loss = ((mt.mlp_forward([(per_task[f"weights.{i}"], per_task[f"biases.{i}"]) for i in range(3)], xs_t) - ys_t) ** 2
        ).mean(dim=(1, 2)).sum()
grads = torch.autograd.grad(loss, [per_task[n] for n in names])
norms = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in grads))
scale = torch.clamp(clip / norms, max=1.0)
by_hand = {n: per_task[n] - lr * g * scale.view(-1, *[1] * (g.dim() - 1)) for n, g in zip(names, grads)}
library = clipped_learner.adapt(xs_c, ys_c, steps=1).per_task
print(f"per-task gradient norms: median {norms.median():.1f}, max {norms.max():.1f}; clipped to {clip}: "
      f"{int((norms > clip).sum())} of {len(norms)} tasks")
for n in names:
    torch.testing.assert_close(library[n], by_hand[n].detach(), rtol=1e-6, atol=1e-7)

# %% [markdown]
# Now the before/after on galaxy tasks, with the evaluation protocol of notebook 06 (`galmeta.evaluate`): the
# same seeded support/query draws of every meta-test slice for both learners and for the strongest simple
# baseline (the pooled network plus a per-slice offset), the number of adaptation steps chosen on
# meta-validation slices. *Before*: plain MAML meta-trained at K = 10 with one inner step. *After*: MAML++
# meta-trained with K from 1 to 20. For each K we look at every draw's RMSE: its worst value and the fraction
# of draws above 0.3 mag (about twice the typical error). In CI mode this is a short illustration; the full
# evaluation (`benchmarks/redness_evaluation.py`, five folds and five seeds, quoted in the README) is the
# measurement.

# %%
from galmeta import baselines as gb
from galmeta import evaluate as ge

tail_config = ge.EvaluationConfig(ks=(1, 5, 10, 20), folds=(0,), seeds=by_mode(ci=(0,), laptop=(0, 1)),
                                  n_draws=by_mode(ci=5, laptop=10), n_val_draws=5,
                                  meta_iterations=by_mode(ci=300, laptop=1_000, full=3_000))
before_after = [
    ge.GradientMetaLearner("MAML (K = 10, before)", "maml", tail_config.meta_iterations, n_support=10, device=device),
    ge.GradientMetaLearner("MAML++ (K = 1-20, after)", "maml++", tail_config.meta_iterations, n_support=(1, 20),
                           device=device),
    gb.PooledPlusOffset(gb.PooledNetwork()),
]
start = time.perf_counter()
tails = ge.run_evaluation(data.catalogue, before_after, tail_config)
print(f"{len(tails.slices)} meta-test slices x {tail_config.n_draws} draws x {len(tail_config.seeds)} seed(s); "
      f"{time.perf_counter() - start:.0f} s")
draw_rmse = {(name, k): np.sqrt(np.mean(tails.residuals(name, k) ** 2, axis=-1)).ravel()
             for name in tails.learners for k in tail_config.ks}
print(f"{'':>30s}" + "".join(f"{f'K = {k}':>24s}" for k in tail_config.ks))
print(f"{'':>30s}" + "".join(f"{'RMSE  worst  >0.3':>24s}" for k in tail_config.ks))
for name in tails.learners:
    print(f"{name:>30s}" + "".join(
        f"{np.sqrt(np.mean(tails.residuals(name, k) ** 2)):>12.3f}{draw_rmse[name, k].max():>7.2f}"
        f"{np.mean(draw_rmse[name, k] > 0.3):>5.1%}" for k in tail_config.ks))
before_name, after_name = before_after[0].name, before_after[1].name
print("RESULT: galaxy tails, worst draw RMSE of u-r (mag) before -> after MAML++: "
      + ", ".join(f"K={k} {draw_rmse[before_name, k].max():.2f} -> {draw_rmse[after_name, k].max():.2f}" for k in (1, 5)))
mamlpp_rates = {n: v.detach().cpu().numpy() for n, v in before_after[1].model.inner_lrs.items()}
print("MAML++ inner rates learned for steps 1..5 (last seed; all started at 0.01):")
for n, r in mamlpp_rates.items():
    print(f"  {n:>10s}: " + " ".join(f"{x:+.4f}" for x in r))
assert all(np.isfinite(v).all() for v in draw_rmse.values())
assert any(not np.allclose(r, 0.01) for r in mamlpp_rates.values()), "MAML++ must have learned its rates"

# %%
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, k in zip(axes, (1, 5)):
    for name, style in zip(tails.learners, ("-", "-", "--")):
        values = np.sort(draw_rmse[name, k])
        survival = 1.0 - np.arange(values.size) / values.size  # fraction of draws with RMSE >= value
        ax.step(values, survival, style, where="post", label=name)
    ax.axvline(0.3, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="RMSE of u − r in one draw (mag)",
           title=f"K = {k} support galaxies ({draw_rmse[name, k].size} draws)")
    ax.xaxis.set_major_locator(FixedLocator([0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5]))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
axes[0].set_ylabel("fraction of draws with RMSE ≥ x")
axes[0].legend(fontsize=8)
fig.suptitle("The tail of adaptation on meta-test slices: before and after MAML++ (dotted: 0.3 mag)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the right end of each curve: that is the tail. The MAML++ learner sees support sets of every size
# from 1 to 20 during meta-training, learns how far to move at each step, and its clipped inner steps bound
# how far one odd galaxy can pull it. Whether that is enough to beat the strongest simple models (a pooled
# model plus a shrunk per-slice offset, or plus random slopes: notebook 05), paired over every slice and 5
# seeds, is what notebook 06 and the full evaluation measure (README, "Redness on held-out redshift slices",
# whose per-draw result files also hold every draw's error, so the tails can be read there). In the full run
# a few draws of every learner pass 0.3 mag, the oracle's included: those query sets hold galaxies far from
# what $g, r, i, z$ predict, whatever the learner.

# %% [markdown]
# ## 6. Scaling out: data-parallel meta-training
#
# A meta-batch is a sum over tasks, so it splits across processes: with a `torch.distributed` process group,
# each of W ranks samples its own `meta_batch / W` tasks, and `MetaLearner` averages the meta-gradients over the
# ranks (all-reduce) before each Adam step: exactly the step one process takes on the whole meta-batch
# (`tests/test_distributed.py` checks that to 1e-10 for every algorithm). PyTorch's own launcher starts the
# processes; on CPUs they talk through gloo, on GPUs through NCCL:
#
# ```bash
# torchrun --standalone --nproc_per_node 2 -m galmeta.train --algorithm maml --meta-batch 50 --iterations 3000 \
#          --checkpoint build/maml.pt            # --resume continues from the checkpoint, in any number of processes
# ```
#
# Here, two CPU processes for a few iterations (on this notebook's machine, two processes share its cores):

# %%
import json
import subprocess
import sys

command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "galmeta.train",
           "--iterations", str(by_mode(ci=20, laptop=300)), "--meta-batch", "50", "--eval-every", "10",
           "--checkpoint", str(checkpoint_dir / "two_ranks.pt"), "--device", "cpu"]
done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
summary = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
print(summary)
assert done.returncode == 0 and summary["ranks"] == 2
resumed_alone = mt.MetaLearner(mt.MLP((data.X.shape[1], 40, 40, 1)), algorithm="maml", meta_batch=50,
                               device="cpu").load(checkpoint_dir / "two_ranks.pt")
print(f"a checkpoint written by 2 ranks resumes in this one process at iteration {resumed_alone.iteration}")
assert resumed_alone.iteration == summary["iteration"]

# %% [markdown]
# ## 7. Many learners as one batch: population training
#
# Notebook 06 trains every meta-learner once per fold and seed: 25 trainings of the same small network that
# differ only in their data, their start and their random numbers. Each of them alone spends most of its time
# in per-call overhead (section 2). `galmeta.population` trains them **together**: every parameter gets a
# leading *member* axis, member $p$'s $T$ tasks get copies of member $p$'s weights, and all $P \times T$ tasks
# go through the batched inner loop of section 2 at once. The loss is the sum of the members' meta-losses;
# since members share no parameter, its gradient with respect to member $p$'s rows is exactly member $p$'s
# meta-gradient. Adam is elementwise, so one Adam on the stacked tensors is one Adam per member. Early stopping,
# the divergence guard and checkpoints stay per member: a member that stops is *masked* (its rows no longer
# change) while the others go on. Tasks of different members may have different $K$: their support sets are
# padded and the padding masked out of each task's loss.
#
# Here three MAML learners (float64, different starts, different $K$ per meta-batch) are trained on their own
# and as one population; every member must end where its own training ends.

# %%
from galmeta.population import fit_population


def sinusoid_member(seed):
    start = mn.init_mlp((1, 40, 40, 1), np.random.default_rng(seed), weight_std=PAPER_WEIGHT_STD)
    return mt.MetaLearner(mt.MLP.from_numpy(start), algorithm="maml", inner_lr=0.01, device="cpu", dtype=torch.float64,
                          seed=seed)


def sinusoid_tasks_with_k(k):
    sample = task_sampler(25, k, 10)
    return lambda r, n: sample(r)


member_ks = (5, 10, 20)
alone = [sinusoid_member(seed).fit(sinusoid_tasks_with_k(k), 20, progress=False, rng=np.random.default_rng(seed))
         for seed, k in enumerate(member_ks)]
together = fit_population([sinusoid_member(seed) for seed in range(3)], [sinusoid_tasks_with_k(k) for k in member_ks],
                          20, progress=False, rngs=[np.random.default_rng(seed) for seed in range(3)])
gap = max(float((p - q).detach().abs().max()) for a, b in zip(alone, together)
          for p, q in zip(a.model.parameters(), b.model.parameters()))
moved = max(float((p - q).detach().abs().max())
            for p, q in zip(alone[0].model.parameters(), sinusoid_member(0).model.parameters()))
print(f"largest parameter difference, population against separate trainings: {gap:.1e} "
      f"(the parameters moved by up to {moved:.3f})")
assert gap < 1e-10

# %% [markdown]
# The speed-up comes from fewer, larger calls. On this notebook's CPU, float32, the sinusoid setting:

# %%
def learner_iterations_per_second(members, n_iterations):
    """Learner-iterations per second of ``members`` MAML learners: one on its own (``members=0``) or as a population."""
    learners = []
    for seed in range(max(members, 1)):
        start = mn.init_mlp((1, 40, 40, 1), np.random.default_rng(seed), dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
        learners.append(mt.MetaLearner(mt.MLP.from_numpy(start), algorithm="maml", inner_lr=0.01, device=device))
    sample32 = task_sampler(25, 10, 10, dtype=np.float32)
    began = time.perf_counter()
    if members == 0:
        learners[0].fit(lambda r, n: sample32(r), n_iterations, progress=False)
    else:
        fit_population(learners, [lambda r, n: sample32(r)] * members, n_iterations, progress=False)
    return max(members, 1) * n_iterations / (time.perf_counter() - began)


n_population_iterations = by_mode(ci=10, laptop=50)
member_rates = {members: learner_iterations_per_second(members, n_population_iterations) for members in (0, 5, 25)}
for members, rate in member_rates.items():
    label = "one learner on its own" if members == 0 else f"{members} learners as one population"
    print(f"  {label:<30s} {rate:7.0f} learner-iterations per second")
print(f"RESULT: 25 learners as one population train {member_rates[25] / member_rates[0]:.1f}x as many "
      f"learner-iterations per second as one learner on its own on {device}")
# No assertion on the ratio (timings depend on the machine's load); benchmarks/population_speed.py measures
# 25 galaxy trainings both ways side by side.

# %% [markdown]
# On two CPU cores the gain is about twofold: once the calls are large, the arithmetic and the memory traffic
# of the per-task weights are what is left. `run_evaluation` trains every meta-learner this way (notebook 06);
# on a GPU the population is what fills the device.
#
# %% [markdown]
# How these compare with honest baselines (a pooled network, fine-tuning, ridge regression, nearest
# neighbours) on the same draws is the subject of notebook 06.
#
# ## Summary
# - `torch.func` turns the MAML objective into a few lines, and the exact second-order meta-gradient falls
#   out of composing `grad`; it equals the hand-written NumPy version to about $10^{-16}$.
# - Batching tasks (views of shared weights and batched matrix products) is much faster than a loop over
#   tasks; on a small CPU problem, NumPy's low call overhead still wins.
# - FOMAML, Meta-SGD, ANIL and Reptile are options of one trainer; the trainer picks CUDA, MPS or CPU by
#   itself, stops early on meta-validation loss and writes resumable checkpoints.
# - Means hide tails: report the mean over *all* tasks or draws beside the median, the worst case and the share
#   beyond a threshold. MAML++'s learned per-step rates, multi-step loss and clipped inner steps, with
#   meta-training at every support size, are options of the same trainer (`mt.mamlpp_config`).
# - Many trainings of one configuration run as one population (`galmeta.population.fit_population`): a member
#   axis on every tensor, one Adam and one early stopping per member, and each member equal to its own training.
#
# ## Exercises
#
# Each exercise has a hint and a **self-check** cell: it reminds you until you have answered and fails if the answer is wrong. All run offline.
#
# 1. **Warm-up: your own network.** Build a `torch.nn.Sequential` with two hidden layers of 64 units and `Tanh`,
#    wrap it in `mt.MetaLearner(..., algorithm="anil")` as `own`, and find out which parameters ANIL adapts
#    (`own.config.head_names`). Meta-train it on sinusoids and report its 1-step test MSE in `own_mse`.
#    *Hint:* ANIL's head is the last submodule that owns parameters; in a `Sequential`, submodules are named
#    by their index.
# 2. **Core: how much does second order matter?** Meta-train MAML and FOMAML on sinusoids with 5 inner steps
#    (same seed, same iterations) and store their 5-step test MSE in `five_step_mse` (a dict by algorithm).
#    *Hint:* `mt.MetaLearner(..., algorithm="fomaml", inner_steps=5)`; `learner.evaluate(*test, steps=5)`.
# 3. **Stretch: resume exactly.** Train MAML for 20 iterations in one go, and separately for 10, save a
#    checkpoint, load it into a fresh learner and train 10 more. Are the parameters bit-identical? Store the
#    largest absolute difference in `resume_difference`.
#    *Hint:* pass the same `rng` stream: the checkpoint holds PyTorch's random state, not your NumPy generator,
#    so continue with a generator that picks up where the first 10 iterations left it.

# %% tags=["solution"]
# Solution 1
net = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                          torch.nn.Linear(64, 1))
own = mt.MetaLearner(net, algorithm="anil", device=device)
print("ANIL adapts:", own.config.head_names, "(the last Linear layer, index 4 of the Sequential)")
own.fit(lambda r, n: sample32(r), by_mode(ci=200, laptop=2_000), progress=False)
own_mse = own.evaluate(*test, steps=1)
print(f"tanh network, 1-step test MSE {own_mse:.3f}")

# %%
# Self-check 1: a reminder until you have answered, an error if the answer is wrong
if {"own", "own_mse"} <= set(globals()):
    assert own.config.head_names == ("4.weight", "4.bias") and np.isfinite(own_mse)
else:
    print("exercise 1: not answered yet (define own, own_mse)")

# %% tags=["solution"]
# Solution 2
five_step_mse = {}
for algorithm in ("maml", "fomaml"):
    torch.manual_seed(0)
    five = mt.MetaLearner(mt.MLP.from_numpy(params32), algorithm=algorithm, inner_steps=5, device=device)
    five.fit(lambda r, n: sample32(r), by_mode(ci=300, laptop=3_000), progress=False, rng=np.random.default_rng(2))
    five_step_mse[algorithm] = five.evaluate(*test, steps=5)
print("5-step test MSE after meta-training with 5 inner steps:", {a: round(v, 3) for a, v in five_step_mse.items()})

# %%
# Self-check 2: a reminder until you have answered, an error if the answer is wrong
if {"five_step_mse"} <= set(globals()):
    assert set(five_step_mse) == {"maml", "fomaml"} and all(np.isfinite(v) for v in five_step_mse.values())
else:
    print("exercise 2: not answered yet (define five_step_mse)")

# %% tags=["solution"]
# Solution 3
def fresh():
    torch.manual_seed(0)
    return mt.MetaLearner(mt.MLP.from_numpy(params32), algorithm="maml", device="cpu")


batches = [sample32(np.random.default_rng(100 + i)) for i in range(20)]  # one fixed stream of task batches
straight, first_half = fresh(), fresh()
straight.fit(lambda r, n, it=iter(batches): next(it), 20, progress=False)
first_half.fit(lambda r, n, it=iter(batches[:10]): next(it), 10, progress=False)
checkpoint_path = checkpoint_dir / "resume.pt"
first_half.save(checkpoint_path)
resumed = fresh().load(checkpoint_path)
resumed.fit(lambda r, n, it=iter(batches[10:]): next(it), 10, progress=False)
resume_difference = max(float((a - b).detach().abs().max()) for a, b in zip(straight.model.parameters(), resumed.model.parameters()))
print(f"iteration {resumed.iteration}; largest difference between straight and resumed training: {resume_difference}")

# %%
# Self-check 3: a reminder until you have answered, an error if the answer is wrong
if {"resume_difference", "resumed", "straight"} <= set(globals()):
    assert resumed.iteration == straight.iteration == 20 and resume_difference == 0.0
else:
    print("exercise 3: not answered yet (define resume_difference, resumed, straight)")
