"""Two-step questions: a test question followed by one step that uses its answer (issue 26, item 4;
stage 3's --two_step_questions).

Why the set exists: the neurosymbolic model writes the solver's answer into the residual stream
before the model answers, so the model could go on computing with it; read and print only prints
the solver's answer for the question it read, so it cannot take a further step. On these questions
("What is 515 plus 424? Then add 1 to the result.") the answer is the first step's value changed by
the follow-up; the set measures whether writing lets the model use the value. The few-shot examples
of a two-step question are two-step questions of the same type and follow-up
(prompts.few_shot_dialog), so every method is shown what is asked.

Pure Python and pandas (no torch): the follow-ups are integer functions of the first answer, so the
existing answer parsing and exact match apply.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import pandas as pd


class FollowUp(NamedTuple):
    text: str                     # appended to the question after one space
    answer: Callable[[int], int]  # first step's answer -> the two-step answer


# In the order questions cycle through them; the texts read after a dataset question ("... ?").
FOLLOW_UPS: dict[str, FollowUp] = {
    "add_one": FollowUp("Then add 1 to the result.", lambda v: v + 1),
    "double": FollowUp("Then multiply the result by 2.", lambda v: 2 * v),
    "last_digit": FollowUp("What is the last digit of the result?", lambda v: v % 10),
}
# Digits a follow-up may add to the first answer (v + 1 and 2 * v: at most one), for the answer budget.
EXTRA_DIGITS = 1
COLUMNS = ("problem_type", "x", "y", "question", "solution", "first_step", "follow_up")


def follow_up_question(question: str, kind: str) -> str:
    """The question with the follow-up `kind` appended."""
    return f"{question.rstrip()} {FOLLOW_UPS[kind].text}"


def follow_up_answer(value: int, kind: str) -> int:
    """The two-step answer for the first step's answer `value`."""
    return int(FOLLOW_UPS[kind].answer(int(value)))


def two_step_rows(rows: pd.DataFrame, types: Sequence[str], per_type: int) -> pd.DataFrame:
    """The first `per_type` rows of each of `types` in `rows` (a problems frame: problem_type, x, y,
    question, solution), in the order of `types`, each asked with one follow-up; the k-th question
    of the set gets the (k mod 3)-th kind of FOLLOW_UPS. Columns COLUMNS: question and solution are
    the two-step ones, first_step the row's own solution. [len(types) * per_type at most] rows."""
    kinds = list(FOLLOW_UPS)
    picked = [rows[rows["problem_type"] == t].head(per_type) for t in types]
    base = pd.concat(picked, ignore_index=True) if picked else pd.DataFrame(columns=list(COLUMNS[:5]))
    follow = [kinds[k % len(kinds)] for k in range(len(base))]
    first = [int(v) for v in base["solution"]]
    return pd.DataFrame({
        "problem_type": base["problem_type"].astype(str).values, "x": base["x"].astype("int64").values,
        "y": base["y"].astype("int64").values,
        "question": [follow_up_question(str(q), f) for q, f in zip(base["question"], follow)],
        "solution": pd.array([follow_up_answer(v, f) for v, f in zip(first, follow)], dtype="int64"),
        "first_step": pd.array(first, dtype="int64"), "follow_up": follow}, columns=list(COLUMNS))
