"""A trained intervention as one shareable artefact: a folder with two files.

    <folder>/intervention.safetensors   tensors: "encoder" [V, k D] float32 (of the k layers read,
                                        concatenated in ascending order; k = 1 in the paper),
                                        "decoder.<layer>" [D, V] float32 (every decoding layer's;
                                        the fine-tuned ones when stage 3 trained them),
                                        "codebook" [rows, V] float64 (the VSA engine's),
                                        "merge.<layer>.<name>" float32 (trained merge parameters:
                                        skip, norm.weight); every tensor finite (artefact_checks.py)
    <folder>/intervention.json          everything else: {"format": "nsllm-intervention",
                                        "version": 1, "tensors_sha256" (of the safetensors file: the
                                        pair belongs together), "engine" (VSA_dim, max_digits,
                                        possible_problems, seed), "intervention" (InterventionOptions:
                                        layers, gate bounds (null = no upper bound), merge, ...),
                                        "prompt" (complexity, limit_solution_digits, seed of the
                                        few-shot examples), "model" (maps.model_info of the model it
                                        was made on, with its weight samples and its tokenizer's
                                        digest), "checkpoint" (that model's path, a hint), "extra"
                                        (trained_types, run_name, source files)}

`save_intervention(folder, art)` and `load_intervention(folder, model_info=..., allow_other_weights=...)`
are the one call each. Both check every key, type, range, tensor dtype, shape and finiteness
(artefact_checks.py: one rule for saving and loading); a save writes the pair into a fresh folder
renamed into place under the folder's lock (files.replace_folder, locks.exclusive), so the previous
artefact survives a failure and two writers never leave a mixed pair; a load hashes the very bytes
it uses, and (when given) checks the model (maps.check_model). `from_maps` (an existing run's map files: nsllm
export-intervention, nsllm ask --run) and `from_method` (the end of stage 3, which always writes one
to results/<run>/intervention/) make one; `build_method` turns one into the pipeline's
neurosymbolic Method.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from neurosymbolic_llm.pipeline import methods
from neurosymbolic_llm.pipeline.artefact_checks import check_json, check_tensors, read_json
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError, OutputError, UserError
from neurosymbolic_llm.pipeline.files import replace_folder
from neurosymbolic_llm.pipeline.fine_tune_inputs import fine_tuned, seen_types
from neurosymbolic_llm.pipeline.locks import exclusive
from neurosymbolic_llm.pipeline.maps import check_model
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

FORMAT = "nsllm-intervention"
VERSION = 1
JSON_NAME, TENSORS_NAME = "intervention.json", "intervention.safetensors"
FOLDER_NAME = "intervention"  # stage 3 writes results/<run>/intervention/
PROMPT_KEYS = ("complexity", "limit_solution_digits", "seed")


@dataclass
class TrainedIntervention:
    engine: SymbolicEngine
    encoder: torch.Tensor                  # [V, k D] of options.symbolic_encoding_layer (k layers)
    decoders: dict[int, torch.Tensor]      # {layer: [D, V]} of options.symbolic_decoding_layers
    merge_state: dict[str, dict[str, torch.Tensor]]  # {layer: merge parameters}
    options: InterventionOptions
    prompt: dict[str, Any]                 # PROMPT_KEYS
    model: dict[str, Any]                  # maps.model_info of the model it was made on
    checkpoint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _options_of(cfg) -> InterventionOptions:
    return InterventionOptions(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(InterventionOptions)})


def from_maps(cfg, maps, *, run: str = "") -> TrainedIntervention:
    """The intervention of a run's map files (fine_tune_inputs.load_maps_for) and settings (cfg, a FineTuneConfig)."""
    merge = maps.decoder_extra.get("merge_state", {}) if fine_tuned(maps.decoder_extra) else {}
    if fine_tuned(maps.decoder_extra):  # its merge was trained with the decoder: the settings must agree
        for key, now in (("merge", cfg.merge_mode()), ("symbolic_encoding_layer", cfg.symbolic_encoding_layer)):
            saved = maps.decoder_extra.get(key, now)
            if saved != now:
                raise ConfigError(f"{cfg.decoder_path}: this fine-tuned decoder was trained with --{key} {saved}, "
                                  f"the settings say {now}: give --{key} {saved} (or the run's saved configuration)")
    try:  # stage 3's rule: the maps' own record, else the training split's types
        trained = seen_types(cfg, maps, None, maps.engine.max_digits)[0]
    except UserError:  # the training CSV is gone: the configured types
        trained = list(cfg.problem_type)
    extra = {"run_name": run, "encoder_path": str(cfg.encoder_path), "decoder_path": str(cfg.decoder_path),
             "trained_types": list(trained)}
    return TrainedIntervention(maps.engine, maps.encoder, dict(maps.decoders), merge, _options_of(cfg),
                               {k: getattr(cfg, k) for k in PROMPT_KEYS}, dict(maps.model_info),
                               str(cfg.chpt_dir), extra)


def from_method(cfg, iv, *, model: dict, run: str, trained_types) -> TrainedIntervention:
    """The intervention as a stage-3 run trained (or evaluated) it: iv is its SymbolicIntervention."""
    decoders = {l: iv.decoders[str(l)].weight.detach() for l in iv.dec_layers}
    extra = {"run_name": run, "encoder_path": str(cfg.encoder_path), "decoder_path": str(cfg.decoder_path),
             "trained_types": list(trained_types)}
    return TrainedIntervention(iv.engine, iv.encoder.weight.detach(), decoders, iv.merge_state(), _options_of(cfg),
                               {k: getattr(cfg, k) for k in PROMPT_KEYS}, model, str(cfg.chpt_dir), extra)


def build_method(art: TrainedIntervention, llama):
    """The pipeline's neurosymbolic Method (methods.neurosymbolic, nothing trainable) of `art` on `llama`."""
    art.options.validate_layers(llama.args.n_layers)
    method = methods.neurosymbolic(llama.model, art.engine, art.encoder, art.decoders, art.options, lr=0.0,
                                   complexity=art.prompt["complexity"],
                                   limit_solution_digits=art.prompt["limit_solution_digits"], train=False)
    method.intervention.load_merge_state(art.merge_state)
    return method


# ----------------------------------------------------------------------------- files
def _tensors(art: TrainedIntervention) -> dict[str, torch.Tensor]:
    out = {"encoder": art.encoder, "codebook": art.engine.codebook}
    out |= {f"decoder.{l}": w for l, w in sorted(art.decoders.items())}
    out |= {f"merge.{l}.{k}": v for l, sd in sorted(art.merge_state.items()) for k, v in sorted(sd.items())}
    return {k: v.detach().to("cpu", torch.float64 if k == "codebook" else torch.float32).contiguous().clone()
            for k, v in out.items()}


def _settings(art: TrainedIntervention) -> dict:
    opts = dataclasses.asdict(art.options)
    opts["problem_score_max"] = None if math.isinf(opts["problem_score_max"]) else opts["problem_score_max"]
    engine = {k: v for k, v in art.engine.state_dict().items() if k not in ("codebook", "format", "version")}
    data = {"format": FORMAT, "version": VERSION, "tensors_sha256": "0" * 64, "engine": engine,
            "intervention": opts, "prompt": dict(art.prompt), "model": art.model,
            "checkpoint": art.checkpoint, "extra": art.extra}
    return data


def save_intervention(folder: str | Path, art: TrainedIntervention) -> Path:
    """Write the folder as a unit: both files are checked (artefact_checks) and written into a fresh
    hidden folder beside it, the hash taken of the bytes written, then the folder renamed into place
    (the previous artefact is kept until then), all under the folder's lock (two writers take
    turns). A folder holding anything else is refused: replacing it would delete those files."""
    folder = Path(folder).expanduser()
    tensors, data = _tensors(art), _settings(art)
    where = f"{folder / TENSORS_NAME} (not saved)"
    check_json(Path(where), data)
    check_tensors(where, tensors, art.options, art.engine.VSA_dim, int(art.model["dim"]))
    blob = save(tensors)
    data["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    try:
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise DataError(f"{folder / JSON_NAME}: the settings are not strict JSON ({exc}); nothing was saved") from None
    with exclusive(folder.parent / f".{folder.name}.lock", f"the intervention artefact {folder}"):
        others = [p.name for p in folder.iterdir() if p.name not in (JSON_NAME, TENSORS_NAME)] \
            if folder.is_dir() else []
        if others:
            raise OutputError(f"{folder}: holds other files ({', '.join(sorted(others)[:3])}); an artefact "
                              f"replaces its whole folder: choose an empty or new folder; nothing was saved")
        replace_folder(folder, {TENSORS_NAME: blob, JSON_NAME: text.encode()}, "the intervention artefact")
    return folder


def load_intervention(folder: str | Path, *, model_info: Optional[dict] = None,
                      allow_other_weights: bool = False) -> TrainedIntervention:
    """Read and check an artefact folder (artefact_checks); with `model_info` (maps.model_info_of(llama))
    also the model. The tensors are read once, as bytes: the hash checked is of the bytes used."""
    folder = Path(folder).expanduser()
    jpath, tpath = folder / JSON_NAME, folder / TENSORS_NAME
    for p in (jpath, tpath):
        if not p.is_file():
            raise DataError(f"{p}: not found; an intervention artefact is a folder with {JSON_NAME} and {TENSORS_NAME}")
    data = read_json(jpath)
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise DataError(f"{jpath}: not an intervention artefact of version {VERSION} (format {FORMAT!r})")
    check_json(jpath, data)
    blob = tpath.read_bytes()
    if data["tensors_sha256"] != hashlib.sha256(blob).hexdigest():
        raise DataError(f"{tpath}: not the tensors {jpath.name} was written with (its sha256 differs): "
                        f"copy the two files together")
    try:
        t = load(blob)
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{tpath}: not a readable safetensors file ({exc})") from None
    opts = dict(data["intervention"])
    opts["problem_score_max"] = math.inf if opts["problem_score_max"] is None else float(opts["problem_score_max"])
    try:
        options = InterventionOptions(**opts)
        options.validate_intervention()
        options.validate_layers(data["model"]["n_layers"])
    except ConfigError as exc:
        raise DataError(f"{jpath}: intervention: {exc}") from None
    check_tensors(str(tpath), t, options, data["engine"]["VSA_dim"], data["model"]["dim"])
    try:
        engine = SymbolicEngine.from_state_dict({**data["engine"], "codebook": t["codebook"]})
    except UserError as exc:  # the engine's own checks
        raise DataError(f"{jpath}: engine: {exc}") from None
    decoders = {l: t[f"decoder.{l}"] for l in options.symbolic_decoding_layers}
    merge: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in t.items():
        if key.startswith("merge."):
            _, layer, name = key.split(".", 2)
            merge.setdefault(layer, {})[name] = v
    art = TrainedIntervention(engine, t["encoder"], decoders, merge, options,
                              {k: data["prompt"][k] for k in PROMPT_KEYS}, data["model"], data["checkpoint"],
                              data["extra"])
    if model_info is not None:
        note = check_model(art.model, model_info, f"{folder} (intervention)",
                           allow_other_weights=allow_other_weights)
        if note:
            print(note, file=sys.stderr)
    return art
