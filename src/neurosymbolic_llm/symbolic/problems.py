"""Problems: question templates (canonical and varied phrasings, numbers in digits or words),
random generation. (Reading and checking a problems CSV is the pipeline's:
neurosymbolic_llm/pipeline/problems_csv.py.)

Everything here is plain Python/numpy/pandas (no torch in the prompt and question functions); the
exact answers come from ``neurosymbolic_llm.symbolic.solver.solve_one``.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from neurosymbolic_llm.errors import UserError, echo
from neurosymbolic_llm.symbolic.solver import solution_modulus, solve_one
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

COLUMNS = ("problem_type", "x", "y", "question", "solution")
NON_COMMUTATIVE = ("division", "modulo", "square_mod")

# ----------------------------------------------------------------------------- question templates
# Phrasings per type for --modify_question_format (pool sizes as the paper's code has them,
# docs/METHOD.md; our own wording): the canonical template first, then bare expressions, commands
# and noun phrases. {mod}
# is the " mod 1000" suffix of multiplication and lcm; every template names both operands.
QUESTION_VARIANTS = {
    "addition": ["What is {x} plus {y}?", "{x} + {y}", "{x}+{y}=", "Calculate {x} + {y}.",
                 "Compute the sum of {x} and {y}.", "Add {x} and {y}.", "What do you get when you add {y} to {x}?",
                 "Sum of {x} and {y}?", "Work out {x} plus {y}.", "How much is {x} + {y}?"],
    "multiplication": ["What is {x} times {y}{mod}?", "{x} * {y}{mod}", "{x}*{y}{mod}=", "{x} x {y}{mod}",
                       "Calculate {x} * {y}{mod}.", "Compute the product of {x} and {y}{mod}.",
                       "Multiply {x} by {y}{mod}.", "Product of {x} and {y}{mod}?", "Work out {x} times {y}{mod}.",
                       "What is {x} multiplied by {y}{mod}?", "How much is {x} * {y}{mod}?",
                       "What do you get when you multiply {x} and {y}{mod}?", "Find {x} times {y}{mod}."],
    "division": ["What is {x} // {y}?", "{x} // {y}", "Calculate {x} // {y}.",
                 "Compute the integer quotient of {x} divided by {y}.", "What is {x} divided by {y}, rounded down?",
                 "Floor of {x} / {y}?", "Work out {x} // {y}."],
    "modulo": ["What is {x} mod {y}?", "{x} % {y}", "{x} mod {y}", "Calculate {x} % {y}.",
               "Compute the remainder of {x} divided by {y}.", "What is the remainder when {x} is divided by {y}?",
               "Work out {x} modulo {y}."],
    "gcd": ["What is the GCD of {x} and {y}?", "gcd({x}, {y})", "Calculate gcd({x}, {y}).",
            "Compute the greatest common divisor of {x} and {y}.", "Greatest common divisor of {x} and {y}?",
            "Work out the GCD of {x} and {y}."],
    "lcm": ["What is the LCM of {x} and {y}{mod}?", "lcm({x}, {y}){mod}", "Calculate lcm({x}, {y}){mod}.",
            "Compute the least common multiple of {x} and {y}{mod}.", "Least common multiple of {x} and {y}{mod}?"],
    "square_mod": ["What is {x}^2 mod {y}?", "{x}^2 % {y}", "({x} ** 2) mod {y}", "Calculate {x} squared mod {y}.",
                   "Compute the remainder of {x} squared divided by {y}."],
    "bitwise_and": ["What is {x} AND {y}?", "{x} & {y}", "Calculate {x} & {y}.", "Compute the bitwise AND of {x} and {y}.",
                    "Bitwise AND of {x} and {y}?", "Work out {x} AND {y}."],
    "bitwise_or": ["What is {x} OR {y}?", "{x} | {y}", "Calculate {x} | {y}.", "Compute the bitwise OR of {x} and {y}.",
                   "Bitwise OR of {x} and {y}?", "Work out {x} OR {y}."],
    "bitwise_xor": ["What is {x} XOR {y}?", "{x} ^ {y}", "Calculate {x} ^ {y}.", "Compute the bitwise XOR of {x} and {y}.",
                    "Bitwise XOR of {x} and {y}?", "Work out {x} XOR {y}."],
}
_TEMPLATES = {t: v[0] for t, v in QUESTION_VARIANTS.items()}  # the dataset's canonical questions

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
SCALES = ((10 ** 15, "quadrillion"), (10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"),
          (1000, "thousand"))


def number_words(n: int) -> str:
    """A non-negative integer in English words: 515 -> "five hundred fifteen", 1234 -> "one
    thousand two hundred thirty-four" (no "and", tens and units hyphenated)."""
    n = int(n)
    if n < 0:
        raise ValueError(f"number_words: {n} is negative")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for value, name in SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return number_words(head) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def question_text(problem_type: str, x: int, y: int, *, complexity: int = 2,
                  limit_solution_digits: bool = True, variant: int = 0, words: bool = False) -> str:
    """A question of the dataset, e.g. ``What is 515 times 424 mod 1000?`` (variant 0, the canonical
    phrasing); `variant` picks another phrasing of QUESTION_VARIANTS, `words` writes the numbers in
    English words (``What is five hundred fifteen times ... mod one thousand?``)."""
    try:
        pool = QUESTION_VARIANTS[problem_type]
    except KeyError:
        raise UserError(f"unknown problem type {echo(problem_type)} "
                        f"(known: {', '.join(PROBLEM_TYPES)})") from None
    num = number_words if words else str
    m = solution_modulus(complexity, limit_solution_digits)
    return pool[variant].format(x=num(int(x)), y=num(int(y)), mod="" if m is None else f" mod {num(m)}")


def parse_question(question: str, *, complexity: int = 2, limit_solution_digits: bool = True
                   ) -> Optional[tuple[str, int, int]]:
    """(problem type, x, y) of a question in one of QUESTION_VARIANTS' phrasings with numbers in
    digits (the inverse of question_text; canonical phrasings first), or None."""
    m = solution_modulus(complexity, limit_solution_digits)
    text = " ".join(question.split())
    for variant in range(max(map(len, QUESTION_VARIANTS.values()))):
        for problem_type, pool in QUESTION_VARIANTS.items():
            if variant >= len(pool):
                continue
            pattern = re.escape(pool[variant]).replace(r"\{x\}", r"(?P<x>\d+)").replace(r"\{y\}", r"(?P<y>\d+)")
            pattern = pattern.replace(r"\{mod\}", "" if m is None else re.escape(f" mod {m}"))
            hit = re.fullmatch(pattern, text, flags=re.IGNORECASE)
            if hit:
                return problem_type, int(hit["x"]), int(hit["y"])
    return None


# ----------------------------------------------------------------------------- generation
def distinct_problems(n_types: int, complexity: int = 2, x_gt_y: bool = True) -> int:
    """How many different (type, x, y) random problems exist (operands 1 .. 10^(complexity+1) - 1)."""
    hi = 10 ** (int(complexity) + 1) - 1
    return n_types * (hi * (hi - 1) // 2 if x_gt_y else hi * hi)


def generate_problems(n: int, problem_types: Sequence[str] = PROBLEM_TYPES, *, complexity: int = 2,
                      x_gt_y: bool = True, seed: int | Sequence[int] = 0, limit_solution_digits: bool = True
                      ) -> pd.DataFrame:
    """``n`` distinct random problems (columns ``problem_type,x,y,question,solution``).

    Types uniform over ``problem_types``; operands uniform in ``[1, 10**(complexity+1) - 1]``.
    ``x_gt_y``: every row has x > y (swapped; ties redrawn); otherwise only the non-commutative
    types (division, modulo, square_mod) are ordered, with x >= y. No (type, x, y) repeats.
    Deterministic for a given seed (numpy ``default_rng(seed)``; a sequence of ints is a seed too).
    """
    types = list(problem_types)
    for t in types:
        if t not in PROBLEM_TYPES:
            raise UserError(f"unknown problem type {echo(t)} (known: {', '.join(PROBLEM_TYPES)})")
    hi = 10 ** (int(complexity) + 1) - 1
    cap = distinct_problems(len(types), complexity, x_gt_y)
    if n > cap:
        raise UserError(f"cannot draw {n} distinct problems: only {cap} exist for "
                        f"{len(types)} types at complexity {complexity}")
    rng = np.random.default_rng(seed)
    noncomm = np.isin(np.asarray(types), NON_COMMUTATIVE)
    parts: list[pd.DataFrame] = []
    have = 0
    for _ in range(10_000):
        if have >= n:
            break
        k = int((n - have) * 1.1) + 16
        t = rng.integers(0, len(types), size=k)
        x = rng.integers(1, hi + 1, size=k)
        y = rng.integers(1, hi + 1, size=k)
        order = np.ones(k, bool) if x_gt_y else noncomm[t]
        swap = order & (x < y)
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        keep = ~(x_gt_y & (x == y))
        parts.append(pd.DataFrame({"t": t[keep], "x": x[keep], "y": y[keep]}))
        df = pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True)
        parts, have = [df], len(df)
    else:  # pragma: no cover - only near the capacity limit
        raise UserError(f"could not draw {n} distinct problems")
    df = parts[0].iloc[:n]
    names = np.asarray(types, dtype=object)[df["t"].to_numpy()]
    xs, ys = df["x"].to_numpy(np.int64), df["y"].to_numpy(np.int64)
    kw = dict(complexity=complexity, limit_solution_digits=limit_solution_digits)
    return pd.DataFrame({
        "problem_type": names,
        "x": xs, "y": ys,
        "question": [question_text(p, a, b, **kw) for p, a, b in zip(names, xs.tolist(), ys.tolist())],
        "solution": np.asarray([solve_one(p, a, b, **kw) for p, a, b in
                                zip(names, xs.tolist(), ys.tolist())], dtype=np.int64),
    })
