"""What every stage sets up the same way: device, dtype, the frozen model, the VSA engine, progress bars."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from neurosymbolic_llm.llama.generation import Llama, default_device, default_dtype
from neurosymbolic_llm.pipeline.distributed import resolve_model_parallel_size
from neurosymbolic_llm.pipeline.errors import ConfigError
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
# A bar redraws at most twice a second: a log of a long run stays small and still shows progress.
PROGRESS_INTERVAL_S = 0.5


def resolve_device(name: str = "") -> torch.device:
    """The --device option: '' means cuda when available, else cpu."""
    if not name:
        return default_device()
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None


def resolve_dtype(name: str, device) -> torch.dtype:
    """The --dtype option: '' means the device's default (bf16 on cuda, float32 on cpu)."""
    if not name:
        return default_dtype(device)
    if name not in DTYPES:
        raise ConfigError(f"--dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def model_parallel_size(cfg) -> int:
    """--model_parallel_size, or (0) the number of .pth shards of the checkpoint."""
    return resolve_model_parallel_size(cfg.model_parallel_size, Path(cfg.chpt_dir).expanduser())


def build_llama(cfg, *, max_batch_size: int, device=None, say: Optional[Callable[[str], None]] = None) -> Llama:
    """The stage's frozen model from the model options (--chpt_dir, --tokenizer_path, --max_seq_len,
    --dtype, --model_parallel_size), in eval mode, no parameter trainable: only a method's own
    parameters (decoder, adapter, LoRA) ever train. `say` (e.g. print; None: silent) gets a line
    before the load, which can take minutes, and one after it with its time and the model's size."""
    device = torch.device(device) if device is not None else resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    path = Path(cfg.chpt_dir).expanduser()
    if say:
        say(f"loading the model from {path} ({device.type}, {str(dtype).removeprefix('torch.')}) ...")
    t0 = time.perf_counter()
    llama = Llama.build(path, tokenizer_path=cfg.tokenizer_path or None, max_seq_len=cfg.max_seq_len,
                        max_batch_size=max_batch_size, device=device, dtype=dtype,
                        model_parallel_size=model_parallel_size(cfg))
    llama.model.eval()
    for p in llama.model.parameters():
        p.requires_grad_(False)
    if say:
        say(f"loaded in {time.perf_counter() - t0:.1f} s: {llama.args.n_layers} layers, dim {llama.args.dim}")
    return llama


def make_engine(cfg):
    """The VSA engine of the symbolic options (stages 1 and 2; stage 3 reads it from the map files)."""
    return SymbolicEngine(cfg.VSA_dim, cfg.max_digits, cfg.possible_problems, cfg.vsa_seed)


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", enabled: bool = True) -> tqdm:
    """A tqdm bar that redraws at most every PROGRESS_INTERVAL_S and shows the mean rate of the
    whole run (smoothing 0), so its last line is the final rate. `enabled=False` (other ranks)
    shows nothing."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled,
                mininterval=PROGRESS_INTERVAL_S, smoothing=0, dynamic_ncols=True)
