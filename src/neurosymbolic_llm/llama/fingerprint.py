"""Fingerprints of model weights that follow their content, the same recipe for every format.

A fingerprint samples a fixed set of weight values in Meta's layout (our state-dict keys and
shapes, q/k rows in the interleaved RoPE order the loaders produce, whatever the file's order),
together with the architecture in a normalized form (effective FFN width, head size, RoPE
frequencies, tied embeddings: the same model in Meta, Hugging Face or GGUF form gives the same
values). Per tensor: element 0, the last element and ``RANDOM_SAMPLES`` positions drawn from a
generator seeded by the tensor's key, so the positions depend only on the key and shape. Each value
is kept as float32 together with the tensor's stored kind (``F32``, ``F16``, ``BF16``, or a
quantized GGUF type such as ``Q8_0``). A few thousand values are read whatever the model size.

``compare(a, b)`` decides what two checkpoints are to each other:

- ``SAME``: same architecture, and per tensor the samples agree exactly after rounding both to the
  coarser of the two float kinds (bf16 < f16 < f32 in mantissa bits): a Meta float32 folder, its
  Hugging Face copy and a GGUF F32 or F16 conversion are one model;
- a quantized tensor (``Q4_1``, ``Q8_0``, ...) counts as the float32 values it dequantizes to: a
  Hugging Face folder holding the weights dequantized from a GGUF (what transformers' ``gguf_file=``
  loader makes) is that GGUF's model; the original float weights are not (quantization changes
  what every layer computes);
- ``OTHER_WEIGHTS``: same architecture, other values;
- ``OTHER_ARCHITECTURE``.

``WeightSamples.digest()`` (the checkpoint's ``fingerprint()``) is sha256 over the normalized
architecture and every tensor's kind and sample bytes: copies in the same dtype have the same
digest in any format; compare() is the rule where digests differ. It is not a digest of every
weight: an edit that misses all sampled positions goes unseen (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import zlib
from typing import Callable, Optional

import numpy as np
import torch

from neurosymbolic_llm.llama.model import ModelArgs, Transformer, rope_frequencies

VERSION = 2
RANDOM_SAMPLES = 14
# mantissa bits of the float kinds: rounding to the coarser one makes float copies comparable
FLOAT_BITS = {"F32": 23, "F16": 10, "BF16": 7}
_TORCH_KINDS = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_ROUND_TO = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
SAME, OTHER_WEIGHTS, OTHER_ARCHITECTURE = "same weights", "same architecture, other weights", "other architecture"
ARCH_RTOL = 1e-5  # float settings (norm eps, RoPE frequencies) stored as float32 in some formats

# read(key, shape, flat indices into Meta's layout) -> (stored kind, values float32 [k])
Reader = Callable[[str, tuple, np.ndarray], tuple[str, np.ndarray]]


def kind_of(dtype: torch.dtype) -> str:
    """The stored kind of a torch dtype (F32, F16, BF16; anything else by its torch name)."""
    return _TORCH_KINDS.get(dtype, str(dtype).replace("torch.", "").upper())


def architecture(args: ModelArgs) -> dict:
    """What the weights mean, format-independent: effective sizes, norm eps, RoPE frequencies."""
    return {"dim": args.dim, "n_layers": args.n_layers, "n_heads": args.n_heads,
            "n_kv_heads": args.n_kv_heads, "vocab_size": args.vocab_size, "head_dim": args.head_dim,
            "hidden_dim": args.ffn_hidden_dim, "tie_word_embeddings": bool(args.tie_word_embeddings),
            "norm_eps": float(args.norm_eps), "rope_frequencies": rope_frequencies(args).tolist()}


def canonical_tensors(args: ModelArgs) -> list[tuple[str, tuple]]:
    """(state-dict key, shape) of every weight, tied outputs left out (they are the embedding)."""
    with torch.device("meta"):
        model = Transformer(dataclasses.replace(args, max_batch_size=1, max_seq_len=1))
    return [(k, tuple(t.shape)) for k, t in model.state_dict().items()
            if not (args.tie_word_embeddings and k == "output.weight")]


def sample_positions(key: str, shape: tuple) -> np.ndarray:
    """Flat indices [k] of a tensor's samples in Meta's layout: first, last and seeded draws."""
    n = math.prod(shape)
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    drawn = rng.integers(0, n, size=RANDOM_SAMPLES) if n > 0 else np.zeros(0, np.int64)
    return np.unique(np.concatenate([[0, n - 1], drawn]).astype(np.int64))


@dataclasses.dataclass
class WeightSamples:
    """The samples of one checkpoint: architecture and {key: (kind, values float32 [k])}."""
    arch: dict
    tensors: dict[str, tuple[str, np.ndarray]]

    def digest(self) -> str:
        h = hashlib.sha256(f"nsllm-weights-{VERSION}\n".encode())
        arch = {k: ([float(f"{x:.5g}") for x in v] if k == "rope_frequencies" else
                    float(f"{v:.5g}") if isinstance(v, float) else v) for k, v in self.arch.items()}
        h.update(json.dumps(arch, sort_keys=True).encode())
        for key in sorted(self.tensors):
            kind, values = self.tensors[key]
            h.update(f"\n{key}:{kind}:".encode())
            h.update(values.astype("<f4").tobytes())
        return h.hexdigest()

    def to_json(self) -> dict:
        """Plain JSON types (the values as base64 of little-endian float32)."""
        return {"version": VERSION, "architecture": self.arch,
                "tensors": {k: [kind, base64.b64encode(v.astype("<f4").tobytes()).decode()]
                            for k, (kind, v) in sorted(self.tensors.items())}}

    @classmethod
    def from_json(cls, data) -> Optional["WeightSamples"]:
        """The samples of ``to_json()``; None for anything else (another version, no samples)."""
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return None
        try:
            tensors = {k: (str(kind), np.frombuffer(base64.b64decode(b), dtype="<f4").astype(np.float32))
                       for k, (kind, b) in data["tensors"].items()}
            return cls(dict(data["architecture"]), tensors)
        except (KeyError, TypeError, ValueError):
            return None


def weight_samples(args: ModelArgs, read: Reader) -> WeightSamples:
    """Sample every canonical tensor through a format's ``read``."""
    tensors = {}
    for key, shape in canonical_tensors(args):
        kind, values = read(key, shape, sample_positions(key, shape))
        tensors[key] = (kind, np.asarray(values, dtype=np.float32))
    return WeightSamples(architecture(args), tensors)


def _rounded(values: np.ndarray, kind: str) -> np.ndarray:
    return torch.from_numpy(values).to(_ROUND_TO[kind]).float().numpy()


def _same_arch(a: dict, b: dict) -> Optional[str]:
    """None, or the first differing architecture entry."""
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, (float, list)) and isinstance(y, type(x)):
            xs, ys = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
            if xs.shape == ys.shape and np.allclose(xs, ys, rtol=ARCH_RTOL, atol=0):
                continue
        elif x == y:
            continue
        return key
    return None


def compare(a: WeightSamples, b: WeightSamples) -> tuple[str, str]:
    """(SAME | OTHER_WEIGHTS | OTHER_ARCHITECTURE, a short reason)."""
    key = _same_arch(a.arch, b.arch)
    if key is not None:
        return OTHER_ARCHITECTURE, f"{key} is {a.arch.get(key)!r} there, {b.arch.get(key)!r} here"
    if sorted(a.tensors) != sorted(b.tensors):
        return OTHER_ARCHITECTURE, "other tensors"
    for name in sorted(a.tensors):
        (ka, va), (kb, vb) = a.tensors[name], b.tensors[name]
        if ka == kb and ka not in FLOAT_BITS:
            same = np.array_equal(va, vb)
        else:  # a quantized tensor computes with its dequantized float32 values
            coarse = min(_float_kind(ka), _float_kind(kb), key=FLOAT_BITS.get)
            same = np.array_equal(_rounded(va, coarse), _rounded(vb, coarse))
        if not same:
            kinds = f" (stored as {ka} there, {kb} here)" if ka != kb else ""
            return OTHER_WEIGHTS, f"{name} holds other values{kinds}"
    return SAME, ""


def _float_kind(kind: str) -> str:
    return kind if kind in FLOAT_BITS else "F32"
