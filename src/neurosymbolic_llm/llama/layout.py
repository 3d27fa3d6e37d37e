"""The state-dict keys and shapes an architecture implies, known before the network is built.

Loaders compare a file's tensor index with ``expected_shapes`` first, so a config that claims
20,000 blocks, or a vocabulary of 10^9 rows, is refused in milliseconds instead of building (and
allocating) a network the file cannot fill. One block is built on the meta device to read the
shapes; the number of blocks is checked against the number of tensors the file holds first.
"""
from __future__ import annotations

import dataclasses

import torch

from neurosymbolic_llm.llama.errors import CheckpointError
from neurosymbolic_llm.llama.model import ModelArgs, Transformer


def expected_shapes(args: ModelArgs, n_tensors: int, where) -> dict[str, tuple]:
    """Our state-dict key -> shape, in the network's order (embeddings, blocks, norm, output).
    ``n_tensors``: how many tensors the file holds (a block has several, so ``n_layers`` cannot
    exceed it)."""
    if args.n_layers > n_tensors:
        raise CheckpointError(f"{where}: the architecture has {args.n_layers} blocks but the weights "
                              f"hold only {n_tensors} tensors")
    try:
        with torch.device("meta"):
            one = Transformer(dataclasses.replace(args, n_layers=1)).state_dict()
    except (RuntimeError, ValueError, OverflowError, TypeError) as e:  # sizes torch refuses
        raise CheckpointError(f"{where}: the architecture's sizes are not usable: {e}") from e
    head = {k: tuple(v.shape) for k, v in one.items() if not k.startswith("layers.")}
    block = {k[len("layers.0."):]: tuple(v.shape) for k, v in one.items() if k.startswith("layers.0.")}
    shapes = {"tok_embeddings.weight": head.pop("tok_embeddings.weight")}
    for i in range(args.n_layers):
        shapes.update({f"layers.{i}.{k}": s for k, s in block.items()})
    shapes.update(head)
    return shapes
