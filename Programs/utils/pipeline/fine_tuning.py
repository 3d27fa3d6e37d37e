"""Stage 3: fine-tune the decoder inside the frozen model, evaluate every method on the same rows,
and write the results (the library behind fine_tune_decoders.py).

A run evaluates one main method (the neurosymbolic model, or a baseline: LoRA, the paper's adapter
row, chain of thought) and optionally the plain model first (--test_baseline), on the same test rows
(rows.py). The trained methods train on the same training rows for the same steps. The VSA engine
comes from the stage-2 map files, never from options: a decoder is meaningless with another codebook.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch

from utils.pipeline import methods, rows
from utils.pipeline.distributed import DistInfo, barrier, init_distributed
from utils.pipeline.errors import ConfigError, DataError
from utils.pipeline.encoder_training import best_encoding_layer
from utils.pipeline.evaluation import (EvaluationOptions, answer_token_budget, evaluate, gate_scores,
                                       summarize)
from utils.pipeline.files import atomic_write_csv
from utils.pipeline.intervention import InterventionOptions
from utils.pipeline.maps import load_maps, model_info, save_maps
from utils.pipeline.methods import BaselineOptions
from utils.pipeline.options import DataOptions, ModelOptions, RunOptions, SymbolicOptions
from utils.pipeline.paths import results_dir, run_name_or_today
from utils.pipeline.results import gate_summary, write_gate_scores, write_results
from utils.pipeline.runtime import build_llama, model_parallel_size, resolve_device
from utils.pipeline.tracking import Tracker
from utils.pipeline.training import FineTuneOptions, build_examples, samples_per_step, train
from utils.symbolic.engine import SymbolicEngine
from utils.symbolic.solver import PROBLEM_TYPES

WANDB_PROJECT = "Symbolic LLM - Fine Tune Decoders"


@dataclass
class FineTuneConfig(FineTuneOptions, InterventionOptions, EvaluationOptions, BaselineOptions, ModelOptions,
                     SymbolicOptions, DataOptions, RunOptions):
    """stage 3: decoder fine-tuning in context, evaluation and baselines"""

    config_section: ClassVar[str] = "fine_tune_decoders"
    # The engine (codebook, digits, problem list) comes from the map files.
    unused_options: ClassVar[tuple] = ("max_digits", "vsa_seed", "possible_problems")
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
        if isinstance(self.symbolic_encoding_layer, str) and self.symbolic_encoding_layer != "auto":
            raise ConfigError(f"--symbolic_encoding_layer {self.symbolic_encoding_layer!r}: expected a layer "
                              f"number or auto")

    def methods(self) -> list[str]:
        """Methods of this run, in evaluation order (the plain model first: LoRA changes the model)."""
        main = "cot" if self.cot else "lora" if self.lora_baseline else "adapter" if self.adapter_baseline else "neurosymbolic"
        if self.test_baseline == 2:
            return ["baseline"] + ([main] if main == "cot" else [])
        return (["baseline"] if self.test_baseline == 1 else []) + [main]

    def needs_maps(self) -> bool:
        m = self.methods()
        return "neurosymbolic" in m or self.test_on_unrelated_questions or (
            "adapter" in m and self.adapter_init == "stage2")


# ----------------------------------------------------------------------------- data
# Operands of a CSV must fit the engine's digit positions; without an engine, int64 is the limit.
MAX_DIGITS_WITHOUT_ENGINE = 18


def load_rows(cfg: FineTuneConfig, split: str, dp_size: int = 1, max_digits: int = MAX_DIGITS_WITHOUT_ENGINE
              ) -> tuple[pd.DataFrame, bool]:
    """(rows, from_csv) of a split: the CSV as it is (test: the evaluated types, capped per type;
    validation and training: the first rows, when capped), or the split's random rows (rows.py; training: num_steps steps of every
    data-parallel group's samples)."""
    per_type = cfg.testing_num_steps * cfg.testing_n_samples
    from_csv = bool(rows.csv_path(cfg, split))
    if from_csv:
        df = rows.read_csv_rows(cfg, split, max_digits)
        if split == "test":
            df = df[df["problem_type"].isin(cfg.testing_problems)]
            df = df.groupby("problem_type", sort=False).head(per_type) if per_type > 0 else df
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
def load_maps_for(cfg: FineTuneConfig, llama):
    """(engine, encoder weight [V,D], decoder weights {layer: [D,V]}, decoder extra) with every check."""
    if not cfg.encoder_path or not cfg.decoder_path:
        raise ConfigError("--encoder_path and --decoder_path are required for the neurosymbolic model, "
                          "the stage-2 adapter and the gate statistics")
    info = model_info(llama.fingerprint, llama.args.dim, llama.args.n_layers)
    enc = load_maps(cfg.encoder_path, "encoder", model_info=info)
    engine = SymbolicEngine.from_state_dict(enc.engine_state)
    dec = load_maps(cfg.decoder_path, "decoder", engine=engine, model_info=info)
    if cfg.symbolic_encoding_layer not in enc.weights:
        raise DataError(f"{cfg.encoder_path}: no encoder for layer {cfg.symbolic_encoding_layer} "
                        f"(--symbolic_encoding_layer); the file has layers {enc.layers}")
    engine.to(llama.device)
    enc_w = enc.weights[cfg.symbolic_encoding_layer]
    if cfg.decoder_init == "zero":  # the decoding layers need not have been gathered in stage 1
        return engine, enc_w, {l: torch.zeros(enc_w.shape[1], enc_w.shape[0]) for l in cfg.symbolic_decoding_layers}, dec.extra
    missing = [l for l in cfg.symbolic_decoding_layers if l not in dec.weights]
    if missing:
        raise DataError(f"{cfg.decoder_path}: no decoder for layer(s) {missing} (--symbolic_decoding_layers); "
                        f"the file has layers {dec.layers} (--decoder_init zero starts without them)")
    return engine, enc_w, {l: dec.weights[l] for l in cfg.symbolic_decoding_layers}, dec.extra


def resolve_encoding_layer(cfg: FineTuneConfig, llama) -> None:
    """--symbolic_encoding_layer auto: the layer with the best stage-2 validation accuracy (x, y and
    type all decoded) stored in the encoder file, not after the first decoding layer. It replaces
    "auto" in cfg, so the run's config.yaml records the layer used."""
    if cfg.symbolic_encoding_layer != "auto":
        return
    if not cfg.encoder_path:
        raise ConfigError("--symbolic_encoding_layer auto needs --encoder_path (the stage-2 file holds the "
                          "validation accuracy of every layer)")
    enc = load_maps(cfg.encoder_path, "encoder",
                    model_info=model_info(llama.fingerprint, llama.args.dim, llama.args.n_layers))
    accuracy = enc.extra.get("val_all_accuracy")
    if not accuracy:
        raise DataError(f"{cfg.encoder_path}: no validation accuracy per layer in the file (written by an "
                        f"older stage 2); rerun stage 2 or give --symbolic_encoding_layer a layer number")
    cfg.symbolic_encoding_layer = best_encoding_layer(accuracy, min(cfg.symbolic_decoding_layers))
    print(f"--symbolic_encoding_layer auto: layer {cfg.symbolic_encoding_layer} (validation accuracy "
          f"{accuracy[cfg.symbolic_encoding_layer]:.3f}, x, y and type all decoded)")


def save_decoder(cfg: FineTuneConfig, run: str, method, engine, llama) -> Path:
    """The fine-tuned decoder beside the input one, as <stem>_post_fine_tuning_<run>.pth (checked
    format, with the trained merge parameters)."""
    src = Path(cfg.decoder_path).expanduser()
    out = src.with_name(f"{src.stem}_post_fine_tuning_{run}.pth")
    iv = method.intervention
    weights = {l: iv.decoders[str(l)].weight for l in iv.dec_layers}
    extra = {"fine_tuned_from": str(src), "run_name": run, "merge": cfg.merge_mode(),
             "merge_state": iv.merge_state(), "symbolic_encoding_layer": cfg.symbolic_encoding_layer}
    return save_maps(out, "decoder", weights, engine.state_dict(),
                     model_info(llama.fingerprint, llama.args.dim, llama.args.n_layers), extra)


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
    info: DistInfo = init_distributed(device, mp)
    torch.manual_seed(cfg.seed)
    llama = build_llama(cfg, max_batch_size=max(cfg.eval_batch_size, cfg.n_samples), device=device)
    names = cfg.methods()
    if cfg.needs_maps() or "adapter" in names:  # the methods that read and write residual layers
        resolve_encoding_layer(cfg, llama)
        cfg.validate_layers(llama.args.n_layers)
    engine = enc_w = dec_ws = None
    dec_extra: dict = {}
    if cfg.needs_maps():
        engine, enc_w, dec_ws, dec_extra = load_maps_for(cfg, llama)
    problem_list = list(engine.possible_problems) if engine is not None else list(PROBLEM_TYPES)
    out_dir = results_dir(run_name, cfg.programs_dir)
    tracker = Tracker(out_dir, project=cfg.wandb_project or WANDB_PROJECT, run_name=run_name, config=cfg,
                      log_wandb=cfg.log_wandb, enabled=info.is_main)

    trained = (any(m in names for m in ("neurosymbolic", "lora", "adapter")) and cfg.test_baseline != 2
               and cfg.num_epochs > 0)
    ex_kw = dict(seed=cfg.seed, complexity=cfg.complexity, limit_solution_digits=cfg.limit_solution_digits,
                 problem_list=problem_list)
    max_digits = engine.max_digits if engine is not None else MAX_DIGITS_WITHOUT_ENGINE
    test_rows, _ = load_rows(cfg, "test", max_digits=max_digits)
    if trained:
        train_rows, from_csv = load_rows(cfg, "train", info.dp_size, max_digits)
        val_rows, _ = load_rows(cfg, "val", max_digits=max_digits)
        train_ex = build_examples(train_rows, llama.formatter, "train", **ex_kw)
        val_ex = build_examples(val_rows, llama.formatter, "val", **ex_kw)
    eval_kw = dict(batch_size=cfg.eval_batch_size, seen_types=cfg.problem_type, problem_list=problem_list, info=info)
    short = answer_token_budget(llama.tokenizer, cfg.complexity, cfg.limit_solution_digits)

    responses, ns_method = [], None
    for name in names:
        if name == "baseline":
            method = methods.plain()
        elif name == "cot":
            method = methods.plain("cot", prompt="cot")
        elif name == "neurosymbolic":
            method = ns_method = methods.neurosymbolic(
                llama.model, engine, enc_w, dec_ws, cfg, lr=cfg.learning_rate, complexity=cfg.complexity,
                limit_solution_digits=cfg.limit_solution_digits)
            if "post_fine_tuning" in Path(cfg.decoder_path).name:
                method.intervention.load_merge_state(dec_extra.get("merge_state", {}))
        elif name == "adapter":
            w_enc = enc_w if enc_w is not None else torch.zeros(cfg.VSA_dim, llama.args.dim)
            w_dec = dec_ws if dec_ws is not None else {l: torch.zeros(llama.args.dim, cfg.VSA_dim)
                                                       for l in cfg.symbolic_decoding_layers}
            method = methods.adapter(llama.model, w_enc, w_dec, cfg, lr=cfg.learning_rate,
                                       init=cfg.adapter_init, seed=cfg.seed)
        else:
            method = methods.lora(llama.model, cfg, cfg.seed)
        if method.params and trained:
            tracker.log({f"{name}/trainable_parameters": sum(p.numel() for p in method.params)})

            def validate(epoch, method=method):
                df = evaluate(llama, method, val_ex, max_new_tokens=short, desc=f"val {method.name}", **eval_kw)
                return {"accuracy": float(df["correct"].mean()), "cross_entropy": float(df["cross_entropy"].mean())}

            train(llama, method, train_ex, cfg, from_csv=from_csv, seed=cfg.seed, tracker=tracker, info=info,
                  validate=validate)
            if name == "neurosymbolic" and info.is_main:
                path = save_decoder(cfg, run_name, method, engine, llama)
                print(f"fine-tuned decoder: {path}")
        test_ex = build_examples(test_rows, llama.formatter, "test", prompt=method.prompt, **ex_kw)
        budget = cfg.cot_max_new_tokens if method.prompt == "cot" else short
        responses.append(evaluate(llama, method, test_ex, max_new_tokens=budget, desc=f"test {name}", **eval_kw))

    gates = None
    if cfg.test_on_unrelated_questions:
        gates = unrelated_gate_scores(cfg, llama, ns_method or methods.neurosymbolic(
            llama.model, engine, enc_w, dec_ws, cfg, lr=0.0, complexity=cfg.complexity,
            limit_solution_digits=cfg.limit_solution_digits, train=False), test_rows, ex_kw, info)
    if info.is_main:
        write_outputs(cfg, out_dir, tracker, pd.concat(responses, ignore_index=True), gates)
    tracker.finish()
    barrier(info)
    return 0


def unrelated_gate_scores(cfg, llama, method, test_rows, ex_kw, info) -> pd.DataFrame:
    """Gate scores of seen math, unseen math and non-math prompts (the paper's gate figure)."""
    from utils.symbolic.prompts import non_math_dialog, non_math_questions

    math_ex = build_examples(test_rows, llama.formatter, "test", **ex_kw)
    topics = non_math_questions()
    other = [llama.formatter.encode_dialog_prompt(non_math_dialog(q)) for _, q in topics]
    s_math = gate_scores(llama, method, math_ex.prompts, batch_size=cfg.eval_batch_size, info=info, desc="gate math")
    s_other = gate_scores(llama, method, other, batch_size=cfg.eval_batch_size, info=info, desc="gate non-math")
    seen = test_rows["problem_type"].isin(cfg.problem_type)
    return pd.concat([
        pd.DataFrame({"group": ["seen math" if s else "unseen math" for s in seen],
                      "problem_type": test_rows["problem_type"], "score": s_math.numpy()}),
        pd.DataFrame({"group": "non-math", "problem_type": [t for t, _ in topics], "score": s_other.numpy()}),
    ], ignore_index=True)


def write_outputs(cfg, out_dir: Path, tracker, responses: pd.DataFrame, gates) -> None:
    results = summarize(responses)
    paths = write_results(out_dir, results, title=f"Results of run {out_dir.name}")
    if cfg.save_responses:
        atomic_write_csv(responses, out_dir / "responses.csv")
    for r in results.itertuples(index=False):
        tracker.log({f"test/{r.method}/{r.problem_type}/accuracy": r.accuracy,
                     f"test/{r.method}/{r.problem_type}/cross_entropy": r.cross_entropy})
    if gates is None and cfg.record_score_per_problem >= 2 and responses["gate_score"].notna().any():
        ns = responses[responses["method"] == "neurosymbolic"]
        if len(ns):
            gates = pd.DataFrame({"group": ["seen math" if s else "unseen math" for s in ns["seen"]],
                                  "problem_type": ns["problem_type"].values, "score": ns["gate_score"].values})
    if gates is not None:
        gp = write_gate_scores(out_dir, gates, cfg.problem_score_threshold)
        tracker.log(gate_summary(gates, cfg.problem_score_threshold))
        tracker.log_image("gate_scores", gp["png"])
    tracker.log_image("results", paths["png"])
    print(paths["md"].read_text())
