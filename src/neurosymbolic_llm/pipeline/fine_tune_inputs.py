"""Stage 3's inputs, each checked: the rows of a split, the stage-2 maps (and the encoding layer they
imply), the configuration as run, and which problem types count as seen.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from neurosymbolic_llm.llama.checkpoint import file_fingerprint
from neurosymbolic_llm.pipeline import rows
from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.layer_choice import ReadKey, best_encoding_layer, read_key
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError
from neurosymbolic_llm.pipeline.maps import MapFile, load_maps, model_info_of
from neurosymbolic_llm.pipeline.training import samples_per_step
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

# ----------------------------------------------------------------------------- rows
# Operands of a CSV must fit the engine's digit positions; without an engine, int64 is the limit.
MAX_DIGITS_WITHOUT_ENGINE = 18


def load_rows(cfg: FineTuneConfig, split: str, dp_size: int = 1, max_digits: int = MAX_DIGITS_WITHOUT_ENGINE
              ) -> tuple[pd.DataFrame, bool]:
    """(rows, from_csv) of a split: the CSV as it is (test: every row of the evaluated types, as the
    paper evaluated; validation and training: the first rows when capped by --validation_rows,
    --training_rows), or the split's random rows (rows.py;
    training: num_steps steps of every data-parallel group's samples; test: testing_num_steps x
    testing_n_samples per type)."""
    per_type = cfg.testing_num_steps * cfg.testing_n_samples
    from_csv = bool(rows.csv_path(cfg, split))
    if from_csv:
        df = rows.read_csv_rows(cfg, split, max_digits)
        if split == "test":
            df = df[df["problem_type"].isin(cfg.testing_problems)]
        if split == "val" and cfg.validation_rows > 0:
            df = df.head(cfg.validation_rows)
        if split == "train" and cfg.training_rows > 0:
            df = df.head(cfg.training_rows)
    elif split == "test":
        df = rows.draw_rows(cfg, split, per_type=per_type) if per_type > 0 else pd.DataFrame(columns=["problem_type"])
    else:
        n = cfg.num_steps * samples_per_step(cfg, dp_size) if split == "train" else cfg.validation_rows
        df = rows.draw_rows(cfg, split, n)
    df = df.reset_index(drop=True)
    if split == "test" and df.empty:
        raise DataError(f"{rows.csv_path(cfg, split) or 'random test problems'}: no test rows of the evaluated "
                        f"problem types {cfg.testing_problems}")
    if split == "train" and df.empty:
        raise DataError(f"{rows.csv_path(cfg, split)}: the training split is empty")
    return df, from_csv


# ----------------------------------------------------------------------------- maps
@dataclass
class Maps:
    """The stage-2 maps a run uses, checked against the model and each other."""
    engine: SymbolicEngine
    encoding_layer: ReadKey               # the layer(s) the encoder reads (auto: chosen on validation)
    encoder: torch.Tensor                 # [V, k D] of those k layers
    decoders: dict[int, torch.Tensor]     # {layer: [D, V]} of --symbolic_decoding_layers
    encoder_extra: dict                   # what stage 2 recorded (trained_types, val_all_accuracy, ...)
    decoder_extra: dict                   # (merge_state of a fine-tuned decoder, ...)
    model_info: dict = dataclasses.field(default_factory=dict)  # the model the decoder file was made on


def _load_encoder(cfg: FineTuneConfig, llama) -> MapFile:
    if not cfg.encoder_path:
        raise ConfigError("--symbolic_encoding_layer auto needs --encoder_path (the stage-2 file holds the "
                          "validation accuracy of every layer)")
    return load_maps(cfg.encoder_path, "encoder", model_info=model_info_of(llama) if llama is not None else None,
                     allow_other_weights=cfg.allow_other_weights)


def encoding_layer(cfg: FineTuneConfig, encoder_extra: dict) -> ReadKey:
    """The read of the encoder (a layer, or "3+4+5": layers read at once): --symbolic_encoding_layer,
    or for auto the read with the best stage-2 validation accuracy (x, y and type all decoded; the
    encoder file records it) that ends at or before the first decoding layer."""
    if cfg.symbolic_encoding_layer != "auto":
        return read_key(cfg.read_layers())
    accuracy = encoder_extra.get("val_all_accuracy")
    if not accuracy:
        raise DataError(f"{cfg.encoder_path}: no validation accuracy per layer in the file (written by an "
                        f"older stage 2); rerun stage 2 or give --symbolic_encoding_layer a layer number")
    accuracy = {read_key(k): v for k, v in accuracy.items()}
    layer = best_encoding_layer(accuracy, min(cfg.symbolic_decoding_layers))
    print(f"--symbolic_encoding_layer auto: {layer} (validation accuracy {accuracy[layer]:.3f}, x, y and "
          f"type all decoded)")
    return layer


def load_maps_for(cfg: FineTuneConfig, llama) -> Maps:
    """The maps of --encoder_path / --decoder_path with every check (llama None: all but the
    model's, which the caller makes with maps.check_model). The encoder file is read once, also for
    --symbolic_encoding_layer auto."""
    if not cfg.encoder_path or not cfg.decoder_path:
        raise ConfigError("--encoder_path and --decoder_path are required for the neurosymbolic model, the "
                          "stage-2 adapter and the gate statistics")
    enc = _load_encoder(cfg, llama)
    layer = encoding_layer(cfg, enc.extra)
    if llama is not None:
        dataclasses.replace(cfg, symbolic_encoding_layer=layer).validate_layers(llama.args.n_layers)
    engine = SymbolicEngine.from_state_dict(enc.engine_state)
    dec = load_maps(cfg.decoder_path, "decoder", engine=engine,
                    model_info=model_info_of(llama) if llama is not None else None,
                    allow_other_weights=cfg.allow_other_weights)
    enc_w = enc.encoder_of(layer)
    if enc_w is None:
        hint = " (a joint read is trained by stage 2's --joint_encoder_layers)" if isinstance(layer, str) else ""
        raise DataError(f"{cfg.encoder_path}: no encoder for layer {layer} (--symbolic_encoding_layer); the file "
                        f"has {enc.reads}{hint}")
    if llama is not None:
        engine.to(llama.device)
    # zero replaces stage 2's decoders (the decoding layers need not have been gathered in stage 1);
    # a decoder that stage 3 fine-tuned is what is being evaluated or resumed: always its own weights
    if cfg.decoder_init == "zero" and not fine_tuned(dec.extra):
        decoders = {l: torch.zeros(enc.model_info["dim"], enc_w.shape[0]) for l in cfg.symbolic_decoding_layers}
    else:
        missing = [l for l in cfg.symbolic_decoding_layers if l not in dec.weights]
        if missing:
            raise DataError(f"{cfg.decoder_path}: no decoder for layer(s) {missing} (--symbolic_decoding_layers); "
                            f"the file has layers {dec.layers} (--decoder_init zero starts without them)")
        decoders = {l: dec.weights[l] for l in cfg.symbolic_decoding_layers}
    return Maps(engine, layer, enc_w, decoders, enc.extra, dec.extra, dec.model_info)


def used_config(cfg: FineTuneConfig, maps: Optional[Maps], llama) -> FineTuneConfig:
    """The configuration as run: the engine options are those of the map files' engine, and the
    encoding layer is the one used (auto resolved; without maps, from the encoder file), so that the
    run's record names them. The layer options are checked against the model."""
    if maps is not None:
        return dataclasses.replace(cfg, VSA_dim=maps.engine.VSA_dim, max_digits=maps.engine.max_digits,
                                   vsa_seed=maps.engine.seed, possible_problems=list(maps.engine.possible_problems),
                                   symbolic_encoding_layer=maps.encoding_layer)
    if not cfg.hooks_layers():
        return cfg
    if cfg.symbolic_encoding_layer == "auto":  # a fresh adapter: the encoder file only names the layer
        cfg = dataclasses.replace(cfg, symbolic_encoding_layer=encoding_layer(cfg, _load_encoder(cfg, llama).extra))
    cfg.validate_layers(llama.args.n_layers)
    return cfg


def seen_types(cfg: FineTuneConfig, maps: Optional[Maps], train_rows: Optional[pd.DataFrame],
               max_digits: int) -> tuple[list[str], str]:
    """(types labelled seen, where that comes from): the types the maps were trained on (stage 2
    stores them); without maps (or with maps of an older stage 2), the types of the training split
    (its CSV, or the random rows drawn from --problem_type)."""
    if maps is not None and maps.encoder_extra.get("trained_types"):
        return list(maps.encoder_extra["trained_types"]), f"the types the maps were trained on ({cfg.encoder_path})"
    if rows.csv_path(cfg, "train"):
        df = train_rows if train_rows is not None else rows.read_csv_rows(cfg, "train", max_digits)
        return list(dict.fromkeys(df["problem_type"])), f"the types of --training_data_df_path {cfg.training_data_df_path}"
    return list(cfg.problem_type), "--problem_type"


def fine_tuned(decoder_extra: dict) -> bool:
    """Whether a decoder file was written by stage 3 (save_decoder), not by stage 2."""
    return "fine_tuned_from" in decoder_extra


def map_fingerprints(cfg: FineTuneConfig) -> dict[str, Optional[str]]:
    """{"encoder", "decoder"}: the content fingerprint of --encoder_path / --decoder_path (None: no file)."""
    return {k: file_fingerprint(Path(p).expanduser()) if p and Path(p).expanduser().is_file() else None
            for k, p in (("encoder", cfg.encoder_path), ("decoder", cfg.decoder_path))}


def check_maps_unchanged(cfg: FineTuneConfig, at_start: dict[str, Optional[str]]) -> None:
    """Refuse to save a decoder trained on maps that were replaced since the run loaded them (stage 2
    rerun under the same run name meanwhile): it would name a file that now holds other maps."""
    now = map_fingerprints(cfg)
    changed = [f"--{k}_path {getattr(cfg, f'{k}_path')}" for k in now if now[k] != at_start[k]]
    if changed:
        raise DataError(f"{' and '.join(changed)} changed while this run trained (rewritten by stage 2?): the "
                        f"fine-tuned decoder belongs to the maps of the run's start and was not saved; rerun stage 3 "
                        f"with --restart 1 to fine-tune on the new maps")
