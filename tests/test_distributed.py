"""Data-parallel meta-training: two gloo processes on CPU take the step one process takes on the whole meta-batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galmeta import maml_numpy as mn
from galmeta import maml_torch as mt

ALGORITHMS = ("maml", "fomaml", "metasgd", "anil", "reptile")
SIZES, TASKS, STEPS = (2, 16, 16, 1), 8, 4


def _batches(seed=0):
    rng = np.random.default_rng(seed)
    return [tuple(rng.normal(size=(TASKS, n, d)) for n, d in ((6, 2), (6, 1), (9, 2), (9, 1))) for _ in range(STEPS)]


def _learner(algorithm, init_seed):
    init = mn.init_mlp(SIZES, np.random.default_rng(init_seed))
    return mt.MetaLearner(mt.MLP.from_numpy(init), algorithm=algorithm, inner_lr=0.05, inner_steps=2,
                          meta_lr=0.01, meta_batch=TASKS, device="cpu", dtype=torch.float64)


def _state(learner):
    tensors = [p.detach().clone() for p in learner.model.parameters()]
    if learner.inner_lrs is not None:
        tensors += [v.detach().clone() for v in learner.inner_lrs.values()]
    return torch.cat([t.ravel() for t in tensors]).numpy()


def _worker(rank, world, init_file, folder):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    shard = slice(rank * TASKS // world, (rank + 1) * TASKS // world)
    for algorithm in ALGORITHMS:
        learner = _learner(algorithm, init_seed=rank)  # rank 1 starts elsewhere: the broadcast must fix that
        for batch in _batches():
            learner.step(*(a[shard] for a in batch))
        if rank == 0:
            np.save(f"{folder}/{algorithm}.npy", _state(learner))
            learner.save(f"{folder}/{algorithm}.pt")
    dist.barrier()  # without it rank 1 can leave while rank 0 still saves, and gloo aborts it (seen once in CI)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(2, str(folder / "rendezvous"), str(folder)), nprocs=2, join=True)
    return folder


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_two_ranks_take_the_one_process_step(two_ranks, algorithm):
    single = _learner(algorithm, init_seed=0)
    start = _state(single)
    for batch in _batches():
        single.step(*batch)
    one, two = _state(single), np.load(two_ranks / f"{algorithm}.npy")
    assert np.max(np.abs(one - start)) > 1e-4, "the parameters must move"
    difference = np.max(np.abs(two - one)) / np.max(np.abs(one))
    assert difference < 1e-10, f"{algorithm}: two ranks differ from one process by {difference:.1e} (relative)"


def test_a_checkpoint_written_under_two_ranks_resumes_in_one_process(two_ranks):
    resumed = _learner("metasgd", init_seed=5).load(two_ranks / "metasgd.pt")
    assert resumed.iteration == STEPS and resumed.world_size == 1
    np.testing.assert_array_equal(_state(resumed), np.load(two_ranks / "metasgd.npy"))
    resumed.step(*_batches(seed=1)[0])  # and it trains on, alone
    assert resumed.iteration == STEPS + 1


def test_without_a_process_group_nothing_changes():
    assert mt.distributed_context() == (0, 1)
    learner = _learner("maml", 0)
    assert learner.rank == 0 and learner.world_size == 1
