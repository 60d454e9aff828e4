"""Several processes training one model: torchrun sets the environment, we join the group.

    torchrun --standalone --nproc_per_node=2 -m hellogpt train ...

Each process (a "rank") holds a full copy of the model and computes gradients on its own
share of every batch; DistributedDataParallel averages the gradients across ranks before
each optimizer step, so every copy takes the same step. NCCL carries the gradients between
GPUs, gloo between CPU processes. Rank 0 alone writes checkpoints, metrics and progress.
Without torchrun's environment, training runs as a single process (world_size 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0  # this process among all of them
    local_rank: int = 0  # this process among those on its machine
    world_size: int = 1
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and talks to the user."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """The first process on each machine: it prepares the machine's files (tokenizer, token cache)."""
        return self.local_rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> Dist:
    """Join the process group torchrun described in the environment (or stay a single process)."""
    if not launched_by_torchrun():
        return Dist()
    env = {k: int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")}
    if not dist.is_initialized():
        # torch.distributed.nn's functions take `group=group.WORLD` as a default argument, evaluated on
        # import. DistributedDataParallel imports that module (through torch._dynamo) on first use; after
        # the group exists, those defaults would hold it for the life of the process, destroy_process_group
        # could not free it, and gloo's threads would live on into interpreter exit, where a rank can abort
        # ("terminate called without an active exception"). Imported first, the defaults hold None.
        import torch.distributed.nn  # noqa: F401
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"])


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


def all_sum(values: list[float], ctx: Dist, device: torch.device) -> list[float]:
    """The element-wise sum of `values` over all ranks (the values themselves when single)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather(obj, ctx: Dist) -> list:
    """Every rank's `obj`, in rank order (picklable objects; small ones: RNG states, fingerprints)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def is_main_process() -> bool:
    """Rank 0 under torchrun (read from its environment, before the group is joined), or a single process."""
    return int(os.environ.get("RANK", "0")) == 0
