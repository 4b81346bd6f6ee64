"""Speed and memory of galmeta's PyTorch MAML against common ways of writing it.

Sinusoid setup: 1-40-40-1 ReLU MLP, meta-batch 25, K = 10 support and 10 query points, one inner
step, second order, float32, Adam. All learners run the same work side by side in this one run:

* galmeta PyTorch MAML (``MetaLearner``: per-task parameter views, batched matrix products);
* the same meta-gradient written with ``torch.func`` (``vmap`` of ``grad``), the alternative we measured;
* a per-task loop with ``torch.autograd.grad(create_graph=True)``, the style of learn2learn and most tutorials;
* the ``higher`` library's ``innerloop_ctx`` (benchmark-only extra: ``pip install higher``);
* galmeta's NumPy MAML;
* galmeta PyTorch MAML trained as a population of 25 learners (:mod:`galmeta.population`), per learner.

Also: achieved FLOP rate as a fraction of the machine's measured matrix-multiply peak, peak memory of
second-order training against inner steps, and on a GPU the throughput against meta-batch size.

    python benchmarks/maml_torch_speed.py [--iterations 200] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import iterations_per_second, machine_line, print_table
from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt
from galmeta.config import try_device
from galmeta.sinusoid import PAPER_WEIGHT_STD, task_sampler

SIZES = (1, 40, 40, 1)


def batches(device, meta_batch=25, n=64, seed=0):
    """Pre-drawn task batches on the device, so that every learner times the same work."""
    rng = np.random.default_rng(seed)
    sample = task_sampler(meta_batch, 10, 10, dtype=np.float32)
    return [tuple(torch.from_numpy(a).to(device) for a in sample(rng)) for _ in range(n)]


def cycle(items):
    while True:
        yield from items


def galmeta_step(device, data, inner_steps=1):
    init = mn.init_mlp(SIZES, np.random.default_rng(0), dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
    learner = mt.MetaLearner(mt.MLP.from_numpy(init), algorithm="maml", inner_lr=0.01, inner_steps=inner_steps,
                             device=device)
    it = cycle(data)
    return lambda: learner.step(*next(it))


def population_step(device, data, members=25):
    """One meta-iteration of ``members`` MAML learners trained as one population (galmeta.population); the
    rate it gives is divided by ``members`` below, so it compares per learner with the others."""
    import itertools

    from galmeta.population import PopulationMetaLearner

    learners = []
    for seed in range(members):
        init = mn.init_mlp(SIZES, np.random.default_rng(seed), dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
        learners.append(mt.MetaLearner(mt.MLP.from_numpy(init), algorithm="maml", inner_lr=0.01, device=device))
    population = PopulationMetaLearner(learners)
    active = torch.arange(members, device=device)
    batches = itertools.cycle([[data[(i + j) % len(data)] for j in range(members)] for i in range(len(data))])

    def step():
        grads, _ = population._gradients(active, next(batches))
        population._adam_step(grads, active)

    return step


def func_step(device, data):
    from torch.func import grad, grad_and_value, vmap

    model = mt.MLP(SIZES).to(device)
    params = {n: p.detach() for n, p in model.named_parameters()}
    optimiser = torch.optim.Adam(params.values(), lr=1e-3)

    def loss(p, x, y):
        pairs = [(p[f"weights.{i}"], p[f"biases.{i}"]) for i in range(len(SIZES) - 1)]
        return ((mt.mlp_forward(pairs, x) - y) ** 2).mean()

    def task_meta_loss(p, xs, ys, xq, yq):
        g = grad(loss)(p, xs, ys)
        return loss({n: p[n] - 0.01 * g[n] for n in p}, xq, yq)

    meta = grad_and_value(lambda p, *batch: vmap(task_meta_loss, in_dims=(None, 0, 0, 0, 0))(p, *batch).mean())
    it = cycle(data)

    def step():
        grads, _ = meta(params, *next(it))
        for n, p in params.items():
            p.grad = grads[n]
        optimiser.step()

    return step


def loop_step(device, data):
    model = mt.MLP(SIZES).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    it = cycle(data)

    def step():
        _, grads = mt.loop_meta_gradient(model.pairs(), *next(it), inner_lr=0.01)
        for (W, b), (gW, gb) in zip(model.pairs(), grads):
            W.grad, b.grad = gW, gb
        optimiser.step()

    return step


def higher_step(device, data):
    import higher

    net = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40), torch.nn.ReLU(),
                              torch.nn.Linear(40, 1)).to(device)
    meta_optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    inner_optimiser = torch.optim.SGD(net.parameters(), lr=0.01)
    it = cycle(data)

    def step():
        xs, ys, xq, yq = next(it)
        meta_optimiser.zero_grad()
        for t in range(xs.shape[0]):
            with higher.innerloop_ctx(net, inner_optimiser, copy_initial_weights=False) as (fnet, diffopt):
                diffopt.step(((fnet(xs[t]) - ys[t]) ** 2).mean())
                (((fnet(xq[t]) - yq[t]) ** 2).mean() / xs.shape[0]).backward()
        meta_optimiser.step()

    return step


def numpy_step():
    rng = np.random.default_rng(0)
    params = mn.init_mlp(SIZES, rng, dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
    optimiser = mn.Adam(params)
    sample = task_sampler(25, 10, 10, dtype=np.float32)
    data = [sample(rng) for _ in range(64)]
    it = cycle(data)

    def step():
        _, grads = mn.meta_gradient(params, *next(it), inner_lr=0.01)
        optimiser.step(params, grads)

    return step


def meta_iteration_flops(sizes=SIZES, tasks=25, support=10, query=10, inner_steps=1):
    """Multiply-add FLOPs (2 per multiply-add) of the matrix products of one second-order meta-iteration.

    Counted from the algorithm of galmeta.maml_numpy: per inner step a forward and a backward pass on
    the support set; a forward and a backward pass on the query set; per inner step a Hessian-vector
    product (R-forward: two products per layer but one in the first; R-backward: two for the weight
    gradient and two for the propagated error, plus the plain backward's one). Element-wise work is
    left out, so the fraction of peak is, if anything, an overestimate of idle time.
    """
    layers = list(zip(sizes[:-1], sizes[1:]))

    def fwd(n):
        return sum(2 * n * a * b for a, b in layers)

    def bwd(n):
        return sum(2 * n * a * b for a, b in layers) + sum(2 * n * a * b for a, b in layers[1:])

    def hvp(n):
        r_forward = sum(2 * n * a * b for a, b in layers[:1]) + sum(4 * n * a * b for a, b in layers[1:])
        r_backward = sum(4 * n * a * b for a, b in layers) + sum(6 * n * a * b for a, b in layers[1:])
        return fwd(n) + r_forward + r_backward

    per_task = inner_steps * (fwd(support) + bwd(support)) + fwd(query) + bwd(query) + inner_steps * hvp(support)
    return tasks * per_task


def peak_matmul_flops(device, size=2048, repeats=10):
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return repeats * 2 * size ** 3 / (time.perf_counter() - start)


def graph_memory(device, inner_steps, meta_batch=25):
    """Bytes held by the autograd graph of one second-order meta-loss, at its peak (just before backward).

    Every tensor autograd saves for the backward pass goes through ``saved_tensors_hooks``; storage
    shared between saved tensors is counted once. On CUDA the allocator's peak is reported as well.
    """
    data = batches(device, meta_batch=meta_batch, n=1)[0]
    init = mn.init_mlp(SIZES, np.random.default_rng(0), dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
    learner = mt.MetaLearner(mt.MLP.from_numpy(init), algorithm="maml", inner_steps=inner_steps, device=device)
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = learner.meta_loss(*data)
    loss.backward()
    cuda_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return sum(storages.values()), cuda_peak


def measure_memory(device):
    rows = []
    for steps in (1, 5, 10):
        graph, cuda_peak = graph_memory(device, steps)
        rows.append((steps, f"{graph / 2**10:9.1f}", f"{cuda_peak / 2**20:8.2f}" if cuda_peak else "-"))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = try_device(args.device)

    print(machine_line(), f"| device: {device}")
    data = batches(device)
    n = args.iterations
    rates = {
        "galmeta PyTorch MAML (batched)": iterations_per_second(galmeta_step(device, data), n),
        "torch.func vmap(grad)": iterations_per_second(func_step(device, data), n),
        "per-task autograd loop": iterations_per_second(loop_step(device, data), max(n // 10, 10)),
    }
    try:
        rates["higher innerloop_ctx"] = iterations_per_second(higher_step(device, data), max(n // 20, 5))
    except ImportError:
        print("(higher is not installed: pip install 'galmeta[bench]' to include it)")
    if device.type == "cpu":
        rates["galmeta NumPy MAML"] = iterations_per_second(numpy_step(), n)
    members = 25
    rates[f"galmeta PyTorch MAML, population of {members} (per learner)"] = (
        iterations_per_second(population_step(device, data, members), max(n // 20, 5)) * members)
    ours = rates["galmeta PyTorch MAML (batched)"]
    print_table(("learner", "meta-it/s", "galmeta PyTorch is ... x faster"),
                [(name, f"{rate:9.1f}", f"{ours / rate:6.1f}") for name, rate in rates.items()])
    loop, hi = rates["per-task autograd loop"], rates.get("higher innerloop_ctx")
    print(f"\ntargets on this machine: >= 10x the per-task loop -> {ours / loop:.1f}x "
          f"({'met' if ours / loop >= 10 else 'NOT met'})", end="")
    if hi:
        print(f"; >= 20x higher -> {ours / hi:.1f}x ({'met' if ours / hi >= 20 else 'NOT met'})")
    else:
        print()

    if "galmeta NumPy MAML" in rates:
        numpy_rate = rates["galmeta NumPy MAML"]
        population = rates[f"galmeta PyTorch MAML, population of {members} (per learner)"]
        print(f"target: PyTorch MAML step at least as fast as the NumPy step -> {ours / numpy_rate:.2f}x "
              f"({'met' if ours >= numpy_rate else 'NOT met'}); per learner in a population of {members}: "
              f"{population / numpy_rate:.2f}x")

    flops = meta_iteration_flops()
    peak = peak_matmul_flops(device)
    print(f"\none meta-iteration: {flops / 1e6:.2f} MFLOP in matrix products; machine peak (float32 2048^3 matmul) "
          f"{peak / 1e9:.1f} GFLOP/s")
    for name, rate in rates.items():
        print(f"  {name:<32s} {rate * flops / 1e9:7.3f} GFLOP/s = {100 * rate * flops / peak:6.2f}% of peak")

    print("\npeak memory of one second-order meta-iteration (galmeta PyTorch MAML, meta-batch 25):")
    print_table(("inner steps", "autograd graph KiB", "CUDA allocator peak MiB"), measure_memory(device))

    if device.type == "cuda":
        print("\nGPU throughput against meta-batch size:")
        rows = []
        for meta_batch in (25, 100, 400, 1024, 4096):
            d = batches(device, meta_batch=meta_batch, n=8)
            rate = iterations_per_second(galmeta_step(device, d), 50)
            rows.append((meta_batch, f"{rate:8.1f}", f"{rate * meta_batch:10.0f}"))
        print_table(("meta-batch", "meta-it/s", "tasks/s"), rows)
    else:
        print("\n(no GPU here: the meta-batch scaling table runs with --device cuda on a GPU machine)")


if __name__ == "__main__":
    main()
