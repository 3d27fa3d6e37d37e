"""The device and dtype a stage runs on (the --device and --dtype options)."""
from __future__ import annotations

import torch

from utils.errors import ConfigError
from utils.llama.generation import default_device, default_dtype

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


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
