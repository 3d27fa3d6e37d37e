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
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from neurosymbolic_llm.llama.bpe import PRE_TOKENIZER_PATTERNS, BPETokenizer
from neurosymbolic_llm.llama.errors import CheckpointError
from neurosymbolic_llm.llama.gguf_file import GGUFFile
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
    """``ModelArgs`` of a llama GGUF (``runtime``: max_seq_len, max_batch_size, ...)."""
    path = reader.path
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: architecture {arch!r} is not supported: only 'llama' "
                              f"(Llama 2/3, SmolLM2, TinyLlama, ... as llama.cpp names them)")
    a = lambda key, default=_MISSING: field(reader, f"llama.{key}", default)  # noqa: E731
    if a("expert_count", 0):
        raise CheckpointError(f"{path}: a mixture of experts (llama.expert_count = "
                              f"{a('expert_count')}) is not supported")
    if a("attention.sliding_window", 0):
        raise CheckpointError(f"{path}: sliding-window attention is not supported")
    scaling = a("rope.scaling.type", "none")
    if scaling not in ("none", "") and a("rope.scaling.factor", 1.0) != 1.0:
        raise CheckpointError(f"{path}: RoPE scaling {scaling!r} is not supported (only Llama 3.1's, "
                              f"stored as rope_freqs)")
    names = {t.name for t in reader.tensors}
    for bad, what in (("attn_q.bias", "attention biases"), ("attn_qkv", "a fused QKV projection"),
                      ("ffn_gate_inp", "a mixture of experts"), ("attn_q_norm", "q/k norms")):
        if any(n.split(".", 2)[-1].startswith(bad) for n in names):
            raise CheckpointError(f"{path}: {what} ({bad}) are not supported by the Llama network")
    dim, n_heads = a("embedding_length"), a("attention.head_count")
    head_dim = a("attention.key_length", dim // n_heads)
    if a("attention.value_length", head_dim) != head_dim:
        raise CheckpointError(f"{path}: key_length {head_dim} != value_length "
                              f"{a('attention.value_length')} is not supported")
    if a("rope.dimension_count", head_dim) != head_dim:
        raise CheckpointError(f"{path}: partial RoPE (rope.dimension_count {a('rope.dimension_count')} "
                              f"of head_dim {head_dim}) is not supported")
    n_kv = a("attention.head_count_kv", n_heads)
    if isinstance(n_kv, list) or isinstance(n_heads, list):
        raise CheckpointError(f"{path}: per-layer head counts are not supported")
    vocab = a("vocab_size", None)
    if vocab is None:
        vocab = len(field(reader, "tokenizer.ggml.tokens", [])) or \
            next(int(t.shape[1]) for t in reader.tensors if t.name == "token_embd.weight")
    factors = None
    if _ROPE_FREQS in names:
        t = next(t for t in reader.tensors if t.name == _ROPE_FREQS)
        factors = _dequantize(t).float().reshape(-1).tolist()
    try:
        return ModelArgs(dim=dim, n_layers=a("block_count"), n_heads=n_heads, n_kv_heads=n_kv,
                         vocab_size=vocab, hidden_dim=a("feed_forward_length"),
                         norm_eps=a("attention.layer_norm_rms_epsilon"),
                         rope_theta=a("rope.freq_base", 10000.0), head_dim=head_dim,
                         rope_freq_factors=factors, tie_word_embeddings="output.weight" not in names,
                         **runtime)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from e


def _dequantize(t) -> torch.Tensor:
    """A GGUF tensor [rows, ne0] on the CPU: F32/F16/BF16 as stored (a view of the mapped file),
    anything quantized dequantized to float32 by the ``gguf`` package."""
    from gguf import GGMLQuantizationType as Q, dequantize
    if t.tensor_type in (Q.F32, Q.F16):
        return torch.from_numpy(t.data)
    if t.tensor_type == Q.BF16:
        return torch.from_numpy(t.data).view(torch.bfloat16)
    return torch.from_numpy(dequantize(t.data, t.tensor_type).reshape(t.data.shape[0], -1))


def state_key(name: str) -> Optional[str]:
    """Our state-dict key of a GGUF tensor name (None: not a weight of the network)."""
    return _NAMES.state_key(name)


def load_gguf_model(path, *, max_seq_len: int = 2048, max_batch_size: int = 32,
                    device="cpu", dtype: torch.dtype = torch.float32, reader=None) -> Transformer:
    """The network of a llama GGUF file, dequantized tensor by tensor into ``dtype`` on ``device``."""
    reader = reader if reader is not None else open_gguf(path)
    args = gguf_model_args(reader, max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    with torch.device("meta"):
        model = Transformer(args)
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        if t.name == _ROPE_FREQS:
            continue
        key = state_key(t.name)
        if key is None or key not in expected:
            raise CheckpointError(f"{path}: tensor {t.name!r} is not part of a llama network with "
                                  f"{args.n_layers} blocks: not supported")
        shape = tuple(reversed(t.shape))  # [rows, ne0]
        if shape != tuple(expected[key].shape):
            raise CheckpointError(f"{path}: tensor {t.name!r} has shape {shape} but the "
                                  f"metadata implies {tuple(expected[key].shape)}")
        w = _dequantize(t).reshape(shape)
        state[key] = w.to(device=device, dtype=dtype)  # no copy when already right (F32 -> float32)
        if not reader.file.maps(state[key].data_ptr()):
            reader.file.release(t.offset, t.n_bytes)  # copied out: its pages are not needed any more
        del w
    if args.tie_word_embeddings and "tok_embeddings.weight" in state:
        state["output.weight"] = state["tok_embeddings.weight"]
    missing = [k for k in expected if k not in state]
    if missing:
        gguf_name = {v: k for k, v in _NAMES.globals.items()}.get(missing[0], missing[0])
        raise CheckpointError(f"{path}: tensor for {gguf_name!r} is missing ({len(missing)} missing)")
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
        raise CheckpointError(f"{path}: tokenizer.ggml.model {kind!r} is not supported: only "
                              f"byte-level BPE ('gpt2'; SentencePiece 'llama' tokenizers are not)")
    pre = field(reader, "tokenizer.ggml.pre", None)
    if pre not in PRE_TOKENIZER_PATTERNS:
        raise CheckpointError(f"{path}: pre-tokenizer tokenizer.ggml.pre = {pre!r} is not known: "
                              f"known are {', '.join(sorted(PRE_TOKENIZER_PATTERNS))}")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type", [_NORMAL] * len(tokens))
    merges = field(reader, "tokenizer.ggml.merges")
    special = {tok: i for i, (tok, ty) in enumerate(zip(tokens, types))
               if ty in (_CONTROL, _USER_DEFINED, _UNUSED)}
    tid = lambda key: field(reader, f"tokenizer.ggml.{key}_token_id", None)  # noqa: E731
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
