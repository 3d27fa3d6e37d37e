"""The gate's readings on sets of questions (seen math, unseen math, non-math) and its open rates, as
stage 3 and gate statistics report them."""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from neurosymbolic_llm.llama.generation import left_pad
from neurosymbolic_llm.pipeline.distributed import DistInfo, gather_objects, row_slice
from neurosymbolic_llm.pipeline.gate import READINGS, Gate
from neurosymbolic_llm.pipeline.results import gate_summary
from neurosymbolic_llm.pipeline.runtime import progress
from neurosymbolic_llm.pipeline.training import build_examples

DECODED = ("type_id", "x", "y")  # the reading's own columns in gate_readings
from neurosymbolic_llm.symbolic.prompts import non_math_dialog, non_math_questions


@torch.no_grad()
def gate_readings(llama, method, prompts: Sequence[Sequence[int]], *, batch_size: int,
                  info: DistInfo = DistInfo(), desc: str = "gate") -> pd.DataFrame:
    """The gate's readings (pipeline/gate.READINGS: score, type_margin, digit_margin) and the reading
    itself (type_id, x, y) at the last prompt position of each prompt, a forward to the encoding layer
    only: N rows (rank 0: all)."""
    iv = method.intervention
    mine = range(len(prompts))[row_slice(len(prompts), info)]
    keys = (*READINGS, *DECODED)
    out = {k: [] for k in keys}
    with method.attach():
        for b0 in progress(range(mine.start, mine.stop, batch_size), desc=desc, unit="batch", enabled=info.is_main):
            tokens, pad = left_pad(prompts[b0:min(b0 + batch_size, mine.stop)], llama.tokenizer.pad_id)
            iv.set_truth()
            llama.model(tokens.to(llama.device), 0, pad_lengths=pad.to(llama.device), stop_at_layer=iv.enc_layer)
            rec = iv.take_records()
            for k in keys:
                out[k] += rec[k].tolist()
    if info.distributed:
        gathered = gather_objects(out, info)
        out = {k: [v for r, g in enumerate(gathered) if r % info.model_parallel_size == 0 for v in g[k]] for k in keys}
    df = pd.DataFrame(out, columns=list(keys))
    return df.astype({k: float for k in READINGS})


def unrelated_gate_scores(cfg, llama, method, math_rows, ex_kw, seen_types, info, split: str = "test") -> pd.DataFrame:
    """Gate readings of seen math, unseen math and non-math prompts (the paper's gate figure): the
    split's math rows and its canned non-math questions (prompts.non_math_questions).
    Returns columns group, problem_type, score, type_margin, digit_margin (gate.READINGS)."""
    math_ex = build_examples(math_rows, llama.formatter, split, **ex_kw)
    topics = non_math_questions(split)
    other = [llama.formatter.encode_dialog_prompt(non_math_dialog(q)) for _, q in topics]
    r_math = gate_readings(llama, method, math_ex.prompts, batch_size=cfg.eval_batch_size, info=info, desc="gate math")
    r_other = gate_readings(llama, method, other, batch_size=cfg.eval_batch_size, info=info, desc="gate non-math")
    seen = math_rows["problem_type"].isin(seen_types)
    return pd.concat([
        pd.DataFrame({"group": ["seen math" if s else "unseen math" for s in seen],
                      "problem_type": math_rows["problem_type"].to_numpy()}).join(r_math[list(READINGS)]),
        pd.DataFrame({"group": "non-math", "problem_type": [t for t, _ in topics]}).join(r_other[list(READINGS)]),
    ], ignore_index=True)


def open_rate_lines(scores: pd.DataFrame, gate: Gate) -> list[str]:
    """One console line per group of `scores` (columns group, score, the margins the gate reads): how
    many questions, the share the gate opens for, and the score range."""
    rates = gate_summary(scores, gate)
    lines = []
    for group, part in scores.groupby("group", sort=False):
        s = part["score"]
        lines.append(f"  {group:<12} n={len(s):<5} open {rates[f'gate_open_rate/{group}']:6.1%}"
                     f"  score {s.min():.3f} .. {s.max():.3f} (mean {s.mean():.3f})")
    return lines
