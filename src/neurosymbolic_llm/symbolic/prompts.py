"""Prompts around a question, and reading the model's answer.

- few-shot (the pipeline's prompt): a system message, two solved examples of the same type, the
  question; the examples of a row come from ``row_rng(seed, split, row)``, so batching and ranks
  change nothing.
- chain of thought: a step-by-step system message; the answer follows "Final Answer:".
- non-math questions (the gate statistics): held-out chat questions that must not open the gate.
"""
from __future__ import annotations

import re
import zlib
from typing import Optional

import numpy as np

from neurosymbolic_llm.symbolic.problems import SCALES, number_words, question_text
from neurosymbolic_llm.symbolic.solver import solve_one
from neurosymbolic_llm.symbolic.two_step import follow_up_answer, follow_up_question

FEW_SHOT_SYSTEM = ("You are a careful math assistant that solves arithmetic problems. "
                   "Reply with the bare number only, without commas or any other text, "
                   "in exactly the same format as your previous answers.")
FEW_SHOT_WORDS_SYSTEM = ("You are a careful math assistant that solves arithmetic problems. "
                         "Reply with the number only, written in words, "
                         "in exactly the same format as your previous answers.")
COT_SYSTEM = ("You are a math assistant that explains its reasoning. Work through each problem "
              "step by step, and always finish your reply with the marker \"Final Answer:\" "
              "followed by the result as a bare integer (digits only, no commas).")
COT_PREFIX = "Solve this problem step by step. "
NON_MATH_SYSTEM = ("You are a thoughtful assistant. Give careful, well-reasoned and reflective "
                   "answers.")
NON_MATH_PREFIX = "Think about this carefully before you answer: "
FINAL_MARKER = "Final Answer:"


def few_shot_dialog(problem_type: str, question: str, rng: np.random.Generator, *,
                    complexity: int = 2, limit_solution_digits: bool = True, words: bool = False,
                    follow_up: Optional[str] = None) -> list[dict]:
    """System message, two solved examples of ``problem_type`` (random operands with x >= y,
    canonical phrasing, the assistant answer a bare integer), then the user ``question``.
    ``words``: the examples' numbers and answers in English words (--test_with_non_numerical_rep).
    ``follow_up``: a kind of two_step.FOLLOW_UPS: the examples are two-step questions of that kind
    with their two-step answers (the same draws as without it)."""
    hi = 10 ** (int(complexity) + 1) - 1
    kw = dict(complexity=complexity, limit_solution_digits=limit_solution_digits)
    msgs = [{"role": "system", "content": FEW_SHOT_WORDS_SYSTEM if words else FEW_SHOT_SYSTEM}]
    for _ in range(2):
        a, b = sorted(rng.integers(1, hi + 1, size=2).tolist(), reverse=True)
        answer = solve_one(problem_type, a, b, **kw)
        text = question_text(problem_type, a, b, words=words, **kw)
        if follow_up is not None:
            text, answer = follow_up_question(text, follow_up), follow_up_answer(answer, follow_up)
        msgs.append({"role": "user", "content": text})
        msgs.append({"role": "assistant", "content": number_words(answer) if words else str(answer)})
    msgs.append({"role": "user", "content": question})
    return msgs


def cot_dialog(question: str) -> list[dict]:
    """Chain-of-thought prompt: step-by-step system message, user = prefix + question."""
    return [{"role": "system", "content": COT_SYSTEM},
            {"role": "user", "content": COT_PREFIX + question}]


_NON_MATH = {
    "philosophy": [
        "Can a person step into the same river twice?",
        "Is it possible to know anything with complete certainty?",
        "What makes a life meaningful?",
        "Does free will exist if our choices have causes?",
        "Is a copy of you still you?",
    ],
    "ethics": [
        "Is it ever right to break a promise?",
        "Should animals have legal rights?",
        "Do we owe anything to people who will live centuries from now?",
        "Is lying to protect someone's feelings acceptable?",
        "How should scarce medicines be shared during a crisis?",
    ],
    "history": [
        "Why did the Bronze Age collapse happen?",
        "How did the printing press change European society?",
        "What lessons can be drawn from the fall of the Roman Republic?",
        "Why did the Silk Road matter for the spread of ideas?",
        "How did the invention of writing change early states?",
    ],
    "psychology": [
        "Why do people procrastinate on tasks they care about?",
        "How do habits form and how can they be changed?",
        "Why are first impressions so hard to revise?",
        "What role does boredom play in creativity?",
        "Why do groups sometimes make worse decisions than individuals?",
    ],
    "technology": [
        "How might cities change if most cars drove themselves?",
        "What are the risks of relying on a single cloud provider?",
        "Should software be held to the same safety standards as bridges?",
        "How does open-source software sustain itself?",
        "What would be lost if paper books disappeared?",
    ],
    "science fiction": [
        "Would contact with an alien civilisation change human religions?",
        "Should a colony ship's crew be bound by laws made on Earth?",
        "What would daily life look like if nobody ever had to sleep?",
        "Is a mind uploaded into a computer still alive?",
        "How might a society organise itself on a generation ship?",
    ],
    "art and culture": [
        "Why do some melodies get stuck in our heads?",
        "Can a photograph be as expressive as a painting?",
        "How do folk tales change as they travel between cultures?",
        "What makes a building beautiful?",
        "Why do people enjoy stories that make them sad?",
    ],
}


# Other questions of the same topics, for choosing gate settings (Programs/gate_statistics.py)
# without looking at the ones above, which the test statistics use.
_NON_MATH_VALIDATION = {
    "philosophy": [
        "Is there a difference between knowing something and believing it?",
        "Can something come from nothing?",
        "Are numbers discovered or invented?",
    ],
    "ethics": [
        "Is it fair to judge past generations by today's values?",
        "Should wealthy countries accept more refugees?",
        "When is civil disobedience justified?",
    ],
    "history": [
        "Why did the Industrial Revolution begin in Britain?",
        "How did the Black Death change medieval labour?",
        "Why did ancient Athens experiment with democracy?",
    ],
    "psychology": [
        "Why do people remember embarrassing moments so vividly?",
        "How does sleep affect the way we make decisions?",
        "Why do some people enjoy fear in horror films?",
    ],
    "technology": [
        "Should personal data be treated as property?",
        "What happens to skills when machines take over a task?",
        "Why do old software systems remain in use for decades?",
    ],
    "science fiction": [
        "Would time travel make history meaningless?",
        "Should artificial minds be allowed to vote?",
        "How would people trade if energy were unlimited and free?",
    ],
    "art and culture": [
        "Why do fashions return after a few decades?",
        "Is a forgery less valuable if nobody can tell it apart?",
        "How does a language shape the poetry written in it?",
    ],
}


def non_math_questions(split: str = "test") -> list[tuple[str, str]]:
    """The project's canned non-math questions as ``(topic, question)``: ``test`` (7 topics x 5, the
    gate statistics of stage 3) or ``val`` (7 topics x 3 others, for choosing gate settings)."""
    table = {"test": _NON_MATH, "val": _NON_MATH_VALIDATION}.get(split)
    if table is None:
        raise ValueError(f"split must be test or val, got {split!r}")
    return [(topic, q) for topic, qs in table.items() for q in qs]


def non_math_dialog(question: str) -> list[dict]:
    """Prompt for a non-math question (reflective system message, prefix + question)."""
    return [{"role": "system", "content": NON_MATH_SYSTEM},
            {"role": "user", "content": NON_MATH_PREFIX + question}]


# ----------------------------------------------------------------------------- answers
_BARE_INT = re.compile(r"[+-]?[0-9]+")
_COT_AFTER = re.compile(r"""[\s*_$`]*(?:\\boxed\{)?[\s*_$`]*([+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+))(?![0-9]|[.,][0-9])""")


def parse_answer(text: str) -> int | None:
    """The model's answer as an integer, or None.

    Rules: surrounding whitespace is stripped; what is left must be an optional sign followed by
    ASCII digits only (no commas, spaces, underscores, decimals or words: stricter than ``int()``
    about underscores and non-ASCII digits, the same otherwise).
    """
    if text is None:
        return None
    s = text.strip()
    return int(s) if _BARE_INT.fullmatch(s) else None


_WORD_VALUES = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                             "thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_WORD_VALUES.update({w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split())
                     if i >= 2})
_SCALE_VALUES = {name: value for value, name in SCALES}


def parse_number_words(text: str) -> int | None:
    """An integer written in English words ("nine hundred ninety-nine", "one thousand and two"),
    or None. Case, hyphens, "and", commas and a final full stop are free; otherwise the words must
    be the number's one spelling (problems.number_words), so "twenty twenty" is not 40."""
    if text is None:
        return None
    words = text.strip().lower().rstrip(".").replace(",", " ").replace("-", " ").split()
    words = [w for w in words if w != "and"]
    if not words:
        return None
    total, group, last_scale = 0, None, None
    for w in words:
        if w in _WORD_VALUES:
            group = (group or 0) + _WORD_VALUES[w]
        elif w == "hundred" and group is not None and group < 10:
            group *= 100
        elif w in _SCALE_VALUES and group is not None and (last_scale is None or _SCALE_VALUES[w] < last_scale):
            total += group * _SCALE_VALUES[w]
            group, last_scale = None, _SCALE_VALUES[w]
        else:
            return None
    if group is None and not total:
        return None
    value = total + (group or 0)
    return value if number_words(value).replace("-", " ").split() == words else None  # one spelling per number


def parse_word_answer(text: str) -> int | None:
    """The answer of --test_with_non_numerical_rep: a bare integer in digits or in words."""
    value = parse_answer(text)
    return value if value is not None else parse_number_words(text)


def parse_cot_answer(text: str) -> int | None:
    """The integer after the FIRST ``Final Answer:`` marker (case-insensitive), or None.

    Without a marker the whole text is read as a plain answer (``parse_answer``: a bare integer), as
    the original kept the whole generation when the marker was absent; prose without a marker gives
    None. The first marker is used, as the original extraction does. Between the marker and the number
    only whitespace and markdown/LaTeX decoration (``**``, ``*``, ``_``, ``$``, backticks,
    ``\\boxed{``) may appear. The number is an optional sign and digits, with optional
    thousands commas (``1,234``); anything after it (punctuation, ``**``, text) is ignored, but a
    decimal such as ``12.5`` gives None. None when there is no marker or no integer after it.
    """
    if text is None:
        return None
    k = text.lower().find(FINAL_MARKER.lower())
    if k < 0:
        return parse_answer(text)
    m = _COT_AFTER.match(text, k + len(FINAL_MARKER))
    return int(m.group(1).replace(",", "")) if m else None


def row_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, split, index)`` (so few-shot examples do not
    depend on batching or on data-parallel ranks)."""
    code = zlib.crc32(str(split).encode("utf-8"))
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, code, int(index)])
