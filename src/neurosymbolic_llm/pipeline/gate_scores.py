"""The gate's scores on sets of questions (seen math, unseen math, non-math) and its open rates, as
stage 3 and gate statistics report them."""
from __future__ import annotations

import math

import pandas as pd

from neurosymbolic_llm.pipeline.evaluation import gate_scores
from neurosymbolic_llm.pipeline.results import gate_summary
from neurosymbolic_llm.pipeline.training import build_examples
from neurosymbolic_llm.symbolic.prompts import non_math_dialog, non_math_questions


def unrelated_gate_scores(cfg, llama, method, math_rows, ex_kw, seen_types, info, split: str = "test") -> pd.DataFrame:
    """Gate scores of seen math, unseen math and non-math prompts (the paper's gate figure): the
    split's math rows and its canned non-math questions (prompts.non_math_questions).
    Returns columns group, problem_type, score."""
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


def open_rate_lines(scores: pd.DataFrame, threshold: float, maximum: float = math.inf) -> list[str]:
    """One console line per group of `scores` (columns group, score): how many questions, the share
    the gate opens for, and the score range."""
    rates = gate_summary(scores, threshold, maximum)
    lines = []
    for group, part in scores.groupby("group", sort=False):
        s = part["score"]
        lines.append(f"  {group:<12} n={len(s):<5} open {rates[f'gate_open_rate/{group}']:6.1%}"
                     f"  score {s.min():.3f} .. {s.max():.3f} (mean {s.mean():.3f})")
    return lines
