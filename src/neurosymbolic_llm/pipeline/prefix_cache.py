"""What stays the same in every epoch of stage-3 training, kept after a row's first forward
(--cache_prompt_prefixes).

A prefix-frozen method (training.Method.prefix_frozen: the neurosymbolic decoder, the adapter)
changes nothing before the last prompt position P-1, so the keys and values of a training prompt's
first len-1 tokens are the same in every epoch. With teacher forcing, the answer tokens are fixed
too, so the residual entering every layer below the method's first trained layer L
(Method.trained_from: the decoding layer of the neurosymbolic model, whose encoder is frozen; the
encoding layer of the adapter) is the same in every epoch as well, at every position. So after a
row's first forward this cache keeps:

- the prefix's keys and values of the layers L.. (all layers when L = 0);
- with L > 0, the residual entering layer L at the row's positions P-1 .. P-1+n-1 (n answer tokens,
  the end-of-turn included: the last token's own state predicts nothing), and, when the
  intervention encodes below L, the write it prepared there (its answer vectors and gate,
  SymbolicIntervention.pending), which no longer runs.

Later batches write the prefix into the model's KV cache and run only layers L.. over the last
prompt token and the answer (the model's `start_at`): the same loss and gradients as the full
forward (tests/test_cached_step.py), for a fraction of its layers.

A row's keys are rotated by the token's own position (index - left padding), so its entries do not
depend on the batch it came in: they go right-aligned just before P-1 of any later batch, and the
padding slots in front of them are masked as usual. The suffix of a batch is right-padded; padded
positions come after every real one, so causal attention hides them. Memory per row: (n_layers - L)
x 2 x n_kv_heads x head_dim x (prompt length - 1) values of the model's dtype (SmolLM2-135M, L = 16,
120 tokens, float32: 2.6 MB) + n x (dim + VSA dim) for the suffix.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch


class PrefixCache:
    """Per training row: the prefix's [(keys [Hkv, n, hd], values [Hkv, n, hd])] of the layers
    from_layer.., and with from_layer > 0 its suffix state (residual [n, D], write or None)."""

    def __init__(self, from_layer: int = 0) -> None:
        self.from_layer = int(from_layer)
        self.rows: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.suffix: dict[int, tuple[torch.Tensor, tuple | None]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, keys: Sequence[int]) -> bool:
        return all(int(k) in self.rows and (not self.from_layer or int(k) in self.suffix) for k in keys)

    def nbytes(self) -> int:
        tensors = [t for kv in self.rows.values() for pair in kv for t in pair]
        tensors += [t for h, write in self.suffix.values() for t in (h, *(write or ()))]
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def store(self, model, keys: Sequence[int], pad: torch.Tensor, end: int) -> None:
        """Copy rows `keys` out of the model's live KV cache: row b's prefix occupies slots
        pad[b] .. end-1 (end = P-1, the batch's last prompt position)."""
        for b, key in enumerate(keys):
            lo = int(pad[b])
            self.rows[int(key)] = [(layer.attention.cache_k[b, :, lo:end].clone(),
                                    layer.attention.cache_v[b, :, lo:end].clone())
                                   for layer in model.layers[self.from_layer:]]

    @torch.no_grad()
    def load(self, model, keys: Sequence[int], end: int) -> None:
        """Write rows `keys` into the model's live KV cache, each ending at slot end-1."""
        for b, key in enumerate(keys):
            for layer, (k, v) in zip(model.layers[self.from_layer:], self.rows[int(key)]):
                n = k.shape[1]
                layer.attention.cache_k[b, :, end - n:end] = k
                layer.attention.cache_v[b, :, end - n:end] = v

    @contextlib.contextmanager
    def capturing(self, model, keys: Sequence[int], lengths: Sequence[int], intervention=None):
        """Around a forward over the chunk P-1 .. (from_layer > 0): keep each row's residual entering
        from_layer at its first lengths[b] chunk positions, seen before the layer's other hooks change
        it, and the intervention's write when it is prepared below from_layer."""
        if not self.from_layer:
            yield
            return
        seen = []
        handle = model.register_residual_hook(self.from_layer, lambda h, ctx: seen.append(h.detach()), prepend=True)
        try:
            yield
        finally:
            handle.remove()
        write = intervention.pending if self._replays(intervention) else None
        with torch.no_grad():
            for b, (key, n) in enumerate(zip(keys, lengths)):
                row_write = None
                if write is not None:
                    lo, hi, a, gate = write  # lo = 0: the chunk starts at P-1
                    k = min(hi - lo, int(n))
                    row_write = (a[b, :k].clone(), gate[b, :k].clone())
                self.suffix[int(key)] = (seen[0][b, :int(n)].clone(), row_write)

    def suffix_state(self, keys: Sequence[int], intervention=None) -> torch.Tensor:
        """The rows' residuals entering from_layer, right-padded: [B, max n, D]; the intervention's
        write set back as it was prepared (padded positions: gate closed)."""
        hs = [self.suffix[int(k)][0] for k in keys]
        h = hs[0].new_zeros(len(hs), max(len(x) for x in hs), hs[0].shape[-1])
        for b, x in enumerate(hs):
            h[b, :len(x)] = x
        writes = [self.suffix[int(k)][1] for k in keys]
        if self._replays(intervention) and any(w is None for w in writes):
            intervention.pending = None  # nothing was written
        elif self._replays(intervention):
            K = max(len(a) for a, _ in writes)
            a = writes[0][0].new_zeros(len(writes), K, writes[0][0].shape[-1])
            gate = torch.zeros(len(writes), K, dtype=torch.bool, device=a.device)
            for b, (ab, gb) in enumerate(writes):
                a[b, :len(ab)], gate[b, :len(gb)] = ab, gb
            intervention.pending = (0, K, a, gate)
        return h

    def _replays(self, intervention) -> bool:
        """Whether the intervention prepares its write below from_layer (so the cache must replay it)."""
        return intervention is not None and getattr(intervention, "enc_layer", self.from_layer) < self.from_layer
