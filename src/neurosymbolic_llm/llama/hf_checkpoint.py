"""Hugging Face folders: ``config.json``, safetensors weights (one file or shards with
``model.safetensors.index.json``), ``tokenizer.json`` and ``tokenizer_config.json`` (chat template;
or ``chat_template.jinja``), optionally ``generation_config.json`` (stop tokens).

- ``config.json`` -> ``ModelArgs``: only ``model_type == "llama"`` without attention/MLP biases,
  SiLU, RoPE either plain or of type ``llama3``; head_dim, GQA and tied embeddings as given.
- Weights: each shard is memory-mapped (neurosymbolic_llm/llama/mapped_file.py) and read one tensor at a time
  into the model built on the meta device (no second full copy: tensors already in the right dtype
  on the CPU are used in place, the pages of converted ones are dropped). Hugging Face stores the q/k rows of each head in rotate-half
  order (first half of the head = first element of every rotated pair); our RoPE rotates
  interleaved pairs (Meta's layout), so those rows are permuted back on load.
- ``tokenizer.json`` must be a byte-level BPE (see neurosymbolic_llm/llama/bpe.py); every added token is a
  special token (the pipeline never lets text produce one).
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Optional

import torch

from neurosymbolic_llm.llama.bpe import BPETokenizer, pattern_from_tokenizer_json
from neurosymbolic_llm.llama.errors import CheckpointError
from neurosymbolic_llm.llama.mapped_file import MappedFile
from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.llama.tensor_names import TensorNames

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_NAMES = TensorNames(
    {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
     "lm_head.weight": "output.weight"},
    r"model\.layers\.(\d+)\.(.+)\.weight$",
    {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
     "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
     "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
     "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
     "post_attention_layernorm": "ffn_norm"})


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: a Hugging Face folder needs {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(obj).__name__}")
    return obj


# ----------------------------------------------------------------------------- architecture

def hf_model_args(folder, **runtime) -> ModelArgs:
    """``ModelArgs`` from ``config.json`` (transformers 4's rope_theta/rope_scaling or 5's
    rope_parameters)."""
    path = Path(folder) / "config.json"
    c = _read_json(path, "config.json")
    mt = c.get("model_type")
    if mt != "llama":
        raise CheckpointError(f"{path}: model_type {mt!r} is not supported: only 'llama' "
                              f"(LlamaForCausalLM: Llama 2/3, SmolLM2, TinyLlama, ...)")
    for key, what in (("attention_bias", "attention biases"), ("mlp_bias", "MLP biases")):
        if c.get(key):
            raise CheckpointError(f"{path}: {what} ({key}: true) are not supported")
    if c.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{path}: hidden_act {c['hidden_act']!r} is not supported (only silu)")
    rope = dict(c.get("rope_parameters") or {})
    rope.update(c.get("rope_scaling") or {})
    theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    scaled = {}
    if kind == "llama3":
        scaled = dict(use_scaled_rope=True, rope_scale_factor=rope["factor"],
                      rope_low_freq_factor=rope["low_freq_factor"],
                      rope_high_freq_factor=rope["high_freq_factor"],
                      rope_original_max_seq_len=rope["original_max_position_embeddings"])
    elif kind != "default":
        raise CheckpointError(f"{path}: RoPE scaling of type {kind!r} is not supported (only "
                              f"none or 'llama3')")
    try:
        dim, n_heads = c["hidden_size"], c["num_attention_heads"]
        return ModelArgs(dim=dim, n_layers=c["num_hidden_layers"], n_heads=n_heads,
                         n_kv_heads=c.get("num_key_value_heads") or n_heads,
                         vocab_size=c["vocab_size"], hidden_dim=c["intermediate_size"],
                         head_dim=c.get("head_dim") or dim // n_heads,
                         norm_eps=c.get("rms_norm_eps", 1e-6), rope_theta=theta,
                         tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
                         **scaled, **runtime)
    except KeyError as e:
        raise CheckpointError(f"{path} lacks the field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from e


# ----------------------------------------------------------------------------- weights

def shard_files(folder) -> list[Path]:
    """The safetensors files of a folder, in index order (one ``model.safetensors`` or the shards
    named by ``model.safetensors.index.json``)."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        index = _read_json(folder / INDEX, INDEX)
        names = list(dict.fromkeys((index.get("weight_map") or {}).values()))
        if not names:
            raise CheckpointError(f"{folder / INDEX} has no weight_map")
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"{folder / missing[0]} (named in {INDEX}) not found")
        return [folder / n for n in names]
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    raise CheckpointError(f"{folder} holds no {SINGLE} or {INDEX}: Hugging Face weights must be "
                          f"safetensors")


def state_key(name: str) -> Optional[str]:
    """Our state-dict key of a Hugging Face tensor name (None: not a weight of the network)."""
    return _NAMES.state_key(name)


def rotate_half_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q/k projection rows [n_heads*hd, D] from rotate-half order (row i and i + hd/2 of a head
    form a pair) to interleaved order (rows 2i, 2i+1)."""
    rows, cols = w.shape
    hd = rows // n_heads
    return w.view(n_heads, 2, hd // 2, cols).transpose(1, 2).reshape(rows, cols)  # [H*hd, D]


def interleaved_to_rotate_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of ``rotate_half_to_interleaved`` (for writing Hugging Face files)."""
    rows, cols = w.shape
    hd = rows // n_heads
    return w.view(n_heads, hd // 2, 2, cols).transpose(1, 2).reshape(rows, cols)  # [H*hd, D]


def load_hf_model(folder, *, max_seq_len: int = 2048, max_batch_size: int = 32, device="cpu",
                  dtype: torch.dtype = torch.float32) -> Transformer:
    """The network of a Hugging Face folder, read tensor by tensor into ``dtype`` on ``device``
    (stored dtype on the CPU: used in place from the mapped file, like Meta's loader)."""
    folder = Path(folder)
    args = hf_model_args(folder, max_seq_len=max_seq_len, max_batch_size=max_batch_size)
    with torch.device("meta"):
        model = Transformer(args)
    expected = model.state_dict()
    heads = {"attention.wq": args.n_heads, "attention.wk": args.n_kv_heads}
    state: dict[str, torch.Tensor] = {}
    for shard in shard_files(folder):
        header, base = _safetensors_header(shard)
        f = MappedFile(shard)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            key = state_key(name)
            if key is None or key not in expected:
                raise CheckpointError(f"{shard}: tensor {name!r} is not part of a llama network with "
                                      f"{args.n_layers} layers (config.json): not supported")
            if tuple(info["shape"]) != tuple(expected[key].shape):
                raise CheckpointError(f"{shard}: tensor {name!r} has shape {tuple(info['shape'])} but "
                                      f"config.json implies {tuple(expected[key].shape)}")
            if info["dtype"] not in _DTYPES:
                raise CheckpointError(f"{shard}: tensor {name!r} has dtype {info['dtype']}: expected "
                                      f"one of {', '.join(_DTYPES)}")
            begin, end = (base + o for o in info["data_offsets"])
            t = f.tensor(begin, end - begin, _DTYPES[info["dtype"]], info["shape"])
            n = heads.get(key.split(".", 2)[-1].rsplit(".", 1)[0])
            if n is not None:
                t = rotate_half_to_interleaved(t, n)  # a copy
            state[key] = t.to(device=device, dtype=dtype)
            if not f.maps(state[key].data_ptr()):
                f.release(begin, end - begin)  # copied out: its pages are not needed any more
            del t
    if args.tie_word_embeddings:
        state.setdefault("output.weight", state.get("tok_embeddings.weight"))
    missing = [k for k in expected if state.get(k) is None]
    if missing:
        raise CheckpointError(f"{folder}: weight for {missing[0]!r} is missing from the safetensors "
                              f"files ({len(missing)} missing)")
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.requires_grad_(False)
    return model.eval()


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """(header dict, offset of the data section) of a safetensors file."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} is not a safetensors file: {e}") from e
    return header, 8 + n


def hf_weight_samples(folder):
    """The weight samples of a Hugging Face folder (neurosymbolic_llm/llama/fingerprint.py), read from
    the mapped safetensors files; q/k positions of Meta's layout are looked up in rotate-half order."""
    import numpy as np

    from neurosymbolic_llm.llama.fingerprint import kind_of, weight_samples
    folder = Path(folder)
    args = hf_model_args(folder)
    heads = {"attention.wq": args.n_heads, "attention.wk": args.n_kv_heads}
    where = {}  # our key -> (shard, name, dtype name, shape, begin, end)
    for shard in shard_files(folder):
        header, base = _safetensors_header(shard)
        f = MappedFile(shard)
        for name, info in header.items():
            key = state_key(name) if name != "__metadata__" else None
            if key is not None:
                begin, end = (base + o for o in info["data_offsets"])
                where[key] = (f, name, info["dtype"], tuple(info["shape"]), begin, end)

    def read(key, shape, idx):
        if key not in where:
            raise CheckpointError(f"{folder}: weight for {key!r} is missing from the safetensors files")
        f, name, dtype, stored, begin, end = where[key]
        if stored != shape or dtype not in _DTYPES:
            raise CheckpointError(f"{f.path}: tensor {name!r} has shape {stored} and dtype {dtype}; "
                                  f"config.json implies {shape} in one of {', '.join(_DTYPES)}")
        n = heads.get(key.split(".", 2)[-1].rsplit(".", 1)[0])
        if n is not None:  # Meta row h*hd + 2p + j is row h*hd + j*hd/2 + p here
            row, col = np.divmod(idx, shape[1])
            hd = shape[0] // n
            h, i = np.divmod(row, hd)
            p, j = np.divmod(i, 2)
            idx = (h * hd + j * (hd // 2) + p) * shape[1] + col
        t = f.tensor(begin, end - begin, _DTYPES[dtype], shape)
        return kind_of(t.dtype), t.reshape(-1)[torch.from_numpy(idx)].float().numpy()

    return weight_samples(args, read)


def hf_fingerprint(folder) -> str:
    """Fingerprint of the network: the digest of its weight samples (tensors are not loaded)."""
    return hf_weight_samples(folder).digest()


# ----------------------------------------------------------------------------- tokenizer

def _token_name(value) -> Optional[str]:
    """tokenizer_config.json writes special tokens as strings or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def hf_chat_template(folder) -> Optional[str]:
    """The chat template: tokenizer_config.json's ``chat_template`` or ``chat_template.jinja``."""
    folder = Path(folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = _read_json(cfg_path, "tokenizer_config.json") if cfg_path.is_file() else {}
    template = cfg.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return template


def hf_tokenizer(folder) -> tuple[BPETokenizer, Optional[str]]:
    """(tokenizer, chat template or None) of a Hugging Face folder."""
    folder = Path(folder)
    path = folder / "tokenizer.json"
    tj = _read_json(path, "tokenizer.json (a byte-level BPE tokenizer)")
    model = tj.get("model") or {}
    if model.get("byte_fallback"):
        raise CheckpointError(f"{path}: a SentencePiece-style BPE (byte_fallback: Llama 2, TinyLlama, "
                              f"Mistral, ...) is not supported: only byte-level BPE (GPT-2 family)")
    if model.get("type") != "BPE" or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise CheckpointError(f"{path}: tokenizer model {model.get('type')!r} is not supported: only "
                              f"byte-level BPE (no subword prefix/suffix)")
    if tj.get("normalizer") is not None:
        raise CheckpointError(f"{path}: normalizer {tj['normalizer'].get('type')!r} is not "
                              f"supported (byte-level BPE has none)")
    pattern = pattern_from_tokenizer_json(tj.get("pre_tokenizer"), str(path))
    vocab: dict[str, int] = model.get("vocab") or {}
    special = {t["content"]: int(t["id"]) for t in tj.get("added_tokens") or []}
    n = max(list(vocab.values()) + list(special.values())) + 1
    tokens: list[Optional[str]] = [None] * n
    for text, i in vocab.items():
        tokens[i] = text
    cfg_path = folder / "tokenizer_config.json"
    cfg = _read_json(cfg_path, "tokenizer_config.json") if cfg_path.is_file() else {}
    config = _read_json(folder / "config.json", "config.json") if (folder / "config.json").is_file() else {}

    def token_id(key) -> Optional[int]:
        name = _token_name(cfg.get(f"{key}_token"))
        if name is not None:
            if name in special:
                return special[name]
            if name in vocab:
                return vocab[name]
            raise CheckpointError(f"{cfg_path}: {key}_token {name!r} is not in {path}")
        value = config.get(f"{key}_token_id")
        return value[0] if isinstance(value, list) else value

    eos = token_id("eos")
    if eos is None:
        raise CheckpointError(f"{folder}: no eos_token (tokenizer_config.json) or eos_token_id "
                              f"(config.json)")
    eot = next((special[t] for t in ("<|eot_id|>", "<|im_end|>") if t in special), eos)
    stops = {eos, eot} | {special[t] for t in ("<|eom_id|>",) if t in special}
    gen_path = folder / "generation_config.json"
    if gen_path.is_file():
        value = _read_json(gen_path, "generation_config.json").get("eos_token_id")
        stops |= set(value if isinstance(value, list) else [] if value is None else [value])
    pad = token_id("pad")
    if pad is None:
        pad = special.get("<|finetune_right_pad_id|>", eos)
    unk = _token_name(model.get("unk_token"))
    tok = BPETokenizer.from_vocab(
        name=str(path), tokens=tokens, merges=model.get("merges") or [], pattern=pattern,
        special_tokens=special, bos_id=token_id("bos"), eos_id=eos, eot_id=eot, pad_id=pad,
        stop_tokens=stops, unk_id=vocab.get(unk) if unk is not None else None)
    return tok, hf_chat_template(folder)


def hf_tokenizer_fingerprint(folder) -> str:
    """sha256 of tokenizer.json, tokenizer_config.json, chat_template.jinja (when present)."""
    h = hashlib.sha256(b"hf-tokenizer\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        p = Path(folder) / name
        h.update(f"{name}:".encode() + (p.read_bytes() if p.is_file() else b"-") + b"\n")
    return h.hexdigest()
