"""Meta-train on galaxy tasks from the command line, in one process or data-parallel with ``torchrun``.

    python -m galmeta.train --algorithm maml --iterations 3000 --checkpoint build/maml.pt
    torchrun --standalone --nproc_per_node 2 -m galmeta.train --iterations 3000 --meta-batch 50
    galmeta train ...                      # the same, through the course's command line

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE`` and ``MASTER_ADDR``) the process group is
initialised here, with NCCL when every rank has a GPU and gloo otherwise, and
:class:`galmeta.maml_torch.MetaLearner` averages meta-gradients over the ranks: W ranks of
``meta_batch / W`` tasks take the step of one process on the whole meta-batch. Only rank 0 prints and writes
the checkpoint; ``--resume`` continues from it (in any number of processes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(prog="galmeta train", description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="maml", choices=("maml", "fomaml", "metasgd", "anil", "reptile"))
    parser.add_argument("--iterations", type=int, default=3000, help="meta-iterations to run (counted from a resumed one)")
    parser.add_argument("--meta-batch", type=int, default=25, help="tasks per meta-iteration, over all ranks")
    parser.add_argument("--k", type=int, default=10, help="support galaxies per task")
    parser.add_argument("--query", type=int, default=20, help="query galaxies per task")
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--meta-lr", type=float, default=1e-3)
    parser.add_argument("--fold", type=int, default=0, help="which rotation of the redshift blocks (0-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--patience", type=int, default=None, help="early stopping on meta-validation loss")
    parser.add_argument("--checkpoint", default=None, help="write (and with --resume read) this checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: picked per rank)")
    return parser


def run(args) -> dict:
    """Meta-train as the arguments say; returns a summary (also printed by rank 0 as JSON)."""
    import numpy as np
    import torch

    from galmeta import maml_numpy as mn
    from galmeta import maml_torch as mt
    from galmeta.config import seed_everything, try_device
    from galmeta.data import load_galaxies
    from galmeta.distributed import distributed_context, init_process_group
    from galmeta.tasks import prepare_galaxy_tasks

    group_device = init_process_group()
    rank, world = distributed_context()
    device = torch.device(args.device) if args.device else (group_device or try_device())
    seed_everything(args.seed)
    data = prepare_galaxy_tasks(load_galaxies(), fold=args.fold)
    train = data.sampler("train", args.k, args.query)
    val = [a.astype(np.float32) for a in data.sampler("val", args.k, args.query).sample(np.random.default_rng(args.seed + 1), n_tasks=100)]
    init = mn.init_mlp((data.X.shape[1], 40, 40, 1), np.random.default_rng(args.seed), dtype=np.float32)
    learner = mt.MetaLearner(mt.MLP.from_numpy(init), algorithm=args.algorithm, inner_lr=args.inner_lr,
                             inner_steps=args.inner_steps, meta_lr=args.meta_lr, meta_batch=args.meta_batch,
                             seed=args.seed, device=device)
    if args.resume:
        if not args.checkpoint:
            raise ValueError("--resume needs --checkpoint PATH")
        learner.load(args.checkpoint)
    start = time.perf_counter()
    learner.fit(lambda rng, n: [a.astype(np.float32) for a in train.sample(rng, n)], args.iterations, val_tasks=val,
                eval_every=args.eval_every, patience=args.patience, checkpoint=args.checkpoint,
                rng=np.random.default_rng(args.seed + learner.iteration))
    summary = {"algorithm": args.algorithm, "ranks": world, "device": str(device), "iteration": learner.iteration,
               "seconds": round(time.perf_counter() - start, 2), "meta_batch": args.meta_batch,
               "val_loss": min(learner.history["val_loss"]) if learner.history["val_loss"] else None,
               "checkpoint": args.checkpoint}
    if rank == 0:
        print(json.dumps(summary))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 may still be writing its checkpoint; gloo aborts if a peer leaves mid-way
        dist.destroy_process_group()
    return summary


def main(argv=None):
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
