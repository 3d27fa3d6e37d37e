"""torchrun helpers: who am I, which rows are mine, and how results come back together.

Without torchrun (no WORLD_SIZE in the environment) everything degrades to one process: rank 0 of
1, no process group, no communication. Under `torchrun --nproc_per_node N` with model-parallel size
M, the N ranks form N/M data-parallel groups; each group holds one model and takes one contiguous
slice of the rows, so concatenating the slices in rank order gives the single-process order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    model_parallel_size: int = 1

    @property
    def dp_size(self) -> int:
        return self.world_size // self.model_parallel_size

    @property
    def dp_rank(self) -> int:
        return self.rank // self.model_parallel_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: str, model_parallel_size: int = 1) -> DistInfo:
    """Start the process group (nccl on cuda, gloo on cpu) when launched by torchrun."""
    if not launched_by_torchrun():
        return DistInfo(model_parallel_size=1)
    world = int(os.environ["WORLD_SIZE"])
    if world % model_parallel_size:
        from .errors import ConfigError

        raise ConfigError(f"model_parallel_size {model_parallel_size} does not divide the {world} torchrun processes")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    return DistInfo(rank=dist.get_rank(), world_size=world, local_rank=local_rank,
                    model_parallel_size=model_parallel_size)


def row_slice(n_rows: int, info: DistInfo) -> slice:
    """The contiguous slice of `n_rows` that this rank's data-parallel group handles."""
    per, extra = divmod(n_rows, info.dp_size)
    start = info.dp_rank * per + min(info.dp_rank, extra)
    return slice(start, start + per + (1 if info.dp_rank < extra else 0))


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order (one element when not distributed)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
