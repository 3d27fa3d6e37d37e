"""Stage 3: fine-tune the decoder in context, evaluate per problem type, and run the baselines.

    python Programs/fine_tune_decoders.py --run_name R --encoder_path E --decoder_path D [--test_baseline 0|1|2]
        [--training_data_df_path ... --val_data_df_path ... --testing_data_df_path ...]
    ... --lora_baseline 1 | --adapter_baseline 1 | --cot 1 | --test_on_unrelated_questions 1

Outputs in Programs/results/R/: results.csv/.md/.png, responses.csv, metrics.jsonl, config.yaml
(and gate_scores.csv/.png); the fine-tuned decoder beside the input one as
<decoder stem>_post_fine_tuning_R.pth (same checked file format).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils import baselines  # noqa: E402
from utils.baselines import BaselineOptions  # noqa: E402
from utils.config import (DataOptions, ModelOptions, RunOptions, SymbolicOptions, parse_config,  # noqa: E402
                          register)
from utils.distributed import DistInfo, barrier, init_distributed, resolve_model_parallel_size  # noqa: E402
from utils.errors import ConfigError, DataError, run_entry_point  # noqa: E402
from utils.evaluation import EvaluationOptions, evaluate, gate_scores, summarize  # noqa: E402
from utils.intervention import InterventionOptions  # noqa: E402
from utils.pipeline.runtime import resolve_device  # noqa: E402
from utils.paths import results_dir, run_name_or_today  # noqa: E402
from utils.results import atomic_write_csv, gate_summary, write_gate_scores, write_results  # noqa: E402
from utils.tracking import Tracker  # noqa: E402
from utils.training import FineTuneOptions, build_examples, samples_per_step, train  # noqa: E402

WANDB_PROJECT = "Symbolic LLM - Fine Tune Decoders"


@register
@dataclass
class FineTuneConfig(RunOptions, ModelOptions, SymbolicOptions, DataOptions, InterventionOptions,
                     FineTuneOptions, EvaluationOptions, BaselineOptions):
    """Stage 3: decoder fine-tuning in context, evaluation and baselines."""

    config_section: ClassVar[str] = "fine_tune_decoders"

    def validate(self) -> None:
        if sum([self.lora_baseline, self.adapter_baseline, self.cot]) > 1:
            raise ConfigError("choose at most one of --lora_baseline, --adapter_baseline, --cot per run")
        for name in ("n_samples", "inference_to_backprop_ratio", "eval_batch_size", "num_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1")

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
def _split_seed(seed: int, split: str) -> int:
    return seed * 1000 + {"train": 1, "val": 2, "test": 3}[split]


def load_rows(cfg: FineTuneConfig, split: str, dp_size: int = 1) -> tuple[pd.DataFrame, bool]:
    """(rows, from_csv) of a split: the CSV as it is (test: capped per type), or random problems
    (training: num_steps steps of every data-parallel group's samples)."""
    from utils.problems import generate_problems, load_problems_csv

    path = {"train": cfg.training_data_df_path, "val": cfg.val_data_df_path, "test": cfg.testing_data_df_path}[split]
    kw = dict(complexity=cfg.complexity, limit_solution_digits=cfg.limit_solution_digits)
    per_type = cfg.testing_num_steps * cfg.testing_n_samples
    if path:
        rows = load_problems_csv(path, max_digits=cfg.max_digits, **kw)
        if split == "test":
            rows = rows[rows["problem_type"].isin(cfg.testing_problems)]
            rows = rows.groupby("problem_type", sort=False).head(per_type) if per_type > 0 else rows
        if split == "val" and cfg.validation_rows > 0:
            rows = rows.head(cfg.validation_rows)
    elif split == "test":
        rows = pd.concat([generate_problems(per_type, [t], x_gt_y=cfg.x_gt_y, seed=_split_seed(cfg.seed, split) + 7 * i, **kw)
                          for i, t in enumerate(cfg.testing_problems)], ignore_index=True)
    else:
        n = cfg.num_steps * samples_per_step(cfg, dp_size) if split == "train" else cfg.validation_rows
        rows = generate_problems(n, cfg.problem_type, x_gt_y=cfg.x_gt_y, seed=_split_seed(cfg.seed, split), **kw)
    rows = rows.reset_index(drop=True)
    if split == "test" and rows.empty:
        raise DataError(f"{path or 'random test problems'}: no test rows of the evaluated problem types "
                        f"{cfg.testing_problems}")
    if split == "train" and rows.empty:
        raise DataError(f"{path}: the training split is empty")
    return rows, bool(path)


# ----------------------------------------------------------------------------- model and maps
def load_maps_for(cfg: FineTuneConfig, llama):
    """(engine, encoder weight [V,D], decoder weights {layer: [D,V]}, decoder extra) with every check."""
    from utils.networks import load_maps, model_info
    from utils.symbolic_engine import SymbolicEngine

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
    missing = [l for l in cfg.symbolic_decoding_layers if l not in dec.weights]
    if missing:
        raise DataError(f"{cfg.decoder_path}: no decoder for layer(s) {missing} (--symbolic_decoding_layers); "
                        f"the file has layers {dec.layers}")
    engine.to(llama.device)
    return engine, enc.weights[cfg.symbolic_encoding_layer], {l: dec.weights[l] for l in cfg.symbolic_decoding_layers}, dec.extra


def model_parallel_size(cfg) -> int:
    """--model_parallel_size, or (0) the number of .pth shards of the checkpoint."""
    return resolve_model_parallel_size(cfg.model_parallel_size, Path(cfg.chpt_dir).expanduser())


def build_llama(cfg: FineTuneConfig, device: str):
    from utils.llama.generation import Llama
    from utils.pipeline.runtime import resolve_dtype

    llama = Llama.build(Path(cfg.chpt_dir).expanduser(), tokenizer_path=cfg.tokenizer_path or None,
                        max_seq_len=cfg.max_seq_len, max_batch_size=max(cfg.eval_batch_size, cfg.n_samples),
                        device=device, dtype=resolve_dtype(cfg.dtype, device), model_parallel_size=model_parallel_size(cfg))
    llama.model.eval()
    for p in llama.model.parameters():
        p.requires_grad_(False)  # frozen: only the method's own parameters train
    return llama


def save_decoder(cfg: FineTuneConfig, run: str, method, engine, llama) -> Path:
    from utils.networks import model_info, save_maps

    src = Path(cfg.decoder_path).expanduser()
    out = src.with_name(f"{src.stem}_post_fine_tuning_{run}.pth")
    iv = method.intervention
    weights = {l: iv.decoders[str(l)].weight for l in iv.dec_layers}
    extra = {"fine_tuned_from": str(src), "run_name": run, "merge": cfg.merge_mode(),
             "merge_state": iv.merge_state(), "symbolic_encoding_layer": cfg.symbolic_encoding_layer}
    return save_maps(out, "decoder", weights, engine.state_dict(),
                     model_info(llama.fingerprint, llama.args.dim, llama.args.n_layers), extra)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    cfg = parse_config(FineTuneConfig, argv, __doc__)
    run = run_name_or_today(cfg.run_name)
    device = str(resolve_device(cfg.device))
    mp = model_parallel_size(cfg)
    if cfg.lora_baseline and mp > 1:
        raise ConfigError(f"--lora_baseline 1 needs model-parallel size 1 (peft wraps torch Linear layers, not "
                          f"fairscale's parallel ones), got {mp}: reshard the checkpoint to one shard "
                          f"(Programs/reshard_checkpoint.py) and scale out with data parallelism")
    info: DistInfo = init_distributed(device, mp)
    torch.manual_seed(cfg.seed)
    llama = build_llama(cfg, device)
    cfg.validate_layers(llama.args.n_layers)
    methods = cfg.methods()
    engine = enc_w = dec_ws = None
    dec_extra: dict = {}
    if cfg.needs_maps():
        engine, enc_w, dec_ws, dec_extra = load_maps_for(cfg, llama)
    problem_list = list(engine.possible_problems) if engine is not None else list(cfg.possible_problems)
    out_dir = results_dir(run, cfg.programs_dir)
    tracker = Tracker(out_dir, project=cfg.wandb_project or WANDB_PROJECT, run_name=run, config=cfg,
                      log_wandb=cfg.log_wandb, enabled=info.is_main)

    trained = any(m in methods for m in ("neurosymbolic", "lora", "adapter")) and cfg.test_baseline != 2
    ex_kw = dict(seed=cfg.seed, complexity=cfg.complexity, limit_solution_digits=cfg.limit_solution_digits,
                 problem_list=problem_list)
    test_rows, _ = load_rows(cfg, "test")
    if trained:
        (train_rows, from_csv), (val_rows, _) = load_rows(cfg, "train", info.dp_size), load_rows(cfg, "val")
        train_ex = build_examples(train_rows, llama.formatter, "train", **ex_kw)
        val_ex = build_examples(val_rows, llama.formatter, "val", **ex_kw)
    eval_kw = dict(batch_size=cfg.eval_batch_size, seen_types=cfg.problem_type, problem_list=problem_list, info=info)
    short = cfg.complexity + 5  # new-token budget of a bare-integer answer (METHOD §6.2)

    responses, ns_method = [], None
    for name in methods:
        if name == "baseline":
            method = baselines.plain()
        elif name == "cot":
            method = baselines.plain("cot", prompt="cot")
        elif name == "neurosymbolic":
            method = ns_method = baselines.neurosymbolic(
                llama.model, engine, enc_w, dec_ws, cfg, lr=cfg.learning_rate, complexity=cfg.complexity,
                limit_solution_digits=cfg.limit_solution_digits)
            if "post_fine_tuning" in Path(cfg.decoder_path).name:
                method.intervention.load_merge_state(dec_extra.get("merge_state", {}))
        elif name == "adapter":
            w_enc = enc_w if enc_w is not None else torch.zeros(cfg.VSA_dim, llama.args.dim)
            w_dec = dec_ws if dec_ws is not None else {l: torch.zeros(llama.args.dim, cfg.VSA_dim)
                                                       for l in cfg.symbolic_decoding_layers}
            method = baselines.adapter(llama.model, w_enc, w_dec, cfg, lr=cfg.learning_rate,
                                       init=cfg.adapter_init, seed=cfg.seed)
        else:
            method = baselines.lora(llama.model, cfg, cfg.seed)
        if method.params and trained:
            tracker.log({f"{name}/trainable_parameters": sum(p.numel() for p in method.params)})

            def validate(epoch, method=method):
                df = evaluate(llama, method, val_ex, max_new_tokens=short, desc=f"val {method.name}", **eval_kw)
                return {"accuracy": float(df["correct"].mean()), "cross_entropy": float(df["cross_entropy"].mean())}

            train(llama, method, train_ex, cfg, from_csv=from_csv, seed=cfg.seed, tracker=tracker, info=info,
                  validate=validate)
            if name == "neurosymbolic" and info.is_main:
                path = save_decoder(cfg, run, method, engine, llama)
                print(f"fine-tuned decoder: {path}")
        test_ex = build_examples(test_rows, llama.formatter, "test", prompt=method.prompt, **ex_kw)
        budget = cfg.cot_max_new_tokens if method.prompt == "cot" else short
        responses.append(evaluate(llama, method, test_ex, max_new_tokens=budget, desc=f"test {name}", **eval_kw))

    gates = None
    if cfg.test_on_unrelated_questions:
        gates = unrelated_gate_scores(cfg, llama, ns_method or baselines.neurosymbolic(
            llama.model, engine, enc_w, dec_ws, cfg, lr=0.0, complexity=cfg.complexity,
            limit_solution_digits=cfg.limit_solution_digits, train=False), test_rows, ex_kw, info)
    if info.is_main:
        write_outputs(cfg, out_dir, tracker, pd.concat(responses, ignore_index=True), gates)
    tracker.finish()
    barrier(info)
    return 0


def unrelated_gate_scores(cfg, llama, method, test_rows, ex_kw, info) -> pd.DataFrame:
    """Gate scores of seen math, unseen math and non-math prompts (the paper's gate figure)."""
    from utils.problems import non_math_dialog, non_math_questions

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


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
