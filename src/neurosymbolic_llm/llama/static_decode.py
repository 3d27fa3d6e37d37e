"""Decoding steps with fixed shapes and addresses, replayed from CUDA graphs on CUDA.

Eager decoding is launch-bound at small batch: one token per row means ~30 small kernels per block,
each launched from Python, and the GPU waits for the launches (benchmarks/RESULTS.md: 27 tokens/s
at batch 1 for an 8B model whose weights could be read 265 times a second). Here a step reads its
inputs from fixed device buffers (each row's token, the cache index as a tensor, each row's left
padding), writes its keys/values into the caches of ``Transformer.kv_cache`` at that index and
attends to a fixed window of the cache under a mask, so all steps of one window launch the same
kernels on the same memory. On CUDA such a step is captured once into a CUDA graph and each later
step of the window is one replay.

- Window: attention reads cache positions ``[0, w)``, ``w`` the smallest multiple of ``WINDOW``
  above the current position (keys after it are masked), so a step reads at most WINDOW - 1 unused
  cache entries; a new window is captured when decoding crosses into it. The cache is allocated
  in whole windows (``static_cache_len``).
- Graphs live for one ``Llama.generate`` call: the first step of a window runs eagerly (its result
  is used, and it warms the kernels up), the next ones replay. The caches, the hooks' per-call
  tensors (the intervention's answer vector of the prompt) and the buffers keep their storage for
  the whole call, which is what makes replays valid.
- Residual hooks run inside the captured step, so each must say it is safe there: a hook (or the
  object of a bound-method hook) with a true ``capture_safe`` attribute promises that at one-token
  steps (start_pos > 0) it makes no host synchronisation, has no data-dependent shapes, needs no
  Python code of its own to run again at each step, and reads only ``h`` and device tensors that
  keep their storage for the rest of the call. Any other hook makes ``Llama.generate`` decode
  eagerly (with a warning naming it on CUDA).
- The same step runs without capture (``decode="static"``, any device), so a CPU test compares
  exactly the code that gets captured with the eager path.

Why CUDA graphs by hand and not ``torch.compile(mode="reduce-overhead")``: compiling an 8B model
takes minutes and recompiles for every batch size, window and set of hooks (evaluation has several
of each), dynamo must trace the hooks' Python state, and CPU tests could not run what is captured.
By hand, capture costs one step's launches per window and the eager code is the captured code.
What compile would add is kernel fusion (RMSNorm, RoPE, SiLU), a smaller gain than launches.
"""
from __future__ import annotations

import os
import warnings
import weakref
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from neurosymbolic_llm.llama.errors import LlamaError
from neurosymbolic_llm.llama.model import Transformer, apply_rotary_emb, rope_rotations

MODES = ("auto", "eager", "static", "graph")
ENV = "NSLLM_DECODE"  # default mode of Llama.generate (e.g. NSLLM_DECODE=eager to time the old path)
WINDOW = 256  # cache positions per attention window
MIN_REPLAYS = 2  # capture a window only when at least this many of its steps remain after the first

_capture_failed: "weakref.WeakKeyDictionary[Transformer, str]" = weakref.WeakKeyDictionary()


def static_cache_len(n: int, window: int = WINDOW) -> int:
    """Cache positions to allocate for ``n`` positions: whole windows."""
    return -(-int(n) // window) * window


def hook_capture_safe(fn) -> bool:
    """Whether a residual hook declared itself safe inside a captured step (see the module doc)."""
    owner = getattr(fn, "__self__", fn)  # a bound method declares on its object
    return bool(getattr(owner, "capture_safe", False))


def capture_blockers(model: Transformer, device) -> list[str]:
    """Why a decode step of ``model`` cannot be captured on ``device`` (empty: it can)."""
    why = []
    if torch.device(device).type != "cuda":
        why.append("not a CUDA device")
    if model.args.model_parallel_size > 1:
        why.append("model-parallel layers communicate between processes in every step")
    if model in _capture_failed:
        why.append(f"an earlier capture failed ({_capture_failed[model]})")
    for layer, hooks in sorted(model._residual_hooks.items()):  # {layer: {handle id: fn}}
        for fn in hooks.values():
            if not hook_capture_safe(fn):
                name = getattr(fn, "__qualname__", type(fn).__name__)
                why.append(f"residual hook {name} at layer {layer} is not declared capture_safe")
    return why


def choose_mode(model: Transformer, device, requested: Optional[str] = None) -> str:
    """The decode mode of one generate call: ``requested`` (default: $NSLLM_DECODE, else auto).

    auto: ``graph`` where every step can be captured, else ``eager`` (warned on CUDA, with why);
    graph: raises LlamaError when it cannot be captured; static/eager: as asked."""
    mode = requested or os.environ.get(ENV) or "auto"
    if mode not in MODES:
        raise LlamaError(f"decode mode {mode!r} (argument or ${ENV}): expected one of {', '.join(MODES)}")
    if mode in ("eager", "static"):
        return mode
    why = capture_blockers(model, device)
    if mode == "graph" and why:
        raise LlamaError(f"decode='graph' is not possible: {'; '.join(why)}")
    if why and torch.device(device).type == "cuda":
        warnings.warn(f"Llama.generate decodes eagerly: {'; '.join(why)}", RuntimeWarning, stacklevel=3)
    return "eager" if why else "graph"


def stepper(model: Transformer, mode: str, pad_lengths: torch.Tensor, end: int) -> Callable:
    """``step(tokens [B] long, pos) -> logits [B, V]`` of one decode step at cache index ``pos``,
    inside ``model.kv_cache`` (whole windows for static/graph); ``end`` = last position + 1."""
    if mode == "eager":
        return lambda tokens, pos: model(tokens[:, None], pos, pad_lengths=pad_lengths)[:, -1]
    return StaticDecoder(model, pad_lengths, end, capture=mode == "graph")


class StaticDecoder:
    """Decode steps of one generate call over the caches of ``model.kv_cache(B, L)``.

    ``step(tokens, pos)`` returns float32 logits ``[B, V]``; with capture the returned tensor is
    the graph's output, overwritten by the next step (clone it to keep it)."""

    def __init__(self, model: Transformer, pad_lengths: torch.Tensor, end: int, *, capture: bool,
                 window: int = WINDOW):
        att = model.layers[0].attention
        if att.cache_k is None:
            raise LlamaError("StaticDecoder runs inside model.kv_cache(batch, length)")
        B, _, self.cache_len, _ = att.cache_k.shape
        if pad_lengths.shape != (B,):
            raise LlamaError(f"StaticDecoder: pad_lengths {tuple(pad_lengths.shape)} must be [{B}], "
                             f"one per cache row")
        device = att.cache_k.device
        self.model, self.end, self.window, self.capture = model, int(end), int(window), capture
        self._tok = torch.zeros(B, 1, dtype=torch.long, device=device)
        self._pos = torch.zeros(1, dtype=torch.long, device=device)  # cache index of this step
        self._pad = pad_lengths.to(device=device, dtype=torch.long).clone()
        self._keys = torch.arange(self.cache_len, device=device)
        self._graph: Optional[torch.cuda.CUDAGraph] = None
        self._graph_w = 0
        self._out: Optional[torch.Tensor] = None

    def step(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        if pos >= self.cache_len:
            raise LlamaError(f"decode position {pos} is outside the KV cache ({self.cache_len} positions)")
        self._tok.copy_(tokens.view(-1, 1))
        self._pos.fill_(pos)
        w = min(self.cache_len, (pos // self.window + 1) * self.window)
        if self._graph is not None and self._graph_w == w:
            self._graph.replay()
            return self._out
        self._graph = self._out = None  # the previous window is never replayed again
        logits = self._forward(w, pos)
        if self.capture and min(w, self.end) - (pos + 1) >= MIN_REPLAYS:
            self._capture(w, pos)
        return logits

    __call__ = step

    def _capture(self, w: int, pos: int) -> None:
        """Record ``_forward(w)`` into a CUDA graph (nothing runs now; inputs are the buffers).
        Not torch.cuda.graph(): it empties the allocator's cache and collects garbage on every
        capture, which costs more than a short generation saves."""
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream(self._tok.device)
        stream.wait_stream(torch.cuda.current_stream(self._tok.device))
        try:
            with torch.cuda.stream(stream):
                graph.capture_begin(capture_error_mode="thread_local")
                try:
                    out = self._forward(w, pos)
                finally:
                    graph.capture_end()
        except RuntimeError as e:  # e.g. a host synchronisation inside a hook that claimed capture_safe
            reason = str(e).splitlines()[0]
            _capture_failed[self.model] = reason
            self.capture = False
            warnings.warn(f"CUDA graph capture of a decode step failed, decoding eagerly from now on: {reason}",
                          RuntimeWarning, stacklevel=3)
            return
        torch.cuda.current_stream(self._tok.device).wait_stream(stream)
        self._graph, self._graph_w, self._out = graph, w, out

    def _forward(self, w: int, pos: int) -> torch.Tensor:
        """One token per row at cache index ``self._pos``, attending to cache positions < w."""
        m = self.model
        keys = self._keys[:w]
        mask = (keys <= self._pos) & (keys >= self._pad[:, None])  # [B,w]: written and not padding
        mask = mask[:, None, None, :]  # [B,1,1,w]
        rot = rope_rotations(m._rope(self._tok.device), self._pos - self._pad[:, None])  # [B,1,1,hd/2]
        h = m._run_hooks(0, m.tok_embeddings(self._tok), pos, self._pad)  # [B,1,D]
        for i, layer in enumerate(m.layers):  # TransformerBlock.forward with the step's attention
            h = h + _attend(layer.attention, layer.attention_norm(h), rot, mask, self._pos, w)
            h = h + layer.feed_forward(layer.ffn_norm(h))
            if i + 1 < m.n_layers:
                h = m._run_hooks(i + 1, h, pos, self._pad)
        h = m._run_hooks(m.n_layers, m.norm(h), pos, self._pad)
        return m.output(h[:, 0]).float()  # [B,V]


def _attend(att, x: torch.Tensor, rot: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, w: int):
    """Attention of one new token per row: x [B,1,D] -> [B,1,D]; its K/V go to cache index pos [1]."""
    B = x.shape[0]
    H, Hkv, hd = att.n_local_heads, att.n_local_kv_heads, att.head_dim
    q = apply_rotary_emb(att.wq(x).view(B, 1, H, hd), rot)  # [B,1,H,hd]
    k = apply_rotary_emb(att.wk(x).view(B, 1, Hkv, hd), rot)  # [B,1,Hkv,hd]
    v = att.wv(x).view(B, 1, Hkv, hd)
    att.cache_k.index_copy_(2, pos, k.transpose(1, 2))  # [B,Hkv,1,hd] into [B,Hkv,L,hd]
    att.cache_v.index_copy_(2, pos, v.transpose(1, 2))
    # Query head j reads K/V head j // (H/Hkv): each K/V head's query heads become its queries, so
    # attention needs no copy of K/V per query head.
    q = q.view(B, Hkv, H // Hkv, hd)  # [B,Hkv,G,hd]
    out = F.scaled_dot_product_attention(q, att.cache_k[:, :, :w], att.cache_v[:, :, :w], attn_mask=mask)
    return att.wo(out.reshape(B, 1, H * hd))  # [B,Hkv,G,hd] -> [B,1,H*hd]
