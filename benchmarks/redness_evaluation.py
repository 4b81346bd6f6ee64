"""The full redness evaluation: every learner on the same draws of every meta-test slice, over folds and seeds.

Rotates the redshift blocks so that every block is meta-test once (5 folds, 40 meta-test slices),
trains MAML, FOMAML, Meta-SGD, ANIL (PyTorch), the NumPy MAML as a check, and every baseline for each
fold and training seed, chooses every option on meta-validation, and writes into ``build/results/``:

* ``redness_per_slice.csv``: every learner x K x seed x slice;
* ``redness_summary.{csv,md}``: metrics with 95% intervals (slices, then draws resampled);
* ``redness_paired.{csv,md}``: the headline, paired differences to the best non-meta baseline;
* the figures (``paired_differences.png`` first).

    python benchmarks/redness_evaluation.py                   # full: 5 folds x 5 seeds
    python benchmarks/redness_evaluation.py --seeds 0 --folds 0 --meta-iterations 300   # a quick look
    python benchmarks/redness_evaluation.py --replot           # tables and figures again from results.pickle
"""
from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

from galmeta.config import seed_everything, try_device
from galmeta.data import load_galaxies
from galmeta.evaluate import EvaluationConfig, default_learners, run_evaluation
from galmeta.plots import save_figures
from galmeta.tasks import build_catalogue


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-iterations", type=int, default=5000, help="most meta-iterations (early stopping decides)")
    parser.add_argument("--pooled-epochs", type=int, default=100, help="most epochs of the pooled networks")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--draws", type=int, default=10, help="meta-test draws per slice and K")
    parser.add_argument("--val-draws", type=int, default=5, help="meta-validation draws per slice and K")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "build" / "results"))
    parser.add_argument("--replot", action="store_true",
                        help="redraw tables and figures from the results.pickle of an earlier run in --out")
    args = parser.parse_args()

    out = Path(args.out)
    if args.replot:
        with open(out / "results.pickle", "rb") as handle:
            results = pickle.load(handle)
        start = time.perf_counter()
        summary_rows, paired_rows = results.write(out, n_resamples=args.resamples)
        print("\n".join(str(p) for p in save_figures(results, paired_rows, summary_rows, out)))
        print(f"tables and figures in {time.perf_counter() - start:.0f} s")
        return

    start = time.perf_counter()
    seed_everything(0)
    device = try_device(args.device)
    catalogue = build_catalogue(load_galaxies())
    config = EvaluationConfig(folds=tuple(args.folds), seeds=tuple(args.seeds), n_draws=args.draws,
                              n_val_draws=args.val_draws, meta_iterations=args.meta_iterations,
                              pooled_epochs=args.pooled_epochs)
    print(f"device {device}; {len(config.folds)} fold(s) x {len(config.seeds)} seed(s); "
          f"{config.n_draws} draws per meta-test slice and K")
    results = run_evaluation(catalogue, default_learners(config, device=device), config,
                             progress=lambda message: print(" ", message, flush=True))
    print(f"training and prediction took {results.seconds:.0f} s; {len(results.slices)} meta-test slices")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.pickle", "wb") as handle:  # predictions only: learners are dropped
        pickle.dump(results.without_models(), handle)
    summary_rows, paired_rows = results.write(out, n_resamples=args.resamples)
    figures = save_figures(results, paired_rows, summary_rows, out)
    print("\n" + (out / "redness_paired.md").read_text())
    print((out / "redness_summary.md").read_text())
    seconds = time.perf_counter() - start
    (out / "redness_run.json").write_text(json.dumps(
        {"meta_iterations": args.meta_iterations, "pooled_epochs": args.pooled_epochs, "folds": args.folds,
         "seeds": args.seeds, "draws": args.draws, "val_draws": args.val_draws, "resamples": args.resamples,
         "slices": len(results.slices), "device": str(device), "seconds": round(seconds, 1)}, indent=2))
    print(f"\nwrote {out}/redness_per_slice.csv, redness_summary.*, redness_paired.* and {len(figures)} figures "
          f"in {seconds:.0f} s")


if __name__ == "__main__":
    main()
