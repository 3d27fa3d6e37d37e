"""Reading a problems CSV (the Symbolic-Math-Dataset's columns problem_type,x,y,question,solution)
with every check: the first bad row is one DataError naming the file, line, field and problem.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from neurosymbolic_llm.errors import DataError, echo
from neurosymbolic_llm.symbolic.problems import COLUMNS
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES, solve_one

_INT_RE = r"\s*[+-]?[0-9]+\s*"


def _where(path, line: int, row: int, field: str | None) -> str:
    f = f", field '{field}'" if field else ""
    return f"{path}: line {line} (data row {row}; the header is line 1){f}"


def load_problems_csv(path, *, max_digits: int, complexity: int = 2,
                      limit_solution_digits: bool = True,
                      problem_types: Sequence[str] | None = None) -> pd.DataFrame:
    """Read and validate a problems CSV (``problem_type,x,y,question,solution``), rows as they are.

    Returns a DataFrame with those columns (x, y, solution int64; index 0..N-1). Raises
    ``DataError`` naming the file, the line (the header is line 1; also the 1-based data row),
    the field and the problem, for the first bad row: missing file, empty file, missing or extra
    column, wrong number of fields, unknown problem type (or one not in ``problem_types``),
    non-integer/negative operand or solution, more digits than ``max_digits``, empty question,
    or a solution that disagrees with the solver. The message also says how many rows are bad.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); save the CSV "
                        f"as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _parse_problems_csv(path, reader, max_digits=max_digits, complexity=complexity,
                                   limit_solution_digits=limit_solution_digits, problem_types=problem_types)
    except csv.Error as exc:  # a field over csv's size limit, a NUL byte, an unclosed quote at the end
        raise DataError(f"{path}: line {reader.line_num}: not a readable CSV row ({exc})") from None


def _parse_problems_csv(path: Path, reader, *, max_digits: int, complexity: int, limit_solution_digits: bool,
                        problem_types: Sequence[str] | None) -> pd.DataFrame:
    """load_problems_csv's checks, over the rows of `reader` (a csv.reader of the decoded file)."""
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):
        header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: empty file (expected a header {','.join(COLUMNS)} and rows)")
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: line 1 (header): missing column '{missing[0]}' "
                        f"(expected {','.join(COLUMNS)}; found {echo(','.join(header))})")
    extra = [c for c in header if c not in COLUMNS]
    if extra or len(header) != len(COLUMNS):
        what = f"unexpected column '{extra[0]}'" if extra else "a column appears twice"
        raise DataError(f"{path}: line 1 (header): {what} (expected {','.join(COLUMNS)})")
    rows, lines = [], []
    for rec in reader:
        if not rec or (len(rec) == 1 and not rec[0].strip()):
            continue  # blank line
        if len(rec) != len(header):
            raise DataError(f"{_where(path, reader.line_num, len(rows) + 1, None)}: expected "
                            f"{len(header)} fields, found {len(rec)}")
        rows.append(rec)
        lines.append(reader.line_num)
    if not rows:
        raise DataError(f"{path}: empty file (a header but no data rows)")
    raw = pd.DataFrame(rows, columns=header)[list(COLUMNS)]
    N = len(raw)
    allowed = PROBLEM_TYPES if problem_types is None else tuple(problem_types)

    ptype = raw["problem_type"].str.strip()
    checks: list[tuple[str, np.ndarray, callable]] = []
    unknown = ~ptype.isin(PROBLEM_TYPES).to_numpy()
    checks.append(("problem_type", unknown,
                   lambda i: f"unknown problem type {echo(ptype[i])} (known: {', '.join(PROBLEM_TYPES)})"))
    checks.append(("problem_type", ~unknown & ~ptype.isin(allowed).to_numpy(),
                   lambda i: f"problem type {echo(ptype[i])} is not among the selected types "
                             f"({', '.join(allowed)})"))
    values: dict[str, np.ndarray] = {}
    ok_all = ~unknown
    for field in ("x", "y", "solution"):
        s = raw[field].str.strip()
        is_int = s.str.fullmatch(_INT_RE).to_numpy()
        neg = is_int & s.str.startswith("-").to_numpy() & s.str.contains("[1-9]").to_numpy()
        ndig = s.str.lstrip("+-").str.lstrip("0").str.len().to_numpy()
        big = is_int & ~neg & (ndig > max_digits)
        ok = is_int & ~neg & ~big
        vals = np.zeros(N, np.int64)
        vals[ok] = s[ok].astype(np.int64).to_numpy()
        values[field] = vals
        ok_all = ok_all & ok
        kind = "solution" if field == "solution" else "operand"
        checks.append((field, ~is_int, lambda i, s=s, kind=kind:
                       f"{kind} {echo(s[i])} is not an integer" if s[i] else f"{kind} is empty"))
        checks.append((field, neg, lambda i, s=s, kind=kind: f"{kind} {echo(s[i], quote=False)} is negative"))
        checks.append((field, big, lambda i, s=s, kind=kind, nd=ndig:
                       f"{kind} {echo(s[i], quote=False)} has {nd[i]} digits, more than max_digits = {max_digits}"))
        if field == "y":
            q = raw["question"].str.strip()
            checks.append(("question", (q == "").to_numpy(), lambda i: "question is empty"))
    kw = dict(complexity=complexity, limit_solution_digits=limit_solution_digits)
    ok_idx = np.flatnonzero(ok_all)
    xs, ys, sol = values["x"], values["y"], values["solution"]
    pt = ptype.to_numpy()
    expected = np.zeros(N, dtype=object)
    expected[ok_idx] = [solve_one(pt[i], xs[i], ys[i], **kw) for i in ok_idx.tolist()]
    wrong = np.zeros(N, bool)
    wrong[ok_idx] = expected[ok_idx] != sol[ok_idx]
    checks.append(("solution", wrong, lambda i:
                   f"solution {sol[i]} disagrees with the solver ({pt[i]} of {xs[i]} and {ys[i]} "
                   f"is {expected[i]} at complexity {complexity}, "
                   f"limit_solution_digits={limit_solution_digits})"))
    q = raw["question"].to_numpy(object)
    # the numbers as digit strings without leading zeros: int() of a 5,000-digit number would fail
    numbers = [{n.lstrip("0") or "0" for n in found} for found in raw["question"].str.findall("[0-9]+")]
    for field in ("x", "y"):  # the text must ask about the row's operands (whole numbers in digits)
        v = [str(n) for n in values[field].tolist()]
        absent = ok_all & np.fromiter((v[i] not in numbers[i] for i in range(N)), dtype=bool, count=N)
        checks.append(("question", absent, lambda i, field=field, v=v:
                       f"question {echo(q[i])} does not contain {field} = {v[i]}"))

    bad = np.zeros(N, bool)
    for _, mask, _ in checks:
        bad |= mask
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        field, _, msg = next(c for c in checks if c[1][i])
        more = int(bad.sum()) - 1
        tail = f" ({more} more bad rows)" if more else ""
        raise DataError(f"{_where(path, lines[i], i + 1, field)}: {msg(i)}{tail}")
    return pd.DataFrame({"problem_type": pt.astype(object), "x": xs, "y": ys,
                         "question": raw["question"].to_numpy(object), "solution": sol})
