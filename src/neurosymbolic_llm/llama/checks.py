"""Values read from checkpoint files, checked before anything is built from them.

Every format's loader names the file and the key of a value (``params.json``'s ``n_layers``,
``config.json``'s ``num_hidden_layers``, GGUF's ``llama.block_count``) and hands it here: sizes must
be integers in 1..2^31-1, numbers finite (``rope_theta``, ``norm_eps`` also > 0), flags booleans. A wrong
value is one ``CheckpointError`` line naming the file, the key and the value, capped at
200 characters (``errors.shown``) because the value comes from a file anyone may have written.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from neurosymbolic_llm.llama.errors import CheckpointError, shown
from neurosymbolic_llm.llama.model import ModelArgs

MAX_INT = 2 ** 31 - 1  # no size or id of a model comes near; torch's sizes overflow at 2^63
# ModelArgs fields by kind; the optional ones may be None (absent from the file)
_INTS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "head_dim",
         "hidden_dim", "rope_original_max_seq_len")
_POSITIVE_FLOATS = ("norm_eps", "rope_theta", "rope_scale_factor", "rope_low_freq_factor",
                    "rope_high_freq_factor", "ffn_dim_multiplier")
_BOOLS = ("use_scaled_rope", "tie_word_embeddings")
_OPTIONAL = ("n_kv_heads", "ffn_dim_multiplier", "rope_freq_factors", "head_dim", "hidden_dim")


def need_int(where, key: str, value: Any, minimum: int = 1) -> int:
    """An integer in ``minimum``..``MAX_INT`` (JSON true/false are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{where}: {key} must be an integer, got {shown(value)}")
    if not minimum <= value <= MAX_INT:
        raise CheckpointError(f"{where}: {key} = {shown(value, 40)} must be in {minimum}..{MAX_INT}")
    return value


def need_float(where, key: str, value: Any, positive: bool = True) -> float:
    """A finite number (> 0 when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckpointError(f"{where}: {key} must be a number, got {shown(value)}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise CheckpointError(f"{where}: {key} = {shown(value)} must be a finite number"
                              + (" > 0" if positive else ""))
    return float(value)


def need_bool(where, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise CheckpointError(f"{where}: {key} must be true or false, got {shown(value)}")
    return value


def need_dict(where, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: {key} must be an object, got {shown(value)}")
    return value


def model_args(where, values: dict[str, tuple[str, Any]], **runtime) -> ModelArgs:
    """``ModelArgs`` from ``values``: field -> (the key it has in ``where``, the value read).
    Each value is checked by its field's kind, then the fields against each other."""
    kw: dict[str, Any] = {}
    for name, (key, value) in values.items():
        if value is None and name in _OPTIONAL:
            continue
        if name in _INTS:
            kw[name] = need_int(where, key, value)
        elif name in _POSITIVE_FLOATS:
            kw[name] = need_float(where, key, value)
        elif name in _BOOLS:
            kw[name] = need_bool(where, key, value)
        elif name == "rope_freq_factors":
            if not isinstance(value, list):
                raise CheckpointError(f"{where}: {key} must be a list of numbers, got {shown(value)}")
            kw[name] = [need_float(where, f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            raise AssertionError(f"no check for ModelArgs.{name}")  # a new field needs its kind here
    low = kw.get("rope_low_freq_factor", ModelArgs.rope_low_freq_factor)
    high = kw.get("rope_high_freq_factor", ModelArgs.rope_high_freq_factor)
    if kw.get("use_scaled_rope") and high <= low:
        raise CheckpointError(f"{where}: the RoPE high_freq_factor {high} must be larger than "
                              f"low_freq_factor {low}")
    try:
        return ModelArgs(**kw, **runtime)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from e


def meta_values(params: dict) -> dict[str, tuple[str, Any]]:
    """params.json's keys are ModelArgs' field names (unknown keys are ignored)."""
    names = {f.name for f in dataclasses.fields(ModelArgs)} - {"max_seq_len", "max_batch_size",
                                                                 "model_parallel_size"}
    return {k: (k, v) for k, v in params.items() if k in names}
