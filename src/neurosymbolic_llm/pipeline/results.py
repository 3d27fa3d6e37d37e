"""Result files of stage 3 and of compare_runs: tables (CSV, Markdown), plots, headline ratios.

results.csv has exactly RESULT_COLUMNS, one row per method and evaluated problem type; accuracy is
a fraction in [0, 1], cross_entropy the mean teacher-forced token CE of the answer. Every file is
written atomically (temporary file in the same folder, then rename). Tables and figures name the
methods by method_table's labels, in its order, and list the problem types in `type_order`; the
figures themselves are drawn by figures.py.

The headline ratios (times more solved, lower cross-entropy) are headline.py's; results.md prints
them with a line saying what each means.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Optional

import pandas as pd

from neurosymbolic_llm.pipeline import figures
from neurosymbolic_llm.pipeline.errors import DataError, echo
from neurosymbolic_llm.pipeline.files import atomic_write_csv, atomic_write_json, atomic_write_text
from neurosymbolic_llm.pipeline.gate import Gate
from neurosymbolic_llm.pipeline.headline import headline_ratios, markdown_section, percent
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


def headline_summary(results: pd.DataFrame) -> dict:
    """The paper's headline figures of a run: mean accuracy and cross-entropy of each method over
    the seen (and the unseen) types, and the headline ratios; a figure a method does not have (read
    and print's cross-entropy) is left out, never NaN."""
    out = {}
    for seen, group in ((True, "seen"), (False, "unseen")):
        part = results[results["seen"] == seen].groupby("method")
        for value in ("accuracy", "cross_entropy"):
            out |= {f"{group}_{value}/{m}": float(v) for m, v in part[value].mean().items() if pd.notna(v)}
    return out | headline_ratios(results)


def _fmt(v, pct: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return percent(v) if pct else f"{v:.3f}"


def wilson_interval(solved: float, asked: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion solved/asked (95% for z = 1.96); (nan, nan) for none asked."""
    if not asked > 0:
        return math.nan, math.nan
    p = solved / asked
    centre = (p + z * z / (2 * asked)) / (1 + z * z / asked)
    half = z * math.sqrt(p * (1 - p) / asked + z * z / (4 * asked * asked)) / (1 + z * z / asked)
    # exactly 0 / 1 at p = 0 / 1 (rounding gives -1e-17 or 0.9999999999999999 there)
    return (0.0 if solved <= 0 else max(centre - half, 0.0)), (1.0 if solved >= asked else min(centre + half, 1.0))


def intervals(accuracy: pd.DataFrame, n: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """95% Wilson bounds (lower, upper) of every cell of wide(results, "accuracy") with its question
    counts wide(results, "n"); NaN where the method was not evaluated."""
    lo, hi = accuracy.copy(), accuracy.copy()
    for t in accuracy.index:
        for m in accuracy.columns:
            a, k = accuracy.loc[t, m], n.loc[t, m]
            lo.loc[t, m], hi.loc[t, m] = wilson_interval(a * k, k) if pd.notna(a) and pd.notna(k) else (math.nan,) * 2
    return lo, hi


def seen_means(results: pd.DataFrame) -> pd.DataFrame:
    """Per method (rows, method_table's order): mean accuracy over the seen types, the seen-type
    questions pooled (solved, asked) and their 95% Wilson interval (lower, upper); the tables' and
    results.png's "mean of the seen types"."""
    seen = seen_types(results)
    acc, n = wide(results, "accuracy").loc[seen], wide(results, "n").loc[seen]
    solved, asked = (acc * n).sum(), n.where(acc.notna()).sum()
    rows = {m: {"mean": acc[m].mean(), "solved": solved[m], "asked": asked[m],
                **dict(zip(("lower", "upper"), wilson_interval(solved[m], asked[m])))} for m in acc.columns}
    return pd.DataFrame.from_dict(rows, orient="index")


def _fmt_interval(lo: float, hi: float) -> str:
    return "-" if math.isnan(lo) else f"{percent(lo)}-{percent(hi)}"


# Why a method has no value ("-") in a table, by method key; other dashes: not evaluated.
NO_VALUE = {("cross_entropy", "read_and_print"): "read and print prints the solver's answer for the encoder's "
                                                 "reading without the model, so it has no answer distribution "
                                                 "and no cross-entropy"}
# One line under each table: what its numbers are.
TABLE_MEANING = {
    "accuracy": "Exact-match accuracy: the share of a type's test questions whose parsed answer equals the "
                "solution. Mean: the unweighted mean over the seen (trained) types. 95% interval: Wilson score "
                "interval over the seen-type questions pooled.",
    "cross_entropy": "Answer cross-entropy: the mean per-token cross-entropy (nats) of the reference answer's "
                     "tokens, teacher-forced after the prompt; lower is better.",
}


def dash_notes(table: pd.DataFrame, value: str) -> list[str]:
    """The footnote lines for the dashes of one table: why each method has one."""
    notes = []
    for m in table.columns:
        if table[m].isna().any():
            why = NO_VALUE.get((value, m), f"{label(m)} was not evaluated on "
                               + ", ".join(str(t) for t in table.index[table[m].isna()]))
            notes.append(f"- (-) {why}.")
    return notes


def markdown(results: pd.DataFrame, title: str = "Results") -> str:
    """Accuracy (%) and cross-entropy tables in the layout of the paper's Table 1, plus seen means,
    the headline ratios (headline.py) and one line defining every figure; no NaN (a dash and a footnote)."""
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
                pooled = seen_means(results)
                cells = [_fmt_interval(pooled.loc[c, "lower"], pooled.loc[c, "upper"]) for c in cols]
                lines.append("| *95% interval (Wilson), seen-type questions* | " + " | ".join(cells) + " |")
        lines += [f"| {t} (unseen) | " + " | ".join(_fmt(table.loc[t, c], pct) for c in cols) + " |"
                  for t in table.index if t not in seen]
        lines += ["", f"Questions per type: {questions_per_type(pd.Series(n.values.ravel()))[2:]}. "
                  + TABLE_MEANING[value]]
        lines += dash_notes(table, value) + [""]
    lines += [paper_names(wide(results, "n").columns).strip(), ""]
    return "\n".join(lines + markdown_section(results))


def plot_accuracy(results: pd.DataFrame, path: Path, title: str = "Exact-match accuracy on the test questions",
                  note: str = "") -> Path:
    """results.png (figures.accuracy_bars): the seen types' mean first, then the problem types in
    `type_order` with their question counts; methods in method_table's order and names; 95% Wilson
    intervals (`intervals`, `seen_means`)."""
    n, acc = wide(results, "n"), wide(results, "accuracy")
    lower, upper = intervals(acc, n)
    fig = figures.accuracy_bars(acc, lower, upper, seen_means(results), set(seen_types(results)),
                                {t: questions_per_type(n.loc[t]) for t in n.index}, title, note)
    return figures.save(fig, path)


def write_results(run_dir: Path, results: pd.DataFrame, title: str = "Results",
                  figure_title: str = "Exact-match accuracy on the test questions", note: str = "") -> dict[str, Path]:
    """results.csv, results.md (titled `title`) and results.png (titled `figure_title`, `note` a
    caption line) in run_dir."""
    results = results[RESULT_COLUMNS]
    run_dir = Path(run_dir)
    md = markdown(results, title)  # before any file: an error in the table leaves no half-written folder
    return {"csv": atomic_write_csv(results, run_dir / "results.csv"),
            "md": atomic_write_text(run_dir / "results.md", md),
            "png": plot_accuracy(results, run_dir / "results.png", figure_title, note)}


# ----------------------------------------------------------------------------- gate figure
# What the gate figures of each name show (their titles; another name: give `what`).
GATE_FIGURES = {"gate_scores": "stage 3's test prompts", "gate_validation": "validation prompts, scored by gate_statistics,"}


def write_gate_scores(run_dir: Path, scores: pd.DataFrame, gate: Gate, name: str = "gate_scores",
                      what: str = "") -> dict[str, Path]:
    """scores: columns group (seen math | unseen math | non-math), problem_type, score (and the margins
    the gate reads, or the gate_open decisions already made) -> <name>.csv/png (figures.gate_histogram,
    titled with `what` the prompts are (default GATE_FIGURES[name]) and the run)."""
    run_dir = Path(run_dir)
    if "gate_open" not in scores:
        scores = scores.assign(gate_open=gate.open_rows(scores))
    csv = atomic_write_csv(scores, run_dir / f"{name}.csv")
    title = f"Gate scores of {what or GATE_FIGURES.get(name, name)} (run {run_dir.name})"
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
    asked), model, codebook (None when the run used no VSA engine), seen_types, seen_from,
    environment (`environment()`, unless info has one)}."""
    info = {**info, "environment": info.get("environment") or environment()}
    return atomic_write_json(Path(run_dir) / FINGERPRINTS, info, what="the run's fingerprints")


def environment() -> dict:
    """What a run's numbers depend on besides its inputs: the torch build, and (when torch is loaded)
    the CPU kernels it chose and its threads. Trained methods differ by rounding between environments
    (Programs/real/README.md, "Run-to-run variation"), so compare_runs warns when they differ."""
    import platform
    import sys
    from importlib import metadata

    try:
        env = {"torch": metadata.version("torch")}
    except metadata.PackageNotFoundError:
        env = {"torch": None}
    env["python"] = platform.python_version()
    torch = sys.modules.get("torch")  # not imported here: compare_runs runs without torch
    if torch is not None:
        env |= {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    return env


def environment_warnings(names: list[str], prints: list[Optional[dict]]) -> list[str]:
    """One line when the runs were made in different environments (torch build, CPU kernels, threads):
    merged anyway, but trained methods then differ by rounding, not only by method."""
    envs = {n: p["environment"] for n, p in zip(names, prints) if p and p.get("environment")}
    keys = sorted({k for e in envs.values() for k in e if k != "python"})
    differ = [k for k in keys if len({json_key(e.get(k)) for e in envs.values()}) > 1]
    if not differ:
        return []
    return [f"runs made in different environments ({', '.join(f'{n}: ' + ' '.join(str(envs[n].get(k)) for k in differ) for n in envs)}; "
            f"{', '.join(differ)}): trained methods may differ by rounding as well as by method"]


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

