"""The redness evaluation end to end at two commits (or one by one against populations), side by side in one run.

Runs the same evaluation twice, at the same time in two processes of one thread each, so both see the same
machine and load: every learner of the course, 5 folds x 5 seeds by default (development sample), then
the summary and paired tables with 1,000 bootstrap resamples. Printed: seconds of training and prediction,
of the tables, and end to end, for both, and their ratios; per learner, the training seconds where the code
records them.

``--before REV`` compares the current tree with commit REV (checked out into ``build/runtime/eval_before``):
the speed issue's "end to end against today's". Without it, the current tree runs twice, with
``population=False`` (every fold and seed trained on its own) and with population training.
``--iterations`` sets the meta-learners' most iterations (the full run uses 3,000; the meta-learners'
share of the time grows with it).

    python benchmarks/evaluation_speed.py [--before 78a1179] [--iterations 300] [--seeds 0 1 2 3 4]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import print_table

ROOT = Path(__file__).resolve().parent.parent

#: The run itself, as one process: the same text for both commits (older code has no ``population``
#: argument and no per-learner training times).
DRIVER = r"""
import inspect, json, sys, time
import torch
torch.set_num_threads(1)
from galmeta import evaluate as ev
from galmeta.data import load_galaxies
from galmeta.tasks import build_catalogue
args = json.loads(sys.argv[1])
config = ev.EvaluationConfig(seeds=tuple(args["seeds"]), folds=tuple(args["folds"]), meta_iterations=args["iterations"])
catalogue = build_catalogue(load_galaxies())
options = {}
if "population" in inspect.signature(ev.run_evaluation).parameters:
    options["population"] = args["population"]
start = time.perf_counter()
results = ev.run_evaluation(catalogue, ev.default_learners(config), config, **options)
trained = time.perf_counter() - start
start = time.perf_counter()
results.summary_rows(n_resamples=args["resamples"])
results.paired_rows(n_resamples=args["resamples"])
tables = time.perf_counter() - start
print(json.dumps({"trained": trained, "tables": tables, "fit_seconds": getattr(results, "fit_seconds", {})}))
"""


def worktree(revision):
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    path = ROOT / "build" / "runtime" / "eval_before"
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
    subprocess.run(["rm", "-rf", str(path)], check=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True, capture_output=True)
    return path, commit


def run(tree, arguments):
    env = {**os.environ, "PYTHONPATH": str(tree), "GALMETA_PROGRESS": "0",  # one thread per process, as course_runtime
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("GALMETA_THREADS", None)
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(arguments)], cwd=tree, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the evaluation failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a commit to compare with (default: this tree with population=False)")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the tables")
    args = parser.parse_args()
    common = dict(seeds=args.seeds, folds=args.folds, iterations=args.iterations, resamples=args.resamples)
    if args.before:
        before_tree, commit = worktree(args.before)
        jobs = {"before": (before_tree, dict(common, population=False)), "after": (ROOT, dict(common, population=True))}
        labels = {"before": f"commit {commit[:7]}", "after": "this tree"}
    else:
        jobs = {"before": (ROOT, dict(common, population=False)), "after": (ROOT, dict(common, population=True))}
        labels = {"before": "one by one", "after": "populations"}
    print(f"{len(args.folds)} folds x {len(args.seeds)} seeds, {args.iterations} meta-iterations, "
          f"{args.resamples} resamples; before: {labels['before']}, after: {labels['after']}", flush=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, tree, arguments) for name, (tree, arguments) in jobs.items()}
        measured = {name: future.result() for name, future in futures.items()}
    before, after = measured["before"], measured["after"]
    rows = []
    for part in ("trained", "tables"):
        rows.append((part, f"{before[part]:8.0f}", f"{after[part]:8.0f}", f"{before[part] / after[part]:5.2f}"))
    total_before, total_after = before["trained"] + before["tables"], after["trained"] + after["tables"]
    rows.append(("end to end", f"{total_before:8.0f}", f"{total_after:8.0f}", f"{total_before / total_after:5.2f}"))
    print_table(("seconds", labels["before"], labels["after"], "ratio"), rows)
    if after["fit_seconds"]:
        print("\ntraining seconds per learner (after" + (", and before" if before["fit_seconds"] else "") + "):")
        for name, seconds in sorted(after["fit_seconds"].items(), key=lambda item: -item[1]):
            old = before["fit_seconds"].get(name)
            print(f"  {name:<48s} {seconds:7.1f}" + (f"  {old:7.1f}" if old is not None else ""))
    ratio = total_before / total_after
    print(f"\ntarget: the evaluation end to end >= 5x faster: {ratio:.2f}x ({'met' if ratio >= 5 else 'NOT met'})")


if __name__ == "__main__":
    main()
