"""The prompt a trained intervention is asked with (nsllm ask and neurosymbolic_llm.Intervention): the
dataset's few-shot dialog with two solved examples of the question's type, drawn from
row_rng(seed, "ask", question index); a question in none of the dataset's phrasings is asked as the
gate statistics ask non-math questions, unless examples_type names a type."""
from __future__ import annotations

from neurosymbolic_llm.pipeline import artefact as artefacts
from neurosymbolic_llm.symbolic.problems import parse_question
from neurosymbolic_llm.symbolic.prompts import few_shot_dialog, non_math_dialog, row_rng

SPLIT = "ask"  # the few-shot examples of question i come from row_rng(seed, SPLIT, i)


def dialog(question: str, index: int, art: artefacts.TrainedIntervention, examples_type: str = "auto"):
    """(messages, how it is asked, (type, x, y) of a recognised question or None)."""
    p = art.prompt
    kw = dict(complexity=p["complexity"], limit_solution_digits=p["limit_solution_digits"])
    try:
        known = parse_question(question, **kw)
    except ValueError:  # a number of more digits than int() reads: no problem of any complexity
        known = None
    kind = examples_type if examples_type != "auto" else known[0] if known else None
    if kind is None:
        return non_math_dialog(question), "non-math prompt", known
    return few_shot_dialog(kind, question, row_rng(p["seed"], SPLIT, index), **kw), f"few-shot {kind}", known
