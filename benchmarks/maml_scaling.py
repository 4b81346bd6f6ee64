"""The cost of growing work: meta-iterations per second and graph memory against meta-batch, inner steps and ranks.

Second-order MAML on the sinusoid setup (1-40-40-1, K = 10 support and 10 query points per task, float32),
with galmeta's batched PyTorch learner, measured side by side in one run:

* meta-batch 24 ... 1,024 on CPU (to 4,096 with ``--device cuda``; even sizes, so that two ranks get equal
  shards), inner steps 1, 5, 10;
* one process, and two data-parallel ranks (``torch.distributed`` with gloo, each rank half of the
  meta-batch, meta-gradients all-reduced), each process with one thread; on this 2-core machine that is the
  one-process baseline against two cores working on halves.

Memory is the bytes the autograd graph of one meta-loss holds (every saved tensor's storage, counted once),
per rank; on CUDA the allocator's peak is added.

    python benchmarks/maml_scaling.py                 # CPU
    python benchmarks/maml_scaling.py --device cuda   # GPU column (one process)
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt
from galmeta.sinusoid import PAPER_WEIGHT_STD, task_sampler

SIZES = (1, 40, 40, 1)


def make_learner(meta_batch, inner_steps, device):
    init = mn.init_mlp(SIZES, np.random.default_rng(0), dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
    return mt.MetaLearner(mt.MLP.from_numpy(init), algorithm="maml", inner_lr=0.01, inner_steps=inner_steps,
                          meta_batch=meta_batch, device=device)


def make_batch(tasks, device, seed=0):
    return [torch.from_numpy(a).to(device) for a in task_sampler(tasks, 10, 10, dtype=np.float32)(np.random.default_rng(seed))]


def graph_bytes(learner, batch):
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = learner.meta_loss(*batch)
    loss.backward()
    learner.optimiser.zero_grad(set_to_none=True)
    return sum(storages.values())


def measure(meta_batch, inner_steps, device, shard=1, budget=1.5):
    """(iterations per second, graph bytes) of one rank stepping on its ``meta_batch / shard`` tasks."""
    learner = make_learner(meta_batch, inner_steps, device)
    batch = make_batch(meta_batch // shard, device, seed=learner.rank)
    memory = graph_bytes(learner, batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(2):  # warm-up, and a calibration of how many steps fill the time budget
        learner.step(*batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    steps = torch.tensor([max(3, int(budget / ((time.perf_counter() - start) / 2)))])
    if learner.world_size > 1:  # every rank must take the same number of steps, or one waits forever
        import torch.distributed as dist

        dist.broadcast(steps, src=0)
    start = time.perf_counter()
    for _ in range(int(steps)):
        learner.step(*batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        memory += torch.cuda.max_memory_allocated()
    return int(steps) / (time.perf_counter() - start), memory


def _rank_worker(rank, world, rendezvous, grid, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    rows = [(t, s, *measure(t, s, torch.device("cpu"), shard=world)) for t, s in grid]
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(rows, handle)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--meta-batches", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10])
    args = parser.parse_args()
    device = torch.device(args.device)
    meta_batches = args.meta_batches or ([24, 100, 400, 1024] if device.type == "cpu" else [24, 100, 400, 1024, 4096])
    grid = [(t, s) for t in meta_batches for s in args.steps]
    start = time.perf_counter()
    torch.set_num_threads(1)
    one = {(t, s): measure(t, s, device) for t, s in grid}
    two = {}
    if device.type == "cpu":
        import torch.multiprocessing as mp

        folder = tempfile.mkdtemp()
        out = os.path.join(folder, "two.json")
        mp.spawn(_rank_worker, args=(2, os.path.join(folder, "rendezvous"), grid, out), nprocs=2, join=True)
        with open(out) as handle:
            two = {(t, s): (rate, memory) for t, s, rate, memory in json.load(handle)}
    print(f"second-order MAML, 1-40-40-1, K = 10 + 10 query points, float32, on {device} "
          f"({os.cpu_count()} cores; one thread per process)\n")
    header = f"{'meta-batch':>10s} {'steps':>5s} {'it/s 1 rank':>12s} {'tasks/s':>9s} {'graph MiB':>9s}"
    if two:
        header += f" {'it/s 2 ranks':>12s} {'speed-up':>8s} {'MiB / rank':>10s}"
    print(header)
    print("-" * len(header))
    for t, s in grid:
        rate, memory = one[(t, s)]
        line = f"{t:>10d} {s:>5d} {rate:>12.1f} {rate * t:>9.0f} {memory / 2 ** 20:>9.2f}"
        if two:
            rate2, memory2 = two[(t, s)]
            line += f" {rate2:>12.1f} {rate2 / rate:>7.2f}x {memory2 / 2 ** 20:>10.2f}"
        print(line)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
