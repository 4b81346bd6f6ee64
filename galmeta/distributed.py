"""Data-parallel meta-training over a ``torch.distributed`` process group (what ``torchrun`` starts).

When a process group is initialised, a :class:`galmeta.maml_torch.MetaLearner` broadcasts its initial
parameters from rank 0 (:func:`broadcast_from_rank_0`), each rank samples its own shard of
``meta_batch / world_size`` tasks, and the meta-gradients are averaged over the ranks before every
optimiser step (:func:`average_gradients`). W ranks with equal shards then take exactly the step one
process takes on the whole meta-batch (the meta-loss is a mean over tasks). Only rank 0 writes
checkpoints and shows progress. Without a process group nothing here runs.
"""
from __future__ import annotations

import os

import torch

__all__ = ["distributed_context", "broadcast_from_rank_0", "average_gradients", "init_process_group"]


def distributed_context():
    """``(rank, world_size)`` of the initialised ``torch.distributed`` process group, or ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_from_rank_0(tensors):
    """Every rank starts from rank 0's values of ``tensors`` (in place)."""
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)


def average_gradients(optimiser, loss: float, world_size: int, device) -> float:
    """Average every gradient of ``optimiser``'s parameters, and the reported loss, over the ranks."""
    import torch.distributed as dist

    for group in optimiser.param_groups:
        for tensor in group["params"]:
            if tensor.grad is None:
                tensor.grad = torch.zeros_like(tensor)
            dist.all_reduce(tensor.grad, op=dist.ReduceOp.SUM)
            tensor.grad /= world_size
    total = torch.tensor([loss], dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total.item()) / world_size


def init_process_group():
    """Initialise torch.distributed when launched by torchrun; returns this rank's device (None without a group).

    NCCL when every rank has a GPU, gloo otherwise.
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = torch.cuda.is_available() and torch.cuda.device_count() > local_rank
    dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    if use_nccl:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
