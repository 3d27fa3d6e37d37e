"""The headline ratios of a results table (docs/METHOD.md, "Metrics"): the neurosymbolic model against
each other method over the seen (trained) problem types, and what each figure means.

- `times_more_solved_vs_X`: the ratio of the means, mean_seen(acc_NS) / mean_seen(acc_X) (45.6% / 10.0%
  = 4.56). When X solved none of its seen-type questions it counts as having solved one of them
  (denominator 1/N_X, N_X its seen-type questions: the measurement's resolution), so the ratio stays
  finite and errs against the NS model; when both solved none it is (1/N_NS) / (1/N_X), 1 for equal counts.
- per-type ratios `acc_NS / acc_X` with the same rule per type (1/n_X for a type X solved none of;
  (1/n_NS) / (1/n_X) where both solved none); `per_type_ratio_vs_X` is their mean, the paper's way of
  averaging (it weights the types X nearly never solves heavily: 6.44 where the ratio of the means is 4.56).
- `lower_ce_pct_vs_X`: 100 * (1 - mean_seen(CE_NS) / mean_seen(CE_X)) over the seen types where both
  have a cross-entropy; absent when X has none (read and print prints the solver's answer: no answer
  distribution).
- `paper_times_more_solved`, `paper_lower_ce_pct`: the paper's headline, against chain of thought and
  the adapter (paper's LoRA; LoRA (peft) stands in when no adapter ran, `lora_row`): per-type ratios
  (per-type CE reductions) averaged over the seen types, then over the two methods.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd

from neurosymbolic_llm.pipeline.method_table import label


def percent(fraction: float) -> str:
    """A fraction as a percentage with one decimal, halves rounded up (46.25 -> 46.3: 20 questions per type
    make such halves common, and float sums in another order must not print them differently)."""
    return str(Decimal(repr(round(100 * float(fraction), 9))).quantize(Decimal("0.1"), ROUND_HALF_UP))


def seen_wide(results: pd.DataFrame, value: str) -> pd.DataFrame:
    """Rows: the seen types; columns: method keys (results.wide restricted to the seen types)."""
    from neurosymbolic_llm.pipeline.results import seen_types, wide

    table, seen = wide(results, value), set(seen_types(results))
    return table.loc[[t for t in table.index if t in seen]]  # type_order, as every table (and its sums)


def per_type_ratios(results: pd.DataFrame) -> pd.DataFrame:
    """acc_NS / acc_X per seen type (rows) and method X (columns), with the zero rule above; empty
    without a neurosymbolic row or a seen type."""
    acc, n = seen_wide(results, "accuracy"), seen_wide(results, "n")
    if "neurosymbolic" not in acc.columns or acc.empty:
        return pd.DataFrame()
    ns, n_ns = acc["neurosymbolic"], n["neurosymbolic"].clip(lower=1)
    out = {}
    for m in [c for c in acc.columns if c != "neurosymbolic"]:
        both_zero = (ns == 0) & (acc[m] == 0)
        out[m] = ns.where(~both_zero, 1.0 / n_ns) / np.maximum(acc[m], 1.0 / n[m].clip(lower=1))
    return pd.DataFrame(out, index=acc.index)


def ratio_of_means(ns_mean: float, x_mean: float, ns_asked: int, x_asked: int) -> float:
    """mean_NS / mean_X with X's zero counted as one solved question of its x_asked (both zero: 1 each)."""
    if ns_mean == 0 and x_mean == 0:
        return (1.0 / max(ns_asked, 1)) / (1.0 / max(x_asked, 1))
    return ns_mean / max(x_mean, 1.0 / max(x_asked, 1))


def headline_ratios(results: pd.DataFrame) -> dict:
    """The figures of the module docstring, as far as the methods are present ({} without a
    neurosymbolic row or a seen type). Never NaN: a figure that cannot be computed is left out."""
    ratios = per_type_ratios(results)
    if ratios.empty:
        return {}
    acc, ce, n = (seen_wide(results, v) for v in ("accuracy", "cross_entropy", "n"))
    out: dict = {}
    for m in ratios.columns:
        both = acc[["neurosymbolic", m]].notna().all(axis=1)
        if both.any():
            out[f"times_more_solved_vs_{m}"] = ratio_of_means(
                float(acc.loc[both, "neurosymbolic"].mean()), float(acc.loc[both, m].mean()),
                int(n.loc[both, "neurosymbolic"].sum()), int(n.loc[both, m].sum()))
            out[f"per_type_ratio_vs_{m}"] = float(ratios.loc[both, m].mean())
        have_ce = ce[["neurosymbolic", m]].notna().all(axis=1)
        if have_ce.any() and ce.loc[have_ce, m].mean() > 0:
            out[f"lower_ce_pct_vs_{m}"] = float(100 * (1 - ce.loc[have_ce, "neurosymbolic"].mean()
                                                       / ce.loc[have_ce, m].mean()))
    lora_row = "adapter" if "adapter" in ratios.columns else ("lora" if "lora" in ratios.columns else None)
    pair = [m for m in ("cot", lora_row) if m is not None and f"per_type_ratio_vs_{m}" in out]
    if len(pair) == 2:
        out["paper_times_more_solved"] = float(np.mean([out[f"per_type_ratio_vs_{m}"] for m in pair]))
        reductions = [paper_ce_reduction(ce, m) for m in pair]
        if all(r is not None for r in reductions):
            out["paper_lower_ce_pct"] = float(np.mean(reductions))
        out["lora_row"] = lora_row
    return out


def paper_ce_reduction(ce: pd.DataFrame, m: str):
    """100 * mean over the seen types of 1 - CE_NS / CE_X (types with CE_X > 0); None when there is none."""
    keep = ce["neurosymbolic"].notna() & ce[m].notna() & (ce[m] > 0)
    return float(100 * (1 - ce.loc[keep, "neurosymbolic"] / ce.loc[keep, m]).mean()) if keep.any() else None


# What each figure means, printed under it in results.md (one line each).
DEFINITIONS = {
    "times_more_solved_vs_X": "the neurosymbolic model's mean accuracy over the seen types divided by X's (the "
                              "ratio of the means); X solving none counts as one solved question of its "
                              "seen-type questions, both solving none gives 1",
    "per_type_ratio_vs_X": "the mean over the seen types of acc_NS / acc_X per type (the table above); a type X "
                           "solved none of counts as one solved question of it (1/n), a type both failed as 1; "
                           "the paper's way of averaging, larger when X nearly never solves some types",
    "lower_ce_pct_vs_X": "100 x (1 - CE_NS / CE_X), the answer cross-entropies averaged over the seen types; "
                         "negative when the neurosymbolic model's is higher; absent when X has none",
    "paper_times_more_solved": "the paper's headline: per_type_ratio against chain of thought and against "
                               "lora_row, averaged",
    "paper_lower_ce_pct": "the paper's cross-entropy headline: per type 1 - CE_NS / CE_X, averaged over the "
                          "seen types, then over the same two methods (%)",
    "lora_row": "the method that stands for the paper's LoRA row in the paper_ figures",
}


def definition_key(key: str) -> str:
    return key.split("_vs_", 1)[0] + "_vs_X" if "_vs_" in key else key


def ratio_line(key: str, value, results: pd.DataFrame = None) -> str:
    """One figure in results.md: its key (as in the run's summary), its value and the method it
    compares with; for times_more_solved the two means it divides."""
    if key == "lora_row":
        return f"- {key}: {label(value)}"
    against = key.split("_vs_", 1)[1] if "_vs_" in key else ""
    text = f"- {key}: {value:.2f}" + (f" (against {label(against)}" if against else "")
    if against and key.startswith("times_more_solved") and results is not None:
        acc = seen_wide(results, "accuracy")[["neurosymbolic", against]].dropna()
        asked = int(seen_wide(results, "n").loc[acc.index, against].sum())
        x = f"{percent(acc[against].mean())}%" if acc[against].mean() > 0 else f"none of {asked}, counted as one"
        text += f": {percent(acc['neurosymbolic'].mean())}% / {x}"
    if against and key.startswith("lower_ce_pct") and results is not None:
        ce = seen_wide(results, "cross_entropy")[["neurosymbolic", against]].dropna()
        text += f": {ce['neurosymbolic'].mean():.2f} / {ce[against].mean():.2f} nats/token"
    return text + (")" if against else "")


def markdown_section(results: pd.DataFrame) -> list[str]:
    """results.md's headline section: the per-type ratios table, the figures, their definitions."""
    ratios, figures = per_type_ratios(results), headline_ratios(results)
    if not figures:
        return []
    cols = list(ratios.columns)
    lines = ["## Times more solved, per seen type (neurosymbolic / method)", "",
             "| problem type | " + " | ".join(label(c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {t} | " + " | ".join("-" if pd.isna(ratios.loc[t, c]) else f"{ratios.loc[t, c]:.2f}" for c in cols)
              + " |" for t in ratios.index]
    lines += ["", "## Headline ratios (seen types)", ""]
    lines += [ratio_line(k, v, results) for k, v in figures.items()]
    lines += ["", "What they mean:", ""]
    lines += [f"- {k}: {DEFINITIONS[k]}." for k in DEFINITIONS if any(definition_key(f) == k for f in figures)]
    return lines + [""]
