"""Encoder and decoder weight files: the linear maps of every layer, with what they depend on.

An encoder maps the residual stream of one layer to a VSA vector (`W [V, D]`, no bias); a decoder
maps a VSA vector back to the residual stream (`W [D, V]`, no bias). A file holds the maps of any
set of layers together with the VSA engine they were trained against (codebook and settings) and
the model they read from (checkpoint fingerprint and dims), because a map is meaningless with
another codebook or another model. The file is one `torch.save` of plain tensors, strings and
numbers (loaded with `weights_only=True`; no pickled modules) and is written atomically:

    {"format": "nsllm-maps", "version": 1, "kind": "encoder"|"decoder",
     "weights": {"17": W [out, in]}, "engine": engine.state_dict(),
     "model": {"fingerprint", "dim", "n_layers", "weights", "tokenizer"}, "extra": {...},
     "joint": {"3+4+5": W [V, 3 D]}}

"joint" (encoder files only, optional) holds encoders that read several layers at once: one linear
map of the layers' states concatenated in ascending layer order (pipeline/layer_choice.py).

"weights" (the checkpoint's weight samples, neurosymbolic_llm/llama/fingerprint.py) is absent from
files written before fingerprints followed the weights' content; check_model says what to do then.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from neurosymbolic_llm.llama.fingerprint import OTHER_WEIGHTS, SAME, WeightSamples, compare
from neurosymbolic_llm.llama.identity import tokenizer_digest
from neurosymbolic_llm.pipeline.errors import DataError, EngineMismatchError, echo
from neurosymbolic_llm.pipeline.files import atomic_torch_save
from neurosymbolic_llm.pipeline.finite import DIVERGED, require_finite
from neurosymbolic_llm.pipeline.layer_choice import ReadKey, is_joint_key, read_key, read_layers

FORMAT = "nsllm-maps"
VERSION = 1
KINDS = ("encoder", "decoder")
MODEL_KEYS = ("fingerprint", "dim", "n_layers")


@dataclass
class MapFile:
    weights: dict[int, torch.Tensor]          # layer -> W [out, in] (float32, cpu)
    engine_state: dict[str, Any]
    model_info: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    joint: dict[str, torch.Tensor] = field(default_factory=dict)  # "3+4+5" -> W [V, 3 D] (encoders)

    @property
    def layers(self) -> list[int]:
        return sorted(self.weights)

    @property
    def reads(self) -> list[ReadKey]:
        """Every read this file can encode: its layers, then its joint reads."""
        return [*self.layers, *sorted(self.joint, key=read_layers)]

    def encoder_of(self, key: ReadKey) -> Optional[torch.Tensor]:
        """The map of a read (a layer, or layers read at once), or None when the file lacks it."""
        key = read_key(key)
        return self.weights.get(key) if isinstance(key, int) else self.joint.get(key)


def model_info(fingerprint: str, dim: int, n_layers: int, weights=None, tokenizer: str = "") -> dict[str, Any]:
    """The model description stored in (and checked by) every map file; `weights`: the
    checkpoint's weight samples (neurosymbolic_llm/llama/fingerprint.py, a WeightSamples or its
    to_json()), which let check_model recognise the same weights in another format; `tokenizer`:
    the tokenizer's digest (neurosymbolic_llm/llama/identity.py; "" = not known)."""
    info = {"fingerprint": str(fingerprint), "dim": int(dim), "n_layers": int(n_layers)}
    if weights is not None:
        info["weights"] = weights.to_json() if hasattr(weights, "to_json") else weights
    if tokenizer:
        info["tokenizer"] = str(tokenizer)
    return info


def model_info_of(llama) -> dict[str, Any]:
    """model_info of a loaded Llama (generation.Llama), its tokenizer's digest included."""
    return model_info(llama.fingerprint, llama.args.dim, llama.args.n_layers, llama.weight_samples,
                      tokenizer_digest(llama.tokenizer))


def check_tokenizer(stored: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Maps read digits as the tokenizer they were made with split them: another tokenizer (two
    digits swapped, another vocabulary) is an error, with no override. Files made before the
    tokenizer was recorded pass."""
    if stored.get("tokenizer") and current.get("tokenizer") and stored["tokenizer"] != current["tokenizer"]:
        raise EngineMismatchError(f"{where} was made with another tokenizer (digest {stored['tokenizer'][:12]}, "
                                  f"this one {current['tokenizer'][:12]}): its maps would read other tokens; "
                                  f"use the tokenizer they were made with (--tokenizer_path) or retrain them")


def check_model(stored: dict[str, Any], current: dict[str, Any], where: str, *,
                allow_other_weights: bool = False) -> str:
    """Whether maps made on the model `stored` may run on the model `current` (both model_info):
    "" when they are the same weights (equal fingerprints, or equal samples after rounding to the
    coarser dtype: one model in Meta, Hugging Face or GGUF float form); a note when they differ
    only in their weights (a quantized or fine-tuned copy) and `allow_other_weights`; otherwise an
    EngineMismatchError naming the difference and the override."""
    check_tokenizer(stored, current, where)
    for key in ("dim", "n_layers"):
        if key in current and current[key] != stored.get(key):
            raise EngineMismatchError(f"{where} was made on a model with {key}={stored.get(key)!r}, "
                                      f"this model has {key}={current[key]!r}")
    if "fingerprint" not in current or current["fingerprint"] == stored.get("fingerprint"):
        return ""
    theirs, mine = WeightSamples.from_json(stored.get("weights")), WeightSamples.from_json(current.get("weights"))
    if theirs is None:  # a file of an older version: its fingerprint hashed the files
        if allow_other_weights:
            return f"note: {where} carries an older fingerprint; used anyway because of --allow_other_weights"
        raise EngineMismatchError(
            f"{where} names its model by an older fingerprint (of the files, not of the weights' content) that "
            f"cannot be compared with this model's: retrain them (stage 2), or, if this is the model they were "
            f"made on, pass --allow_other_weights 1 (nsllm export-intervention with it writes an artefact that "
            f"names this model)")
    verdict, reason = compare(theirs, mine) if mine is not None else (OTHER_WEIGHTS, "no weight samples here")
    if verdict == SAME:
        return ""
    if verdict == OTHER_WEIGHTS and allow_other_weights:
        return f"note: {where} was made on other weights ({reason}); used because of --allow_other_weights"
    if verdict == OTHER_WEIGHTS:
        raise EngineMismatchError(f"{where} was made on a model of the same architecture with other weights "
                                  f"({reason}: a quantized, fine-tuned or different copy); "
                                  f"--allow_other_weights 1 uses them anyway")
    raise EngineMismatchError(f"{where} was made on a model of another architecture ({reason})")


def save_maps(path: str | Path, kind: str, weights: dict[int, torch.Tensor], engine_state: dict[str, Any],
              model_info: dict[str, Any], extra: Optional[dict[str, Any]] = None, what: str = "",
              joint: Optional[dict[str, torch.Tensor]] = None) -> Path:
    """Write the maps of `weights` (layer -> W [out, in]) with their engine and model description;
    `joint`: encoders reading several layers at once ("3+4+5" -> W [V, 3 D])."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    missing = [k for k in MODEL_KEYS if k not in model_info]
    if missing:
        raise ValueError(f"model_info lacks {missing}")
    if joint and kind != "encoder":
        raise ValueError("only encoder files hold joint reads")
    joint = {str(read_key(k)): w for k, w in (joint or {}).items()}
    require_finite({f"the {kind} of layer {l}": w.detach() for l, w in [*sorted(weights.items()), *joint.items()]},
                   f"{what or f'the {kind} maps'} {path}", f"nothing was saved; {DIVERGED}")
    payload = {
        "format": FORMAT, "version": VERSION, "kind": kind,
        "weights": {str(int(layer)): w.detach().to("cpu", torch.float32).contiguous().clone()
                    for layer, w in sorted(weights.items())},
        "engine": engine_state,
        "model": {k: model_info[k] for k in (*MODEL_KEYS, "weights", "tokenizer") if k in model_info},
        "extra": dict(extra or {}),
    }
    if joint:
        payload["joint"] = {k: w.detach().to("cpu", torch.float32).contiguous().clone() for k, w in joint.items()}
    atomic_torch_save(payload, Path(path), what=what or f"the {kind} maps")
    return Path(path)


def load_maps(path: str | Path, kind: str, *, engine=None, model_info: Optional[dict[str, Any]] = None,
              allow_other_weights: bool = False) -> MapFile:
    """Read a map file and check it: its kind, and (when given) the engine and model it must match.

    `engine` is a SymbolicEngine (its `check_compatible` names the first differing setting);
    `model_info` is the model_info of the model the maps will be used with (check_model).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: {kind} file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise DataError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path}: not an encoder/decoder file of this project (format {FORMAT!r} expected)")
    if data.get("version") != VERSION:
        raise DataError(f"{path}: file version {echo(data.get('version'))}, this code reads version {VERSION}")
    if data.get("kind") != kind:
        raise DataError(f"{path}: holds {echo(data.get('kind'))} maps, expected {kind!r} maps")
    _check_keys(path, data)
    if engine is not None:
        engine.check_compatible(data["engine"], what=str(path))
    stored = data["model"]
    if model_info is not None:
        note = check_model(stored, model_info, f"{path} ({kind} maps)", allow_other_weights=allow_other_weights)
        if note:
            print(note, file=sys.stderr)
    weights = {int(k): v for k, v in data["weights"].items()}
    joint = data.get("joint", {})
    _check_shapes(path, kind, {**weights, **joint}, data["engine"], stored)
    require_finite({f"the {kind} of layer {l}": w for l, w in [*sorted(weights.items()), *joint.items()]}, str(path),
                   "the file is unusable: rerun the stage that wrote it")
    return MapFile(weights=weights, engine_state=data["engine"], model_info=stored, extra=data.get("extra", {}),
                   joint=dict(joint))


# The engine state's settings and their types (the codebook is checked by the engine itself).
ENGINE_KEYS = {"VSA_dim": int, "max_digits": int, "possible_problems": list, "seed": int}


def _check_keys(path: Path, data: dict) -> None:
    """Every key a map file must have, with the type it must have: a hand-edited or foreign file is
    one DataError naming the key, never a KeyError later."""
    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}; not a usable encoder/decoder file")

    weights, engine, model = data.get("weights"), data.get("engine"), data.get("model")
    if not isinstance(weights, dict) or not weights:
        raise bad("'weights' is missing or holds no layer")
    for k, w in weights.items():
        if not (isinstance(k, str) and k.isdigit()):
            raise bad(f"weights key {echo(k)} is not a layer number")
        if not torch.is_tensor(w) or not w.is_floating_point():
            raise bad(f"the weights of layer {k} are not a floating-point tensor")
    joint = data.get("joint", {})
    if not isinstance(joint, dict) or joint and data.get("kind") != "encoder":
        raise bad("'joint' (encoders of several layers) must be a mapping, in an encoder file")
    for k, w in joint.items():
        if not is_joint_key(k):
            raise bad(f"joint key {echo(k)} is not increasing layer numbers joined by '+'")
        if not torch.is_tensor(w) or not w.is_floating_point():
            raise bad(f"the weights of layers {k} are not a floating-point tensor")
    if not isinstance(engine, dict):
        raise bad("'engine' (the VSA engine state) is missing")
    for key, tp in ENGINE_KEYS.items():
        if not isinstance(engine.get(key), tp) or isinstance(engine.get(key), bool):
            raise bad(f"engine key {key!r} is missing or not a{'n' if tp is int else ''} {tp.__name__}")
    if not all(isinstance(p, str) for p in engine["possible_problems"]):
        raise bad("engine key 'possible_problems' is not a list of names")
    if not torch.is_tensor(engine.get("codebook")) or engine["codebook"].ndim != 2:
        raise bad("engine key 'codebook' is missing or not a matrix")
    if not isinstance(model, dict) or not isinstance(model.get("fingerprint"), str) or \
            not all(isinstance(model.get(k), int) and not isinstance(model.get(k), bool) for k in ("dim", "n_layers")):
        raise bad("'model' must hold fingerprint (text), dim and n_layers (integers)")
    if not isinstance(model.get("tokenizer", ""), str):
        raise bad("model key 'tokenizer' is not text (the tokenizer's digest)")
    if not isinstance(data.get("extra", {}), dict):
        raise bad("'extra' is not a mapping")


def _check_shapes(path: Path, kind: str, weights: dict, engine_state: dict, model: dict) -> None:
    """weights: {read key: W}, a joint read's W [V, k D] for its k layers."""
    dim = model.get("dim")
    vsa_dim = engine_state.get("VSA_dim") if isinstance(engine_state, dict) else None
    for layer, w in weights.items():
        reads = read_layers(layer)
        if not all(0 <= l <= model.get("n_layers", l) for l in reads):
            raise DataError(f"{path}: layer {layer} outside 0..{model.get('n_layers')}")
        if w.ndim != 2:
            raise DataError(f"{path}: {kind} of layer {layer} is not a matrix (shape {tuple(w.shape)})")
        d_in = dim * len(reads) if dim else w.shape[1]
        want = (vsa_dim or w.shape[0], d_in) if kind == "encoder" else (dim or w.shape[0], vsa_dim or w.shape[1])
        if tuple(w.shape) != tuple(want):
            raise DataError(f"{path}: {kind} of layer {layer} has shape {tuple(w.shape)}, expected {tuple(want)}")


def linear_maps(weights: dict[int, torch.Tensor], *, trainable: bool = False,
                dtype: Optional[torch.dtype] = None, device=None) -> nn.ModuleDict:
    """`nn.Linear(bias=False)` modules keyed by layer (as str), initialised from `weights`."""
    out = nn.ModuleDict()
    for layer, w in sorted(weights.items()):
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False, device=device, dtype=dtype or w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
        lin.weight.requires_grad_(trainable)
        out[str(layer)] = lin
    return out
