"""Reproduce Appendix C, Table 2 of the MAML paper (Finn et al. 2017) on sinusoids.

Setup (the paper's): amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]; 1-40-40-1 ReLU network;
meta-training with K = 10 support and 10 query points per task, inner lr 0.01, one inner step,
Adam 1e-3, meta-batch 25, 70,000 iterations. Evaluation: 600 new tasks, K = 5 support points,
100 query points, 1 / 5 / 10 SGD steps with lr 0.01, mean MSE with 95% intervals. The baseline is
a network pretrained on points pooled over tasks, fine-tuned with a step size tuned on 100
separate validation tasks.

    python benchmarks/sinusoid_reproduction.py                      # NumPy MAML, full run
    python benchmarks/sinusoid_reproduction.py --backend torch      # PyTorch MAML, Meta-SGD, ANIL
    python benchmarks/sinusoid_reproduction.py --iterations 2000    # a quick look
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from galmeta import maml_numpy as mn
from galmeta.sinusoid import (PAPER_TABLE_2, PAPER_WEIGHT_STD, pretrain_pooled, sample_sinusoid_tasks, summarise_errors,
                              task_sampler, tune_finetune_lr)

STEPS = (1, 5, 10)


def evaluation_tasks(seed, n_tasks, n_support=5, n_query=100):
    return sample_sinusoid_tasks(np.random.default_rng(seed), n_tasks, n_support, n_query)[:4]


def torch_learners(init, iterations, seed, algorithms):
    import torch

    from galmeta import maml_torch as mt

    trained = {}
    for algorithm in algorithms:
        torch.manual_seed(seed)
        learner = mt.MetaLearner(mt.MLP.from_numpy(init, dtype=torch.float32), algorithm=algorithm,
                                 inner_lr=0.01, meta_lr=1e-3, meta_batch=25, seed=seed)
        sample = task_sampler(25, 10, 10, dtype=np.float32)
        start = time.perf_counter()
        learner.fit(lambda rng, n: sample(rng), iterations, progress=True, rng=np.random.default_rng(seed))
        print(f"{algorithm}: {iterations} iterations in {time.perf_counter() - start:.0f} s on {learner.device}")
        trained[algorithm] = learner
    return trained


def torch_curve(learner, tasks, max_steps=10):
    """Query MSE of every task after 0..max_steps adaptation steps, shape (max_steps + 1, T)."""
    xs, ys, xq, yq = tasks
    with np.errstate(all="ignore"):
        predictions = learner.adaptation_predictions(xs, ys, xq, max_steps).astype(np.float64)
        return np.mean((predictions - yq[None]) ** 2, axis=(2, 3))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("numpy", "torch"), default="numpy")
    parser.add_argument("--iterations", type=int, default=70_000)
    parser.add_argument("--eval-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "build" / "benchmarks"))
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    init = mn.init_mlp((1, 40, 40, 1), rng, weight_std=PAPER_WEIGHT_STD)
    curves = {}
    start = time.perf_counter()
    if args.backend == "numpy":
        result = mn.meta_train(init, task_sampler(25, 10, 10), args.iterations, rng, inner_lr=0.01, meta_lr=1e-3)
        print(f"NumPy MAML: {args.iterations} iterations in {result.seconds:.0f} s "
              f"({result.iterations_per_second:.0f} it/s)")
        test = evaluation_tasks(args.seed + 1, args.eval_tasks)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / f"sinusoid_maml_numpy_{args.iterations}.npz",
                 **{f"{kind}{i}": a for i, (W, b) in enumerate(result.params) for kind, a in (("W", W), ("b", b))})
        with np.errstate(all="ignore"):
            curves["MAML"] = mn.adaptation_curve(result.params, *test, inner_lr=0.01, max_steps=10)
    else:
        learners = torch_learners(init, args.iterations, args.seed, ("maml", "metasgd", "anil"))
        test = evaluation_tasks(args.seed + 1, args.eval_tasks)
        test32 = tuple(a.astype(np.float32) for a in test)
        for name, learner in (("MAML", learners["maml"]), ("Meta-SGD", learners["metasgd"]), ("ANIL", learners["anil"])):
            curves[name] = torch_curve(learner, test32)

    pretrained = pretrain_pooled(init, args.iterations, np.random.default_rng(args.seed + 2), progress=True)
    lr, scores = tune_finetune_lr(pretrained, evaluation_tasks(args.seed + 3, 100))
    print(f"pretrained baseline: fine-tuning step size {lr} chosen on 100 validation tasks "
          f"(10-step MSE {', '.join(f'{k}: {v:.2f}' for k, v in scores.items())})")
    with np.errstate(all="ignore"):
        curves["pretrained"] = mn.adaptation_curve(pretrained, *test, inner_lr=lr, max_steps=10)

    print(f"\n5-shot sinusoid regression, {args.eval_tasks} test tasks, 100 query points each; "
          f"meta-training {args.iterations} iterations ({args.backend}).")
    print("Each cell: mean MSE ± 95% interval over the tasks that did not diverge | median over all tasks | "
          "tasks that diverged (MSE non-finite or over 10x its value before adaptation).\n")
    header = f"{'learner':<12s}" + "".join(f"{f'{k} step' + ('s' if k > 1 else ''):>34s}" for k in STEPS)
    print(header)
    print("-" * len(header))
    table = {}
    for name, curve in curves.items():
        row = {k: summarise_errors(curve[k], curve[0]) for k in STEPS}
        table[name] = row
        cells = [f"{c['mean']:.3f} ± {c['ci95']:.3f} | {c['median']:.3f} | {c['diverged']}" for c in row.values()]
        print(f"{name:<12s}" + "".join(f"{cell:>34s}" for cell in cells))
        key = "MAML" if name == "MAML" else ("pretrained" if name == "pretrained" else None)
        if key:
            print(f"{'  paper':<12s}" + "".join(f"{PAPER_TABLE_2[key][k]:>34.2f}" for k in STEPS))
    print(f"\ntotal time {time.perf_counter() - start:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sinusoid_{args.backend}_{args.iterations}.json").write_text(json.dumps(
        {"iterations": args.iterations, "eval_tasks": args.eval_tasks, "seed": args.seed,
         "table": {n: {str(k): v for k, v in row.items()} for n, row in table.items()},
         "paper": PAPER_TABLE_2}, indent=2))


if __name__ == "__main__":
    main()
