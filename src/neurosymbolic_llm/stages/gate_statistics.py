"""The gate measured and chosen on the validation split (Programs/gate_statistics.py, `run`).

The gate (pipeline/gate.Gate) opens when lower < score < upper and the type and digit margins reach
their minimums (pipeline/gate_features.py). This stage reads, with the stage-2 encoder at the encoding
layer, the validation CSV's questions, the canned non-math validation prompts and hard negatives made
for calibration only (pipeline/hard_negatives.py), and refits the encoder once per trained type
without that type's rows (leave one operation out: stage 2's least squares on the gathered training
states) to see how an encoder reads an operation it was not trained on. It never reads the test split.
It reports the AUROC of each reading (seen against unknown), each group's open rate under the
configured and the proposed gate, and the coverage-accuracy curve (pipeline/gate_calibration.py).
"""
from __future__ import annotations

import pandas as pd
import torch

from neurosymbolic_llm.pipeline import figures, methods
from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.distributed import DistInfo
from neurosymbolic_llm.pipeline.files import atomic_write_csv
from neurosymbolic_llm.pipeline.fine_tune_inputs import load_maps_for, load_rows, seen_types, used_config
from neurosymbolic_llm.pipeline.gate import READINGS, Gate
from neurosymbolic_llm.pipeline.gate_calibration import choose_gate, coverage_curve, open_rates, separation
from neurosymbolic_llm.pipeline.gate_features import read_problem
from neurosymbolic_llm.pipeline.gate_scores import gate_readings, open_rate_lines, unrelated_gate_scores
from neurosymbolic_llm.pipeline.hard_negatives import hard_negative_dialogs
from neurosymbolic_llm.pipeline.hidden_store import HiddenStore
from neurosymbolic_llm.pipeline.least_squares import least_squares
from neurosymbolic_llm.pipeline.paths import results_dir, run_name_or_today
from neurosymbolic_llm.pipeline.results import write_gate_scores
from neurosymbolic_llm.pipeline.runtime import build_llama, resolve_device

HARD_NEGATIVES_PER_GROUP = 12


def leave_one_out_readings(engine, extra: dict, layers: tuple[int, ...]) -> pd.DataFrame:
    """Readings of the gathered validation rows by encoders refitted without one trained type each
    (stage 2's least squares with the encoder file's ridge, on the gathered training states of the
    encoder's read: one layer, or several concatenated). Columns fold, kind (unknown: the held-out
    type's rows), group, READINGS, read_right. Empty when the encoder file does not say where its
    gathered data and ridge are."""
    store_root, ridge = extra.get("gathered_data"), extra.get("ridge")
    if not store_root or ridge is None or extra.get("map_init", "least_squares") != "least_squares":
        print("leave-one-operation-out: skipped (the encoder file names no gathered data or ridge; rerun stage 2)")
        return pd.DataFrame()
    store = HiddenStore(store_root)
    train, val = (store.load_split(split, list(layers)).joint() for split in ("train", "val"))  # [N,1,k D]
    names = list(engine.possible_problems)
    parts = []
    for held in extra["trained_types"]:
        keep = train.type_id != names.index(held)
        W = least_squares(train.hidden[keep], train.targets[keep], float(ridge), 4096, torch.float32)[0]  # [V, k D]
        z = (val.hidden[:, 0].float() @ W.T).to(engine.device)  # [N, V]
        read = {k: v.cpu() for k, v in read_problem(engine, z).items()}
        part = pd.DataFrame({k: read[k].double().numpy() for k in READINGS})
        right = (read["type_id"] == val.type_id) & (read["x"] == val.x) & (read["y"] == val.y)
        true_type = [names[i] for i in val.type_id.tolist()]
        part.insert(0, "fold", f"without {held}")
        part.insert(1, "kind", ["unknown" if t == held else "seen" for t in true_type])
        part.insert(2, "group", [f"{t} (left out)" if t == held else "seen math" for t in true_type])
        part["read_right"] = right.numpy()
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def run(cfg: FineTuneConfig) -> int:
    run_name = run_name_or_today(cfg.run_name)
    device = str(resolve_device(cfg.device))
    llama = build_llama(cfg, max_batch_size=cfg.eval_batch_size, device=device, say=print)
    maps = load_maps_for(cfg, llama)
    cfg = used_config(cfg, maps, llama)
    engine = maps.engine
    gate = Gate.of(cfg)
    problem_list = list(engine.possible_problems)
    val_rows, _ = load_rows(cfg, "val", max_digits=engine.max_digits)
    seen, _ = seen_types(cfg, maps, None, engine.max_digits)
    method = methods.build("neurosymbolic", cfg, llama, maps, train=False)
    ex_kw = dict(seed=cfg.seed, complexity=cfg.complexity, limit_solution_digits=cfg.limit_solution_digits,
                 problem_list=problem_list)
    scores = unrelated_gate_scores(cfg, llama, method, val_rows, ex_kw, seen, DistInfo(), split="val")
    out = results_dir(run_name, cfg.programs_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_gate_scores(out, scores, gate, name="gate_validation")
    print(f"encoding layer {cfg.symbolic_encoding_layer}; validation readings (gate: {gate.describe()}):")
    print("\n".join(open_rate_lines(scores, gate)))

    # calibration: the validation questions read right or not, hard negatives, leave one operation out
    from neurosymbolic_llm.pipeline.training import build_examples
    val_ex = build_examples(val_rows, llama.formatter, "val", **ex_kw)
    full = gate_readings(llama, method, val_ex.prompts, batch_size=cfg.eval_batch_size, desc="gate val")
    right = ((full["type_id"].to_numpy() == val_ex.type_ids.numpy()) & (full["x"].to_numpy() == val_rows["x"].to_numpy())
             & (full["y"].to_numpy() == val_rows["y"].to_numpy()))
    seen_mask = val_rows["problem_type"].isin(seen).to_numpy()
    negatives = hard_negative_dialogs(HARD_NEGATIVES_PER_GROUP, cfg.seed)
    neg = gate_readings(llama, method, [llama.formatter.encode_dialog_prompt(d) for _, d in negatives],
                        batch_size=cfg.eval_batch_size, desc="gate hard negatives")
    nonmath = scores[scores["group"] == "non-math"]
    calib = pd.concat([
        full[list(READINGS)][seen_mask].assign(fold="full", kind="seen", group="seen math", read_right=right[seen_mask]),
        neg[list(READINGS)].assign(fold="full", kind="unknown", group=[f"{g} (hard negative)" for g, _ in negatives]),
        nonmath[list(READINGS)].assign(fold="full", kind="unknown", group="non-math (validation)"),
        leave_one_out_readings(engine, maps.encoder_extra, cfg.read_layers()),
    ], ignore_index=True)
    proposed, rate = choose_gate(calib, gate.lower)
    rates = open_rates(calib, {"configured": gate, "proposed": proposed})
    curve = coverage_curve(calib, proposed)
    files = [atomic_write_csv(calib, out / "gate_calibration.csv"), atomic_write_csv(rates, out / "gate_open_rates.csv"),
             atomic_write_csv(curve, out / "gate_coverage.csv")]
    files.append(figures.save(figures.gate_coverage(curve, proposed, f"Gate coverage and accuracy on calibration "
                                                                     f"prompts, run {out.name}"), out / "gate_coverage.png"))
    print("AUROC, seen against unknown (leave-one-operation-out, hard negatives, non-math):")
    print("\n".join(f"  {k:<24} {v:.3f}" for k, v in separation(calib).items()))
    print("open rates per group (configured and proposed gate):")
    print(rates.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"proposed gate: {proposed.describe()} (right seen readings open and unknown groups closed: {rate:.1%} on "
          f"average): --problem_score_max {proposed.upper:g} --gate_min_type_margin {proposed.min_type_margin:g} "
          f"--gate_min_digit_margin {proposed.min_digit_margin:g}")
    print(f"written: {paths['csv']}, {paths['png']}, " + ", ".join(str(f) for f in files))
    return 0
