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
- ``tokenizer.json`` must be a byte-level BPE (hf_tokenizer.py).

``HF`` is the format's object for formats.py (neurosymbolic_llm/llama/checkpoint_format.py).
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional

import torch

from neurosymbolic_llm.llama.checkpoint_format import CheckpointFormat
from neurosymbolic_llm.llama.checks import model_args, need_dict, need_int
from neurosymbolic_llm.llama.errors import CheckpointError, shown
from neurosymbolic_llm.llama.hf_tokenizer import hf_tokenizer, hf_tokenizer_fingerprint
from neurosymbolic_llm.llama.hf_tokenizer import read_hf_json as _read_json
from neurosymbolic_llm.llama.layout import expected_shapes
from neurosymbolic_llm.llama.mapped_file import MappedFile
from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.llama.tensor_names import TensorNames

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
# every dtype of the safetensors format -> bytes per element (checked against the data offsets)
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
             "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER = 100 << 20  # the safetensors library refuses longer headers too
_LLAMA3_ROPE = {"factor": "rope_scale_factor", "low_freq_factor": "rope_low_freq_factor",
                "high_freq_factor": "rope_high_freq_factor",
                "original_max_position_embeddings": "rope_original_max_seq_len"}
_NAMES = TensorNames(
    {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
     "lm_head.weight": "output.weight"},
    r"model\.layers\.(\d+)\.(.+)\.weight$",
    {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
     "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
     "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
     "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
     "post_attention_layernorm": "ffn_norm"})


# ----------------------------------------------------------------------------- architecture

def hf_model_args(folder, **runtime) -> ModelArgs:
    """``ModelArgs`` from ``config.json`` (transformers 4's rope_theta/rope_scaling or 5's
    rope_parameters)."""
    path = Path(folder) / "config.json"
    return config_args(_read_json(path, "config.json"), path, **runtime)


def config_args(c: dict, path, **runtime) -> ModelArgs:
    """``ModelArgs`` of a config.json's dict (also a loaded transformers model's ``config.to_dict()``);
    ``path`` names it in the refusals."""
    mt = c.get("model_type")
    if mt != "llama":
        raise CheckpointError(f"{path}: model_type {shown(mt)} is not supported: only 'llama' "
                              f"(LlamaForCausalLM with a byte-level BPE tokenizer: Llama 3, SmolLM2, ...)")
    for key, what in (("attention_bias", "attention biases"), ("mlp_bias", "MLP biases")):
        if c.get(key):
            raise CheckpointError(f"{path}: {what} ({key}: true) are not supported")
    if c.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{path}: hidden_act {shown(c['hidden_act'])} is not supported "
                              f"(only silu)")
    rope = dict(need_dict(path, "rope_parameters", c.get("rope_parameters") or {}))
    rope.update(need_dict(path, "rope_scaling", c.get("rope_scaling") or {}))
    theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    scaled = {}
    if kind == "llama3":
        where = "rope_scaling" if c.get("rope_scaling") else "rope_parameters"
        missing = [k for k in _LLAMA3_ROPE if k not in rope]
        if missing:
            raise CheckpointError(f"{path}: {where} of type 'llama3' lacks {missing[0]!r}")
        scaled = {name: (f"{where}.{key}", rope[key]) for key, name in _LLAMA3_ROPE.items()}
        scaled["use_scaled_rope"] = (f"{where}.rope_type", True)
    elif kind != "default":
        raise CheckpointError(f"{path}: RoPE scaling of type {shown(kind)} is not supported (only "
                              f"none or 'llama3')")
    missing = [k for k in ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size",
                           "intermediate_size") if k not in c]
    if missing:
        raise CheckpointError(f"{path} lacks the field {missing[0]!r}")
    dim = need_int(path, "hidden_size", c["hidden_size"])
    n_heads = need_int(path, "num_attention_heads", c["num_attention_heads"])
    return model_args(path, {
        "dim": ("hidden_size", dim), "n_layers": ("num_hidden_layers", c["num_hidden_layers"]),
        "n_heads": ("num_attention_heads", n_heads),
        "n_kv_heads": ("num_key_value_heads", c.get("num_key_value_heads") or n_heads),
        "vocab_size": ("vocab_size", c["vocab_size"]),
        "hidden_dim": ("intermediate_size", c["intermediate_size"]),
        "head_dim": ("head_dim", c.get("head_dim") or dim // n_heads),
        "norm_eps": ("rms_norm_eps", c.get("rms_norm_eps", 1e-6)),
        "rope_theta": ("rope_theta", theta),
        "tie_word_embeddings": ("tie_word_embeddings", c.get("tie_word_embeddings") or False),
        **scaled}, **runtime)


# ----------------------------------------------------------------------------- weights

def shard_files(folder) -> list[Path]:
    """The safetensors files of a folder, in index order (one ``model.safetensors`` or the shards
    named by ``model.safetensors.index.json``, which must be plain file names inside the folder:
    no absolute path, no ``..``)."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        index = _read_json(folder / INDEX, INDEX)
        weight_map = need_dict(folder / INDEX, "weight_map", index.get("weight_map") or {})
        if not weight_map:
            raise CheckpointError(f"{folder / INDEX} has no weight_map")
        for tensor, n in weight_map.items():
            if not isinstance(n, str):
                raise CheckpointError(f"{folder / INDEX}: weight_map gives {shown(tensor, 80)} the "
                                      f"value {shown(n)}: expected a file name")
            if not _inside(n):
                raise CheckpointError(f"{folder / INDEX}: weight_map names the file {shown(n)}: "
                                      f"shard files must lie inside the checkpoint folder")
        names = list(dict.fromkeys(weight_map.values()))
        missing = [n for n in names if not _is_file(folder / n)]
        if missing:
            raise CheckpointError(f"{folder / INDEX} names the shard {shown(missing[0])}, which is "
                                  f"not a file in {folder}")
        return [folder / n for n in names]
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    raise CheckpointError(f"{folder} holds no {SINGLE} or {INDEX}: Hugging Face weights must be "
                          f"safetensors")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system, ...
        return False


def _inside(name: str) -> bool:
    """A relative path that stays in its folder (checked on the name: Hugging Face's cache links
    shard files to blobs elsewhere, which is the folder owner's choice, not the index's)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and "\0" not in name and not PurePosixPath(name).is_absolute() \
        and not PureWindowsPath(name).drive and ".." not in parts and parts[0] != "/"


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
    shards = [(shard, *_safetensors_header(shard)) for shard in shard_files(folder)]
    n_tensors = sum(len(h) for _, h, _ in shards)
    expected = expected_shapes(args, n_tensors, folder / "config.json")
    found: set = set()
    for shard, header, _ in shards:  # every name, shape and dtype before anything is built
        for name, info in header.items():
            key = state_key(name)
            if key is None or key not in expected:
                raise CheckpointError(f"{shard}: tensor {shown(name)} is not part of a llama network "
                                      f"with {args.n_layers} layers (config.json): not supported")
            if key in found:
                raise CheckpointError(f"{shard}: tensor {name!r} appears a second time")
            found.add(key)
            if tuple(info["shape"]) != expected[key]:
                raise CheckpointError(f"{shard}: tensor {name!r} has shape {tuple(info['shape'])} but "
                                      f"config.json implies {expected[key]}")
            if info["dtype"] not in _DTYPES:
                raise CheckpointError(f"{shard}: tensor {name!r} has dtype {info['dtype']}: expected "
                                      f"one of {', '.join(_DTYPES)}")
    if args.tie_word_embeddings:
        found.add("output.weight")
    missing = [k for k in expected if k not in found]
    if missing:
        raise CheckpointError(f"{folder}: weight for {missing[0]!r} is missing from the safetensors "
                              f"files ({len(missing)} missing)")
    with torch.device("meta"):
        model = Transformer(args)
    heads = {"attention.wq": args.n_heads, "attention.wk": args.n_kv_heads}
    state: dict[str, torch.Tensor] = {}
    for shard, header, base in shards:
        f = MappedFile(shard)
        for name, info in header.items():
            key = state_key(name)
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
        state.setdefault("output.weight", state["tok_embeddings.weight"])
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.requires_grad_(False)
    return model.eval()


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """(tensor name -> {"dtype", "shape", "data_offsets"}, offset of the data section) of a
    safetensors file, ``__metadata__`` left out. Checked against the file before anything is read:
    the header length, each entry's fields, offsets inside the data section that match the shape
    and dtype, no two tensors sharing bytes."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, _MAX_HEADER):
            raise CheckpointError(f"{path}: the header length {n} is larger than the file ({size} "
                                  f"bytes) or the format's limit ({_MAX_HEADER}): not a safetensors "
                                  f"file (truncated?)")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise CheckpointError(f"{path} is not a safetensors file: {e}") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header must be a JSON object, got "
                              f"{type(header).__name__}")
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    spans = []
    for name, info in header.items():
        where = f"{path}: tensor {shown(name)}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise CheckpointError(f"{where} must have dtype, shape and data_offsets, got {shown(info)}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
            raise CheckpointError(f"{where} has the unknown dtype {shown(dtype)}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{where} has the shape {shown(shape)}: expected a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise CheckpointError(f"{where} has data_offsets {shown(offsets)}: expected [begin, end] "
                                  f"inside the data section of {data_size} bytes")
        if offsets[1] - offsets[0] != math.prod(shape) * _ITEMSIZE[dtype]:
            raise CheckpointError(f"{where} has data_offsets {offsets} ({offsets[1] - offsets[0]} "
                                  f"bytes) but its shape {shape} of {dtype} needs "
                                  f"{math.prod(shape) * _ITEMSIZE[dtype]}")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise CheckpointError(f"{path}: tensors {shown(a)} and {shown(b)} overlap")
    return header, 8 + n


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def rotate_half_index(key: str, shape: tuple, idx, heads: dict):
    """Flat indices [k] into Meta's layout of tensor `key` -> the same weights' indices in Hugging Face's
    rotate-half q/k row order (other tensors: unchanged). heads: {"attention.wq": n_heads,
    "attention.wk": n_kv_heads}."""
    import numpy as np

    n = heads.get(key.split(".", 2)[-1].rsplit(".", 1)[0])
    if n is None:
        return idx
    row, col = np.divmod(idx, shape[1])  # Meta row h*hd + 2p + j is row h*hd + j*hd/2 + p here
    hd = shape[0] // n
    h, i = np.divmod(row, hd)
    p, j = np.divmod(i, 2)
    return (h * hd + j * (hd // 2) + p) * shape[1] + col


def hf_weight_samples(folder):
    """The weight samples of a Hugging Face folder (neurosymbolic_llm/llama/fingerprint.py), read from
    the mapped safetensors files; q/k positions of Meta's layout are looked up in rotate-half order."""
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
        idx = rotate_half_index(key, shape, idx, heads)
        t = f.tensor(begin, end - begin, _DTYPES[dtype], shape)
        return kind_of(t.dtype), t.reshape(-1)[torch.from_numpy(idx)].float().numpy()

    return weight_samples(args, read)


def hf_fingerprint(folder) -> str:
    """Fingerprint of the network: the digest of its weight samples (tensors are not loaded)."""
    return hf_weight_samples(folder).digest()


# ----------------------------------------------------------------------------- the format

class HFFormat(CheckpointFormat):
    """A Hugging Face folder (the module docstring)."""
    name, title, marker = "hf", "Hugging Face folder", "config.json"
    needs = (f"a Hugging Face folder needs config.json + {SINGLE} or {INDEX} with its shards + "
             f"tokenizer.json")

    def find(self, path, names):
        return path if names and "config.json" in names and {SINGLE, INDEX} & set(names) else None

    def refusal(self, path, names, found):
        if names and "config.json" in names and not {SINGLE, INDEX} & set(names):
            return (f"{path} has config.json but no {SINGLE} or {INDEX}: a Hugging Face folder "
                    f"needs safetensors weights (found {found})")
        return None

    def args(self, ckpt, **runtime):
        return hf_model_args(ckpt.path, **runtime)

    def load_model(self, ckpt, **kw):
        return load_hf_model(ckpt.path, **kw)

    def tokenizer(self, ckpt):
        return hf_tokenizer(ckpt.path)

    def weight_samples(self, ckpt):
        return hf_weight_samples(ckpt.path)

    def tokenizer_fingerprint(self, ckpt) -> str:
        return hf_tokenizer_fingerprint(ckpt.path)


HF = HFFormat()
