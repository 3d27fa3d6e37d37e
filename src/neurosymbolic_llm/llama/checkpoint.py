"""Meta-format checkpoints: load (strict, mmap, no second copy), save, fingerprint, reshard, and
``META``, the format's object for formats.py (neurosymbolic_llm/llama/checkpoint_format.py).

A checkpoint folder holds ``params.json``, one ``consolidated.{rank:02d}.pth`` per model-parallel
rank and usually ``tokenizer.model``. Shards split the weights along the dims of fairscale's layers:
column-parallel (wq, wk, wv, w1, w3, output) and the vocab-parallel embedding along dim 0,
row-parallel (wo, w2) along dim 1; norms are replicated.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional, Union

import torch

from neurosymbolic_llm.llama.checkpoint_format import CheckpointFormat
from neurosymbolic_llm.llama.checks import meta_values, model_args
from neurosymbolic_llm.llama.errors import CheckpointError, LlamaError, shown
from neurosymbolic_llm.llama.layout import expected_shapes
from neurosymbolic_llm.llama.model import ModelArgs, Transformer

_SHARD_RE = re.compile(r"consolidated\.(\d+)\.pth$")
_IGNORED_KEYS = {"rope.freqs"}  # old Meta checkpoints store the RoPE table; we recompute it
_RUNTIME_KEYS = {"max_seq_len", "max_batch_size", "model_parallel_size"}
_MiB = 1 << 20


# ----------------------------------------------------------------------------- shard layout

def shard_dim(key: str) -> Optional[int]:
    """Dim along which a tensor is split across model-parallel ranks (None = replicated)."""
    if key.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
        return 1
    if key.endswith(("attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
                     "feed_forward.w1.weight", "feed_forward.w3.weight")) \
            or key in ("tok_embeddings.weight", "output.weight"):
        return 0
    return None


def _check_dir(ckpt_dir) -> Path:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"checkpoint folder {ckpt_dir} does not exist: expected a folder with "
                              f"params.json, consolidated.00.pth and tokenizer.model (Meta format)")
    return ckpt_dir


def shard_paths(ckpt_dir) -> list[Path]:
    ckpt_dir = _check_dir(ckpt_dir)
    return sorted(ckpt_dir.glob("*.pth"))


def load_params(ckpt_dir) -> dict:
    """params.json as a dict, every value of the architecture checked (llama/checks.py)."""
    path = _check_dir(ckpt_dir) / "params.json"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: a Meta checkpoint folder needs params.json "
                              f"(dim, n_layers, n_heads, n_kv_heads, vocab_size, ...)")
    try:
        params = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # ValueError: JSON, huge integers
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(params, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(params).__name__}")
    missing = [k for k in ("dim", "n_layers", "n_heads", "vocab_size") if k not in params]
    if missing:
        raise CheckpointError(f"{path} lacks the field(s) {', '.join(missing)}")
    params_args(path, params)
    return params


def params_args(path, params: dict, **runtime) -> ModelArgs:
    """``ModelArgs`` of a params.json dict (``path`` names it in errors), each value checked."""
    return model_args(path, meta_values(params), **runtime)


def _mp_state() -> tuple[int, int]:
    """(model-parallel size, rank) from fairscale when initialised, else (1, 0)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return 1, 0
    try:
        from fairscale.nn.model_parallel import initialize as fs
        if fs.model_parallel_is_initialized():
            return fs.get_model_parallel_world_size(), fs.get_model_parallel_rank()
    except ImportError:  # pragma: no cover
        pass
    return 1, 0


def init_model_parallel(model_parallel_size: int, device: Optional[torch.device] = None) -> None:
    """Start torch.distributed (gloo on CPU, nccl on CUDA) from torchrun's environment and fairscale's
    model-parallel groups, unless already done."""
    from fairscale.nn.model_parallel import initialize as fs
    if not torch.distributed.is_initialized():
        if "WORLD_SIZE" not in os.environ:
            raise LlamaError(f"model_parallel_size {model_parallel_size} needs one process per shard: "
                            f"launch with torchrun --nproc_per_node {model_parallel_size}")
        on_cuda = device is not None and torch.device(device).type == "cuda"
        torch.distributed.init_process_group("nccl" if on_cuda else "gloo")
    if not fs.model_parallel_is_initialized():
        fs.initialize_model_parallel(model_parallel_size)
    got = fs.get_model_parallel_world_size()
    if got != model_parallel_size:
        raise LlamaError(f"model-parallel size is already {got}, cannot use {model_parallel_size}")


def load_model(ckpt_dir, *, max_seq_len: int = 2048, max_batch_size: int = 32,
               device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32,
               model_parallel_size: Optional[int] = None) -> Transformer:
    """Build the network from a Meta checkpoint folder.

    The model is built on the meta device; the shard is memory-mapped (``weights_only``) and its
    tensors are assigned to the model (CPU + same dtype: no copy at all; otherwise one tensor at a
    time is converted), after a key/shape check that names the first mismatch."""
    ckpt_dir = _check_dir(ckpt_dir)
    device = torch.device(device)
    params = load_params(ckpt_dir)
    if model_parallel_size is None:
        model_parallel_size = _mp_state()[0]
    if model_parallel_size > 1:
        init_model_parallel(model_parallel_size, device)
    mp, rank = _mp_state() if model_parallel_size > 1 else (1, 0)
    shards = shard_paths(ckpt_dir)
    if len(shards) != mp:
        names = ", ".join(p.name for p in shards) or "none"
        raise CheckpointError(f"{ckpt_dir} holds {len(shards)} .pth shard(s) ({names}) but the "
                              f"model-parallel size is {mp}: expected exactly {mp} "
                              f"(consolidated.00.pth ...); reshard with checkpoint.reshard or run "
                              f"with torchrun --nproc_per_node {len(shards) or 1}")
    shard = shards[rank]
    args = params_args(ckpt_dir / "params.json", params, max_seq_len=max_seq_len,
                       max_batch_size=max_batch_size, model_parallel_size=mp)
    state = read_shard(shard)
    for k in _IGNORED_KEYS:
        state.pop(k, None)
    where = f"{shard} (with {ckpt_dir / 'params.json'}, model-parallel size {mp})"
    check_state_dict(expected_shapes(args, len(state), where), state, where)  # before building
    with torch.device("meta"):
        model = Transformer(args)
    for k in list(state):  # one tensor at a time: no second full copy
        state[k] = state[k].to(device=device, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    del state
    model.tie_weights()  # assign replaced the shared Parameter by two (which share storage)
    model.requires_grad_(False)
    return model.eval()


def read_shard(shard: Path) -> dict:
    """A ``.pth`` shard's state dict, memory-mapped (``weights_only``: no code runs)."""
    try:
        state = torch.load(shard, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"cannot read {shard} as a torch state dict: "
                              f"{type(e).__name__}: {shown(str(e))}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{shard} must hold a state dict, got {type(state).__name__}")
    return state


def check_state_dict(expected: dict[str, tuple], got: dict, where: str) -> None:
    """Raise CheckpointError naming the first missing/unexpected key, a value that is no
    floating-point tensor, or a mismatching shape (``expected``: key -> shape)."""
    for k, shape in expected.items():
        if k not in got:
            raise CheckpointError(f"{where}: tensor {k!r} is missing (expected shape {shape})")
        if not isinstance(got[k], torch.Tensor):
            raise CheckpointError(f"{where}: {k!r} is not a tensor")
        if not got[k].is_floating_point():
            raise CheckpointError(f"{where}: tensor {k!r} has dtype {got[k].dtype}: expected a "
                                  f"floating-point type")
        if tuple(got[k].shape) != shape:
            raise CheckpointError(f"{where}: tensor {k!r} has shape {tuple(got[k].shape)} but "
                                  f"params.json implies {shape}: params.json does not "
                                  f"match the weights")
    extra = [k for k in got if k not in expected]
    if extra:
        what = f"shape {tuple(got[extra[0]].shape)}" if isinstance(got[extra[0]], torch.Tensor) \
            else type(got[extra[0]]).__name__
        raise CheckpointError(f"{where}: unexpected tensor {shown(extra[0])} ({what}) not in the "
                              f"model defined by params.json"
                              + (f", and {len(extra) - 1} more" if len(extra) > 1 else ""))


# ----------------------------------------------------------------------------- save

def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor that owns its storage (torch.save would otherwise save whole base storages)."""
    t = t.detach().cpu()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size() or not t.is_contiguous():
        t = t.clone(memory_format=torch.contiguous_format)
    return t


def save_checkpoint(model_or_state_dict, params: dict, out_dir, tokenizer_path=None,
                    shard_name: str = "consolidated.00.pth") -> Path:
    """Write ``params.json``, the shard and a copy of ``tokenizer.model`` (default: the one of
    llama_models) into ``out_dir`` (Meta layout; each file written atomically)."""
    from neurosymbolic_llm.llama.tokenizer import default_tokenizer_path
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model_or_state_dict, torch.nn.Module):
        model_args = getattr(model_or_state_dict, "args", None)
        if model_args is not None and getattr(model_args, "model_parallel_size", 1) > 1:
            raise LlamaError("save_checkpoint saves a single-process model; use reshard for shards")
        state = model_or_state_dict.state_dict()
    else:
        state = model_or_state_dict
    state = {k: _own_storage(v) for k, v in state.items()}
    params = {k: v for k, v in params.items() if k not in _RUNTIME_KEYS}
    _atomic_write(out_dir / "params.json",
                  lambda p: p.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n"))
    _atomic_write(out_dir / shard_name, lambda p: torch.save(state, p))
    tok = Path(tokenizer_path) if tokenizer_path is not None else default_tokenizer_path()
    if not tok.is_file():
        raise CheckpointError(f"tokenizer file {tok} not found")
    if tok.resolve() != (out_dir / "tokenizer.model").resolve():
        _atomic_write(out_dir / "tokenizer.model", lambda p: shutil.copyfile(tok, p))
    return out_dir


# ----------------------------------------------------------------------------- fingerprints

def _hash_file_into(h, path: Path) -> None:
    """Feed a file's size and its first and last MiB (the whole file if <= 2 MiB) into `h`."""
    size = path.stat().st_size
    h.update(f"{size}\n".encode())
    with open(path, "rb") as f:
        h.update(f.read(_MiB))
        if size > _MiB:
            f.seek(max(_MiB, size - _MiB))
            h.update(f.read(_MiB))


def file_fingerprint(path) -> str:
    """sha256 of a file's size and its first and last MiB (cheap; the whole file if <= 2 MiB)."""
    path = Path(path)
    if not path.is_file():
        raise LlamaError(f"{path} not found")
    h = hashlib.sha256()
    _hash_file_into(h, path)
    return h.hexdigest()


def checkpoint_weight_samples(ckpt_dir):
    """The weight samples of a Meta folder (neurosymbolic_llm/llama/fingerprint.py): params.json parsed
    into ModelArgs, values read from the memory-mapped shards (a split tensor through its shard)."""
    import numpy as np

    from neurosymbolic_llm.llama.fingerprint import kind_of, weight_samples
    ckpt_dir = _check_dir(ckpt_dir)
    try:
        args = ModelArgs.from_params(load_params(ckpt_dir))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt_dir / 'params.json'}: {e}") from e
    shards = [read_shard(shard) for shard in shard_paths(ckpt_dir)]  # the loader's own check

    def read(key, shape, idx):
        parts = [s.get(key) for s in shards]
        if any(not isinstance(t, torch.Tensor) for t in parts):
            raise CheckpointError(f"{ckpt_dir}: {key!r} is missing or not a tensor in a shard")
        dim = shard_dim(key) if len(parts) > 1 else None
        size = shape[dim] // len(parts) if dim is not None else 0
        local = tuple(size if d == dim else n for d, n in enumerate(shape))
        if any(tuple(t.shape) != local for t in parts):
            raise CheckpointError(f"{ckpt_dir}: {key!r} has shape {tuple(parts[0].shape)} in a shard, "
                                  f"params.json implies {local}")
        if dim is None:
            values = parts[0].reshape(-1)[torch.from_numpy(idx)]
        else:  # each shard holds a slice along `dim`
            coords = np.unravel_index(idx, shape)
            values = torch.empty(len(idx), dtype=parts[0].dtype)
            for j in range(len(idx)):
                t = parts[coords[dim][j] // size]
                values[j] = t[tuple(int(c[j]) % size if d == dim else int(c[j]) for d, c in enumerate(coords))]
        return kind_of(parts[0].dtype), values.float().numpy()

    return weight_samples(args, read)


def checkpoint_fingerprint(ckpt_dir) -> str:
    """Fingerprint of a Meta folder's weights: the digest of its weight samples."""
    return checkpoint_weight_samples(ckpt_dir).digest()


# ----------------------------------------------------------------------------- reshard

# What reshard writes into its destination; a folder holding anything else is not one of its outputs.
_RESHARD_OUTPUTS = ("params.json", "tokenizer.model")


def _check_reshard_destination(dst_dir: Path) -> list[Path]:
    """The old shards reshard may replace in `dst_dir`: it must be absent, empty, or hold only what
    an earlier reshard wrote (params.json, tokenizer.model, consolidated.NN.pth). Anything else
    (another run's maps, a user's files) refuses the folder before a byte is written or deleted."""
    if not dst_dir.exists():
        return []
    if dst_dir.is_symlink() or not dst_dir.is_dir():
        raise CheckpointError(f"{dst_dir}: the destination of reshard must be a folder")
    others = sorted(p.name for p in dst_dir.iterdir()
                    if not (p.is_file() and not p.is_symlink()
                            and (p.name in _RESHARD_OUTPUTS or _SHARD_RE.fullmatch(p.name))))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise CheckpointError(f"{dst_dir}: the destination holds files reshard did not write ({shown}); "
                              f"nothing was deleted or written; give an empty or new folder")
    return [p for p in dst_dir.iterdir() if _SHARD_RE.fullmatch(p.name)]


def reshard(src_dir, dst_dir, model_parallel_size: int) -> Path:
    """Rewrite a checkpoint for another model-parallel size (merge the shards, split again)."""
    src_dir, dst_dir = _check_dir(src_dir), Path(dst_dir)
    mp = int(model_parallel_size)
    params = load_params(src_dir)
    args = ModelArgs.from_params(params)
    checks = {"n_heads": args.n_heads, "n_kv_heads": args.n_kv_heads,
              "vocab_size": args.vocab_size, "FFN hidden size": args.ffn_hidden_dim}
    for what, n in checks.items():
        if mp < 1 or n % mp:
            raise LlamaError(f"cannot reshard {src_dir} to model-parallel size {mp}: it must divide "
                            f"{what} = {n}")
    srcs = shard_paths(src_dir)
    for i, p in enumerate(srcs):
        m = _SHARD_RE.search(p.name)
        if m is None or int(m.group(1)) != i:
            raise CheckpointError(f"{src_dir}: shard files must be consolidated.00.pth ... "
                                  f"consolidated.{len(srcs) - 1:02d}.pth, found {p.name}")
    if not srcs:
        raise CheckpointError(f"{src_dir} holds no .pth shard")
    old_shards = _check_reshard_destination(dst_dir)
    states = [read_shard(p) for p in srcs]
    outs: list[dict] = [{} for _ in range(mp)]
    for k in states[0]:
        if k in _IGNORED_KEYS:
            continue
        d = shard_dim(k)
        if d is None:
            for o in outs:
                o[k] = states[0][k]
            continue
        full = states[0][k] if len(states) == 1 else torch.cat([s[k] for s in states], dim=d)
        for o, piece in zip(outs, full.chunk(mp, dim=d)):
            o[k] = piece.clone()
        del full
    dst_dir.mkdir(parents=True, exist_ok=True)
    for old in old_shards:  # the shards of an earlier reshard there, and nothing else
        old.unlink()
    _atomic_write(dst_dir / "params.json", lambda p: shutil.copyfile(src_dir / "params.json", p))
    tok = src_dir / "tokenizer.model"
    if tok.is_file():
        _atomic_write(dst_dir / "tokenizer.model", lambda p: shutil.copyfile(tok, p))
    for r, o in enumerate(outs):
        _atomic_write(dst_dir / f"consolidated.{r:02d}.pth", lambda p: torch.save(o, p))
        outs[r] = None
    return dst_dir


# ----------------------------------------------------------------------------- the format

def _has_shard(names) -> bool:
    return any(n.endswith(".pth") for n in names)


class MetaFormat(CheckpointFormat):
    """A Meta folder; its tokenizer is ``resolve_tokenizer_path``'s (``--tokenizer_path`` applies)."""
    name, title, marker = "meta", "Meta folder", "params.json"
    needs = "a Meta folder needs params.json + consolidated.00.pth (+ tokenizer.model)"
    tokenizer_override = model_parallel = exact_vocab = True

    def find(self, path, names):
        return path if names and "params.json" in names and _has_shard(names) else None

    def refusal(self, path, names, found):
        if names and _has_shard(names) and "params.json" not in names:
            return (f"{path / 'params.json'} not found: a Meta folder needs params.json beside "
                    f"consolidated.*.pth (found {found})")
        return None

    def tokenizer_file(self, ckpt) -> Path:
        from neurosymbolic_llm.llama.tokenizer import resolve_tokenizer_path
        return resolve_tokenizer_path(ckpt.path, ckpt.tokenizer_path)

    def args(self, ckpt, **runtime):
        return params_args(ckpt.path / "params.json", load_params(ckpt.path), **runtime)

    def load_model(self, ckpt, **kw):
        return load_model(ckpt.path, **kw)

    def tokenizer(self, ckpt):
        from neurosymbolic_llm.llama.tokenizer import Tokenizer
        return Tokenizer(self.tokenizer_file(ckpt)), None  # Llama 3's chat format, by its special tokens

    def weight_samples(self, ckpt):
        return checkpoint_weight_samples(ckpt.path)

    def tokenizer_fingerprint(self, ckpt) -> str:
        return file_fingerprint(self.tokenizer_file(ckpt))


META = MetaFormat()
