"""Stage 3: fine-tune the decoder inside the frozen model, evaluate every method on the same rows,
and write the results (the library behind fine_tune_decoders.py).

A run evaluates one main method (the neurosymbolic model, or a baseline: LoRA, the paper's adapter
row, chain of thought) and optionally the plain model first (--test_baseline), on the same test rows
(rows.py). The trained methods train on the same training rows for the same steps. The VSA engine
comes from the stage-2 map files, never from options: a decoder is meaningless with another codebook
(config_fine_tune.yaml records the engine that was used). "Seen" types are the ones the maps were
trained on.

Nothing is lost and runs do not mix: one process per run name (locks.py); the output folders are
checked for write access and room before the model loads and before training; training saves its
state (train_state.py) and a rerun with the same run name resumes from it; results.csv comes with
fingerprints.json (test rows, model, codebook, seen types) so that compare_runs only merges runs
made on the same things. A neurosymbolic run also writes what it evaluated as one shareable artefact,
results/<run>/intervention/ (artefact.py), which nsllm ask reads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import pandas as pd
import torch

from neurosymbolic_llm.pipeline import artefact, methods, rows
from neurosymbolic_llm.pipeline.distributed import DistInfo, barrier, init_distributed
from neurosymbolic_llm.pipeline.encoder_training import best_encoding_layer
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError, Interrupted, Terminated
from neurosymbolic_llm.pipeline.evaluation import (EvaluationOptions, answer_token_budget, evaluate, gate_scores,
                                       summarize)
from neurosymbolic_llm.pipeline.files import MiB, atomic_write_csv, check_output_folders
from neurosymbolic_llm.pipeline.intervention import InterventionOptions
from neurosymbolic_llm.pipeline.locks import stage_lock
from neurosymbolic_llm.pipeline.maps import load_maps, model_info_of, save_maps
from neurosymbolic_llm.pipeline.methods import BaselineOptions
from neurosymbolic_llm.pipeline.options import (DataOptions, ModelOptions, RunOptions, SymbolicOptions, to_dict)
from neurosymbolic_llm.pipeline.paths import results_dir, run_name_or_today
from neurosymbolic_llm.pipeline.results import (gate_summary, headline_summary, rows_fingerprint, write_fingerprints,
                                    write_gate_scores, write_results)
from neurosymbolic_llm.pipeline.runtime import build_llama, model_parallel_size, resolve_device
from neurosymbolic_llm.pipeline.tracking import Tracker
from neurosymbolic_llm.pipeline.train_state import FILE_NAME as STATE_FILE, TrainingState
from neurosymbolic_llm.pipeline.training import FineTuneOptions, build_examples, samples_per_step, train
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

STAGE = "fine_tune_decoders"  # the name of its lock (locks.py)


@dataclass
class FineTuneConfig(FineTuneOptions, InterventionOptions, EvaluationOptions, BaselineOptions, ModelOptions,
                     SymbolicOptions, DataOptions, RunOptions):
    """stage 3: decoder fine-tuning in context, evaluation and baselines"""

    config_section: ClassVar[str] = "fine_tune_decoders"
    unused_options: ClassVar[tuple] = ("max_digits", "vsa_seed", "possible_problems")
    unused_reason: ClassVar[str] = "stage 3 takes the VSA engine (digits, codebook, problem list) from the map files"
    group_titles: ClassVar[dict] = {
        "SymbolicOptions": "symbolic: the problems' number format (the VSA engine itself comes from the map "
                           "files; --VSA_dim only sizes a fresh adapter run without them)"}

    def validate(self) -> None:
        if sum([self.lora_baseline, self.adapter_baseline, self.cot]) > 1:
            raise ConfigError("choose at most one of --lora_baseline, --adapter_baseline, --cot per run")
        for name in ("n_samples", "inference_to_backprop_ratio", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1")
        if self.num_epochs < 0:
            raise ConfigError("--num_epochs must be at least 0 (0: evaluate the maps as they are, no training)")
        if self.checkpoint_every < 0:
            raise ConfigError("--checkpoint_every must be >= 0 (0: save the training state only at the end and on Ctrl-C)")
        self.validate_intervention()

    def methods(self) -> list[str]:
        """Methods of this run, in evaluation order (the plain model first: LoRA changes the model)."""
        main = "cot" if self.cot else "lora" if self.lora_baseline else "adapter" if self.adapter_baseline else "neurosymbolic"
        printed = ["read_and_print"] if self.read_and_print else []  # before LoRA changes the model
        if self.test_baseline == 2:
            return ["baseline"] + printed + ([main] if main == "cot" else [])
        return (["baseline"] if self.test_baseline == 1 else []) + printed + [main]

    def trains(self) -> bool:
        return (any(m in self.methods() for m in ("neurosymbolic", "lora", "adapter")) and self.test_baseline != 2
                and self.num_epochs > 0)

    def needs_maps(self) -> bool:
        m = self.methods()
        return "neurosymbolic" in m or "read_and_print" in m or self.test_on_unrelated_questions or (
            "adapter" in m and self.adapter_init == "stage2")


# ----------------------------------------------------------------------------- data
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
    encoder: torch.Tensor                 # [V, D] of --symbolic_encoding_layer
    decoders: dict[int, torch.Tensor]     # {layer: [D, V]} of --symbolic_decoding_layers
    encoder_extra: dict                   # what stage 2 recorded (trained_types, ...)
    decoder_extra: dict                   # (merge_state of a fine-tuned decoder, ...)
    model_info: dict = dataclasses.field(default_factory=dict)  # the model the decoder file was made on


def load_maps_for(cfg: FineTuneConfig, llama) -> Maps:
    """The maps of --encoder_path / --decoder_path with every check (llama None: all but the
    model's, which the caller makes with maps.check_model)."""
    if not cfg.encoder_path or not cfg.decoder_path:
        raise ConfigError("--encoder_path and --decoder_path are required for the neurosymbolic model, "
                          "the stage-2 adapter and the gate statistics")
    info = model_info_of(llama) if llama is not None else None
    enc = load_maps(cfg.encoder_path, "encoder", model_info=info, allow_other_weights=cfg.allow_other_weights)
    engine = SymbolicEngine.from_state_dict(enc.engine_state)
    dec = load_maps(cfg.decoder_path, "decoder", engine=engine, model_info=info,
                    allow_other_weights=cfg.allow_other_weights)
    if cfg.symbolic_encoding_layer not in enc.weights:
        raise DataError(f"{cfg.encoder_path}: no encoder for layer {cfg.symbolic_encoding_layer} "
                        f"(--symbolic_encoding_layer); the file has layers {enc.layers}")
    if llama is not None:
        engine.to(llama.device)
    enc_w = enc.weights[cfg.symbolic_encoding_layer]
    # zero replaces stage 2's decoders (the decoding layers need not have been gathered in stage 1);
    # a decoder that stage 3 fine-tuned is what is being evaluated or resumed: always its own weights
    if cfg.decoder_init == "zero" and not fine_tuned(dec.extra):
        zero = {l: torch.zeros(enc_w.shape[1], enc_w.shape[0]) for l in cfg.symbolic_decoding_layers}
        return Maps(engine, enc_w, zero, enc.extra, dec.extra, dec.model_info)
    missing = [l for l in cfg.symbolic_decoding_layers if l not in dec.weights]
    if missing:
        raise DataError(f"{cfg.decoder_path}: no decoder for layer(s) {missing} (--symbolic_decoding_layers); "
                        f"the file has layers {dec.layers} (--decoder_init zero starts without them)")
    return Maps(engine, enc_w, {l: dec.weights[l] for l in cfg.symbolic_decoding_layers}, enc.extra, dec.extra,
                dec.model_info)


def resolve_encoding_layer(cfg: FineTuneConfig, llama) -> None:
    """--symbolic_encoding_layer auto: the layer with the best stage-2 validation accuracy (x, y and
    type all decoded) stored in the encoder file, not after the first decoding layer. It replaces
    "auto" in cfg, so the run's config records the layer used."""
    if cfg.symbolic_encoding_layer != "auto":
        return
    if not cfg.encoder_path:
        raise ConfigError("--symbolic_encoding_layer auto needs --encoder_path (the stage-2 file holds the "
                          "validation accuracy of every layer)")
    enc = load_maps(cfg.encoder_path, "encoder", model_info=model_info_of(llama),
                    allow_other_weights=cfg.allow_other_weights)
    accuracy = enc.extra.get("val_all_accuracy")
    if not accuracy:
        raise DataError(f"{cfg.encoder_path}: no validation accuracy per layer in the file (written by an "
                        f"older stage 2); rerun stage 2 or give --symbolic_encoding_layer a layer number")
    cfg.symbolic_encoding_layer = best_encoding_layer(accuracy, min(cfg.symbolic_decoding_layers))
    print(f"--symbolic_encoding_layer auto: layer {cfg.symbolic_encoding_layer} (validation accuracy "
          f"{accuracy[cfg.symbolic_encoding_layer]:.3f}, x, y and type all decoded)")


def used_config(cfg: FineTuneConfig, engine: Optional[SymbolicEngine]) -> FineTuneConfig:
    """The configuration as run: the engine options are those of the map files' engine."""
    if engine is None:
        return cfg
    return dataclasses.replace(cfg, VSA_dim=engine.VSA_dim, max_digits=engine.max_digits, vsa_seed=engine.seed,
                               possible_problems=list(engine.possible_problems))


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
    from neurosymbolic_llm.llama.checkpoint import file_fingerprint

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


def save_decoder(cfg: FineTuneConfig, run: str, method, engine, llama, maps_at_start: dict) -> Path:
    """The fine-tuned decoder beside the input one, as <stem>_post_fine_tuning_<run>.pth (checked
    format, with the trained merge parameters), if the input maps are still those of the start."""
    check_maps_unchanged(cfg, maps_at_start)
    src = Path(cfg.decoder_path).expanduser()
    out = decoder_output_path(cfg, run)
    iv = method.intervention
    weights = {l: iv.decoders[str(l)].weight for l in iv.dec_layers}
    extra = {"fine_tuned_from": str(src), "fine_tuned_from_fingerprint": maps_at_start["decoder"], "run_name": run,
             "merge": cfg.merge_mode(), "merge_state": iv.merge_state(),
             "symbolic_encoding_layer": cfg.symbolic_encoding_layer}
    return save_maps(out, "decoder", weights, engine.state_dict(), model_info_of(llama), extra,
                     what="the fine-tuned decoder")


# ----------------------------------------------------------------------------- safety nets
# Options that change what training computes are part of a training state's identity; these do not
# (where outputs go, evaluation, logging). Files are represented by their content's fingerprint.
NOT_TRAINING = {"run_name", "log_wandb", "wandb_project", "wandb_group", "programs_dir", "device", "checkpoint_every",
                "restart", "prefix_split", "allow_other_weights",
                "encoder_path", "decoder_path", "chpt_dir", "tokenizer_path", "max_seq_len", "model_parallel_size",
                "training_data_df_path", "val_data_df_path", "testing_data_df_path", "testing_problems",
                "problem_type", "validation_rows", "cot_max_new_tokens", "test_on_unrelated_questions",
                *(f.name for f in dataclasses.fields(EvaluationOptions))}


def training_identity(cfg: FineTuneConfig, method_name: str, llama, train_rows: pd.DataFrame, dp_size: int,
                      maps: dict[str, Optional[str]]) -> dict:
    """What a saved training state is valid for (train_state.py); `maps`: map_fingerprints at the start."""
    options = {k: v for k, v in to_dict(cfg).items() if k not in NOT_TRAINING}
    return {"method": method_name, "model": llama.fingerprint, **maps, "train_rows": rows_fingerprint(train_rows),
            "n_train_rows": len(train_rows), "data_parallel_groups": dp_size, "options": options}


def decoder_output_path(cfg: FineTuneConfig, run: str) -> Path:
    src = Path(cfg.decoder_path).expanduser()
    return src.with_name(f"{src.stem}_post_fine_tuning_{run}.pth")


def output_needs(cfg: FineTuneConfig, run: str, out_dir: Path, *, n_test: int = 0, params: int = 0,
                 n_train: int = 0, steps: int = 0) -> dict[Path, tuple[str, int]]:
    """{folder: (what goes there, bytes)} of a run: the results (+ responses, and the intervention
    artefact of a neurosymbolic run: about twice the decoder file, a bound), the training state
    (parameters + Adam's two moments, twice while the new file replaces the old), the fine-tuned
    decoder beside --decoder_path (the size of the input decoder, twice likewise)."""
    needs: dict[Path, tuple[str, int]] = {}

    def add(folder: Path, what: str, size: int) -> None:
        w, n = needs.get(folder, ("", 0))
        needs[folder] = (f"{w} and {what}" if w else what, n + int(size))

    decoder = Path(cfg.decoder_path).expanduser() if cfg.decoder_path else None
    artefact_bytes = 2 * decoder.stat().st_size if "neurosymbolic" in cfg.methods() and decoder and decoder.is_file() else 0
    add(out_dir, "the results", MiB + 600 * n_test * len(cfg.methods()) + 400 * steps + artefact_bytes)
    if cfg.trains():
        add(out_dir, "the training state", 2 * (12 * params + 8 * n_train + 200 * steps) if params else 0)
        if "neurosymbolic" in cfg.methods():
            src = Path(cfg.decoder_path).expanduser()
            add(decoder_output_path(cfg, run).parent, "the fine-tuned decoder",
                2 * src.stat().st_size if src.is_file() else 0)
    return needs


# ----------------------------------------------------------------------------- the stage
def run(cfg: FineTuneConfig) -> int:
    """Train (unless --test_baseline 2 or CoT), evaluate and write every output of the run."""
    run_name = run_name_or_today(cfg.run_name)
    device = str(resolve_device(cfg.device))
    mp = model_parallel_size(cfg)
    if cfg.lora_baseline and mp > 1:
        raise ConfigError(f"--lora_baseline 1 needs model-parallel size 1 (peft wraps torch Linear layers, not "
                          f"fairscale's parallel ones), got {mp}: reshard the checkpoint to one shard "
                          f"(Programs/reshard_checkpoint.py) and scale out with data parallelism")
    out_dir = results_dir(run_name, cfg.programs_dir)
    info: DistInfo = init_distributed(device, mp)
    if cfg.trains() and "neurosymbolic" in cfg.methods() and not cfg.decoder_path:
        raise ConfigError("--encoder_path and --decoder_path are required for the neurosymbolic model")
    with stage_lock(out_dir, STAGE, run_name, enabled=info.is_main):
        if info.is_main:  # before the model loads: a read-only or full folder is found in seconds
            check_output_folders(output_needs(cfg, run_name, out_dir))
        return _run(cfg, run_name, device, out_dir, info)


def _run(cfg: FineTuneConfig, run_name: str, device: str, out_dir: Path, info: DistInfo) -> int:
    torch.manual_seed(cfg.seed)
    llama = build_llama(cfg, max_batch_size=max(cfg.eval_batch_size, cfg.n_samples), device=device)
    names = cfg.methods()
    auto_layer = cfg.symbolic_encoding_layer == "auto"
    maps_at_start = map_fingerprints(cfg)  # the maps this run loads; checked again before its decoder is saved
    if cfg.needs_maps() or "adapter" in names:  # the methods that read and write residual layers
        resolve_encoding_layer(cfg, llama)
        cfg.validate_layers(llama.args.n_layers)
    maps = load_maps_for(cfg, llama) if cfg.needs_maps() else None
    engine = maps.engine if maps is not None else None
    cfg = used_config(cfg, engine)
    problem_list = list(engine.possible_problems) if engine is not None else list(PROBLEM_TYPES)

    trained = cfg.trains()
    ex_kw = dict(seed=cfg.seed, complexity=cfg.complexity, limit_solution_digits=cfg.limit_solution_digits,
                 problem_list=problem_list)
    max_digits = engine.max_digits if engine is not None else MAX_DIGITS_WITHOUT_ENGINE
    test_rows, _ = load_rows(cfg, "test", max_digits=max_digits)
    train_rows = None
    if trained:
        train_rows, from_csv = load_rows(cfg, "train", info.dp_size, max_digits)
        val_rows, _ = load_rows(cfg, "val", max_digits=max_digits)
        train_ex = build_examples(train_rows, llama.formatter, "train", **ex_kw)
        val_ex = build_examples(val_rows, llama.formatter, "val", **ex_kw)
    seen, seen_from = seen_types(cfg, maps, train_rows, max_digits)
    if info.is_main:
        print(f"seen types: {', '.join(seen)} (from {seen_from})")
    state = None
    if trained:  # a saved state of other settings is refused before this attempt records anything
        trained_name = next(m for m in names if m in ("neurosymbolic", "lora", "adapter"))
        identity = training_identity(cfg, trained_name, llama, train_rows, info.dp_size, maps_at_start)
        state = TrainingState(out_dir / STATE_FILE, identity,
                              every=cfg.checkpoint_every, restart=cfg.restart, enabled=info.is_main)
        state.load()
    tracker = Tracker(out_dir, stage="fine_tune", run_name=run_name, config=cfg, project=cfg.wandb_project,
                      group=cfg.wandb_group, label="+".join(names), log_wandb=cfg.log_wandb, enabled=info.is_main)
    if engine is not None:  # the engine is the map file's, whatever the options say
        tracker.record_used({"VSA_dim": engine.VSA_dim, "max_digits": engine.max_digits, "vsa_seed": engine.seed,
                             "possible_problems": list(engine.possible_problems),
                             "engine_fingerprint": engine.fingerprint()}, source=f"engine of {cfg.encoder_path}")
    tracker.record_used({"seen_types": seen}, source=seen_from)
    if auto_layer and isinstance(cfg.symbolic_encoding_layer, int):
        tracker.record_used({"symbolic_encoding_layer": cfg.symbolic_encoding_layer},
                            source=f"--symbolic_encoding_layer auto: the best validation layer of {cfg.encoder_path}")
    eval_kw = dict(batch_size=cfg.eval_batch_size, seen_types=seen, problem_list=problem_list, info=info)
    test_kw = dict(vary_format=cfg.modify_question_format, words=cfg.test_with_non_numerical_rep)
    short = answer_token_budget(llama.tokenizer, cfg.complexity, cfg.limit_solution_digits)

    responses, ns_method, evaluating = [], None, False
    try:
        for name in names:
            evaluating = False
            method = _build_method(name, cfg, llama, maps)
            if name == "neurosymbolic":
                ns_method = method
            if method.params and trained:
                tracker.summary({f"{name}/trainable_parameters": sum(p.numel() for p in method.params)})
                n_params = sum(p.numel() for p in method.params)
                steps = cfg.num_epochs * (len(train_rows) // samples_per_step(cfg, info.dp_size) + 1)
                if info.is_main:  # room for the state, the decoder and the results, before any step
                    check_output_folders(output_needs(cfg, run_name, out_dir, n_test=len(test_rows), params=n_params,
                                                      n_train=len(train_rows), steps=steps))

                def validate(epoch, method=method):
                    df = evaluate(llama, method, val_ex, max_new_tokens=short, desc=f"val {method.name}", **eval_kw)
                    return {"accuracy": float(df["correct"].mean()), "cross_entropy": float(df["cross_entropy"].mean())}

                train(llama, method, train_ex, cfg, from_csv=from_csv, seed=cfg.seed, tracker=tracker, info=info,
                      validate=validate, state=state)
                if name == "neurosymbolic" and info.is_main:
                    path = save_decoder(cfg, run_name, method, engine, llama, maps_at_start)
                    print(f"fine-tuned decoder: {path}")
            evaluating = True
            test_ex = build_examples(test_rows, llama.formatter, "test", prompt=method.prompt, **test_kw, **ex_kw)
            budget = cfg.cot_max_new_tokens if method.prompt == "cot" or cfg.test_with_non_numerical_rep else short
            responses.append(evaluate(llama, method, test_ex, max_new_tokens=budget, desc=f"test {name}", **eval_kw))
            if name == "neurosymbolic" and info.is_main:  # what was evaluated, as one shareable artefact
                art = artefact.from_method(cfg, method.intervention, model=model_info_of(llama), run=run_name,
                                           trained_types=seen)
                print(f"intervention artefact: {artefact.save_intervention(out_dir / artefact.FOLDER_NAME, art)}")

        gates = None
        if cfg.test_on_unrelated_questions:
            gates = unrelated_gate_scores(cfg, llama, ns_method or methods.neurosymbolic(
                llama.model, engine, maps.encoder, maps.decoders, cfg, lr=0.0, complexity=cfg.complexity,
                limit_solution_digits=cfg.limit_solution_digits, train=False), test_rows, ex_kw, seen, info)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted) and not isinstance(exc, Terminated) or state is None:
            raise  # train() stopped between steps and said where its state is, or nothing was trained
        what, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("Ctrl-C", 130)
        if evaluating:
            raise Interrupted(f"{what} during evaluation: training is complete and saved in {state.path}; rerun "
                              f"the same command to evaluate without training again", code) from None
        if not state.path.is_file():
            raise Interrupted(f"{what}: stopped before a training state was saved", code) from None
        raise Interrupted(f"{what}: stopped at once; the last saved training state in {state.path} is kept; "
                          f"rerun the same command to resume from it", code) from None
    if info.is_main:
        write_outputs(cfg, out_dir, tracker, pd.concat(responses, ignore_index=True), gates)
        write_fingerprints(out_dir, {
            "test_rows": rows_fingerprint(test_rows), "n_test_rows": len(test_rows), "model": llama.fingerprint,
            "codebook": engine.fingerprint() if engine is not None else None,
            "seen_types": sorted(seen), "seen_from": seen_from,
            "test_questions": {"modify_question_format": cfg.modify_question_format,
                               "test_with_non_numerical_rep": cfg.test_with_non_numerical_rep}})
    tracker.finish()
    barrier(info)
    return 0


def _build_method(name: str, cfg: FineTuneConfig, llama, maps: Optional[Maps]):
    """The Method of `name`, from the stage-2 maps where it needs them."""
    if name == "baseline":
        return methods.plain()
    if name == "cot":
        return methods.plain("cot", prompt="cot")
    if name == "read_and_print":
        return methods.read_and_print(llama, maps.engine, maps.encoder, maps.decoders, cfg, complexity=cfg.complexity,
                                      limit_solution_digits=cfg.limit_solution_digits)
    if name == "neurosymbolic":
        method = methods.neurosymbolic(llama.model, maps.engine, maps.encoder, maps.decoders, cfg, lr=cfg.learning_rate,
                                       complexity=cfg.complexity, limit_solution_digits=cfg.limit_solution_digits)
        if fine_tuned(maps.decoder_extra):
            method.intervention.load_merge_state(maps.decoder_extra.get("merge_state", {}))
        return method
    if name == "adapter":
        w_enc = maps.encoder if maps is not None else torch.zeros(cfg.VSA_dim, llama.args.dim)
        w_dec = maps.decoders if maps is not None else {l: torch.zeros(llama.args.dim, cfg.VSA_dim)
                                                        for l in cfg.symbolic_decoding_layers}
        return methods.adapter(llama.model, w_enc, w_dec, cfg, lr=cfg.learning_rate, init=cfg.adapter_init, seed=cfg.seed)
    return methods.lora(llama.model, cfg, cfg.seed)


def unrelated_gate_scores(cfg, llama, method, math_rows, ex_kw, seen_types, info, split: str = "test") -> pd.DataFrame:
    """Gate scores of seen math, unseen math and non-math prompts (the paper's gate figure): the
    split's math rows and its canned non-math questions (prompts.non_math_questions)."""
    from neurosymbolic_llm.symbolic.prompts import non_math_dialog, non_math_questions

    math_ex = build_examples(math_rows, llama.formatter, split, **ex_kw)
    topics = non_math_questions(split)
    other = [llama.formatter.encode_dialog_prompt(non_math_dialog(q)) for _, q in topics]
    s_math = gate_scores(llama, method, math_ex.prompts, batch_size=cfg.eval_batch_size, info=info, desc="gate math")
    s_other = gate_scores(llama, method, other, batch_size=cfg.eval_batch_size, info=info, desc="gate non-math")
    seen = math_rows["problem_type"].isin(seen_types)
    return pd.concat([
        pd.DataFrame({"group": ["seen math" if s else "unseen math" for s in seen],
                      "problem_type": math_rows["problem_type"], "score": s_math.numpy()}),
        pd.DataFrame({"group": "non-math", "problem_type": [t for t, _ in topics], "score": s_other.numpy()}),
    ], ignore_index=True)


def write_outputs(cfg, out_dir: Path, tracker, responses: pd.DataFrame, gates) -> None:
    results = summarize(responses)
    paths = write_results(out_dir, results, title=f"Results of run {out_dir.name}")
    tracker.table("results", results, paths["csv"])
    if cfg.save_responses:
        tracker.table("responses", responses, atomic_write_csv(responses, out_dir / "responses.csv"))
    summary = headline_summary(results)
    if gates is None and cfg.record_score_per_problem >= 2 and responses["gate_score"].notna().any():
        ns = responses[responses["method"] == "neurosymbolic"]
        if len(ns):
            gates = pd.DataFrame({"group": ["seen math" if s else "unseen math" for s in ns["seen"]],
                                  "problem_type": ns["problem_type"].values, "score": ns["gate_score"].values})
    if gates is not None:
        gp = write_gate_scores(out_dir, gates, cfg.problem_score_threshold, cfg.problem_score_max)
        tracker.table("gate_scores", pd.read_csv(gp["csv"]), gp["csv"])
        summary |= gate_summary(gates, cfg.problem_score_threshold, cfg.problem_score_max)
        tracker.image("gate_scores_plot", gp["png"])
    tracker.image("results_plot", paths["png"])
    tracker.summary(summary)
    print(paths["md"].read_text())

