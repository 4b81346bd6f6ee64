"""Meta-training throughput of the NumPy MAML against a per-task PyTorch autograd loop.

Sinusoid setup of the MAML paper: 1-40-40-1 ReLU network, meta-batch 25, K = 10 support and
10 query points, one inner step, second order, Adam. Both learners run the same work (task
sampling, meta-gradient, Adam update) side by side in this one run.

    python benchmarks/maml_numpy_speed.py [--iterations 300]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import iterations_per_second, machine_line, print_table
from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt
from galmeta.sinusoid import task_sampler


def numpy_step_factory(dtype):
    rng = np.random.default_rng(0)
    params = mn.init_mlp((1, 40, 40, 1), rng, dtype=dtype)
    optimiser = mn.Adam(params)
    sample = task_sampler(25, 10, 10, dtype=dtype)

    def step():
        loss, grads = mn.meta_gradient(params, *sample(rng), inner_lr=0.01)
        optimiser.step(params, grads)

    return step


def loop_step_factory(dtype):
    rng = np.random.default_rng(0)
    model = mt.MLP((1, 40, 40, 1), dtype=dtype)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    sample = task_sampler(25, 10, 10, dtype=np.float32 if dtype == torch.float32 else np.float64)

    def step():
        batch = [torch.from_numpy(a) for a in sample(rng)]
        _, grads = mt.loop_meta_gradient(model.pairs(), *batch, inner_lr=0.01)
        for (W, b), (gW, gb) in zip(model.pairs(), grads):
            W.grad, b.grad = gW, gb
        optimiser.step()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    print(machine_line())
    rows = []
    for name, np_dtype, t_dtype in (("float32", np.float32, torch.float32), ("float64", np.float64, torch.float64)):
        numpy_rate = iterations_per_second(numpy_step_factory(np_dtype), args.iterations)
        loop_rate = iterations_per_second(loop_step_factory(t_dtype), max(args.iterations // 10, 20))
        rows.append((name, f"{numpy_rate:8.1f}", f"{loop_rate:8.1f}", f"{numpy_rate / loop_rate:5.1f}x"))
    print_table(("dtype", "NumPy MAML it/s", "per-task torch loop it/s", "ratio"), rows)
    ratio32 = float(rows[0][3].rstrip("x"))
    print(f"target (float32): NumPy at least 5x the per-task loop -> {'met' if ratio32 >= 5 else 'NOT met'} ({ratio32:.1f}x)")


if __name__ == "__main__":
    main()
