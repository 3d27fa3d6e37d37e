"""Stage 1: record the residual stream of the frozen model at the last prompt token.

For each row of each split: build the few-shot chat prompt of the row (its examples drawn from
`prompts.row_rng(seed, split, row)`, so batching and ranks change nothing), run the model once
over a left-padded batch of prompts (no generation, no logits: the forward stops after the last
wanted layer), and keep the residual entering each configured layer at position S-1, which with left
padding is every row's last prompt token. Each row's true problem vector comes from the engine.

Everything a user can get wrong (config, checkpoint folder, layer numbers, CSV files, an existing
store made from other inputs, a read-only or full output folder) is checked before the model is
loaded, and the manifest is written only once it has loaded: a failed first attempt (a truncated
checkpoint, say) leaves nothing that would refuse the corrected rerun. One process per run name
(locks.py).
Rows are stored in shards of `save_frequency` rows (see hidden_store.py): interrupted runs resume,
finished ones are a no-op, and under torchrun each data-parallel rank takes its own shards.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from neurosymbolic_llm.llama.formats import open_checkpoint
from neurosymbolic_llm.llama.generation import left_pad
from neurosymbolic_llm.llama.identity import content_digest, tokenizer_digest
from neurosymbolic_llm.pipeline import paths, rows
from neurosymbolic_llm.pipeline.distributed import barrier, gather_objects, init_distributed, row_slice
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError, Interrupted
from neurosymbolic_llm.pipeline.files import MiB, check_output_folders
from neurosymbolic_llm.pipeline.hidden_store import HiddenStore, n_shards, shard_range
from neurosymbolic_llm.pipeline.locks import stage_lock
from neurosymbolic_llm.pipeline.options import to_dict
from neurosymbolic_llm.pipeline.runtime import (build_llama, make_engine, model_parallel_size, progress, resolve_device,
                                                resolve_dtype)
from neurosymbolic_llm.pipeline.tracking import Tracker
from neurosymbolic_llm.symbolic import prompts

STAGE = "gather_hidden_states"  # the name of its lock (locks.py)


# ----------------------------------------------------------------------------- helpers
def resolve_layers(cfg, n_layers: int) -> list[int]:
    layers = sorted(set(cfg.layer_numbers)) if cfg.layer_numbers else list(range(n_layers + 1))
    bad = [l for l in layers if not 0 <= l <= n_layers]
    if bad:
        raise ConfigError(f"--layer_numbers {bad}: out of range, this model has layers 0..{n_layers} "
                          f"(0 = embeddings, {n_layers} = output of the final norm)")
    return layers


def load_split_problems(cfg, split: str) -> tuple[pd.DataFrame, dict]:
    """The split's problems (CSV rows as given, or its random rows) and a description of the source."""
    source = rows.split_source(cfg, split)
    if "csv" in source:
        df = rows.read_csv_rows(cfg, split, cfg.max_digits)
    else:
        df = rows.draw_rows(cfg, split, source["random"])
    if len(df) == 0:
        raise DataError(f"split {split!r} has no rows ({source})")
    rows.check_types(df, cfg.possible_problems, split)
    return df, source


# ----------------------------------------------------------------------------- plan
@dataclass
class GatherPlan:
    cfg: object
    device: torch.device
    dtype: torch.dtype
    params: dict
    layers: list[int]
    splits: dict[str, pd.DataFrame]
    identity: dict
    store: HiddenStore
    engine: object
    batch_size: int
    few_shot_seed: int
    totals: dict[str, int] = field(default_factory=dict)


def plan_gather(cfg) -> GatherPlan:
    """Check every input and describe the work, without loading the model."""
    if cfg.save_frequency < 1:
        raise ConfigError(f"--save_frequency {cfg.save_frequency}: must be at least 1 row per shard")
    if cfg.n_samples < 0:
        raise ConfigError(f"--n_samples {cfg.n_samples}: must be >= 0 (0 = sized for the device)")
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    ckpt = open_checkpoint(cfg.chpt_dir, cfg.tokenizer_path or None)
    args = ckpt.args()
    params = {"dim": args.dim, "n_layers": args.n_layers}
    layers = resolve_layers(cfg, args.n_layers)
    splits, sources = {}, {}
    for split in ("train", "val", "test"):
        splits[split], sources[split] = load_split_problems(cfg, split)
    engine = make_engine(cfg)
    seed = cfg.seed if cfg.few_shot_seed < 0 else cfg.few_shot_seed
    tokenizer = tokenizer_digest(ckpt.load_tokenizer()[0])
    identity = {
        "model_fingerprint": ckpt.fingerprint(),
        "model_content": content_digest(ckpt.path),  # every byte: a resumed store never mixes two models
        "tokenizer_fingerprint": ckpt.tokenizer_fingerprint(),
        "engine_fingerprint": engine.fingerprint(),
        "layers": layers, "dtype": str(dtype).replace("torch.", ""), "dim": params["dim"],
        "rows_per_shard": cfg.save_frequency, "sources": sources,
        "prompt": {"few_shot_seed": seed, "complexity": cfg.complexity,
                   "limit_solution_digits": cfg.limit_solution_digits},
    }
    identity["model"] = {"fingerprint": identity["model_fingerprint"], "dim": params["dim"],
                         "n_layers": params["n_layers"], "ckpt_dir": str(ckpt.path.resolve()),
                         "format": ckpt.format, "weights": ckpt.weight_samples().to_json(), "tokenizer": tokenizer}
    identity["possible_problems"] = list(cfg.possible_problems)
    store = HiddenStore(paths.store_dir(cfg))
    totals = {s: len(df) for s, df in splits.items()}
    store.open_for_writing(identity, totals, to_dict(cfg), create=False)  # checks an existing store early
    batch = cfg.n_samples or (64 if device.type == "cuda" else 16)
    return GatherPlan(cfg, device, dtype, params, layers, splits, identity, store, engine,
                      batch, seed, totals)


# ----------------------------------------------------------------------------- the forward pass
class LastTokenRecorder:
    """Residual hooks that keep h[:, -1, :] of each wanted layer (position S-1 = last prompt token)."""

    def __init__(self, model, layers: list[int]):
        self.layers = layers
        self.captured: list[Optional[torch.Tensor]] = [None] * len(layers)
        self.handles = [model.register_residual_hook(l, self._hook(j)) for j, l in enumerate(layers)]

    def _hook(self, j: int):
        def fn(h, ctx):  # h [B,S,D]
            self.captured[j] = h[:, -1, :].clone()  # [B,D]; a copy, later blocks may work in place
            return None
        return fn

    def take(self) -> torch.Tensor:
        out = torch.stack(self.captured, dim=1)  # [B,L,D]
        self.captured = [None] * len(self.layers)
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def prompt_tokens(plan: GatherPlan, formatter, split: str, df: pd.DataFrame, lo: int, hi: int) -> list[list[int]]:
    """Chat-format token ids of rows lo..hi-1 (each row's few-shot examples from its own rng)."""
    cfg = plan.cfg
    rows = df.iloc[lo:hi]
    return [formatter.encode_dialog_prompt(prompts.few_shot_dialog(
                pt, q, prompts.row_rng(plan.few_shot_seed, split, i), complexity=cfg.complexity,
                limit_solution_digits=cfg.limit_solution_digits))
            for i, pt, q in zip(range(lo, hi), rows["problem_type"], rows["question"])]


@torch.inference_mode()
def record_hidden(model, recorder: LastTokenRecorder, prompts: list[list[int]], batch_size: int,
                  pad_id: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Hidden states [n, L, D] of the prompts' last tokens; prompts are batched by length (less padding)."""
    n = len(prompts)
    D = model.args.dim
    out = torch.empty(n, len(recorder.layers), D, dtype=dtype, device=device)  # [n,L,D]
    lengths = torch.tensor([len(p) for p in prompts])
    order = torch.argsort(lengths, stable=True)
    stop = max(recorder.layers)
    empty = torch.empty(0, dtype=torch.long, device=device)
    for b in range(0, n, batch_size):
        idx = order[b:b + batch_size]
        tokens, pad = left_pad([prompts[i] for i in idx.tolist()], pad_id)  # [B,S], [B]
        model(tokens.to(device), 0, pad_lengths=pad.to(device), output_positions=empty, stop_at_layer=stop)
        out[idx.to(device)] = recorder.take()
    return out


# ----------------------------------------------------------------------------- the stage
def run_gather(cfg) -> Path:
    """Gather every missing shard of every split; returns the store folder."""
    plan = plan_gather(cfg)
    info = init_distributed(plan.device.type, model_parallel_size(cfg))
    run = paths.run_name_or_today(cfg.run_name)
    with stage_lock(paths.results_dir(run, cfg.programs_dir), STAGE, run, enabled=info.is_main), \
            plan.store.writing(enabled=info.is_main):  # one writer per store, whichever run names it
        plan.store.open_for_writing(plan.identity, plan.totals, to_dict(cfg), create=False)  # again, now locked
        return _gather(cfg, plan, info, run)


def shard_bytes(plan: GatherPlan, n_rows: int) -> int:
    """Bytes of `n_rows` gathered rows on disk: hidden [L, D] in the model dtype, target [V] float32, 5 longs."""
    elem = torch.empty(0, dtype=plan.dtype).element_size()
    return n_rows * (len(plan.layers) * plan.params["dim"] * elem + plan.engine.VSA_dim * 4 + 5 * 8)


def _gather(cfg, plan: GatherPlan, info, run: str) -> Path:
    store = plan.store
    if not store.manifest_path.is_file() and store.any_shards():
        raise DataError(f"{store.root} holds shards but no manifest.json, so what they were made from is unknown; "
                        f"delete the folder or use another --run_name / --gathered_data_dir")
    todo = {}  # the shards of this rank's data-parallel group (the same for its model-parallel ranks)
    for split, total in plan.totals.items():
        n_sh = n_shards(total, cfg.save_frequency)
        mine = range(n_sh)[row_slice(n_sh, info)]
        done = store.done_shards(split, total, cfg.save_frequency)
        todo[split] = [k for k in mine if k not in done]
    n_todo = sum(shard_range(k, plan.totals[s], cfg.save_frequency)[1] - shard_range(k, plan.totals[s], cfg.save_frequency)[0]
                 for s, ks in todo.items() for k in ks)
    all_todo = sum(gather_objects(n_todo, info))
    if all_todo == 0 and store.manifest_path.is_file():  # every rank agrees: nothing left anywhere
        if info.is_main:
            print(f"gathered data in {store.root} is complete ({store.read_manifest()['rows']}); nothing to do")
        barrier(info)
        return store.root
    if info.is_main:  # before the model loads: a read-only or full folder is found in seconds
        check_output_folders({store.root: ("the gathered hidden states", shard_bytes(plan, all_todo + cfg.save_frequency)),
                              paths.results_dir(run, cfg.programs_dir): ("the run record", MiB)})
    fresh = not store.manifest_path.is_file()
    llama = build_llama(cfg, max_batch_size=plan.batch_size, device=plan.device,
                        say=(lambda line: print(line, flush=True)) if info.is_main else None) if n_todo or fresh else None
    if info.is_main:  # the manifest only once the model has loaded: a failed load leaves the folder as it was
        manifest = store.open_for_writing(plan.identity, plan.totals, to_dict(cfg))
        store.clean_temporaries()
        store.update_progress(manifest)
    barrier(info)
    if n_todo == 0:  # this group's shards are done (resumed run), others still work: wait for them
        barrier(info)
        return _finish_gather(store, info, None)

    tracker = Tracker(paths.results_dir(run, cfg.programs_dir), stage="gather", run_name=run, config=cfg,
                      project=cfg.wandb_project, group=cfg.wandb_group, log_wandb=cfg.log_wandb, enabled=info.is_main)
    manifest = store.read_manifest()
    model = llama.model
    recorder = LastTokenRecorder(model, plan.layers)
    engine = plan.engine.to(plan.device)
    bar = progress(total=n_todo, unit="prompt", enabled=info.is_main,
                   desc=f"gather (rank 0, {info.dp_size} data-parallel groups)" if info.distributed else "gather")
    t_start, n_done = time.perf_counter(), 0
    try:
        for split, shards in todo.items():
            df = plan.splits[split]
            type_ids_all = engine.type_ids(list(df["problem_type"])).cpu()  # [N]
            for k in shards:
                lo, hi = shard_range(k, plan.totals[split], cfg.save_frequency)
                t0 = time.perf_counter()
                prompts = prompt_tokens(plan, llama.formatter, split, df, lo, hi)
                too_long = max(len(p) for p in prompts)
                if too_long > cfg.max_seq_len:
                    raise ConfigError(f"{split} rows {lo}..{hi - 1}: a prompt has {too_long} tokens, "
                                      f"more than --max_seq_len {cfg.max_seq_len}")
                hidden = record_hidden(model, recorder, prompts, plan.batch_size, llama.tokenizer.pad_id,
                                       plan.device, plan.dtype)  # [n,L,D]
                x = torch.tensor(df["x"].to_numpy()[lo:hi], dtype=torch.long)
                y = torch.tensor(df["y"].to_numpy()[lo:hi], dtype=torch.long)
                tid = type_ids_all[lo:hi]
                targets = engine.encode_problem(x.to(plan.device), y.to(plan.device), tid.to(plan.device))  # [n,V]
                if info.is_writer:  # one writer per data-parallel group (its model-parallel peers hold the same rows)
                    store.write_shard(split, k, {"hidden": hidden, "targets": targets.float(),
                                                 "row": torch.arange(lo, hi), "type_id": tid, "x": x, "y": y})
                if not info.distributed:
                    manifest = store.update_progress(manifest)
                dt = time.perf_counter() - t0
                bar.update(hi - lo)
                n_done += hi - lo
                tracker.log({"split": split, "shard": k, "rows": hi - lo, "prompts_per_s": (hi - lo) / dt,
                             "rows_this_attempt": n_done}, step=n_done)
    except KeyboardInterrupt as exc:
        code = getattr(exc, "exit_code", 130)
        raise Interrupted(f"{'SIGTERM' if code == 143 else 'Ctrl-C'}: the complete shards are kept in {store.root}; "
                          f"rerun the same command to gather the rest", code) from None
    finally:
        bar.close()
        recorder.remove()
    rate = n_done / max(time.perf_counter() - t_start, 1e-9)  # this rank's prompts/s, model loading excluded
    barrier(info)
    return _finish_gather(store, info, tracker, rate)


def _finish_gather(store: HiddenStore, info, tracker, rate: float = 0.0) -> Path:
    """After every rank's shards are on disk (the caller passed a barrier): rank 0 records progress."""
    if info.is_main:
        manifest = store.update_progress(store.read_manifest())
        if tracker is not None:
            tracker.summary({"gathered_rows": sum(manifest["rows"].values()),
                             **{f"gathered_rows/{s}": n for s, n in manifest["rows"].items()},
                             "complete": manifest["complete"], "prompts_per_s": rate * info.dp_size})
        print(f"gathered data: {store.root} rows {manifest['rows']}")
    if tracker is not None:
        tracker.finish()
    return store.root
