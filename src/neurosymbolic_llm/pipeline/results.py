"""Result files of stage 3 and of compare_runs: tables (CSV, Markdown), plots, headline ratios.

results.csv has exactly RESULT_COLUMNS, one row per method and evaluated problem type; accuracy is
a fraction in [0, 1], cross_entropy the mean teacher-forced token CE of the answer. Every file is
written atomically (temporary file in the same folder, then rename). Tables and figures name the
methods by method_table's labels, in its order, and list the problem types in `type_order`; the
figures themselves are drawn by figures.py.

Headline ratios (docs/METHOD.md, "Metrics"), over the seen (trained) problem types:
- "times more problems solved": per type acc_NS / acc_X, averaged over seen types, for X = chain of
  thought and X = the adapter (paper's LoRA; LoRA (peft) stands in when no adapter ran); the reported
  figure is the mean of those two averages. Division by zero: a type where X solved nothing counts
  as if X had solved one question of that type (denominator max(acc_X, 1/n_X)), the measurement's
  resolution; so the ratio stays finite and errs against the NS model. A type where both solved
  nothing counts as one solved question for each (ratio (1/n_NS) / (1/n_X), 1 for equal counts),
  so two identical methods give exactly 1.
- "lower cross-entropy": per type 1 - CE_NS / CE_X, averaged the same way (in percent); a type with
  CE_X == 0 is left out (NS cannot be lower than zero).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from neurosymbolic_llm.pipeline import figures
from neurosymbolic_llm.pipeline.errors import DataError, echo
from neurosymbolic_llm.pipeline.files import atomic_write_csv, atomic_write_json, atomic_write_text
from neurosymbolic_llm.pipeline.gate import Gate
from neurosymbolic_llm.pipeline.method_table import METHODS, label, ordered
from neurosymbolic_llm.pipeline.paths import check_run_name, results_dir
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

RESULT_COLUMNS = ["method", "problem_type", "seen", "n", "accuracy", "cross_entropy"]


# ----------------------------------------------------------------------------- tables
def read_results(path: Path) -> pd.DataFrame:
    """A results.csv, checked: one DataError line naming the file, row and column of the first bad
    value (a hand-edited, truncated or foreign file), so that nothing is written from it."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = echo(" ".join(str(exc).split()), 120, quote=False)
        raise DataError(f"{path}: not a readable results table ({reason})") from None
    if list(df.columns) != RESULT_COLUMNS:
        raise DataError(f"{path}: columns {echo(list(df.columns))}, expected {RESULT_COLUMNS}")
    if df.empty:
        raise DataError(f"{path}: a header but no results")
    numbers, empty = {}, {}
    for c in ("n", "accuracy", "cross_entropy"):
        text = df[c].str.strip()
        empty[c] = text.str.lower().isin(["", "nan"])  # how pandas writes a missing value
        numbers[c] = pd.to_numeric(text.where(~empty[c], "nan"), errors="coerce")
    bad = {"method": df["method"].str.strip() == "", "problem_type": df["problem_type"].str.strip() == "",
           "seen": ~df["seen"].str.strip().str.lower().isin(["true", "false", "1", "0"]),
           "n": ~((numbers["n"] >= 0) & (numbers["n"] % 1 == 0)),
           "accuracy": ~(numbers["accuracy"].between(0, 1) | empty["accuracy"]),
           "cross_entropy": ~(numbers["cross_entropy"].between(0, float("inf"), inclusive="left")
                              | empty["cross_entropy"])}
    for col, mask in bad.items():
        if mask.any():
            i = int(mask.to_numpy().nonzero()[0][0])
            raise DataError(f"{path}: data row {i + 1}, column {col!r}: {echo(df[col].iloc[i])} is not "
                            f"{RESULT_VALUES[col]}")
    df["seen"] = df["seen"].str.strip().str.lower().isin(["true", "1"])
    df["n"] = numbers["n"].astype(int)
    df["accuracy"], df["cross_entropy"] = numbers["accuracy"], numbers["cross_entropy"]
    return df


# What each column of results.csv holds (read_results' messages).
RESULT_VALUES = {"method": "a method name", "problem_type": "a problem type", "seen": "true or false",
                 "n": "a count of questions", "accuracy": "a fraction in [0, 1] (or empty)",
                 "cross_entropy": "a cross-entropy >= 0 (or empty)"}


def type_order(results: pd.DataFrame) -> list[str]:
    """The problem types of a results table in the order of every table and figure: seen types
    first, then unseen ones, each in the order of symbolic.solver.PROBLEM_TYPES (types it does not
    know after them, in order of appearance)."""
    seen = set(seen_types(results))
    types = list(dict.fromkeys(results["problem_type"]))
    rank = {t: i for i, t in enumerate(PROBLEM_TYPES)}
    return sorted(types, key=lambda t: (t not in seen, rank.get(t, len(rank)), types.index(t)))


def wide(results: pd.DataFrame, value: str) -> pd.DataFrame:
    """Rows: problem types (`type_order`); columns: method keys (method_table's order)."""
    table = results.pivot_table(index="problem_type", columns="method", values=value, aggfunc="first")
    return table.reindex(index=type_order(results), columns=ordered(results["method"]))


def seen_types(results: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(results.loc[results["seen"], "problem_type"]))


def questions_per_type(n: pd.Series) -> str:
    """ "n=20", or "n=20-40" when the methods were asked different numbers (runs merged); n: one
    type's row of wide(results, "n")."""
    n = n.dropna().astype(int)
    if n.empty:
        return "n=?"
    return f"n={n.min()}" if n.min() == n.max() else f"n={n.min()}-{n.max()}"


def paper_names(methods) -> str:
    """The footnote under results.md: which paper row each method is (the tables use one set of names)."""
    inside = [f"{label(m)} = {METHODS[m].paper_name}" for m in methods if m in METHODS and METHODS[m].paper_name]
    outside = [label(m) for m in methods if m not in METHODS or not METHODS[m].paper_name]
    return ("Paper's names: " + ", ".join(inside) + "." if inside else "") + \
        (f" Not in the paper: {', '.join(outside)}." if outside else "")


def headline_ratios(results: pd.DataFrame) -> dict[str, float]:
    """The paper's aggregate claims (see the module docstring), as far as the methods are present."""
    seen = seen_types(results)
    acc, ce, n = (wide(results, v).loc[seen] for v in ("accuracy", "cross_entropy", "n"))
    out: dict[str, float] = {}
    if "neurosymbolic" not in acc.columns or not seen:
        return out
    others = [m for m in acc.columns if m != "neurosymbolic"]
    ns = acc["neurosymbolic"].values
    for m in others:
        denom = np.maximum(acc[m].values, 1.0 / n[m].values.clip(min=1))
        num = np.where((ns == 0) & (acc[m].values == 0), 1.0 / n["neurosymbolic"].values.clip(min=1), ns)
        out[f"times_more_solved_vs_{m}"] = float(np.nanmean(num / denom))
        with np.errstate(divide="ignore", invalid="ignore"):
            red = np.where(ce[m].values > 0, 1 - ce["neurosymbolic"].values / ce[m].values, np.nan)
        out[f"lower_ce_pct_vs_{m}"] = float(100 * np.nanmean(red)) if np.isfinite(red).any() else math.nan
    lora_row = "adapter" if "adapter" in others else ("lora" if "lora" in others else None)
    pair = [m for m in ("cot", lora_row) if m is not None]
    if len(pair) == 2:
        out["times_more_solved"] = float(np.mean([out[f"times_more_solved_vs_{m}"] for m in pair]))
        out["lower_ce_pct"] = float(np.nanmean([out[f"lower_ce_pct_vs_{m}"] for m in pair]))
        out["lora_row"] = lora_row
    return out


def headline_summary(results: pd.DataFrame) -> dict:
    """The paper's headline figures of a run: mean accuracy and cross-entropy of each method over
    the seen (and the unseen) types, and the headline ratios."""
    out = {}
    for seen, group in ((True, "seen"), (False, "unseen")):
        part = results[results["seen"] == seen].groupby("method")
        out |= {f"{group}_accuracy/{m}": float(v) for m, v in part["accuracy"].mean().items()}
        out |= {f"{group}_cross_entropy/{m}": float(v) for m, v in part["cross_entropy"].mean().items()}
    return out | headline_ratios(results)


def _fmt(v, pct: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def wilson_interval(solved: float, asked: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion solved/asked (95% for z = 1.96); (nan, nan) for none asked."""
    if not asked > 0:
        return math.nan, math.nan
    p = solved / asked
    centre = (p + z * z / (2 * asked)) / (1 + z * z / asked)
    half = z * math.sqrt(p * (1 - p) / asked + z * z / (4 * asked * asked)) / (1 + z * z / asked)
    return max(centre - half, 0.0), min(centre + half, 1.0)  # exactly 0 / 1 at p = 0 / 1, not -1e-17


def _fmt_interval(lo: float, hi: float) -> str:
    return "-" if math.isnan(lo) else f"{100 * lo:.1f}-{100 * hi:.1f}"


def markdown(results: pd.DataFrame, title: str = "Results") -> str:
    """Accuracy (%) and cross-entropy tables in the layout of the paper's Table 1, plus seen means."""
    lines = [f"# {title}", ""]
    seen = set(seen_types(results))
    for value, heading, pct in (("accuracy", "Exact-match accuracy (%)", True),
                                ("cross_entropy", "Answer cross-entropy (nats/token, teacher-forced)", False)):
        table = wide(results, value)
        n = wide(results, "n")
        cols = list(table.columns)
        lines += [f"## {heading}", "", "| problem type | " + " | ".join(label(c) for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        seen_rows = [t for t in table.index if t in seen]  # type_order: the seen types come first
        lines += [f"| {t} | " + " | ".join(_fmt(table.loc[t, c], pct) for c in cols) + " |" for t in seen_rows]
        if seen:  # their means right under them, as in the paper's table
            means = table.loc[seen_rows].mean()
            lines.append(f"| *mean, {len(seen)} seen types* | " + " | ".join(f"*{_fmt(means[c], pct)}*" for c in cols) + " |")
            if pct:  # the questions of the seen types pooled (the mean, when every type has as many)
                solved, asked = (table.loc[seen_rows] * n.loc[seen_rows]).sum(), n.loc[seen_rows].sum()
                cells = [_fmt_interval(*wilson_interval(solved[c], asked[c])) for c in cols]
                lines.append("| *95% interval (Wilson), seen-type questions* | " + " | ".join(cells) + " |")
        lines += [f"| {t} (unseen) | " + " | ".join(_fmt(table.loc[t, c], pct) for c in cols) + " |"
                  for t in table.index if t not in seen]
        lines += ["", f"Questions per type: {int(np.nanmin(n.values))}-{int(np.nanmax(n.values))}.", ""]
    lines += [paper_names(wide(results, "n").columns).strip(), ""]
    ratios = headline_ratios(results)
    if ratios:
        lines += ["## Headline ratios (seen types)", ""]
        lines += [ratio_line(k, v) for k, v in ratios.items()]
        lines.append("")
    return "\n".join(lines)


def ratio_line(key: str, value) -> str:
    """A headline ratio in results.md: its key (as in the run's summary) and the method it compares with."""
    if key == "lora_row":
        return f"- {key}: {label(value)}"
    against = key.split("_vs_", 1)[1] if "_vs_" in key else ""
    return f"- {key}: {value:.2f}" + (f" (against {label(against)})" if against else "")


def plot_accuracy(results: pd.DataFrame, path: Path, title: str = "Accuracy per problem type") -> Path:
    """results.png (figures.accuracy_bars): problem types in `type_order`, with their question counts;
    methods in method_table's order and names."""
    n = wide(results, "n")
    fig = figures.accuracy_bars(wide(results, "accuracy"), set(seen_types(results)),
                                {t: questions_per_type(n.loc[t]) for t in n.index}, title)
    return figures.save(fig, path)


def write_results(run_dir: Path, results: pd.DataFrame, title: str = "Results") -> dict[str, Path]:
    results = results[RESULT_COLUMNS]
    run_dir = Path(run_dir)
    md = markdown(results, title)  # before any file: an error in the table leaves no half-written folder
    return {"csv": atomic_write_csv(results, run_dir / "results.csv"),
            "md": atomic_write_text(run_dir / "results.md", md),
            "png": plot_accuracy(results, run_dir / "results.png", title)}


# ----------------------------------------------------------------------------- gate figure
# What the gate figures of each name show (their titles; another name: give `what`).
GATE_FIGURES = {"gate_scores": "stage 3's test prompts", "gate_validation": "validation prompts (gate_statistics)"}


def write_gate_scores(run_dir: Path, scores: pd.DataFrame, gate: Gate, name: str = "gate_scores",
                      what: str = "") -> dict[str, Path]:
    """scores: columns group (seen math | unseen math | non-math), problem_type, score (and the margins
    the gate reads, or the gate_open decisions already made) -> <name>.csv/png (figures.gate_histogram,
    titled with `what` the prompts are (default GATE_FIGURES[name]) and the run)."""
    run_dir = Path(run_dir)
    if "gate_open" not in scores:
        scores = scores.assign(gate_open=gate.open_rows(scores))
    csv = atomic_write_csv(scores, run_dir / f"{name}.csv")
    title = f"Gate scores of {what or GATE_FIGURES.get(name, name)}, run {run_dir.name}"
    png = figures.save(figures.gate_histogram(scores, gate, title), run_dir / f"{name}.png")
    return {"csv": csv, "png": png}


def gate_summary(scores: pd.DataFrame, gate: Gate) -> dict[str, float]:
    """{gate_open_rate/<group>: share of the group's prompts the gate opens for}."""
    opened = scores["gate_open"].astype(bool) if "gate_open" in scores else gate.open_rows(scores)
    return {f"gate_open_rate/{g}": float(p.mean()) for g, p in opened.groupby(scores["group"])}


def combine(frames: list[pd.DataFrame], names: Optional[list[str]] = None) -> tuple[pd.DataFrame, list[str]]:
    """Merge several runs' results; a (method, problem type) already present is kept from the
    first run that has it (notes say which were dropped)."""
    notes, parts, have = [], [], set()
    for i, df in enumerate(frames):
        keys = list(zip(df["method"], df["problem_type"]))
        dup = [k in have for k in keys]
        if any(dup):
            kept = ordered(k[0] for k, d in zip(keys, dup) if d)
            notes.append(f"{names[i] if names else i}: kept the earlier run's {', '.join(label(m) for m in kept)}")
        parts.append(df[[not d for d in dup]])
        have.update(keys)
    out = pd.concat(parts, ignore_index=True)[RESULT_COLUMNS] if parts else pd.DataFrame(columns=RESULT_COLUMNS)
    return out, notes


# ----------------------------------------------------------------------------- what a run was made on
FINGERPRINTS = "fingerprints.json"
# What must agree between runs whose results are merged into one table (compare_runs).
MUST_MATCH = {"test_rows": "test rows", "test_questions": "test question format", "model": "model",
              "codebook": "VSA codebook", "seen_types": "seen types"}


def rows_fingerprint(rows: pd.DataFrame) -> str:
    """sha256 (16 hex digits) of a split's rows: problem_type, x, y, question, solution, in order."""
    cols = ["problem_type", "x", "y", "question", "solution"]
    h = hashlib.sha256(rows[cols].astype(str).to_csv(index=False).encode())
    return h.hexdigest()[:16]


def write_fingerprints(run_dir: Path, info: dict) -> Path:
    """`fingerprints.json` beside results.csv: {test_rows, n_test_rows, test_questions (how they were
    asked), model, codebook (None when the run used no VSA engine), seen_types, seen_from}."""
    return atomic_write_json(Path(run_dir) / FINGERPRINTS, info, what="the run's fingerprints")


def read_fingerprints(results_csv: Path) -> Optional[dict]:
    """The fingerprints.json beside a results.csv (None without one); a broken one is a DataError."""
    path = Path(results_csv).parent / FINGERPRINTS
    if not path.is_file():
        return None
    try:
        prints = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: not valid JSON ({echo(str(exc), 120, quote=False)}); "
                        f"rerun stage 3 for this run") from None
    if not isinstance(prints, dict) or not all(k in prints for k in MUST_MATCH):
        raise DataError(f"{path}: not the fingerprints of a run (keys {', '.join(MUST_MATCH)} expected); "
                        f"rerun stage 3 for this run")
    return prints


def mismatches(names: list[str], prints: list[Optional[dict]]) -> list[str]:
    """What differs between the runs (one line per key of MUST_MATCH); [] when they agree. The
    codebook is compared between the runs that used one (the plain model and CoT use none)."""
    out = [f"{n}: no {FINGERPRINTS} (not made by this version of stage 3), so its test rows, model and "
           f"codebook are unknown" for n, p in zip(names, prints) if p is None]
    have = {n: p for n, p in zip(names, prints) if p is not None}
    for key, what in MUST_MATCH.items():
        vals = {n: p.get(key) for n, p in have.items() if not (key == "codebook" and p.get(key) is None)}
        if len({json_key(v) for v in vals.values()}) > 1:
            out.append(f"different {what} (" + ", ".join(f"{n}: {_show(key, v, have[n])}" for n, v in vals.items()) + ")")
    return out


def json_key(v) -> str:
    return json.dumps(v, sort_keys=True)


def _show(key: str, value, prints: dict) -> str:
    if key == "test_rows":
        return f"{value} ({prints.get('n_test_rows')} rows)"
    if key == "seen_types":
        return "[" + ", ".join(value or []) + "]"
    return str(value)[:16]


def resolve_results(arg: str, programs_dir: str = "") -> Path:
    """A run name (results/<run>/results.csv), a results.csv, or a folder holding one."""
    p = Path(arg).expanduser()
    for cand in (p, p / "results.csv"):
        if cand.is_file():
            return cand
    check_run_name(arg, "compare_runs: run")  # not a path: then a run name, and only a plain one
    if (results_dir(arg, programs_dir) / "results.csv").is_file():
        return results_dir(arg, programs_dir) / "results.csv"
    raise DataError(f"{arg}: neither a results.csv, a folder holding one, nor a run with "
                    f"{results_dir(arg, programs_dir) / 'results.csv'}")

