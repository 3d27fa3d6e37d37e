"""The gate measured: its scores on sets of questions (seen math, unseen math, non-math), its open
rates, and settings chosen on the validation split (Programs/gate_statistics.py, `run`).

The gate opens when threshold < score < maximum (pipeline/gate.py), score being the best
problem-type score of the stage-2 encoder's output at the encoding layer. This module scores the
validation CSV's questions and the canned non-math validation questions
(prompts.non_math_questions("val")), never the test split's, and proposes the maximum that keeps the
most seen-type questions open while closing the most non-math ones.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from neurosymbolic_llm.pipeline import methods
from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.distributed import DistInfo
from neurosymbolic_llm.pipeline.fine_tune_inputs import load_maps_for, load_rows, seen_types, used_config
from neurosymbolic_llm.pipeline.gate import gate_open
from neurosymbolic_llm.pipeline.gate_scores import open_rate_lines, unrelated_gate_scores
from neurosymbolic_llm.pipeline.paths import results_dir, run_name_or_today
from neurosymbolic_llm.pipeline.results import write_gate_scores
from neurosymbolic_llm.pipeline.runtime import build_llama, resolve_device


def propose_maximum(scores: pd.DataFrame, threshold: float) -> tuple[float, float]:
    """(maximum, balanced rate): the cut between two neighbouring scores above `threshold` that
    maximises (seen math kept open + non-math closed) / 2, the widest gap among equals; inf when
    no cut beats none. scores: columns group, score."""
    seen = scores.loc[scores["group"] == "seen math", "score"].to_numpy()
    other = scores.loc[scores["group"] == "non-math", "score"].to_numpy()

    def rate(m: float) -> float:
        return (gate_open(seen, threshold, m).mean() + (~gate_open(other, threshold, m)).mean()) / 2

    values = np.unique(np.concatenate([seen, other]))
    values = values[values > threshold]
    cuts = [((lo + hi) / 2, hi - lo) for lo, hi in zip(values[:-1], values[1:])]  # (cut, gap)
    best = max(cuts, key=lambda c: (rate(c[0]), c[1]), default=None)
    if best is None or rate(best[0]) <= rate(math.inf) + 1e-12:
        return math.inf, rate(math.inf)
    return float(best[0]), rate(best[0])


def run(cfg: FineTuneConfig) -> int:
    run_name = run_name_or_today(cfg.run_name)
    device = str(resolve_device(cfg.device))
    llama = build_llama(cfg, max_batch_size=cfg.eval_batch_size, device=device, say=print)
    maps = load_maps_for(cfg, llama)
    cfg = used_config(cfg, maps, llama)
    problem_list = list(maps.engine.possible_problems)
    val_rows, _ = load_rows(cfg, "val", max_digits=maps.engine.max_digits)
    seen, _ = seen_types(cfg, maps, None, maps.engine.max_digits)
    method = methods.build("neurosymbolic", cfg, llama, maps, train=False)
    ex_kw = dict(seed=cfg.seed, complexity=cfg.complexity, limit_solution_digits=cfg.limit_solution_digits,
                 problem_list=problem_list)
    scores = unrelated_gate_scores(cfg, llama, method, val_rows, ex_kw, seen, DistInfo(), split="val")
    out = results_dir(run_name, cfg.programs_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_gate_scores(out, scores, cfg.problem_score_threshold, cfg.problem_score_max, name="gate_validation")
    print(f"encoding layer {cfg.symbolic_encoding_layer}; validation gate scores (threshold "
          f"{cfg.problem_score_threshold:g}, maximum {cfg.problem_score_max:g}):")
    print("\n".join(open_rate_lines(scores, cfg.problem_score_threshold, cfg.problem_score_max)))
    m, r = propose_maximum(scores, cfg.problem_score_threshold)
    print(f"proposed --problem_score_max {m:.3g} (seen math open and non-math closed: {r:.1%} on average)")
    print(f"written: {paths['csv']}, {paths['png']}")
    return 0
