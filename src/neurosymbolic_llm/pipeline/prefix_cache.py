"""Frozen prompt prefixes kept across the epochs of stage-3 training (--cache_prompt_prefixes).

A prefix-frozen method (training.Method.prefix_frozen: the neurosymbolic decoder, the adapter)
changes nothing before the last prompt position P-1, so the keys and values of a training prompt's
first len-1 tokens are the same in every epoch. After a row's first forward they are kept here, and
later batches write them into the model's KV cache instead of running the prompt again: an epoch
after the first costs only the last prompt token and the answer of each row.

A row's keys are rotated by the token's own position (index - left padding), so its entries do not
depend on the batch it came in: they go right-aligned just before P-1 of any later batch, and the
padding slots in front of them are masked as usual. Memory per row: n_layers x 2 x n_kv_heads x
head_dim x (prompt length - 1) values of the model's dtype (SmolLM2-135M, 120 tokens, float32: 5.5 MB).
"""
from __future__ import annotations

from typing import Sequence

import torch


class PrefixCache:
    """Per training row: [(keys [Hkv, n, hd], values [Hkv, n, hd]) of every layer]."""

    def __init__(self) -> None:
        self.rows: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, keys: Sequence[int]) -> bool:
        return all(int(k) in self.rows for k in keys)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.rows.values() for pair in kv for t in pair)

    @torch.no_grad()
    def store(self, model, keys: Sequence[int], pad: torch.Tensor, end: int) -> None:
        """Copy rows `keys` out of the model's live KV cache: row b's prefix occupies slots
        pad[b] .. end-1 (end = P-1, the batch's last prompt position)."""
        for b, key in enumerate(keys):
            lo = int(pad[b])
            self.rows[int(key)] = [(layer.attention.cache_k[b, :, lo:end].clone(),
                                    layer.attention.cache_v[b, :, lo:end].clone()) for layer in model.layers]

    @torch.no_grad()
    def load(self, model, keys: Sequence[int], end: int) -> None:
        """Write rows `keys` into the model's live KV cache, each ending at slot end-1."""
        for b, key in enumerate(keys):
            for layer, (k, v) in zip(model.layers, self.rows[int(key)]):
                n = k.shape[1]
                layer.attention.cache_k[b, :, end - n:end] = k
                layer.attention.cache_v[b, :, end - n:end] = v
