"""Population training against separate trainings, side by side in one run.

The evaluation's setting (``--setup galaxies``, default): the meta-learners of the redness evaluation,
one member per fold and seed (5 folds x 5 seeds = 25 members), each with its own galaxy tasks (K drawn
from 1..20 per meta-batch, 20 query galaxies, meta-batch 25, a 40-40 MLP, float32), its own start and its
own random stream. ``--setup sinusoid``: the MAML paper's 1-40-40-1 network, K = 10, 25 seeds.

Both ways train the same members for the same number of meta-iterations with meta-validation every 50
(no early stopping, so both do the same work) on one thread: first every member on its own
(``MetaLearner.fit``), then all of them as one population (:mod:`galmeta.population`). Printed per
algorithm: both times, the ratio, and the largest difference of any parameter between a member and its
separate training (float32 rounding; ``tests/test_population.py`` checks equality in float64).

    python benchmarks/population_speed.py [--iterations 100] [--algorithms maml maml++] [--members 25]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import machine_line, print_table
from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt
from galmeta.learners import GradientMetaLearner
from galmeta.population import fit_population

ALGORITHMS = ("maml", "fomaml", "metasgd", "anil", "reptile", "maml++")


def galaxy_members(algorithm, n_members, iterations):
    """``n_members`` (learner factory, sampler, validation batches, rng seed) of the evaluation's setting."""
    from galmeta.data import load_galaxies
    from galmeta.tasks import build_catalogue

    catalogue = build_catalogue(load_galaxies())
    folds = {fold: catalogue.fold(fold, 5) for fold in range(5)}
    template = GradientMetaLearner(algorithm, algorithm, iterations, n_support=(1, 20))
    pairs = [(fold, seed) for seed in range(n_members // 5 + 1) for fold in range(5)][:n_members]

    def make(index):
        fold, seed = pairs[index]
        return template._prepare(folds[fold], seed) + (seed,)

    return make


def sinusoid_members(algorithm, n_members, iterations):
    from galmeta.sinusoid import PAPER_WEIGHT_STD, task_sampler

    sample = task_sampler(25, 10, 10, dtype=np.float32)
    config = dict(algorithm="maml", inner_steps=5, step_lrs=True, multi_step_iterations=500,
                  inner_grad_clip=40.0) if algorithm == "maml++" else dict(algorithm=algorithm)
    val = [sample(np.random.default_rng(10_000))]

    def make(seed):
        init = mn.init_mlp((1, 40, 40, 1), np.random.default_rng(seed), dtype=np.float32, weight_std=PAPER_WEIGHT_STD)
        learner = mt.MetaLearner(mt.MLP.from_numpy(init), device="cpu", seed=seed, **config)
        return learner, (lambda r, n: sample(r)), val, seed

    return make


def compare(make, n_members, iterations):
    # warm-up of both ways (first calls, allocator), not timed
    make(0)[0].fit(make(0)[1], 3, progress=False)
    warm = [make(0), make(1)]
    fit_population([m[0] for m in warm], [m[1] for m in warm], 3, progress=False)
    separate = [make(index) for index in range(n_members)]
    start = time.perf_counter()
    for learner, sample, val, seed in separate:
        learner.fit(sample, iterations, val_tasks=val, eval_every=50, progress=False, rng=np.random.default_rng(seed))
    separate_seconds = time.perf_counter() - start
    separate = [m[0] for m in separate]
    members = [make(index) for index in range(n_members)]
    start = time.perf_counter()
    fit_population([m[0] for m in members], [m[1] for m in members], iterations, val_tasks=[m[2] for m in members],
                   eval_every=50, progress=False, rngs=[np.random.default_rng(m[3]) for m in members])
    population_seconds = time.perf_counter() - start
    difference = max(float((p - q).detach().abs().max()) for a, (b, *_) in zip(separate, members)
                     for p, q in zip(a.model.parameters(), b.model.parameters()))
    return separate_seconds, population_seconds, difference


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=("galaxies", "sinusoid"), default="galaxies")
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=["maml", "maml++"])
    parser.add_argument("--members", type=int, default=25)
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the library's default for small networks (galmeta.config)

    print(machine_line(), f"| setup: {args.setup}, {args.members} members, {args.iterations} meta-iterations each")
    factory = galaxy_members if args.setup == "galaxies" else sinusoid_members
    rows, ratios = [], {}
    for algorithm in args.algorithms:
        separate, population, difference = compare(factory(algorithm, args.members, args.iterations), args.members,
                                                   args.iterations)
        ratios[algorithm] = separate / population
        rows.append((algorithm, f"{separate:8.1f}", f"{population:8.1f}", f"{separate / population:5.2f}",
                     f"{1e3 * population / (args.members * args.iterations):6.2f}", f"{difference:.1e}"))
    print_table(("algorithm", "separate s", "population s", "ratio", "ms per member-iteration",
                 "max |parameter difference|"), rows)
    for algorithm in ("maml", "maml++"):
        if algorithm in ratios:
            ratio = ratios[algorithm]
            print(f"target: population of {args.members} >= 5x faster than separate trainings for {algorithm}: "
                  f"{ratio:.2f}x ({'met' if ratio >= 5 else 'NOT met'}; goal 10x)")


if __name__ == "__main__":
    main()
