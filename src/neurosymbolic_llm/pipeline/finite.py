"""Nothing non-finite is read as data or written as a result.

A NaN or an infinity in gathered hidden states, map weights or a training state spreads silently:
a stage trained on it ends "successfully" with NaN maps. Every such tensor goes through
`require_finite` where it is read (a gathered shard, a training state) and before it is saved (map
files, training states), and the error says which stage, which tensor (layer) and what to do.
"""
from __future__ import annotations

from typing import Mapping

import torch

from neurosymbolic_llm.pipeline.errors import NonFiniteError

# What to do when a training produced NaN/inf: the usual causes, in the order to try them.
DIVERGED = "the training diverged: lower the learning rate, or check its inputs for NaN/inf"


def non_finite_count(t: torch.Tensor) -> int:
    """Elements of `t` that are NaN or +-inf (0 for integer tensors)."""
    if not (t.is_floating_point() or t.is_complex()):
        return 0
    return int((~torch.isfinite(t)).sum())


def require_finite(tensors: Mapping[str, torch.Tensor], what: str, advice: str) -> None:
    """Raise NonFiniteError "<what>: <name> holds n NaN/inf values of m; <advice>" for the first
    tensor of `tensors` ({name: tensor}, e.g. {"layer 17": W}) that is not all finite."""
    for name, t in tensors.items():
        bad = non_finite_count(t)
        if bad:
            raise NonFiniteError(f"{what}: {name} holds {bad} NaN/inf values of {t.numel()}; {advice}")
