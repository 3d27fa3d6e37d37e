"""Prompts (few-shot, chain of thought, non-math) and reading the model's answer."""
import numpy as np
import pytest

from neurosymbolic_llm.symbolic import prompts
from neurosymbolic_llm.symbolic.solver import solve_one


def test_few_shot_dialog_and_row_rng():
    q = "What is the GCD of 12 and 8?"
    msgs = prompts.few_shot_dialog("gcd", q, prompts.row_rng(0, "train", 7))
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "comma" in msgs[0]["content"] and msgs[-1]["content"] == q
    for u, a in ((msgs[1], msgs[2]), (msgs[3], msgs[4])):
        x, y = (int(s) for s in u["content"].removeprefix("What is the GCD of ").rstrip("?").split(" and "))
        assert x >= y and a["content"] == str(solve_one("gcd", x, y))
    assert msgs == prompts.few_shot_dialog("gcd", q, prompts.row_rng(0, "train", 7))
    assert msgs != prompts.few_shot_dialog("gcd", q, prompts.row_rng(0, "train", 8))
    assert msgs != prompts.few_shot_dialog("gcd", q, prompts.row_rng(0, "val", 7))
    assert msgs != prompts.few_shot_dialog("gcd", q, prompts.row_rng(1, "train", 7))
    m = prompts.few_shot_dialog("multiplication", "Q", np.random.default_rng(0))
    assert "mod 1000" in m[1]["content"] and int(m[2]["content"]) < 1000


def test_cot_and_non_math_dialogs():
    msgs = prompts.cot_dialog("What is 1 plus 2?")
    assert msgs[0]["role"] == "system" and "Final Answer:" in msgs[0]["content"]
    assert msgs[1]["content"].endswith("What is 1 plus 2?") and len(msgs[1]["content"]) > 20
    qs = prompts.non_math_questions()
    topics = [t for t, _ in qs]
    assert len(set(qs)) == len(qs) == 35 and len(set(topics)) == 7  # the paper's 7 topics x 5 questions
    assert {"philosophy", "ethics", "history", "psychology", "science fiction", "technology"} < set(topics)
    assert all(topics.count(t) == 5 for t in set(topics))
    nm = prompts.non_math_dialog(qs[0][1])
    assert [m["role"] for m in nm] == ["system", "user"] and nm[1]["content"].endswith(qs[0][1])
    val = prompts.non_math_questions("val")  # for choosing gate settings: other questions, same topics
    assert len(set(val)) == len(val) == 21 and {t for t, _ in val} == set(topics)
    assert not {q for _, q in val} & {q for _, q in qs}
    with pytest.raises(ValueError, match="test or val"):
        prompts.non_math_questions("train")


@pytest.mark.parametrize("text,want", [
    ("42", 42), (" 42\n", 42), ("-7", -7), ("+5", 5), ("007", 7),
    ("1,000", None), ("42.", None), ("4 2", None), ("", None), ("forty", None), ("1_000", None),
    ("42 apples", None), (None, None),
])
def test_parse_answer(text, want):
    assert prompts.parse_answer(text) == want


@pytest.mark.parametrize("text,want", [
    ("so 3+4=7.\nFinal Answer: 7", 7),
    ("Final Answer: **1,234**.", 1234),
    ("**Final Answer:** 56 (mod 1000)", 56),
    ("final answer: $\\boxed{42}$", 42),
    ("Final Answer: 12\nWait... Final Answer: 13", 12),
    ("Final Answer:\n  -3!", -3),
    ("Final Answer: 12.5", None),
    ("Final Answer: the answer is 12", None),
    ("The answer is 12", None),
    ("12", 12),  # no marker: the whole text, read as a plain answer
    ("", None),
])
def test_parse_cot_answer(text, want):
    assert prompts.parse_cot_answer(text) == want
