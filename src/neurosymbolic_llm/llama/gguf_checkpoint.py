"""GGUF files (llama.cpp, Ollama): the model, its tokenizer and chat template from one file.

- Metadata -> ``ModelArgs`` (llama.cpp's names: ``llama.block_count``, ``llama.embedding_length``,
  ``llama.rope.freq_base``, ...). Only ``general.architecture == "llama"`` is read; anything the
  network cannot represent (experts, sliding windows, biases, partial or non-Llama-3 RoPE scaling,
  an unknown tensor) is refused by name.
- Tensors: the file is memory-mapped; each tensor is dequantized on its own (any type the ``gguf``
  package knows: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K, ...) and assigned into the model built
  on the meta device, so peak memory is the model plus one float32 tensor. GGUF keeps q/k rows in
  the interleaved RoPE order of Meta's layout already (llama.cpp permutes them when converting).
  Without ``output.weight`` the embeddings are tied. ``rope_freqs.weight`` (llama.cpp's form of
  Llama 3.1 scaling) becomes ``ModelArgs.rope_freq_factors``.
- Tokenizer: ``tokenizer.ggml.model == "gpt2"`` (byte-level BPE) with a known ``tokenizer.ggml.pre``
  (see neurosymbolic_llm/llama/bpe.py); control/user-defined tokens are special tokens.

``GGUF`` is the format's object for formats.py (neurosymbolic_llm/llama/checkpoint_format.py): a
file is one by its magic bytes, whatever its name (Ollama's blobs have none), and a folder holding
exactly one ``*.gguf`` means that file.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from neurosymbolic_llm.llama.bpe import PRE_TOKENIZER_PATTERNS, BPETokenizer
from neurosymbolic_llm.llama.checkpoint_format import CheckpointFormat
from neurosymbolic_llm.llama.checks import model_args, need_int
from neurosymbolic_llm.llama.errors import CheckpointError, shown
from neurosymbolic_llm.llama.gguf_file import GGUFFile, has_gguf_magic
from neurosymbolic_llm.llama.layout import expected_shapes
from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.llama.tensor_names import TensorNames

_NAMES = TensorNames(
    {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight",
     "output.weight": "output.weight"},
    r"blk\.(\d+)\.(\w+)\.weight$",
    {"attn_norm": "attention_norm", "attn_q": "attention.wq", "attn_k": "attention.wk",
     "attn_v": "attention.wv", "attn_output": "attention.wo", "ffn_norm": "ffn_norm",
     "ffn_gate": "feed_forward.w1", "ffn_down": "feed_forward.w2", "ffn_up": "feed_forward.w3"})
_ROPE_FREQS = "rope_freqs.weight"
# GGUF token types (llama.cpp's llama_token_type)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_MISSING = object()
_INTEGER_TYPES = ("I8", "I16", "I32", "I64")
_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


def open_gguf(path) -> GGUFFile:
    """The metadata and tensor index of a GGUF file (tensor data stays in the mapped file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GGUF file {path} not found")
    return GGUFFile(path)


def field(reader: GGUFFile, key: str, default: Any = _MISSING) -> Any:
    """The value of metadata ``key``; a missing key without a default is an error naming it."""
    if key not in reader.fields:
        if default is _MISSING:
            raise CheckpointError(f"{reader.path}: metadata {key!r} is missing")
        return default
    return reader.fields[key]


# ----------------------------------------------------------------------------- architecture

def gguf_model_args(reader: GGUFFile, **runtime) -> ModelArgs:
    """``ModelArgs`` of a llama GGUF (``runtime``: max_seq_len, max_batch_size, ...); every value
    checked (llama/checks.py) and named by its metadata key."""
    path = reader.path
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: architecture {shown(arch)} is not supported: only 'llama' "
                              f"(Llama 3, SmolLM2, ... as llama.cpp names them; SentencePiece-tokenized ones such as Llama 2 are refused)")
    a = lambda key, default=_MISSING: field(reader, f"llama.{key}", default)  # noqa: E731
    if a("expert_count", 0):
        raise CheckpointError(f"{path}: a mixture of experts (llama.expert_count = "
                              f"{shown(a('expert_count'))}) is not supported")
    if a("attention.sliding_window", 0):
        raise CheckpointError(f"{path}: sliding-window attention is not supported")
    scaling = a("rope.scaling.type", "none")
    if scaling not in ("none", "") and a("rope.scaling.factor", 1.0) != 1.0:
        raise CheckpointError(f"{path}: RoPE scaling {shown(scaling)} is not supported (only Llama "
                              f"3.1's, stored as rope_freqs)")
    names = {t.name for t in reader.tensors}
    for bad, what in (("attn_q.bias", "attention biases"), ("attn_qkv", "a fused QKV projection"),
                      ("ffn_gate_inp", "a mixture of experts"), ("attn_q_norm", "q/k norms")):
        if any(n.split(".", 2)[-1].startswith(bad) for n in names):
            raise CheckpointError(f"{path}: {what} ({bad}) are not supported by the Llama network")
    n_kv = a("attention.head_count_kv", None)
    if isinstance(n_kv, list) or isinstance(a("attention.head_count", None), list):
        raise CheckpointError(f"{path}: per-layer head counts are not supported")
    dim = need_int(path, "llama.embedding_length", a("embedding_length"))
    n_heads = need_int(path, "llama.attention.head_count", a("attention.head_count"))
    head_dim = need_int(path, "llama.attention.key_length", a("attention.key_length", dim // n_heads))
    for key, what in (("attention.value_length", "value_length"),
                      ("rope.dimension_count", "partial RoPE: rope.dimension_count")):
        if a(key, head_dim) != head_dim:
            raise CheckpointError(f"{path}: {what} {shown(a(key))} differs from key_length "
                                  f"{head_dim}: not supported")
    vocab = a("vocab_size", None)
    if vocab is None:
        tokens = field(reader, "tokenizer.ggml.tokens", [])
        embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
        vocab = len(tokens) if isinstance(tokens, list) and tokens else \
            int(embd.shape[1]) if embd is not None and len(embd.shape) == 2 else None
    factors = None
    if _ROPE_FREQS in names:
        t = next(t for t in reader.tensors if t.name == _ROPE_FREQS)
        _check_readable(t, path)
        factors = _dequantize(t).float().reshape(-1).tolist()
    k = "llama."
    return model_args(path, {
        "dim": (k + "embedding_length", dim), "n_layers": (k + "block_count", a("block_count")),
        "n_heads": (k + "attention.head_count", n_heads),
        "n_kv_heads": (k + "attention.head_count_kv", n_kv),
        "vocab_size": (k + "vocab_size (or the token list)", vocab),
        "hidden_dim": (k + "feed_forward_length", a("feed_forward_length")),
        "norm_eps": (k + "attention.layer_norm_rms_epsilon", a("attention.layer_norm_rms_epsilon")),
        "rope_theta": (k + "rope.freq_base", a("rope.freq_base", 10000.0)),
        "head_dim": (k + "attention.key_length", head_dim),
        "rope_freq_factors": (_ROPE_FREQS, factors),
        "tie_word_embeddings": ("output.weight", "output.weight" not in names)}, **runtime)


@functools.cache
def _dequantizable(qtype) -> bool:
    """Whether the ``gguf`` package dequantizes this type (tried on one block of zeros)."""
    from gguf import GGML_QUANT_SIZES, dequantize
    try:
        dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def _check_readable(t, path) -> None:
    """A weight is float (F32, F16, BF16, F64) or a quantization the ``gguf`` package reads."""
    kind = t.tensor_type.name
    if kind not in _FLOAT_TYPES and (kind in _INTEGER_TYPES or not _dequantizable(t.tensor_type)):
        raise CheckpointError(f"{path}: tensor {shown(t.name)} has the type {kind}: weights must be "
                              f"float or a quantization the gguf package reads")


def _dequantize(t) -> torch.Tensor:
    """A GGUF tensor [rows, ne0] on the CPU: F32/F16/F64/BF16 as stored (a view of the mapped
    file), anything quantized dequantized to float32 by the ``gguf`` package."""
    from gguf import GGMLQuantizationType as Q, dequantize
    if t.tensor_type in (Q.F32, Q.F16, Q.F64):
        return torch.from_numpy(t.data)
    if t.tensor_type == Q.BF16:
        return torch.from_numpy(t.data).view(torch.bfloat16)
    return torch.from_numpy(dequantize(t.data, t.tensor_type).reshape(t.data.shape[0], -1))


def state_key(name: str) -> Optional[str]:
    """Our state-dict key of a GGUF tensor name (None: not a weight of the network)."""
    return _NAMES.state_key(name)


def load_gguf_model(path, *, max_seq_len: int = 2048, max_batch_size: int = 32,
                    device="cpu", dtype: torch.dtype = torch.float32, reader=None) -> Transformer:
    """The network of a llama GGUF file, dequantized tensor by tensor into ``dtype`` on ``device``.
    Every tensor's name and shape is checked against the metadata before the network is built."""
    reader = reader if reader is not None else open_gguf(path)
    args = gguf_model_args(reader, max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    expected = expected_shapes(args, len(reader.tensors), path)
    weights = [t for t in reader.tensors if t.name != _ROPE_FREQS]
    for t in weights:
        key = state_key(t.name)
        if key is None or key not in expected:
            raise CheckpointError(f"{path}: tensor {shown(t.name)} is not part of a llama network "
                                  f"with {args.n_layers} blocks: not supported")
        _check_readable(t, path)
        shape = tuple(reversed(t.shape))  # [rows, ne0]
        if shape != expected[key]:
            raise CheckpointError(f"{path}: tensor {t.name!r} has shape {shape} but the "
                                  f"metadata implies {expected[key]}")
    found = {state_key(t.name) for t in weights}
    if args.tie_word_embeddings:
        found.add("output.weight")
    missing = [k for k in expected if k not in found]
    if missing:
        gguf_name = {v: k for k, v in _NAMES.globals.items()}.get(missing[0], missing[0])
        raise CheckpointError(f"{path}: tensor for {gguf_name!r} is missing ({len(missing)} missing)")
    with torch.device("meta"):
        model = Transformer(args)
    state: dict[str, torch.Tensor] = {}
    for t in weights:
        key = state_key(t.name)
        w = _dequantize(t).reshape(expected[key])
        state[key] = w.to(device=device, dtype=dtype)  # no copy when already right (F32 -> float32)
        if not reader.file.maps(state[key].data_ptr()):
            reader.file.release(t.offset, t.n_bytes)  # copied out: its pages are not needed any more
        del w
    if args.tie_word_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.requires_grad_(False)
    return model.eval()


# ----------------------------------------------------------------------------- tokenizer

def gguf_tokenizer(reader: GGUFFile) -> tuple[BPETokenizer, Optional[str]]:
    """(tokenizer, chat template or None) from the ``tokenizer.*`` metadata."""
    path = reader.path
    kind = field(reader, "tokenizer.ggml.model", None)
    if kind != "gpt2":
        raise CheckpointError(f"{path}: tokenizer.ggml.model {shown(kind)} is not supported: only "
                              f"byte-level BPE ('gpt2'; SentencePiece 'llama' tokenizers are not)")
    pre = field(reader, "tokenizer.ggml.pre", None)
    if not isinstance(pre, str) or pre not in PRE_TOKENIZER_PATTERNS:
        raise CheckpointError(f"{path}: pre-tokenizer tokenizer.ggml.pre = {shown(pre)} is not known: "
                              f"known are {', '.join(sorted(PRE_TOKENIZER_PATTERNS))}")
    tokens = _list(reader, "tokenizer.ggml.tokens", str)
    types = _list(reader, "tokenizer.ggml.token_type", int, [_NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise CheckpointError(f"{path}: tokenizer.ggml.token_type has {len(types)} entries but "
                              f"tokenizer.ggml.tokens has {len(tokens)}")
    merges = _list(reader, "tokenizer.ggml.merges", str)
    special = {tok: i for i, (tok, ty) in enumerate(zip(tokens, types))
               if ty in (_CONTROL, _USER_DEFINED, _UNUSED)}

    def tid(key):
        value = field(reader, f"tokenizer.ggml.{key}_token_id", None)
        return None if value is None else need_int(path, f"tokenizer.ggml.{key}_token_id", value, 0)
    eos = tid("eos")
    if eos is None:
        raise CheckpointError(f"{path}: metadata tokenizer.ggml.eos_token_id is missing")
    template = field(reader, "tokenizer.chat_template", None)
    eot = tid("eot")
    if eot is None:
        eot = next((special[n] for n in ("<|eot_id|>", "<|im_end|>") if n in special), eos)
    stops = {eos, eot} | {t for t in (tid("eom"),) if t is not None}
    pad = tid("padding")
    if pad is None:
        pad = special.get("<|finetune_right_pad_id|>", eos)
    tok = BPETokenizer.from_vocab(
        name=Path(path).name, tokens=tokens, merges=merges, pattern=PRE_TOKENIZER_PATTERNS[pre],
        special_tokens=special, bos_id=tid("bos"), eos_id=eos, eot_id=eot, pad_id=pad,
        stop_tokens=stops, unk_id=tid("unknown") if _UNKNOWN in types else None)
    return tok, template


def _list(reader: GGUFFile, key: str, item: type, default: Any = _MISSING) -> list:
    """An array of ``item`` values (tokens, token types, merges)."""
    value = field(reader, key, default)
    if not isinstance(value, list):
        raise CheckpointError(f"{reader.path}: metadata {key} must be an array, got {shown(value)}")
    bad = next((v for v in value if not isinstance(v, item) or isinstance(v, bool)), None)
    if bad is not None:
        raise CheckpointError(f"{reader.path}: metadata {key} must hold {item.__name__} values, "
                              f"got {shown(bad)}")
    return value


# ----------------------------------------------------------------------------- fingerprints

def gguf_weight_samples(path, reader=None):
    """The weight samples of a GGUF file (neurosymbolic_llm/llama/fingerprint.py): plain types read in
    place, of a quantized tensor only the sampled rows dequantized; kind = the stored type."""
    from gguf import GGMLQuantizationType as Q, dequantize

    from neurosymbolic_llm.llama.fingerprint import weight_samples
    reader = reader if reader is not None else open_gguf(path)
    by_key = {state_key(t.name): t for t in reader.tensors if t.name != _ROPE_FREQS}

    def read(key, shape, idx):
        t = by_key.get(key)
        if t is None or tuple(reversed(t.shape)) != shape:
            raise CheckpointError(f"{path}: tensor for {key!r} is missing or has shape "
                                  f"{None if t is None else tuple(reversed(t.shape))}, expected {shape}")
        if t.tensor_type in (Q.F32, Q.F16, Q.BF16):
            return t.tensor_type.name, _dequantize(t).reshape(-1)[torch.from_numpy(idx)].float().numpy()
        rows, cols = np.divmod(idx, shape[-1])
        data = t.data.reshape(-1, t.data.shape[-1])  # [rows, bytes per row]
        values = dequantize(data[rows], t.tensor_type).reshape(len(rows), -1)  # the sampled rows only
        return t.tensor_type.name, values[np.arange(len(rows)), cols].astype(np.float32)

    return weight_samples(gguf_model_args(reader), read)


def gguf_fingerprint(path, reader=None) -> str:
    """Fingerprint of the network: the digest of its weight samples."""
    return gguf_weight_samples(path, reader).digest()


def gguf_tokenizer_fingerprint(path, reader=None) -> str:
    """sha256 of the tokenizer metadata and chat template."""
    reader = reader if reader is not None else open_gguf(path)
    h = hashlib.sha256(b"gguf-tokenizer\n")
    for key in sorted(k for k in reader.fields if k.startswith("tokenizer.")):
        h.update(json.dumps([key, field(reader, key)]).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- the format

def _ggufs(names) -> list[str]:
    return [n for n in names if n.endswith(".gguf")]


class GGUFFormat(CheckpointFormat):
    """A GGUF file (the module docstring); its parsed metadata is shared by the readers."""
    name, title = "gguf", "GGUF file"
    needs = "a GGUF checkpoint is one .gguf file"

    def find(self, path, names):
        if names is None:
            return path if has_gguf_magic(path) else None
        ggufs = _ggufs(names)
        return path / ggufs[0] if len(ggufs) == 1 else None

    def refusal(self, path, names, found):
        if names is None:
            return f"{path} is a file but not a GGUF file (no GGUF magic bytes)"
        n = len(_ggufs(names))
        return f"{path} holds {n} .gguf files ({found}): pass one of them" if n > 1 else None

    def open(self, path) -> GGUFFile:
        return open_gguf(path)

    def args(self, ckpt, **runtime):
        return gguf_model_args(ckpt.handle(), **runtime)

    def load_model(self, ckpt, **kw):
        return load_gguf_model(ckpt.path, reader=ckpt.handle(), **kw)

    def tokenizer(self, ckpt):
        return gguf_tokenizer(ckpt.handle())

    def weight_samples(self, ckpt):
        return gguf_weight_samples(ckpt.path, ckpt.handle())

    def tokenizer_fingerprint(self, ckpt) -> str:
        return gguf_tokenizer_fingerprint(ckpt.path, ckpt.handle())


GGUF = GGUFFormat()
