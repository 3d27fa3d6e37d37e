"""Stage 3: fine-tune the decoder inside the frozen model, evaluate every method on the same rows,
and write the results (the library behind fine_tune_decoders.py; its options: configs.FineTuneConfig,
its inputs: fine_tune_inputs.py).

A run evaluates one main method (the neurosymbolic model, or a baseline: LoRA, the paper's adapter
row, chain of thought) and optionally the plain model first (--test_baseline) and read and print, on
the same test rows (rows.py); method_table.py lists them. With --two_step_questions the plain model, read
and print and the neurosymbolic model also answer questions that use the answer once more
(symbolic/two_step.py, two_step.{csv,md}). The trained methods train on the same
training rows for the same steps. The VSA engine comes from the stage-2 map files, never from
options: a decoder is meaningless with another codebook (config_fine_tune.yaml records the engine
that was used). "Seen" types are the ones the maps were trained on.

Nothing is lost and runs do not mix: one process per run name (locks.py); the output folders are
checked for write access and room before the model loads and before training; training saves its
state (train_state.py) and a rerun with the same run name resumes from it; results.csv comes with
fingerprints.json (test rows, model, codebook, seen types) so that compare_runs only merges runs
made on the same things. A neurosymbolic run also writes what it evaluated as one shareable artefact,
results/<run>/intervention/ (artefact.py), which nsllm ask reads.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from neurosymbolic_llm.pipeline import artefact, gate_scores, methods
from neurosymbolic_llm.pipeline.configs import EvaluationOptions, FineTuneConfig
from neurosymbolic_llm.pipeline.distributed import DistInfo, barrier, init_distributed
from neurosymbolic_llm.pipeline.errors import ConfigError, Interrupted, Terminated
from neurosymbolic_llm.pipeline.evaluation import answer_token_budget, evaluate, summarize
from neurosymbolic_llm.pipeline.files import MiB, atomic_write_csv, check_output_folders
from neurosymbolic_llm.pipeline.fine_tune_run import FineTuneRun, example_options
from neurosymbolic_llm.pipeline.fine_tune_inputs import (MAX_DIGITS_WITHOUT_ENGINE, check_maps_unchanged, load_maps_for,
                                                         load_rows, map_fingerprints, seen_types, used_config)
from neurosymbolic_llm.llama.identity import content_digest, tokenizer_digest
from neurosymbolic_llm.pipeline.locks import stage_lock
from neurosymbolic_llm.pipeline.maps import model_info_of, save_maps
from neurosymbolic_llm.pipeline.method_table import TWO_STEP_METHODS, label
from neurosymbolic_llm.pipeline.options import to_dict
from neurosymbolic_llm.pipeline.paths import decoder_output_path, results_dir, run_name_or_today
from neurosymbolic_llm.pipeline.gate import Gate
from neurosymbolic_llm.pipeline.results import (gate_summary, headline_summary, rows_fingerprint, write_fingerprints,
                                                write_gate_scores, write_results)
from neurosymbolic_llm.pipeline.runtime import build_llama, model_parallel_size, resolve_device
from neurosymbolic_llm.pipeline.tracking import Tracker
from neurosymbolic_llm.pipeline.train_state import FILE_NAME as STATE_FILE
from neurosymbolic_llm.pipeline.train_state import TrainingState
from neurosymbolic_llm.pipeline.training import build_examples, samples_per_step, train
from neurosymbolic_llm.pipeline.two_step_report import with_follow_ups, write_two_step
from neurosymbolic_llm.symbolic import two_step

STAGE = "fine_tune_decoders"  # the name of its lock (locks.py)


def save_decoder(run: FineTuneRun, method) -> Path:
    """The fine-tuned decoder beside the input one, as <stem>_post_fine_tuning_<run>.pth (checked
    format, with the trained merge parameters), if the input maps are still those of the start."""
    cfg = run.cfg
    check_maps_unchanged(cfg, run.maps_at_start)
    src = Path(cfg.decoder_path).expanduser()
    out = decoder_output_path(cfg, run.name)
    iv = method.intervention
    weights = {l: iv.decoders[str(l)].weight for l in iv.dec_layers}
    extra = {"fine_tuned_from": str(src), "fine_tuned_from_fingerprint": run.maps_at_start["decoder"],
             "run_name": run.name, "merge": cfg.merge_mode(), "merge_state": iv.merge_state(),
             "symbolic_encoding_layer": cfg.symbolic_encoding_layer}
    return save_maps(out, "decoder", weights, run.engine.state_dict(), model_info_of(run.llama), extra,
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
    return {"method": method_name, "model": llama.fingerprint, "model_content": content_digest(llama.ckpt_dir),
            "tokenizer": tokenizer_digest(llama.tokenizer), **maps, "train_rows": rows_fingerprint(train_rows),
            "n_train_rows": len(train_rows), "data_parallel_groups": dp_size, "options": options}


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
    run = _open(cfg, run_name, device, out_dir, info)
    cfg = run.cfg
    responses, two_step_responses, ns_method, evaluating = [], [], None, False
    try:
        for name in cfg.methods():
            evaluating = False
            method = methods.build(name, cfg, run.llama, run.maps)
            if name == "neurosymbolic":
                ns_method = method
            if method.params and cfg.trained_method():
                _train(run, method)
                if name == "neurosymbolic" and info.is_main:
                    run.written["fine-tuned decoder"] = save_decoder(run, method)
            evaluating = True
            responses.append(_evaluate(run, method))
            if run.two_step is not None and name in TWO_STEP_METHODS:
                two_step_responses.append(_evaluate_two_step(run, method))
            if name == "neurosymbolic" and info.is_main:
                run.written["intervention artefact"] = _save_artefact(run, method)
        gate_df = _gate_scores(run, ns_method) if cfg.test_on_unrelated_questions else None
    except KeyboardInterrupt as exc:
        raise _interrupted(exc, run.state, evaluating) from None
    if info.is_main:
        write_outputs(run, pd.concat(responses, ignore_index=True), gate_df,
                      pd.concat(two_step_responses, ignore_index=True) if two_step_responses else None)
        _write_fingerprints(run)
    run.tracker.finish()
    barrier(info)
    return 0


def _open(cfg: FineTuneConfig, run_name: str, device: str, out_dir: Path, info: DistInfo) -> FineTuneRun:
    """The run object: the model, the maps, the rows (training and validation ones tokenised), the
    seen types, the training state (a saved state of other settings is refused here, before the
    tracker records anything) and the tracker."""
    torch.manual_seed(cfg.seed)
    llama = build_llama(cfg, max_batch_size=max(cfg.eval_batch_size, cfg.n_samples), device=device,
                        say=print if info.is_main else None)
    maps_at_start = map_fingerprints(cfg)  # the maps this run loads; checked again before its decoder is saved
    maps = load_maps_for(cfg, llama) if cfg.needs_maps() else None
    asked_layer = cfg.symbolic_encoding_layer
    cfg = used_config(cfg, maps, llama)
    engine = maps.engine if maps is not None else None
    max_digits = engine.max_digits if engine is not None else MAX_DIGITS_WITHOUT_ENGINE
    ex_kw = example_options(cfg, engine)

    test_rows, _ = load_rows(cfg, "test", max_digits=max_digits)
    trained = cfg.trained_method()
    train_rows = train_ex = val_ex = state = None
    from_csv = False
    if trained:
        train_rows, from_csv = load_rows(cfg, "train", info.dp_size, max_digits)
        val_rows, _ = load_rows(cfg, "val", max_digits=max_digits)
        train_ex = build_examples(train_rows, llama.formatter, "train", **ex_kw)
        val_ex = build_examples(val_rows, llama.formatter, "val", **ex_kw)
    seen, seen_from = seen_types(cfg, maps, train_rows, max_digits)
    if info.is_main:
        print(f"seen types: {', '.join(seen)} (from {seen_from})")
    if trained:
        identity = training_identity(cfg, trained, llama, train_rows, info.dp_size, maps_at_start)
        state = TrainingState(out_dir / STATE_FILE, identity,
                              every=cfg.checkpoint_every, restart=cfg.restart, enabled=info.is_main)
        state.load()
    tracker = Tracker(out_dir, stage="fine_tune", run_name=run_name, config=cfg, project=cfg.wandb_project,
                      group=cfg.wandb_group, label="+".join(cfg.methods()), log_wandb=cfg.log_wandb,
                      enabled=info.is_main)
    if engine is not None:  # the engine is the map file's, whatever the options say
        tracker.record_used({"VSA_dim": engine.VSA_dim, "max_digits": engine.max_digits, "vsa_seed": engine.seed,
                             "possible_problems": list(engine.possible_problems),
                             "engine_fingerprint": engine.fingerprint()}, source=f"engine of {cfg.encoder_path}")
    tracker.record_used({"seen_types": seen}, source=seen_from)
    if asked_layer == "auto" and cfg.symbolic_encoding_layer != "auto":
        tracker.record_used({"symbolic_encoding_layer": cfg.symbolic_encoding_layer},
                            source=f"--symbolic_encoding_layer auto: the best validation layer of {cfg.encoder_path}")
    budget = answer_token_budget(llama.tokenizer, cfg.complexity, cfg.limit_solution_digits)
    two_step_rows = _two_step_rows(cfg, test_rows, seen, info)
    return FineTuneRun(cfg=cfg, name=run_name, out_dir=out_dir, info=info, llama=llama, maps=maps,
                       maps_at_start=maps_at_start, test_rows=test_rows, seen=seen, seen_from=seen_from,
                       tracker=tracker, budget=budget, train_rows=train_rows, from_csv=from_csv,
                       train_ex=train_ex, val_ex=val_ex, state=state, two_step=two_step_rows)


def _train(run: FineTuneRun, method) -> None:
    """Train `method` on the run's training rows, validating after epochs (--validation_interval)."""
    cfg, info = run.cfg, run.info
    n_params = sum(p.numel() for p in method.params)
    run.tracker.summary({f"{method.name}/trainable_parameters": n_params})
    steps = cfg.num_epochs * (len(run.train_rows) // samples_per_step(cfg, info.dp_size) + 1)
    if info.is_main:  # room for the state, the decoder and the results, before any step
        check_output_folders(output_needs(cfg, run.name, run.out_dir, n_test=len(run.test_rows), params=n_params,
                                          n_train=len(run.train_rows), steps=steps))

    def validate(epoch):
        df = evaluate(run.llama, method, run.val_ex, max_new_tokens=run.budget, desc=f"val {label(method.name)}",
                      **run.evaluation_options())
        return {"accuracy": float(df["correct"].mean()), "cross_entropy": float(df["cross_entropy"].mean())}

    train(run.llama, method, run.train_ex, cfg, from_csv=run.from_csv, seed=cfg.seed, tracker=run.tracker, info=info,
          validate=validate, state=run.state)


def _evaluate(run: FineTuneRun, method) -> pd.DataFrame:
    """The method's responses on the run's test rows (asked as --modify_question_format and
    --test_with_non_numerical_rep say)."""
    test_ex = run.examples(run.test_rows, "test", prompt=method.prompt, vary_format=run.cfg.modify_question_format,
                           words=run.cfg.test_with_non_numerical_rep)
    return evaluate(run.llama, method, test_ex, max_new_tokens=run.test_budget(method),
                    desc=f"test {label(method.name)}", **run.evaluation_options())


def _two_step_rows(cfg: FineTuneConfig, test_rows: pd.DataFrame, seen: list[str], info: DistInfo):
    """The two-step questions of --two_step_questions (symbolic/two_step.py), or None."""
    if not cfg.two_step_questions:
        return None
    rows = two_step.two_step_rows(test_rows, seen, cfg.two_step_questions)
    if info.is_main:
        print(f"two-step questions: {len(rows)} ({cfg.two_step_questions} per seen type at most, from the test rows)")
    return rows if len(rows) else None


def _evaluate_two_step(run: FineTuneRun, method) -> pd.DataFrame:
    """The method's responses on the two-step questions (two_step_report.CSV_COLUMNS): asked in the rows'
    own text with digits; the budget holds the answer's extra digit (2 * v, v + 1)."""
    ex = run.examples(run.two_step, "two_step", prompt=method.prompt)
    budget = answer_token_budget(run.llama.tokenizer, run.cfg.complexity, run.cfg.limit_solution_digits,
                                 extra_digits=two_step.EXTRA_DIGITS)
    df = evaluate(run.llama, method, ex, max_new_tokens=budget, desc=f"two-step {label(method.name)}",
                  **run.evaluation_options())
    return with_follow_ups(df, run.two_step) if run.info.is_main else df


def _gate_scores(run: FineTuneRun, ns_method) -> pd.DataFrame:
    """The gate's scores on the test rows and on non-math questions (--test_on_unrelated_questions)."""
    method = ns_method or methods.build("neurosymbolic", run.cfg, run.llama, run.maps, train=False)
    return gate_scores.unrelated_gate_scores(run.cfg, run.llama, method, run.test_rows, run.example_options(),
                                             run.seen, run.info)


def _save_artefact(run: FineTuneRun, method) -> Path:
    """What was evaluated, as one shareable artefact (results/<run>/intervention/, artefact.py)."""
    art = artefact.from_method(run.cfg, method.intervention, model=model_info_of(run.llama), run=run.name,
                               trained_types=run.seen)
    return artefact.save_intervention(run.out_dir / artefact.FOLDER_NAME, art)


def _write_fingerprints(run: FineTuneRun) -> None:
    """fingerprints.json: what compare_runs checks before it merges runs."""
    engine = run.engine
    write_fingerprints(run.out_dir, {
        "test_rows": rows_fingerprint(run.test_rows), "n_test_rows": len(run.test_rows),
        "model": run.llama.fingerprint, "codebook": engine.fingerprint() if engine is not None else None,
        "seen_types": sorted(run.seen), "seen_from": run.seen_from,
        "test_questions": {"modify_question_format": run.cfg.modify_question_format,
                           "test_with_non_numerical_rep": run.cfg.test_with_non_numerical_rep}})


def _interrupted(exc: KeyboardInterrupt, state: Optional[TrainingState], evaluating: bool) -> KeyboardInterrupt:
    """The one line a Ctrl-C or SIGTERM ends the run with: what of the training was kept, and where."""
    if isinstance(exc, Interrupted) and not isinstance(exc, Terminated) or state is None:
        return exc  # train() stopped between steps and said where its state is, or nothing was trained
    what, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("Ctrl-C", 130)
    if evaluating:
        return Interrupted(f"{what} during evaluation: training is complete and saved in {state.path}; rerun "
                           f"the same command to evaluate without training again", code)
    if not state.path.is_file():
        return Interrupted(f"{what}: stopped before a training state was saved", code)
    return Interrupted(f"{what}: stopped at once; the last saved training state in {state.path} is kept; "
                       f"rerun the same command to resume from it", code)


def write_outputs(run: FineTuneRun, responses: pd.DataFrame, gate_df, two_step_df=None) -> None:
    """results.{csv,md,png}, responses.csv, the gate figure, two_step.{csv,md}; then the tables, the
    gate's open rates and where every output went, on the console."""
    cfg, out_dir, tracker = run.cfg, run.out_dir, run.tracker
    results = summarize(responses)
    paths = write_results(out_dir, results, title=f"Results of run {out_dir.name}",
                          figure_title=f"Exact-match accuracy on the test questions (run {out_dir.name})")
    tracker.table("results", results, paths["csv"])
    files = [paths["csv"], paths["md"], paths["png"]]
    if cfg.save_responses:
        files.append(atomic_write_csv(responses, out_dir / "responses.csv"))
        tracker.table("responses", responses, files[-1])
    summary = headline_summary(results)
    if gate_df is None and cfg.record_score_per_problem >= 2 and responses["gate_score"].notna().any():
        scored = responses[responses["gate_score"].notna()]
        gated = scored[scored["method"] == scored["method"].iloc[-1]]  # the gated methods share one encoder
        gate_df = pd.DataFrame({"group": ["seen math" if s else "unseen math" for s in gated["seen"]],
                                "problem_type": gated["problem_type"].values, "score": gated["gate_score"].values,
                                "gate_open": gated["gate_open"].astype(bool).values})  # the decisions made
    if gate_df is not None:
        gp = write_gate_scores(out_dir, gate_df, Gate.of(cfg))
        tracker.table("gate_scores", pd.read_csv(gp["csv"]), gp["csv"])
        summary |= gate_summary(gate_df, Gate.of(cfg))
        tracker.image("gate_scores_plot", gp["png"])
        files += [gp["csv"], gp["png"]]
    if two_step_df is not None:
        tp = write_two_step(out_dir, two_step_df)
        tracker.table("two_step", two_step_df, tp["csv"])
        summary |= {f"two_step_accuracy/{m}": float(c.mean()) for m, c in two_step_df.groupby("method")["correct"]}
        files += [tp["csv"], tp["md"]]
    tracker.image("results_plot", paths["png"])
    tracker.summary(summary)
    print(paths["md"].read_text())
    if two_step_df is not None:
        print(tp["md"].read_text())
    if gate_df is not None:
        print(f"gate (open when {Gate.of(cfg).describe()}), test questions:")
        print("\n".join(gate_scores.open_rate_lines(gate_df, Gate.of(cfg))))
    print(f"outputs in {out_dir}: {', '.join(p.name for p in files)}, {tracker.config_path.name}, metrics.jsonl")
    for what, path in run.written.items():
        print(f"{what}: {path}")
