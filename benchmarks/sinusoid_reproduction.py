"""Reproduce Appendix C, Table 2 of the MAML paper (Finn et al. 2017) on sinusoids, over 5 training seeds.

Setup (the paper's): amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]; 1-40-40-1 ReLU network;
meta-training with K = 10 support and 10 query points per task, one inner step, Adam 1e-3, meta-batch 25,
70,000 iterations. Evaluation: 600 new tasks (the same 600 for every learner and seed), K = 5 support
points, 100 query points, 1 / 5 / 10 SGD steps. The baseline is a network pretrained on points pooled
over tasks, fine-tuned with a step size tuned on 100 separate validation tasks.

Reported as the paper's code computes it: the **mean over all 600 test tasks** (no task is dropped; a
mean that overflows is printed as inf and counted), the median, and for each the mean ± standard
deviation over the training seeds. A task counts as *diverged* when its error is not finite or exceeds 10x
its error before adaptation (shown, never excluded).

Learners (``--learners``, default all):
  maml-numpy    the from-scratch NumPy MAML (float64), alpha = 0.01 (the paper's text)
  maml          PyTorch MAML (float32), alpha = 0.01
  maml-a0.001   PyTorch MAML trained and evaluated with alpha = 1e-3 (the authors' code's default)
  fomaml, metasgd, anil   the family, alpha = 0.01 (Meta-SGD's rates start there and are learned)
  maml++        MAML++-style (learned per-layer per-step rates, annealed multi-step loss, inner-gradient
                clipping), 5 inner steps in training
  pretrained    the paper's baseline

The seeds of each PyTorch learner train as one population (:mod:`galmeta.population`: one batched
computation, each seed equal to its own training up to float32 rounding); ``--separate`` trains them one
by one. Each (learner, seed) run is saved under ``--out`` (model and the 600 x 11 error curves) and skipped when
it exists, so a long run resumes; ``--report`` only prints the table from what is saved.

    python benchmarks/sinusoid_reproduction.py                               # everything, 5 seeds (CPU-hours)
    python benchmarks/sinusoid_reproduction.py --learners maml-numpy --seeds 0 1
    python benchmarks/sinusoid_reproduction.py --iterations 2000 --out /tmp/quick   # a quick look
    python benchmarks/sinusoid_reproduction.py --report                      # the table from saved runs
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from galmeta import maml_numpy as mn
from galmeta.sinusoid import (PAPER_TABLE_2, PAPER_WEIGHT_STD, pretrain_pooled, sample_sinusoid_tasks,
                              summarise_over_seeds, task_sampler, tune_finetune_lr)

STEPS = (1, 5, 10)
TEST_SEED, VALIDATION_SEED = 2017, 2018
LEARNERS = ("maml-numpy", "maml", "maml-a0.001", "fomaml", "metasgd", "anil", "maml++", "pretrained")
LABELS = {
    "maml-numpy": "MAML (NumPy, float64)",
    "maml": "MAML (PyTorch, float32)",
    "maml-a0.001": "MAML (PyTorch), alpha = 1e-3 in training and test",
    "fomaml": "FOMAML (PyTorch)",
    "metasgd": "Meta-SGD (PyTorch)",
    "anil": "ANIL (PyTorch)",
    "maml++": "MAML++ (PyTorch): per-step rates, multi-step loss, clipping",
    "pretrained": "pretrained + fine-tuning",
}
#: MAML++ settings for sinusoids: 5 inner steps (evaluation beyond 5 reuses the last step's rates), the
#: multi-step loss annealed to the last step over the first 10% of training, each task's inner gradient
#: clipped to norm 40. Measured at plain PyTorch MAML's meta-learned initialisation (seed 0) on the 600 test
#: tasks: per-task gradient norms have median 24, 90th percentile 54, maximum 86, and the tasks that diverge
#: are the large-amplitude ones with norms of 61-77; the clip bounds their steps, not the typical task's.
MAMLPP = dict(inner_steps=5, step_lrs=True, multi_step_iterations=7_000, inner_grad_clip=40.0)


def evaluation_tasks(seed, n_tasks, n_support=5, n_query=100):
    return sample_sinusoid_tasks(np.random.default_rng(seed), n_tasks, n_support, n_query)[:4]


def torch_config(learner):
    algorithm = {"maml": "maml", "maml-a0.001": "maml", "fomaml": "fomaml", "metasgd": "metasgd",
                 "anil": "anil", "maml++": "maml"}[learner]
    config = dict(algorithm=algorithm, inner_lr=1e-3 if learner == "maml-a0.001" else 0.01)
    if learner == "maml++":
        config.update(MAMLPP)
    return config


def torch_curve(learner, tasks, max_steps=10, inner_lr=None):
    """Query MSE of every task after 0..max_steps adaptation steps, shape (max_steps + 1, T)."""
    xs, ys, xq, yq = (a.astype(np.float32) for a in tasks)
    with np.errstate(all="ignore"):
        predictions = learner.adaptation_predictions(xs, ys, xq, max_steps, inner_lr=inner_lr).astype(np.float64)
        return np.mean((predictions - yq[None]) ** 2, axis=(2, 3))


def run_one(learner, seed, iterations, test, folder, model=None, seconds=None):
    """Train one learner with one seed (or take its ``model``, trained in a population, and the ``seconds``
    the population took); save its model and error curves; return the record."""
    import torch

    torch.set_num_threads(int(os.environ.get("GALMETA_BENCH_THREADS", "1")))
    rng = np.random.default_rng(seed)
    init = mn.init_mlp((1, 40, 40, 1), rng, weight_std=PAPER_WEIGHT_STD)
    start = time.perf_counter()
    record = {"learner": learner, "seed": seed, "iterations": iterations}
    with np.errstate(all="ignore"):
        if learner == "maml-numpy":
            result = mn.meta_train(init, task_sampler(25, 10, 10), iterations, rng, inner_lr=0.01, meta_lr=1e-3)
            curves = {"curve": mn.adaptation_curve(result.params, *test, inner_lr=0.01, max_steps=10),
                      "curve_lr0.001": mn.adaptation_curve(result.params, *test, inner_lr=1e-3, max_steps=10)}
            np.savez(folder / f"seed{seed}_params.npz",
                     **{f"{k}{i}": a for i, (W, b) in enumerate(result.params) for k, a in (("W", W), ("b", b))})
            record["inner_lr"] = 0.01
        elif learner == "pretrained":
            params = pretrain_pooled(init, iterations, rng)
            lr, scores = tune_finetune_lr(params, evaluation_tasks(VALIDATION_SEED, 100))
            curves = {"curve": mn.adaptation_curve(params, *test, inner_lr=lr, max_steps=10)}
            record.update(inner_lr=lr, validation_scores={str(k): v for k, v in scores.items()})
        else:
            config = torch_config(learner)
            if model is None:
                model = torch_learner(learner, seed)
                sample = task_sampler(25, 10, 10, dtype=np.float32)
                model.fit(lambda r, n: sample(r), iterations, rng=rng)
            else:
                record["population"] = True
            model.save(folder / f"seed{seed}.pt")
            other = 1e-3 if config["inner_lr"] == 0.01 else 0.01
            curves = {"curve": torch_curve(model, test)}
            if learner in ("maml", "maml-a0.001"):
                curves[f"curve_lr{other:g}"] = torch_curve(model, test, inner_lr=other)
            record["inner_lr"] = config["inner_lr"]
            record["config"] = {k: v for k, v in config.items()}
    record["seconds"] = time.perf_counter() - start if seconds is None else seconds
    np.savez(folder / f"seed{seed}_curves.npz", **curves)
    (folder / f"seed{seed}.json").write_text(json.dumps(record, indent=2))
    print(f"{learner} seed {seed}: {iterations} iterations, {record['seconds']:.0f} s", flush=True)
    return record


def torch_learner(learner, seed):
    """The untrained PyTorch learner of one seed (its start drawn from the seed's stream, as ``run_one`` does)."""
    import torch

    from galmeta import maml_torch as mt

    init = mn.init_mlp((1, 40, 40, 1), np.random.default_rng(seed), weight_std=PAPER_WEIGHT_STD)
    torch.manual_seed(seed)
    return mt.MetaLearner(mt.MLP.from_numpy(init, dtype=torch.float32), meta_lr=1e-3, meta_batch=25, seed=seed,
                          device="cpu", **torch_config(learner))


def train_population(learner, seeds, iterations):
    """The seeds of one PyTorch learner trained as one population (galmeta.population); each seed's model is
    its separate training's up to float32 rounding. Returns the models and the seconds it took."""
    import torch

    from galmeta.population import fit_population

    torch.set_num_threads(int(os.environ.get("GALMETA_BENCH_THREADS", "1")))
    models = []
    rngs = []
    for seed in seeds:  # each seed's stream continues after its initial weights, as in run_one
        rng = np.random.default_rng(seed)
        mn.init_mlp((1, 40, 40, 1), rng, weight_std=PAPER_WEIGHT_STD)
        models.append(torch_learner(learner, seed))
        rngs.append(rng)
    sample = task_sampler(25, 10, 10, dtype=np.float32)
    start = time.perf_counter()
    fit_population(models, [lambda r, n: sample(r)] * len(models), iterations, rngs=rngs)
    return models, time.perf_counter() - start


TEST_CLIP = 40.0
ALTERNATIVES = {"curve_lr0.001": "step 1e-3 at test", "curve_lr0.01": "step 0.01 at test",
                "curve_clip40": "inner gradients clipped to norm 40 at test only"}


def add_clipped_test_curves(out, iterations, test):
    """Plain PyTorch MAML's saved models, adapted with inner-gradient clipping at test time only (no retraining)."""
    import torch

    from galmeta import maml_torch as mt

    folder = Path(out) / f"maml_{iterations}"
    for path in sorted(folder.glob("seed*_curves.npz")):
        curves = dict(np.load(path))
        if "curve_clip40" in curves:
            continue
        seed = int(path.name[4:].split("_")[0])
        init = mn.init_mlp((1, 40, 40, 1), np.random.default_rng(seed), weight_std=PAPER_WEIGHT_STD)
        model = mt.MetaLearner(mt.MLP.from_numpy(init, dtype=torch.float32), device="cpu", **torch_config("maml"))
        model.load(folder / f"seed{seed}.pt")
        model.config.inner_grad_clip = TEST_CLIP
        curves["curve_clip40"] = torch_curve(model, test)
        np.savez(path, **curves)


def load_runs(out, learner, iterations):
    folder = Path(out) / f"{learner}_{iterations}"
    runs = []
    for path in sorted(folder.glob("seed*.json")):
        record = json.loads(path.read_text())
        curves = np.load(path.with_name(f"seed{record['seed']}_curves.npz"))
        runs.append((record, {k: curves[k] for k in curves.files}))
    return runs


def report(out, iterations, learners):
    """Print (and save as Markdown) the table over all saved seeds."""
    rows, lines = {}, []
    for learner in learners:
        runs = load_runs(out, learner, iterations)
        if not runs:
            continue
        curves = [c["curve"] for _, c in runs]
        rows[learner] = {"seeds": [r["seed"] for r, _ in runs], "seconds": [r["seconds"] for r, _ in runs],
                         "inner_lr": sorted({r["inner_lr"] for r, _ in runs}),
                         "steps": {k: summarise_over_seeds([c[k] for c in curves], [c[0] for c in curves])
                                   for k in STEPS}}
        alternatives = sorted({k for _, c in runs for k in c if k in ALTERNATIVES})
        for key in alternatives:
            alt = [c[key] for _, c in runs if key in c]
            rows[f"{learner} ({ALTERNATIVES[key]})"] = {
                "seeds": [r["seed"] for r, c in runs if key in c], "seconds": [],
                "inner_lr": [float(key[8:])] if key.startswith("curve_lr") else [],
                "steps": {k: summarise_over_seeds([c[k] for c in alt], [c[0] for c in alt]) for k in STEPS}}

    def number(x):
        return "inf" if not np.isfinite(x) else (f"{x:.2f}" if abs(x) < 1000 else f"{x:.1e}")

    def cell(summary):
        sd = "" if not np.isfinite(summary["mean_sd"]) else f" ± {number(summary['mean_sd'])}"
        text = f"{number(summary['mean'])}{sd} · {number(summary['median'])} · {summary['diverged']}"
        return text + (f" ({summary['overflowed']} overflowed)" if summary["overflowed"] else "")

    lines.append("| learner | seeds | 1 step | 5 steps | 10 steps |")
    lines.append("|---|---|---|---|---|")
    for name, row in rows.items():
        base = name.split(" (")[0]
        label = LABELS.get(base, base) + (name[len(base):] if name != base else "")
        lines.append(f"| {label} | {len(row['seeds'])} | " + " | ".join(cell(row['steps'][k]) for k in STEPS) + " |")
    for key, label in (("MAML", "paper, MAML"), ("pretrained", "paper, pretrained")):
        lines.append(f"| *{label} (Finn et al. 2017, App. C, Table 2)* | | "
                     + " | ".join(f"*{PAPER_TABLE_2[key][k]:.2f}*" for k in STEPS) + " |")
    text = "\n".join(lines)
    print(f"\n5-shot sinusoid regression, 600 test tasks (the same for every learner and seed), 100 query points; "
          f"{iterations} meta-iterations.\nEach cell: mean MSE over all 600 tasks (mean ± sd over seeds) · median "
          "MSE (mean over seeds) · tasks diverged, summed over seeds (error > 10x before adaptation, or not finite)."
          "\n")
    print(text)
    for name, row in rows.items():
        if row["seconds"]:
            print(f"{name}: training + evaluation {np.mean(row['seconds']):.0f} s per seed "
                  f"(total {np.sum(row['seconds']):.0f} s), step size {row['inner_lr']}")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"sinusoid_table_{iterations}.md").write_text(text + "\n")
    (Path(out) / f"sinusoid_table_{iterations}.json").write_text(json.dumps(rows, indent=2, default=float))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", nargs="+", choices=LEARNERS, default=list(LEARNERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--iterations", type=int, default=70_000)
    parser.add_argument("--eval-tasks", type=int, default=600)
    parser.add_argument("--report", action="store_true", help="only print the table from the saved runs")
    parser.add_argument("--separate", action="store_true",
                        help="train every seed of the PyTorch learners on its own (default: the seeds of a learner "
                             "as one population, galmeta.population)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "build" / "benchmarks" / "sinusoid"))
    args = parser.parse_args()

    if not args.report:
        test = evaluation_tasks(TEST_SEED, args.eval_tasks)
        for learner in args.learners:
            folder = Path(args.out) / f"{learner}_{args.iterations}"
            folder.mkdir(parents=True, exist_ok=True)
            todo = []
            for seed in args.seeds:
                if (folder / f"seed{seed}.json").exists():
                    print(f"{learner} seed {seed}: saved, skipped")
                else:
                    todo.append(seed)
            if learner in ("maml-numpy", "pretrained") or args.separate or len(todo) < 2:
                for seed in todo:
                    run_one(learner, seed, args.iterations, test, folder)
                continue
            models, seconds = train_population(learner, todo, args.iterations)
            print(f"{learner}: seeds {todo} trained as one population in {seconds:.0f} s", flush=True)
            for seed, model in zip(todo, models):
                run_one(learner, seed, args.iterations, test, folder, model=model, seconds=seconds / len(todo))
        if "maml" in args.learners:
            add_clipped_test_curves(args.out, args.iterations, test)
    report(args.out, args.iterations, args.learners)


if __name__ == "__main__":
    main()
