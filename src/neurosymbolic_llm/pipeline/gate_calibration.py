"""Choosing the gate (pipeline/gate.Gate) on calibration readings only, and how well it separates.

A table of readings has the columns of pipeline/gate.READINGS plus `group` and `kind`: kind "seen" (a
question of a type the encoder was trained on; `read_right` says whether x, y and type were all read
right) or "unknown" (a leave-one-operation-out refit's held-out type, a hard negative of
pipeline/hard_negatives.py, a non-math prompt). Nothing here reads the test split."""
from __future__ import annotations

import itertools
import math
from typing import Iterable

import numpy as np
import pandas as pd

from neurosymbolic_llm.pipeline.gate import Gate

# The grid the choice searches (the lower bound is kept): upper bounds, type-margin and digit-margin minimums.
UPPERS = (1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0, 2.3, 2.5, 3.0, math.inf)
TYPE_MARGINS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8)
DIGIT_MARGINS = (0.0, 0.005, 0.01, 0.02, 0.04)


def auroc(positive: Iterable[float], negative: Iterable[float]) -> float:
    """P(a positive's value > a negative's), ties counting one half (the Mann-Whitney statistic)."""
    pos, neg = np.asarray(list(positive), float), np.asarray(list(negative), float)
    if not len(pos) or not len(neg):
        return math.nan
    ranks = pd.Series(np.concatenate([pos, neg])).rank().to_numpy()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def balanced_rate(readings: pd.DataFrame, gate: Gate) -> float:
    """(share of right seen readings the gate opens + mean over unknown groups of the share it keeps
    closed) / 2: every unknown group weighs the same, whatever its size. A side with no prompts counts 0."""
    opened = gate.open_rows(readings)
    seen = readings["kind"].eq("seen") & readings["read_right"].eq(True)
    unknown = readings["kind"].eq("unknown")
    closed = [1 - opened[unknown & readings["group"].eq(g)].mean() for g in readings.loc[unknown, "group"].unique()]
    kept = opened[seen].mean() if seen.any() else 0.0
    return float((kept + (np.mean(closed) if closed else 0.0)) / 2)


def choose_gate(readings: pd.DataFrame, lower: float) -> tuple[Gate, float]:
    """The gate of the grid (UPPERS x TYPE_MARGINS x DIGIT_MARGINS, `lower` kept) with the best
    balanced_rate; among equals the loosest (largest upper bound, then smallest minimums), so that no
    setting is tighter than the calibration asks for. Returns (gate, its balanced rate)."""
    best, best_rate = None, -1.0
    for up, m, d in itertools.product(sorted(UPPERS, reverse=True), TYPE_MARGINS, DIGIT_MARGINS):
        if up <= lower:
            continue
        gate = Gate(lower, up, m, d)
        rate = balanced_rate(readings, gate)
        if best is None or rate > best_rate + 1e-12:
            best, best_rate = gate, rate
    return best, best_rate


def open_rates(readings: pd.DataFrame, gates: dict[str, Gate]) -> pd.DataFrame:
    """Per kind and group: n and the share each gate opens for (columns 'open: <name>')."""
    out = readings[["kind", "group"]].copy()
    for name, gate in gates.items():
        out[f"open: {name}"] = gate.open_rows(readings).astype(float)
    agg = out.groupby(["kind", "group"], sort=False)
    return agg.size().rename("n").to_frame().join(agg.mean()).reset_index()


def separation(readings: pd.DataFrame) -> dict[str, float]:
    """AUROC of each reading, seen (all) against unknown (all): type_margin and digit_margin as they
    are (higher = more sure), the score by its distance from 1 (a seen question scores about 1)."""
    seen, unknown = readings[readings["kind"] == "seen"], readings[readings["kind"] == "unknown"]
    return {"type_margin": auroc(seen["type_margin"], unknown["type_margin"]),
            "digit_margin": auroc(seen["digit_margin"], unknown["digit_margin"]),
            "score (closeness to 1)": auroc(-(seen["score"] - 1).abs(), -(unknown["score"] - 1).abs())}


def coverage_curve(readings: pd.DataFrame, gate: Gate, margins: Iterable[float] = np.linspace(0, 1.2, 49)) -> pd.DataFrame:
    """As the type-margin minimum of `gate` rises: coverage (share of the seen questions it opens) and
    accuracy (share of everything it opens, unknown prompts included, that is a seen question read right).
    Columns min_type_margin, coverage, accuracy, opened."""
    seen = readings["kind"].eq("seen")
    right = seen & readings["read_right"].eq(True)
    rows = []
    for m in margins:
        opened = Gate(gate.lower, gate.upper, float(m), gate.min_digit_margin).open_rows(readings)
        n = int(opened.sum())
        rows.append((float(m), float(opened[seen].mean()) if seen.any() else math.nan,
                     float(right[opened].mean()) if n else math.nan, n))
    return pd.DataFrame(rows, columns=["min_type_margin", "coverage", "accuracy", "opened"])
