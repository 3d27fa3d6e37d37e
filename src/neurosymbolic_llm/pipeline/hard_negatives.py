"""Hard negatives for calibrating the gate only (stages/gate_statistics.py): questions that look like
the dataset's but ask for an operation the solver lacks, and number-bearing text that asks nothing.
They never enter training, and they contain none of the test's unseen types (addition, division),
so a gate chosen on them has not seen the test. Deterministic in the seed."""
from __future__ import annotations

import numpy as np

from neurosymbolic_llm.symbolic.prompts import FEW_SHOT_SYSTEM, non_math_dialog

# operation -> (question template, answer of (x, y)); answered in the few-shot examples like the dataset's types
OPERATIONS = {
    "subtraction": ("What is {x} minus {y}?", lambda x, y: x - y),
    "power": ("What is {x} to the power of {y}?", lambda x, y: x ** y),
    "maximum": ("What is the larger of {x} and {y}?", max),
    "minimum": ("What is the smaller of {x} and {y}?", min),
    "comparison": ("Is {x} greater than {y}? Answer 1 for yes and 0 for no.", lambda x, y: int(x > y)),
}
STATEMENTS = [
    "The meeting moved from room {x} to room {y}.", "Our team has {x} members and {y} of them are new.",
    "The bus line {x} stops at {y} stations.", "She planted {x} tulips and {y} roses last spring.",
    "The museum opened in {x} and was rebuilt {y} years later.", "Flight {x} leaves from gate {y}.",
]
GROUPS = (*OPERATIONS, "numbers, no question")


def _operands(rng: np.random.Generator, op: str) -> tuple[int, int]:
    if op == "power":  # keeps the answer printable
        return int(rng.integers(2, 31)), int(rng.integers(2, 4))
    return tuple(sorted(rng.integers(1, 1000, size=2).tolist(), reverse=True))


def hard_negative_dialogs(n_per_group: int, seed: int) -> list[tuple[str, list[dict]]]:
    """(group, dialog) pairs, n_per_group per group of GROUPS: an operation question after two solved
    examples of the same operation (the few-shot format of the dataset's prompts), or a statement
    with numbers in the non-math prompt (prompts.non_math_dialog)."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for op, (template, answer) in OPERATIONS.items():
        for _ in range(n_per_group):
            msgs = [{"role": "system", "content": FEW_SHOT_SYSTEM}]
            for _ in range(2):
                a, b = _operands(rng, op)
                msgs += [{"role": "user", "content": template.format(x=a, y=b)},
                         {"role": "assistant", "content": str(answer(a, b))}]
            x, y = _operands(rng, op)
            out.append((op, msgs + [{"role": "user", "content": template.format(x=x, y=y)}]))
    for i in range(n_per_group):
        x, y = _operands(rng, "statement")
        out.append(("numbers, no question", non_math_dialog(STATEMENTS[i % len(STATEMENTS)].format(x=x, y=y))))
    return out
