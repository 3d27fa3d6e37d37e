"""The Llama 3 network (Meta's reference layout and state-dict keys), and nothing else.

- Rotary embeddings in Meta's *interleaved* layout (dims 2i and 2i+1 of a head form one pair), with
  the Llama 3.1 frequency rescaling when ``use_scaled_rope`` is set.
- Left padding: ``pad_lengths[b]`` leading tokens of row b are masked as keys and the RoPE position of
  token i is ``start_pos + i - pad_lengths[b]``, so a padded row gives the logits of the row alone.
- ``with model.kv_cache(B, L):`` holds K/V caches for incremental decoding: a chunk attends to the
  cached (detached) K/V of earlier chunks and to its own K/V with autograd, so a prefix run under
  no_grad followed by a suffix with gradients equals one forward over both. Outside it, attention is
  within the chunk and autograd flows through K/V.
- Residual hooks: ``register_residual_hook(layer, fn)``; layer 0 = embedding output entering block 0,
  layer n_layers = output of the final norm. ``fn(h, ctx)`` may return a replacement for ``h``.
- model_parallel_size 1: plain nn.Linear / nn.Embedding; > 1: fairscale's parallel layers (torchrun).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle


@dataclass
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: Optional[int] = None
    vocab_size: int = 128256
    multiple_of: int = 256
    ffn_dim_multiplier: Optional[float] = None
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    use_scaled_rope: bool = False
    # Llama 3.1 RoPE scaling constants (the values of the released 3.1 models).
    rope_scale_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_seq_len: int = 8192
    # Per-pair divisors of the RoPE frequencies [head_dim/2] as stored by llama.cpp (rope_freqs)
    # instead of the scaling constants; None = none.
    rope_freq_factors: Optional[list] = None
    head_dim: Optional[int] = None  # None = dim // n_heads
    hidden_dim: Optional[int] = None  # FFN width; None = from multiple_of / ffn_dim_multiplier
    tie_word_embeddings: bool = False  # output head shares the embedding matrix
    max_batch_size: int = 32
    max_seq_len: int = 2048
    model_parallel_size: int = 1

    def __post_init__(self):
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.dim % self.n_heads:
                raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
            self.head_dim = self.dim // self.n_heads
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even (RoPE rotates pairs)")
        if self.rope_freq_factors is not None and len(self.rope_freq_factors) != self.head_dim // 2:
            raise ValueError(f"rope_freq_factors has {len(self.rope_freq_factors)} values, "
                             f"expected head_dim/2 = {self.head_dim // 2}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")

    @classmethod
    def from_params(cls, params: dict, **overrides) -> "ModelArgs":
        """Build from a params.json dict; unknown keys are ignored, ``overrides`` win."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in params.items() if k in names}
        kw.update(overrides)
        return cls(**kw)

    @property
    def ffn_hidden_dim(self) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


@dataclass
class ForwardContext:
    """What a residual hook is told about the current forward call."""
    layer: int
    start_pos: int
    pad_lengths: Optional[torch.Tensor]  # [B] long, or None (no padding)


# ----------------------------------------------------------------------------- RoPE

def rope_frequencies(args: ModelArgs, device=None) -> torch.Tensor:
    """Rotation frequency of each pair of a head, [head_dim/2] float32 (3.1-scaled if asked)."""
    hd = args.head_dim
    freqs = 1.0 / (args.rope_theta ** (torch.arange(0, hd, 2, device=device)[: hd // 2].float() / hd))
    if args.use_scaled_rope:
        freqs = apply_rope_scaling(freqs, args.rope_scale_factor, args.rope_low_freq_factor,
                                   args.rope_high_freq_factor, args.rope_original_max_seq_len)
    if args.rope_freq_factors is not None:
        freqs = freqs / torch.tensor(args.rope_freq_factors, dtype=torch.float32, device=device)
    return freqs


def apply_rope_scaling(freqs: torch.Tensor, factor: float, low_freq_factor: float,
                       high_freq_factor: float, original_max_seq_len: int) -> torch.Tensor:
    """Llama 3.1: wavelengths above ctx/low are divided by ``factor`` (frequency / factor), those
    below ctx/high are kept, and those in between interpolate smoothly between the two."""
    low_freq_wavelen = original_max_seq_len / low_freq_factor
    high_freq_wavelen = original_max_seq_len / high_freq_factor
    wavelen = 2 * math.pi / freqs
    smooth = (original_max_seq_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    mid = (1 - smooth) * freqs / factor + smooth * freqs
    out = torch.where(wavelen > low_freq_wavelen, freqs / factor, mid)
    return torch.where(wavelen < high_freq_wavelen, freqs, out)


def rope_rotations(freqs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """positions [B,S] (long) -> unit complex rotations [B,S,1,head_dim/2] (complex64)."""
    angles = positions.to(torch.float32)[..., None] * freqs  # [B,S,hd/2]
    return torch.polar(torch.ones_like(angles), angles)[:, :, None, :]  # [B,S,1,hd/2]


def apply_rotary_emb(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """x [B,S,H,hd] in Meta's interleaved layout (pairs of dims = complex numbers); the rotation is
    computed in float32 and the result has x's dtype."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # [B,S,H,hd/2] complex
    return torch.view_as_real(xc * rot).flatten(-2).type_as(x)  # [B,S,H,hd]


# ----------------------------------------------------------------------------- layers

def _parallel_layers(mp: int):
    """(Column, Row, Embedding) constructors: plain torch for mp == 1, fairscale otherwise."""
    if mp == 1:
        col = lambda i, o, gather=True: nn.Linear(i, o, bias=False)  # noqa: E731
        row = lambda i, o: nn.Linear(i, o, bias=False)  # noqa: E731
        return col, row, nn.Embedding
    from fairscale.nn.model_parallel import layers as fs

    def build(cls, *a, **kw):
        """A fairscale layer without its init (which materialises the full master weight on the
        CPU): the weights come from a checkpoint. The local weight is allocated on the current
        default device (the meta device inside load_model)."""
        orig = fs._initialize_affine_weight
        fs._initialize_affine_weight = lambda *args, **kwargs: None
        try:
            layer = cls(*a, **kw)
        finally:
            fs._initialize_affine_weight = orig
        layer.weight = nn.Parameter(torch.empty(layer.weight.shape, device=torch.empty(0).device),
                                    requires_grad=layer.weight.requires_grad)
        return layer

    col = lambda i, o, gather=False: build(fs.ColumnParallelLinear, i, o, bias=False,  # noqa: E731
                                           gather_output=gather)
    row = lambda i, o: build(fs.RowParallelLinear, i, o, bias=False,  # noqa: E731
                             input_is_parallel=True)
    emb = lambda n, d: build(fs.VocabParallelEmbedding, n, d)  # noqa: E731
    return col, row, emb


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        mp = args.model_parallel_size
        if args.n_heads % mp or args.n_kv_heads % mp:
            raise ValueError(f"model_parallel_size {mp} does not divide n_heads {args.n_heads} "
                             f"and n_kv_heads {args.n_kv_heads}")
        self.n_local_heads = args.n_heads // mp
        self.n_local_kv_heads = args.n_kv_heads // mp
        self.head_dim = args.head_dim
        col, row, _ = _parallel_layers(mp)
        self.wq = col(args.dim, args.n_heads * self.head_dim)
        self.wk = col(args.dim, args.n_kv_heads * self.head_dim)
        self.wv = col(args.dim, args.n_kv_heads * self.head_dim)
        self.wo = row(args.n_heads * self.head_dim, args.dim)
        self.cache_k: Optional[torch.Tensor] = None  # [Bmax, Hkv, Lmax, hd] while in kv_cache()
        self.cache_v: Optional[torch.Tensor] = None

    def forward(self, x, start_pos, rot, mask):
        B, S, _ = x.shape
        q = self.wq(x).view(B, S, self.n_local_heads, self.head_dim)  # [B,S,H,hd]
        k = self.wk(x).view(B, S, self.n_local_kv_heads, self.head_dim)  # [B,S,Hkv,hd]
        v = self.wv(x).view(B, S, self.n_local_kv_heads, self.head_dim)  # [B,S,Hkv,hd]
        q, k = apply_rotary_emb(q, rot), apply_rotary_emb(k, rot)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B,H(kv),S,hd]
        if self.cache_k is not None:
            # Later chunks see detached copies. A chunk that needs gradients (run after a cached,
            # frozen prefix) attends to its own K/V in the graph, so it gets the gradients of an
            # unsplit forward; the concatenation also keeps its saved tensors free of later
            # in-place cache writes. Without gradients (generation) the cache is read in place.
            end = start_pos + S
            self.cache_k[:B, :, start_pos:end] = k.detach()
            self.cache_v[:B, :, start_pos:end] = v.detach()
            if start_pos > 0 and (k.requires_grad or v.requires_grad):
                k = torch.cat([self.cache_k[:B, :, :start_pos], k], dim=2)  # [B,Hkv,end,hd]
                v = torch.cat([self.cache_v[:B, :, :start_pos], v], dim=2)
            else:
                k, v = self.cache_k[:B, :, :end], self.cache_v[:B, :, :end]  # [B,Hkv,end,hd]
        causal = mask is None and S > 1 and k.shape[2] == S
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             enable_gqa=self.n_local_heads != self.n_local_kv_heads)
        out = out.transpose(1, 2).reshape(B, S, -1)  # [B,S,H*hd]
        return self.wo(out)


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        col, row, _ = _parallel_layers(args.model_parallel_size)
        hidden = args.ffn_hidden_dim
        self.w1 = col(args.dim, hidden)
        self.w2 = row(hidden, args.dim)
        self.w3 = col(args.dim, hidden)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, start_pos, rot, mask):
        h = x + self.attention(self.attention_norm(x), start_pos, rot, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.vocab_size = args.vocab_size
        self.n_layers = args.n_layers
        col, _, emb = _parallel_layers(args.model_parallel_size)
        self.tok_embeddings = emb(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = col(args.dim, args.vocab_size, gather=True)
        self.tie_weights()
        self._residual_hooks: dict[int, OrderedDict] = {}  # layer -> {handle id: fn}, in registration order
        self._freqs: dict = {}  # device -> rope frequencies (not part of the state dict)

    def tie_weights(self) -> None:
        """With ``tie_word_embeddings`` the output head is the embedding matrix (one Parameter;
        call again after assigning new weights). Both have the shape [vocab(/mp), dim]."""
        if self.args.tie_word_embeddings:
            self.output.weight = self.tok_embeddings.weight

    # ---------------------------------------------------------------- hooks and cache
    def register_residual_hook(self, layer: int, fn: Callable, *, prepend: bool = False) -> RemovableHandle:
        """Hooks of a layer run in registration order; `prepend` puts this one first (it sees the
        residual before the others of the layer change it)."""
        if not 0 <= layer <= self.n_layers:
            raise ValueError(f"residual hook layer must be in 0..{self.n_layers}, got {layer}")
        hooks = self._residual_hooks.setdefault(layer, OrderedDict())  # RemovableHandle needs a weakref-able dict
        handle = RemovableHandle(hooks)
        hooks[handle.id] = fn
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def _run_hooks(self, layer, h, start_pos, pad_lengths):
        hooks = self._residual_hooks.get(layer)
        if hooks:
            ctx = ForwardContext(layer, start_pos, pad_lengths)
            for fn in list(hooks.values()):
                out = fn(h, ctx)
                if out is not None:
                    h = out
        return h

    @contextlib.contextmanager
    def kv_cache(self, batch_size: int, max_len: int):
        """K/V caches [batch_size, Hkv, max_len, hd] per layer, in the model's dtype and device."""
        ref = self.layers[0].attention.wk.weight
        for layer in self.layers:
            att = layer.attention
            shape = (batch_size, att.n_local_kv_heads, max_len, att.head_dim)
            att.cache_k = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
            att.cache_v = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
        try:
            yield self
        finally:
            for layer in self.layers:
                layer.attention.cache_k = layer.attention.cache_v = None

    # ---------------------------------------------------------------- forward
    def _rope(self, device):
        freqs = self._freqs.get(device)
        if freqs is None:
            freqs = self._freqs[device] = rope_frequencies(self.args, device=device)
        return freqs

    def forward(self, tokens: Optional[torch.Tensor], start_pos: int = 0, *, pad_lengths=None,
                output_positions=None, stop_at_layer: Optional[int] = None,
                start_at: Optional[tuple[int, torch.Tensor]] = None):
        """float32 logits of tokens [B,S] at cache positions start_pos.. (see `logits` for
        output_positions), or None when `stop_at_layer` is given (see `residual`)."""
        h = self.residual(tokens, start_pos, pad_lengths=pad_lengths, stop_at_layer=stop_at_layer, start_at=start_at)
        return None if h is None else self.logits(h, output_positions)

    def residual(self, tokens: Optional[torch.Tensor], start_pos: int = 0, *, pad_lengths=None,
                 stop_at_layer: Optional[int] = None, start_at: Optional[tuple[int, torch.Tensor]] = None):
        """The blocks and the residual hooks: the final residual [B,S,D] (normed, after the hooks of
        layer n_layers). The hooks of layer i see the residual entering block i; `stop_at_layer` L
        returns None right after the hooks of layer L (any L: None at the end).
        start_at = (layer, h [B,S,D]): h is the residual entering block `layer` (its hooks run on
        it; tokens is not read and may be None); the blocks below it are skipped, so with a KV cache
        only the layers from `layer` on need their cached keys and values."""
        first, h = start_at if start_at is not None else (0, None)
        if not 0 <= first < max(self.n_layers, 1):
            raise ValueError(f"start_at layer must be in 0..{self.n_layers - 1}, got {first}")
        x = h if h is not None else tokens
        rot, mask, pad_lengths = self._attention_inputs(*x.shape[:2], start_pos, pad_lengths, x.device)
        if h is None:
            h = self.tok_embeddings(tokens)  # [B,S,D]
        for i in range(first, self.n_layers):
            h = self._run_hooks(i, h, start_pos, pad_lengths)
            if stop_at_layer == i:
                return None
            h = self.layers[i](h, start_pos, rot, mask)
        h = self._run_hooks(self.n_layers, self.norm(h), start_pos, pad_lengths)
        return None if stop_at_layer is not None else h

    def logits(self, h: torch.Tensor, output_positions=None) -> torch.Tensor:
        """float32 logits of the final residual h [B,S,D]: at every position [B,S,vocab]; at positions
        [K] (every row) or [B,K] (per row) -> [B,K,vocab]; at (rows [N], positions [N]) -> [N,vocab]."""
        if isinstance(output_positions, tuple):
            rows, pos = (torch.as_tensor(t, dtype=torch.long, device=h.device) for t in output_positions)
            if rows.numel() == 0:
                return h.new_zeros((0, self.vocab_size), dtype=torch.float32)
            return self.output(h[rows, pos]).float()  # [N,vocab]
        if output_positions is not None:
            output_positions = torch.as_tensor(output_positions, dtype=torch.long, device=h.device)
            if output_positions.numel() == 0:
                return h.new_zeros((h.shape[0], 0, self.vocab_size), dtype=torch.float32)
            if output_positions.dim() == 1:
                h = h[:, output_positions]  # [B,K,D]
            else:
                idx = output_positions[:, :, None].expand(-1, -1, h.shape[-1])  # [B,K,D]
                h = torch.gather(h, 1, idx)  # [B,K,D]
        return self.output(h).float()  # [B,K or S,vocab]

    def _attention_inputs(self, B: int, S: int, start_pos: int, pad_lengths, device):
        """(RoPE rotations [B,S,1,hd/2], attention mask or None, pad_lengths on the device) of a chunk
        of S positions from start_pos; a KV cache too small for the chunk is refused."""
        cached = self.layers[0].attention.cache_k is not None if self.n_layers else False
        if cached:
            max_b, _, max_len, _ = self.layers[0].attention.cache_k.shape
            if start_pos + S > max_len or B > max_b:
                raise ValueError(f"batch {B} x positions {start_pos}..{start_pos + S - 1} exceed the "
                                 f"KV cache ({max_b} rows x {max_len} positions)")
        positions = torch.arange(start_pos, start_pos + S, device=device).expand(B, S)  # [B,S]
        if pad_lengths is not None:
            pad_lengths = pad_lengths.to(device=device, dtype=torch.long)
            positions = (positions - pad_lengths[:, None]).clamp_min(0)  # [B,S]
        rot = rope_rotations(self._rope(device), positions)  # [B,S,1,hd/2]
        return rot, self._mask(B, S, start_pos, pad_lengths, cached, device), pad_lengths

    @staticmethod
    def _mask(B, S, start_pos, pad_lengths, cached, device):
        """Boolean attention mask [B,1,S,Lk] (True = attend), or None where plain causal does."""
        n_keys = start_pos + S if cached else S
        if pad_lengths is None and (S == 1 or not cached or start_pos == 0):
            return None  # plain causal (is_causal) or a single query that sees every cached key
        q_pos = torch.arange(S, device=device)[:, None] + (n_keys - S)  # [S,1] key index of query
        k_pos = torch.arange(n_keys, device=device)[None, :]  # [1,Lk]
        mask = (k_pos <= q_pos)[None]  # [1,S,Lk]
        if pad_lengths is not None:
            # pad keys are masked; a pad query still sees itself so that its row is not empty
            mask = (mask & (k_pos[None] >= pad_lengths[:, None, None])) | (k_pos == q_pos)[None]  # [B,S,Lk]
        return mask[:, None].expand(B, 1, S, n_keys)  # [B,1,S,Lk]

    # ---------------------------------------------------------------- random init
    @torch.no_grad()
    def init_weights(self, seed: int = 0, output_std: Optional[float] = None) -> "Transformer":
        """Random weights for tests and demos (single process): linear weights N(0, 1/in_features),
        embeddings N(0, 1), norm weights 1 + N(0, 0.1^2), output N(0, output_std^2) with default
        2/sqrt(dim), so that logits have a spread of a few units (not degenerate)."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                val = 1 + 0.1 * torch.randn(p.shape, generator=g)
            elif name.startswith("tok_embeddings"):
                val = torch.randn(p.shape, generator=g)
            elif name.startswith("output"):
                std = output_std if output_std is not None else 2 / math.sqrt(self.args.dim)
                val = std * torch.randn(p.shape, generator=g)
            else:
                val = torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1])
            p.copy_(val)
        return self
