"""The two-step questions' outputs (stage 3's --two_step_questions; the set: symbolic/two_step.py):
two_step.csv, one row per method and question (CSV_COLUMNS; gate_open empty for the plain model,
which has no gate), and two_step.md, the exact-match accuracy of each method per follow-up kind and
over all of them with 95% Wilson intervals (results.wilson_interval), and how often the parsed answer
was the first step's value instead (what printing the solver's answer gives)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from neurosymbolic_llm.pipeline.files import atomic_write_csv, atomic_write_text
from neurosymbolic_llm.pipeline.headline import percent
from neurosymbolic_llm.pipeline.method_table import label, ordered
from neurosymbolic_llm.pipeline.results import wilson_interval
from neurosymbolic_llm.symbolic.two_step import FOLLOW_UPS

CSV_COLUMNS = ["method", "problem_type", "follow_up", "question", "first_step", "expected", "generated", "parsed",
               "correct", "gate_open"]
ALL = "all"  # the row over every follow-up kind


def with_follow_ups(responses: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """evaluation.evaluate's responses of one method on the two-step rows (in their order) as CSV_COLUMNS."""
    if len(responses) != len(rows):
        raise ValueError(f"{len(responses)} responses for {len(rows)} two-step questions")
    out = responses.reset_index(drop=True).assign(follow_up=rows["follow_up"].values,
                                                  first_step=rows["first_step"].values)
    return out[CSV_COLUMNS]


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method (method_table order) and follow-up kind (FOLLOW_UPS order, then ALL): n, solved,
    accuracy, lower and upper (95% Wilson), first_step_share (parsed == the first step's value)."""
    out = []
    for m in ordered(df["method"]):
        mine = df[df["method"] == m]
        for kind in [k for k in FOLLOW_UPS if k in set(mine["follow_up"])] + [ALL]:
            part = mine if kind == ALL else mine[mine["follow_up"] == kind]
            n, solved = len(part), int(part["correct"].astype(bool).sum())
            lo, hi = wilson_interval(solved, n)
            first = (part["parsed"] == part["first_step"]).fillna(False).astype(bool)
            out.append({"method": m, "follow_up": kind, "n": n, "solved": solved, "accuracy": solved / n if n else
                        float("nan"), "lower": lo, "upper": hi, "first_step_share": float(first.mean()) if n else
                        float("nan")})
    return pd.DataFrame(out, columns=["method", "follow_up", "n", "solved", "accuracy", "lower", "upper",
                                      "first_step_share"])


def markdown(df: pd.DataFrame, title: str = "Two-step questions") -> str:
    """two_step.md: the accuracy table (rows: follow-up kinds and all; columns: methods), then the
    first-step table, each with a line saying what its numbers are."""
    table = accuracy_table(df)
    methods = list(dict.fromkeys(table["method"]))
    kinds = list(dict.fromkeys(table["follow_up"]))
    cell = table.set_index(["follow_up", "method"])
    head = ["| follow-up | " + " | ".join(label(m) for m in methods) + " |", "|---|" + "---|" * len(methods)]

    def rows(fmt) -> list[str]:
        return [f"| {k} | " + " | ".join(fmt(cell.loc[(k, m)]) if (k, m) in cell.index else "-" for m in methods)
                + " |" for k in kinds]

    texts = {k: f.text for k, f in FOLLOW_UPS.items()}
    n = sorted(set(table.loc[table["follow_up"] == ALL, "n"]))
    lines = [f"# {title}", "", "Each question is a test question of a seen type followed by one step that uses its "
             "answer: " + "; ".join(f"{k}: \"{t}\"" for k, t in texts.items() if k in kinds) + ". The few-shot "
             "examples are two-step questions of the same kind.", "", "## Exact-match accuracy (%)", "", *head,
             *rows(lambda r: f"{percent(r.accuracy)} ({percent(r.lower)}-{percent(r.upper)}, n={int(r.n)})"), "",
             "Exact match against the two-step answer; in brackets the 95% Wilson score interval and the "
             f"questions asked ({', '.join(map(str, n))} per method).", "",
             "## Answered the first step's value (%)", "", *head, *rows(lambda r: percent(r.first_step_share)), "",
             "The share of questions whose parsed answer is the first step's answer (for last_digit it can also "
             "be right, when that answer has one digit). Read and print prints the solver's answer to the question "
             "it read, so where its gate is open it answers the first step.", ""]
    return "\n".join(lines)


def write_two_step(out_dir: Path, df: pd.DataFrame) -> dict[str, Path]:
    """two_step.csv (df, CSV_COLUMNS) and two_step.md in `out_dir`; {"csv": path, "md": path}."""
    return {"csv": atomic_write_csv(df[CSV_COLUMNS], Path(out_dir) / "two_step.csv"),
            "md": atomic_write_text(Path(out_dir) / "two_step.md", markdown(df))}
