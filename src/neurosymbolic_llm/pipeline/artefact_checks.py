"""The intervention artefact's two files checked key by key, type by type and tensor by tensor
(pipeline/artefact.py writes and reads them; this module says what a valid pair is).

A hand-edited or foreign artefact is one DataError naming the file and the key ("intervention.json:
intervention.multi_token_intervention must be true or false, got 'false'"), never a silent default,
a Python error or a garbage answer: every setting must be present (a missing gate bound must not
take a command-line default), of its type (no string for a switch, no `true` for a layer, no float
for a count), in its range, and nothing unknown may be there; every tensor must be a finite
floating tensor of the shape the settings and the model give. `check_json` and `check_tensors`
are the one rule for both saving (before anything is written) and loading.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from neurosymbolic_llm.pipeline.configs import MERGES, InterventionOptions
from neurosymbolic_llm.pipeline.errors import DataError, echo
from neurosymbolic_llm.pipeline.layer_choice import is_joint_key
from neurosymbolic_llm.pipeline.finite import non_finite_count

MAX_JSON_BYTES = 64 * 2 ** 20  # settings and weight samples are a few kB; refuse before reading more
MAX_COMPLEXITY = 17            # operands of complexity+1 digits stay below 2**63
TOP_KEYS = {"format": str, "version": int, "tensors_sha256": str, "engine": dict, "intervention": dict,
            "prompt": dict, "model": dict, "checkpoint": str, "extra": dict}
ENGINE_KEYS = {"VSA_dim": "count", "max_digits": "count", "possible_problems": "names", "seed": "int"}
PROMPT_KEYS = {"complexity": "int", "limit_solution_digits": "bool", "seed": "int"}
MODEL_KEYS = {"fingerprint": "text", "dim": "count", "n_layers": "count"}
OPTIONAL_MODEL = {"weights", "tokenizer"}  # absent in artefacts made before they were recorded
OPTION_KINDS = {"symbolic_encoding_layer": "read", "symbolic_decoding_layers": "layers",
                "problem_score_threshold": "number", "problem_score_max": "bound", "merge": "merge",
                "starting_skip_strength": "number", "gate_min_type_margin": "margin",
                "gate_min_digit_margin": "margin"}  # every other option is a switch (bool)
# Options added after artefacts were first written, with the value that gives the older artefacts'
# behaviour (the gate's margins were not checked): an artefact without them is read as it was made.
ADDED_LATER = {"gate_min_type_margin": 0.0, "gate_min_digit_margin": 0.0}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


KIND_CHECKS = {
    "int": (_is_int, "an integer"), "count": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"), "text": (lambda v: isinstance(v, str), "text"),
    "names": (lambda v: isinstance(v, list) and bool(v) and all(isinstance(n, str) for n in v), "a list of names"),
    "read": (lambda v: _is_int(v) and v >= 0 or is_joint_key(v), "a layer number (an integer >= 0) or increasing layers joined by '+' (3+4+5)"),
    "layers": (lambda v: isinstance(v, list) and bool(v) and all(_is_int(x) and x >= 0 for x in v)
               and len(set(v)) == len(v), "a non-empty list of distinct layer numbers"),
    "number": (_is_number, "a finite number"),
    "margin": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "bound": (lambda v: v is None or _is_number(v), "a finite number or null (no upper bound)"),
    "merge": (lambda v: v in MERGES, f"one of {', '.join(MERGES)}"),
}


def read_json(path: Path) -> dict:
    """The JSON file, read with its limits: size, nesting, number length and strict constants."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise DataError(f"{path}: {size} bytes, more than an artefact's settings can hold ({MAX_JSON_BYTES}); "
                        f"not an intervention artefact")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({echo(str(exc), 120, quote=False)})") from None
    except RecursionError:
        raise DataError(f"{path}: nested too deeply to be an artefact's settings") from None
    except ValueError as exc:  # an integer of more than sys.get_int_max_str_digits() digits, NaN/Infinity
        raise DataError(f"{path}: {echo(str(exc).split(';')[0], 160, quote=False)}") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (strict JSON: a non-finite value is refused)")


def check_json(path: Path, data: Any) -> None:
    """Every key of intervention.json with its type and range (module docstring)."""
    def bad(key: str, what: str) -> DataError:
        return DataError(f"{path}: {key} {what}; not a usable intervention artefact")

    if not isinstance(data, dict):
        raise bad("the top level", "is not a mapping")
    for key in data:
        if key not in TOP_KEYS:
            raise bad(f"key {echo(key)}", f"is unknown (expected {', '.join(TOP_KEYS)})")
    for key, tp in TOP_KEYS.items():
        if not isinstance(data.get(key), tp) or isinstance(data.get(key), bool):
            raise bad(key, f"is missing or not {'a mapping' if tp is dict else tp.__name__}")
    if not isinstance(data["model"].get("tokenizer", ""), str):
        raise bad("model.tokenizer", "is not text (the tokenizer's digest, llama/identity.py)")
    _section(bad, "engine", data["engine"], ENGINE_KEYS)
    _section(bad, "prompt", data["prompt"], PROMPT_KEYS)
    _section(bad, "model", data["model"], MODEL_KEYS, OPTIONAL_MODEL)
    if "weights" in data["model"] and not isinstance(data["model"]["weights"], dict):
        raise bad("model.weights", "is not a mapping (the weight samples)")
    kinds = {f.name: OPTION_KINDS.get(f.name, "bool") for f in dataclasses.fields(InterventionOptions)}
    for key, value in ADDED_LATER.items():
        data["intervention"].setdefault(key, value)
    _section(bad, "intervention", data["intervention"], kinds)
    if not 0 <= data["prompt"]["complexity"] <= MAX_COMPLEXITY:
        raise bad("prompt.complexity", f"is {data['prompt']['complexity']}, expected 0..{MAX_COMPLEXITY}")
    if data["prompt"]["seed"] < 0 or data["engine"]["seed"] < 0:
        raise bad("prompt.seed or engine.seed", "is negative")
    if not 0.0 <= data["intervention"]["starting_skip_strength"] <= 1.0:
        raise bad("intervention.starting_skip_strength", "is outside 0..1")


def _section(bad, name: str, section: dict, kinds: dict[str, str], optional=frozenset()) -> None:
    for key in section:
        if key not in kinds and key not in optional:
            raise bad(f"{name}.{echo(key, quote=False)}", f"is unknown (expected {', '.join(kinds)})")
    for key, kind in kinds.items():
        ok, what = KIND_CHECKS[kind]
        if key not in section:
            raise bad(f"{name}.{key}", "is missing")
        if not ok(section[key]):
            raise bad(f"{name}.{key}", f"must be {what}, got {echo(section[key], 60)}")


def expected_shapes(options: InterventionOptions, VSA_dim: int, dim: int, codebook_rows: int) -> dict:
    """{tensor name: shape} of a valid artefact (merge parameters by the merge mode)."""
    out = {"encoder": (VSA_dim, dim * len(options.read_layers())), "codebook": (codebook_rows, VSA_dim)}
    for layer in options.symbolic_decoding_layers:
        out[f"decoder.{layer}"] = (dim, VSA_dim)
    return out


def merge_shapes(options: InterventionOptions, dim: int) -> dict[str, tuple]:
    """The merge parameters one decoding layer may carry, by name."""
    return {"skip": ()} | ({"norm.weight": (dim,)} if options.merge_mode() == "add_rmsnorm" else {})


def check_tensors(where: str, tensors: dict[str, torch.Tensor], options: InterventionOptions, VSA_dim: int,
                  dim: int) -> None:
    """Every tensor named, finite, of its dtype (float32; the codebook float64, as the engine keeps
    it) and of its shape; nothing else there."""
    cb = tensors.get("codebook")
    rows = cb.shape[0] if torch.is_tensor(cb) and cb.ndim == 2 else -1
    want = expected_shapes(options, VSA_dim, dim, rows)
    merge = merge_shapes(options, dim)
    layers = {str(l) for l in options.symbolic_decoding_layers}
    for name, t in tensors.items():
        parts = name.split(".", 2)
        if name in want:
            shape = want[name]
        elif parts[0] == "merge" and len(parts) == 3 and parts[1] in layers and parts[2] in merge:
            shape = merge[parts[2]]
        else:
            raise DataError(f"{where}: tensor {echo(name)} is unknown (expected {', '.join(want)} and merge.<layer>.*)")
        dtype = torch.float64 if name == "codebook" else torch.float32
        if not torch.is_tensor(t) or t.dtype != dtype:
            raise DataError(f"{where}: tensor {name} is {getattr(t, 'dtype', type(t).__name__)}, expected {dtype}")
        if tuple(t.shape) != tuple(shape):
            raise DataError(f"{where}: tensor {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        bad = non_finite_count(t)
        if bad:
            raise DataError(f"{where}: tensor {name} holds {bad} NaN/inf values of {t.numel()}")
    missing = [n for n in want if n not in tensors]
    if missing:
        raise DataError(f"{where}: tensor {missing[0]} is missing")
