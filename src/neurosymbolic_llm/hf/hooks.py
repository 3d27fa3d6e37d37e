"""The project's intervention as PyTorch hooks on a stock transformers Llama-architecture causal LM.

Residual layer L is the project's (neurosymbolic_llm/llama/model.py): the residual entering block L,
taken by a forward pre-hook on ``model.model.layers[L]`` (L = 0: the embeddings); L = n_layers is
the output of the final norm, taken by a forward hook on ``model.model.norm`` (a tensor or a tuple).
The maths is the project's own: SymbolicIntervention.read (encoder, gate, decode, solve, encode; in
float32 whatever the model's dtype) and SymbolicIntervention.write (decoder, merge, the closed gate
keeping the state bit for bit), called per (row, position) pair.

Which positions (pipeline/intervention.py's rule, with per-row positions instead of left padding):
a forward pre-hook on ``model.model`` reads the call's 2-D attention mask (None: no padding) and
how many positions the KV cache already holds (past: the mask's length minus the chunk's, else the
cache's own count).

- past == 0: the chunk is the whole prompt (what ``generate``'s first forward is). P-1 of row b is
  its last real token (mask 1): S-1 under left padding, its length - 1 under right padding. There it
  encodes, gates and writes; the row's answer vector and gate are kept for later steps.
- past > 0 (a generation step): with multi_token_intervention every real position of the chunk is
  written, with the kept answer vector (static_encoding) or one encoded from its own state, plus the
  counter x^t (encode_counter) where t = real tokens since P-1 (mask cumsum - prompt length).
  Without it nothing is written after the prompt.

One forward over prompt + answer (teacher forcing) is taken as a prompt whose last token is P-1: the
project's ``with iv.prompt_length(P)`` has no counterpart here. Beam search and other cache
reordering are not followed (the kept vectors stay in the prompt's row order).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from neurosymbolic_llm.hf.weights import decoder_layers
from neurosymbolic_llm.pipeline.intervention import SymbolicIntervention


class Attachment:
    """The hooks of one intervention on one model until ``remove()`` (safe to call twice).

    on_prompt(records, gate_any): called after each prompt forward with the readings of P-1
    ({score, gate, type_id, x, y [B]; vsa [B,V]}, on the model's device) and whether any row's gate
    opened (one host synchronisation per prompt)."""

    def __init__(self, iv: SymbolicIntervention, model, *, write: bool,
                 on_prompt: Callable[[dict, bool], None]):
        self.iv, self.model, self.write, self.on_prompt = iv, model, write, on_prompt
        self._plan: Optional[tuple] = None      # rows [N], positions [N], t [N], prompt forward?
        self._pending: Optional[tuple] = None   # answer vectors a [N,V], gate [N] of this forward
        self._static: Optional[tuple] = None    # a [B,V], gate [B] of P-1, for later steps
        self._n_prompt: Optional[torch.Tensor] = None  # [B] real prompt tokens per row
        self._earlier: dict[int, torch.Tensor] = {}     # a joint read's earlier layers' states [N,D]
        self._handles: list = []
        blocks = decoder_layers(model)
        try:
            self._handles.append(model.model.register_forward_pre_hook(self._start, with_kwargs=True))
            for layer in sorted({*iv.read_layers, *(iv.dec_layers if write else [])}):
                if layer < len(blocks):
                    self._handles.append(blocks[layer].register_forward_pre_hook(self._pre(layer), with_kwargs=True))
                else:  # n_layers: after the final norm
                    self._handles.append(model.model.norm.register_forward_hook(self._post(layer)))
        except BaseException:
            self.remove()
            raise

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._plan = self._pending = self._static = self._n_prompt = None

    # ------------------------------------------------------------------ where this forward writes
    def _start(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        B, S = (ids if ids is not None else embeds).shape[:2]
        device = (ids if ids is not None else embeds).device
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is not None and mask.dim() != 2:
            raise ValueError(f"the intervention's hooks need a 2-D attention mask [batch, positions] "
                             f"(got shape {tuple(mask.shape)})")
        if mask is not None:
            past = mask.shape[1] - S
        else:
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            past = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
            mask = torch.ones(B, past + S, dtype=torch.long, device=device)
        real = mask[:, past:].bool()  # [B,S]
        self._pending = None
        if past == 0:  # a new batch: the chunk is the prompt
            if not bool(real.any(1).all()):
                raise ValueError("a prompt row has no real token (its attention mask is all zeros)")
            last = S - 1 - real.flip(1).int().argmax(1)  # [B] the last real position
            self._n_prompt, self._static = real.sum(1), None
            rows = torch.arange(B, device=device)
            self._plan = (rows, last, torch.zeros(B, dtype=torch.long, device=device), True)
        elif self.write and self.iv.opts.multi_token_intervention and self._n_prompt is not None \
                and len(self._n_prompt) == B:
            rows, pos = real.nonzero(as_tuple=True)  # [N] every real position of the step
            count = mask.long().cumsum(1)[:, past:]  # [B,S] real tokens up to each position
            self._plan = (rows, pos, count[rows, pos] - self._n_prompt[rows], False)
        else:
            self._plan = None  # after the prompt, one-position writing (or reading only) does nothing

    # ------------------------------------------------------------------ the hooks
    def _pre(self, layer: int):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            new = self._at(layer, h)
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})
        return hook

    def _post(self, layer: int):
        def hook(module, inputs, out):
            h = out[0] if isinstance(out, tuple) else out
            new = self._at(layer, h)
            if new is None:
                return None
            return (new, *out[1:]) if isinstance(out, tuple) else new
        return hook

    def _at(self, layer: int, h: torch.Tensor) -> Optional[torch.Tensor]:
        """h [B,S,D] the residual at `layer`; the replacement, or None to leave it."""
        if self._plan is None:
            return None
        if layer in self.iv.read_layers[:-1]:  # a joint read: kept until its last layer
            self._earlier[layer] = self._read_positions(h)
        if layer == self.iv.enc_layer:  # encoding first within a shared layer, as in the project
            self._encode(h)
        if self.write and layer in self.iv.dec_layers and self._pending is not None:
            rows, pos = (i.to(h.device) for i in self._plan[:2])  # layers may sit on several devices
            a, gate = self._pending
            new = self.iv.write(h[rows, pos].to(a.device), a, gate, layer)  # [N,D]
            return h.index_put((rows, pos), new.to(h.device))
        return None

    def _read_positions(self, h: torch.Tensor) -> torch.Tensor:
        """h [B,S,D] -> [N,D]: the positions this forward reads, on the encoder's device."""
        rows, pos = self._plan[:2]
        return h[rows.to(h.device), pos.to(h.device)].to(self.iv.encoder.weight.device)

    def _encode(self, h: torch.Tensor) -> None:
        rows, pos, t, prompt = self._plan
        iv = self.iv
        h = iv.read_input(self._read_positions(h), self._earlier)  # [N, k D] the read positions
        self._earlier = {}
        if prompt:
            a, gate, rec = iv.read(h[:, None])  # [B,1,V], [B,1]
            a, gate = a[:, 0], gate[:, 0]
            self._static = (a, gate)
            self.on_prompt({k: v[:, 0] for k, v in rec.items()}, bool(gate.any()))
        elif iv.opts.static_encoding:
            if self._static is None:
                return
            keep = rows.to(self._static[0].device)
            a, gate = self._static[0][keep], self._static[1][keep]
        else:  # every written position encoded from its own state
            a, gate, _ = iv.read(h[:, None])
            a, gate = a[:, 0], gate[:, 0]
        if iv.opts.encode_counter:
            a = a + iv.engine.encode_counter(t.to(a.device)).to(a.dtype)  # x^t; nothing at t = 0
        self._pending = (a, gate)
