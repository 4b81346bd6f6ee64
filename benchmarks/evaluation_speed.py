"""The redness evaluation end to end, trained learner by learner and as populations, side by side in one run.

Runs :func:`galmeta.evaluate.run_evaluation` twice on the same configuration (every learner of the
course, 5 folds x 5 seeds by default, development sample): first with ``population=False`` (every fold and
seed trained on its own, as the evaluation did before population training), then with
``population=True`` (each meta-learner's 25 trainings as one batched computation,
:mod:`galmeta.population`), and then the tables of each run. Printed: seconds per learner and in total,
for both, and the ratio. ``--iterations`` sets the meta-learners' most iterations (the full run uses 3,000;
the time of the meta-learners grows with it, the rest does not).

    python benchmarks/evaluation_speed.py [--iterations 300] [--seeds 0 1 2 3 4] [--folds 0 1 2 3 4]
"""
from __future__ import annotations

import argparse
import time

import torch

from _common import machine_line, print_table
from galmeta import evaluate as ev
from galmeta.data import load_galaxies
from galmeta.tasks import build_catalogue


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the tables")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ev.EvaluationConfig(seeds=tuple(args.seeds), folds=tuple(args.folds), meta_iterations=args.iterations)
    print(machine_line(), f"| {len(args.folds)} folds x {len(args.seeds)} seeds, {args.iterations} meta-iterations")
    catalogue = build_catalogue(load_galaxies())
    runs, totals = {}, {}
    for population in (False, True):
        start = time.perf_counter()
        results = ev.run_evaluation(catalogue, ev.default_learners(config), config, population=population)
        trained = time.perf_counter() - start
        start = time.perf_counter()
        results.summary_rows(n_resamples=args.resamples)
        results.paired_rows(n_resamples=args.resamples)
        tables = time.perf_counter() - start
        runs[population], totals[population] = results, (trained, tables)
        print(f"population={population}: {trained:.0f} s training and prediction, {tables:.0f} s tables", flush=True)
    names = list(runs[True].learners)
    rows = []
    for name in names:
        before, after = runs[False].fit_seconds.get(name, 0.0), runs[True].fit_seconds.get(name, 0.0)
        rows.append((name, f"{before:8.1f}", f"{after:8.1f}", f"{before / after:5.2f}" if after > 0.05 else "-"))
    print_table(("learner", "training s, one by one", "training s, populations", "ratio"), rows)
    (t0, s0), (t1, s1) = totals[False], totals[True]
    print(f"\nend to end: {t0 + s0:.0f} s one by one, {t1 + s1:.0f} s with populations: {(t0 + s0) / (t1 + s1):.2f}x "
          f"(target 5x: {'met' if (t0 + s0) / (t1 + s1) >= 5 else 'NOT met'}); training and prediction alone "
          f"{t0 / t1:.2f}x")


if __name__ == "__main__":
    main()
