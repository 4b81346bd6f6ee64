"""The full redness evaluation: every learner on the same meta-test draws, K = 1, 5, 10, 20.

Trains MAML, FOMAML, Meta-SGD, ANIL (PyTorch), the NumPy MAML as a check, the pooled network and the
oracle, chooses every hyperparameter on meta-validation tasks, evaluates on meta-test tasks with
bootstrap intervals, and writes ``redness_results.csv``, ``redness_results.md`` and the figures into
``build/results/``. Needs the galaxy table (cached query or imported snapshot).

    python benchmarks/redness_evaluation.py [--meta-iterations 5000] [--tasks 200]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from galmeta.config import seed_everything, try_device
from galmeta.data import load_galaxies
from galmeta.evaluate import evaluate_learners, save_figures, train_learners
from galmeta.tasks import prepare_galaxy_tasks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-iterations", type=int, default=5000)
    parser.add_argument("--pooled-epochs", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=200, help="meta-test draws per K")
    parser.add_argument("--val-tasks", type=int, default=100, help="meta-validation draws per K")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "build" / "results"))
    args = parser.parse_args()

    start = time.perf_counter()
    seed_everything(args.seed)
    device = try_device(args.device)
    data = prepare_galaxy_tasks(load_galaxies())
    print(f"device {device}; meta-train {len(data.tasks['train'])} tasks, meta-val {len(data.tasks['val'])}, "
          f"meta-test {len(data.tasks['test'])}")
    learners, pooled, oracle = train_learners(data, args.meta_iterations, args.pooled_epochs, device=device,
                                              seed=args.seed, progress=True)
    for name, learner in learners.items():
        if hasattr(learner, "iteration"):
            print(f"  {name}: {learner.iteration} meta-iterations (early stopping on meta-validation)")
    print(f"training took {time.perf_counter() - start:.0f} s")
    table = evaluate_learners(data, learners, pooled, oracle, n_tasks=args.tasks, n_val_tasks=args.val_tasks,
                              n_resamples=args.resamples, seed=args.seed)
    out = table.write(args.out)
    figures = save_figures(table, data, out)
    print(f"\nmeta-test results, mean [95% bootstrap interval over tasks], g - r in mag "
          f"(red if predicted g-r >= {table.details['threshold_g_r']:.3f}):\n")
    table.print()
    (Path(out) / "redness_run.json").write_text(json.dumps(
        {"meta_iterations": args.meta_iterations, "pooled_epochs": args.pooled_epochs, "tasks": args.tasks,
         "val_tasks": args.val_tasks, "resamples": args.resamples, "seed": args.seed, "device": str(device),
         "seconds": round(time.perf_counter() - start, 1)}, indent=2))
    print(f"\nwrote {out}/redness_results.csv, redness_results.md and {len(figures)} figures "
          f"in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
