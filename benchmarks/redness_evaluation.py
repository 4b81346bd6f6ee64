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
    python benchmarks/redness_evaluation.py --replot           # tables and figures again from the saved results

The committed result files and the README's tables (development and sealed confirmation samples):

    python benchmarks/redness_evaluation.py --confirm --folds 0 1 2 --threads 1 --no-tables --out build/full/part0 &
    python benchmarks/redness_evaluation.py --confirm --folds 3 4 --threads 1 --no-tables --out build/full/part1
    python benchmarks/redness_evaluation.py --merge build/full/part0/development build/full/part1/development \
        --out build/full/development --per-draw results/redness_per_draw.csv.gz
    python benchmarks/redness_evaluation.py --merge build/full/part0/confirmation build/full/part1/confirmation \
        --out build/full/confirmation --per-draw results/redness_confirmation_per_draw.csv.gz
    python -m galmeta.result_tables

On a machine with several cores, folds can run in separate processes and be merged:

    python benchmarks/redness_evaluation.py --folds 0 1 2 --threads 1 --no-tables --out build/results/part0 &
    python benchmarks/redness_evaluation.py --folds 3 4 --threads 1 --no-tables --out build/results/part1
    python benchmarks/redness_evaluation.py --merge build/results/part0 build/results/part1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from galmeta.config import seed_everything, try_device
from galmeta.data import load_galaxies
from galmeta.evaluate import EvaluationConfig, EvaluationResults, default_learners, run_confirmation, run_evaluation
from galmeta.plots import save_figures
from galmeta.reports import write_per_draw
from galmeta.results_files import load_results, save_results
from galmeta.tasks import build_catalogue


def merged_results(folders):
    """The saved results (``results.json`` + ``results.npz``) of runs over disjoint folds, merged into one."""
    return EvaluationResults.merge([load_results(folder) for folder in folders])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("sdss", "sami"), default="sdss",
                        help="sdss: u - r from griz, redshift slices (notebook 06); sami: g - i from abundance, size and "
                             "shape, environments as tasks (notebook 07)")
    parser.add_argument("--meta-iterations", type=int, default=3000, help="most meta-iterations (early stopping decides)")
    parser.add_argument("--pooled-epochs", type=int, default=100, help="most epochs of the pooled networks")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--draws", type=int, default=10, help="meta-test draws per slice and K")
    parser.add_argument("--val-draws", type=int, default=5, help="meta-validation draws per slice and K")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None, help="output folder (default build/results, or build/results/sami)")
    parser.add_argument("--replot", action="store_true",
                        help="redraw tables and figures from the saved results of an earlier run in --out")
    parser.add_argument("--merge", nargs="+", metavar="FOLDER",
                        help="merge the saved results of runs over disjoint folds, then write tables and figures to --out")
    parser.add_argument("--no-tables", action="store_true", help="save the results only (for --merge later)")
    parser.add_argument("--per-draw", metavar="FILE",
                        help="also write one row per learner, K, seed, fold, slice and draw (results/*.csv.gz: the "
                             "files the README's tables are printed from, by python -m galmeta.result_tables)")
    parser.add_argument("--only", nargs="+", metavar="LEARNER", help="run only these learners (by name)")
    parser.add_argument("--replace-from", nargs="+", metavar="FOLDER",
                        help="with --merge: the learners of these runs (same draws; merged by folds) replace the "
                             "merged run's learners of the same name")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (1 when folds run in parallel)")
    parser.add_argument("--separate", action="store_true",
                        help="train every fold and seed of a meta-learner on its own (the committed result files "
                             "were made so); default: as one population per learner (galmeta.population)")
    parser.add_argument("--confirm", action="store_true",
                        help="also evaluate the trained learners once on the sealed confirmation sample (SDSS only): "
                             "results go to OUT/development and OUT/confirmation")
    parser.add_argument("--meta-train-k", type=int, default=None,
                        help="one K for meta-training (default: drawn per meta-batch from 1 to the largest K)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    out = Path(args.out or Path(__file__).resolve().parent.parent / "build" / "results" / ("sami" if args.dataset == "sami" else ""))
    if args.replot or args.merge:
        if args.merge:
            results = merged_results(args.merge)
            if args.replace_from:
                replacement = merged_results(args.replace_from)
                results = results.with_learners_from(replacement)
                print(f"learners {sorted(replacement.learners)} taken from {', '.join(args.replace_from)}")
            save_results(results, out)
            print(f"merged folds {results.config.folds}: {len(results.slices)} meta-test tasks; training and "
                  f"prediction took {results.seconds:.0f} s of process time in all")
        else:
            results = load_results(out)
        start = time.perf_counter()
        if args.per_draw:
            print(f"per-draw rows ({results.sample} sample): {write_per_draw(results, args.per_draw, args.dataset)}")
        summary_rows, paired_rows = results.write(out, n_resamples=args.resamples)
        print("\n".join(str(p) for p in save_figures(results, paired_rows, summary_rows, out)))
        print(f"tables and figures in {time.perf_counter() - start:.0f} s")
        return

    start = time.perf_counter()
    seed_everything(0)
    device = try_device(args.device)
    if args.dataset == "sami":
        from galmeta.sami import build_sami_catalogue

        catalogue, sizes, min_size = build_sami_catalogue(), {"ks": (1, 5, 10), "n_query": 15, "tail_rmse": 0.25}, 25
    else:
        catalogue, sizes, min_size = build_catalogue(load_galaxies(), sample="all" if args.confirm else "development"), {}, 40
    if args.confirm and args.dataset != "sdss":
        parser.error("--confirm: only the SDSS table has a sealed confirmation sample")
    config = EvaluationConfig(folds=tuple(args.folds), seeds=tuple(args.seeds), n_draws=args.draws,
                              n_val_draws=args.val_draws, meta_iterations=args.meta_iterations,
                              pooled_epochs=args.pooled_epochs, meta_train_k=args.meta_train_k, **sizes)
    print(f"device {device}; {len(config.folds)} fold(s) x {len(config.seeds)} seed(s); "
          f"{config.n_draws} draws per meta-test slice and K")
    learners = default_learners(config, device=device)
    if args.only:
        unknown = set(args.only) - {learner.name for learner in learners}
        if unknown:
            parser.error(f"--only {sorted(unknown)}: no such learner; the learners are "
                         f"{[learner.name for learner in learners]}")
        learners = [learner for learner in learners if learner.name in args.only]
    report = lambda message: print(" ", message, flush=True)  # noqa: E731
    if args.confirm:
        runs = run_confirmation(catalogue, learners, config, min_size=min_size, progress=report,
                                population=not args.separate)
        for sample, part in runs.items():
            save_results(part, out / sample)
            print(f"{sample}: {len(part.slices)} meta-test tasks saved in {out / sample}")
        results, out = runs["development"], out / "development"
    else:
        results = run_evaluation(catalogue, learners, config, min_size=min_size, progress=report,
                                 population=not args.separate)
        save_results(results, out)  # JSON + NumPy arrays: data only, nothing that could run code when loaded
    print(f"training and prediction took {results.seconds:.0f} s; {len(results.slices)} meta-test tasks")
    if args.no_tables:
        print(f"saved {out}/results.json and results.npz (tables with --merge or --replot)")
        return
    if args.per_draw:
        print(f"per-draw rows: {write_per_draw(results, args.per_draw, args.dataset)}")
    summary_rows, paired_rows = results.write(out, n_resamples=args.resamples)
    figures = save_figures(results, paired_rows, summary_rows, out)
    print("\n" + (out / "redness_paired.md").read_text())
    print((out / "redness_summary.md").read_text())
    seconds = time.perf_counter() - start
    (out / "redness_run.json").write_text(json.dumps(
        {"dataset": args.dataset, "meta_iterations": args.meta_iterations, "pooled_epochs": args.pooled_epochs, "folds": args.folds,
         "seeds": args.seeds, "draws": args.draws, "val_draws": args.val_draws, "resamples": args.resamples,
         "slices": len(results.slices), "device": str(device), "seconds": round(seconds, 1)}, indent=2))
    print(f"\nwrote {out}/redness_per_slice.csv, redness_summary.*, redness_paired.* and {len(figures)} figures "
          f"in {seconds:.0f} s")


if __name__ == "__main__":
    import sys

    from galmeta.results_files import ResultsFileError

    try:
        main()
    except ResultsFileError as exc:  # a damaged or foreign results folder: say so, no traceback
        print(f"redness_evaluation: error: {exc}", file=sys.stderr)
        sys.exit(2)
