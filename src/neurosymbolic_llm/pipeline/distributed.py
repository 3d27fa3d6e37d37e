"""torchrun helpers: who am I, which rows are mine, and how results come back together.

Without torchrun (no WORLD_SIZE in the environment) everything degrades to one process: rank 0 of
1, no process group, no communication. Under `torchrun --nproc_per_node N` with model-parallel size
M, the N ranks form N/M data-parallel groups; each group holds one model and takes one contiguous
slice of the rows, so concatenating the slices in rank order gives the single-process order.

Rank layout (fairscale's): model-parallel groups are consecutive ranks, [0..M-1], [M..2M-1], ...;
data-parallel groups are the ranks with the same model-parallel rank, {r, r+M, r+2M, ...}. So a
rank's data-parallel rank is `rank // M` and its model-parallel rank `rank % M`. All M ranks of a
model-parallel group run the same rows (fairscale's layers exchange activations within the group);
only its model-parallel rank 0 writes results. The process group is started here, once, and
fairscale's groups too when M > 1 (`checkpoint.load_model` then finds them initialised).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from neurosymbolic_llm.llama.checkpoint import init_model_parallel
from neurosymbolic_llm.pipeline.errors import ConfigError


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
    def mp_rank(self) -> int:
        return self.rank % self.model_parallel_size

    @property
    def is_writer(self) -> bool:
        """Model-parallel rank 0 of its group: the one rank of a data-parallel group that writes."""
        return self.mp_rank == 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """WORLD_SIZE > 1 together with the variables torchrun sets for every process. A WORLD_SIZE left
    in the environment without them (a shell that once ran torchrun) is an error: the process group
    would wait 30 minutes for ranks that never come."""
    text = os.environ.get("WORLD_SIZE", "")
    if not text:
        return False
    if not text.strip().isdigit():
        raise ConfigError(f"WORLD_SIZE={text[:40]!r} in the environment is not a process count: unset it "
                          f"(torchrun sets it for its processes)")
    if int(text) <= 1:
        return False
    missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={text} is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                          f"not: this process was not started by torchrun; unset WORLD_SIZE (or launch with "
                          f"torchrun --nproc_per_node {text})")
    return True


def resolve_model_parallel_size(requested: int, ckpt_dir) -> int:
    """`requested` when > 0, else the number of .pth shards in `ckpt_dir` (at least 1)."""
    if requested and requested > 0:
        return int(requested)
    folder = Path(ckpt_dir).expanduser()
    return max(1, len(list(folder.glob("*.pth")))) if folder.is_dir() else 1


def init_distributed(device: str, model_parallel_size: int = 1) -> DistInfo:
    """Start the process group (nccl on cuda, gloo on cpu) when launched by torchrun, and fairscale's
    model-parallel groups when model_parallel_size > 1. Idempotent: an existing process group is used."""
    device = str(device)
    mp = int(model_parallel_size)
    if not launched_by_torchrun():
        if mp > 1:
            raise ConfigError(f"model-parallel size {mp} (the checkpoint's shard count, or "
                              f"--model_parallel_size) needs one process per shard: launch with "
                              f"torchrun --nproc_per_node {mp} (or a multiple of it), or reshard the "
                              f"checkpoint to 1 shard with Programs/reshard_checkpoint.py")
        return DistInfo(model_parallel_size=1)
    world = int(os.environ["WORLD_SIZE"])
    if mp < 1 or world % mp:
        raise ConfigError(f"model-parallel size {mp} does not divide the {world} torchrun processes "
                          f"(--nproc_per_node x --nnodes must be a multiple of it)")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)  # before nccl starts, so each rank owns its GPU
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if mp > 1:
        init_model_parallel(mp, torch.device(device))  # collective: every rank calls it, here
    return DistInfo(rank=dist.get_rank(), world_size=world, local_rank=local_rank, model_parallel_size=mp)


def dp_group(info: DistInfo):
    """The data-parallel process group of this rank (None = the whole world, when M = 1)."""
    if info.model_parallel_size == 1:
        return None
    from fairscale.nn.model_parallel.initialize import get_data_parallel_group

    return get_data_parallel_group()


def dp_src(info: DistInfo) -> int:
    """Global rank of data-parallel rank 0 in this rank's data-parallel group."""
    return info.mp_rank


def all_reduce_dp(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `t` in place over the data-parallel group only (model-parallel peers hold the same data)."""
    if info.dp_size > 1:
        dist.all_reduce(t, group=dp_group(info))
    return t


def broadcast_dp(tensors, info: DistInfo) -> None:
    """Copy data-parallel rank 0's values of `tensors` to the other ranks of its data-parallel group."""
    if info.dp_size > 1:
        for t in tensors:
            dist.broadcast(t.data, src=dp_src(info), group=dp_group(info))


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


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when `flag` is True on any rank (all ranks must call it)."""
    if not info.distributed:
        return flag
    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
