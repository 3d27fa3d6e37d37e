"""The demo model's pre-training prompts (`make_examples`): the pipeline's own few-shot arithmetic
prompts (answers from the exact solver), number-writing prompts ("Repeat 1165.": two-token
answers), and generated non-arithmetic chat (templates over a small word list, and strings of
common English tokens) whose read-out target is NO_PROBLEM and whose answer is one fixed sentence.
The evaluation's non-math questions (`prompts.non_math_questions`), their system message and prefix
are never used here: they stay held out. Why: Programs/demo/README.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from neurosymbolic_llm.demo.recipe import PretrainSettings
from neurosymbolic_llm.llama.tokenizer import ChatFormat, Tokenizer
from neurosymbolic_llm.pipeline.runtime import progress as progress_bar
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.prompts import few_shot_dialog
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

NUMBER_SYSTEM = "You write numbers exactly as asked, as bare digits without any other text."
NON_MATH_REPLY = "That is not an arithmetic question."  # the answer of every non-math prompt


@dataclass
class Example:
    tokens: list  # full-vocabulary ids: prompt, answer tokens, <|eot_id|>
    n_prompt: int
    aux: Optional[tuple]  # (type index, x, y) for math prompts, NO_PROBLEM for non-math, None for number prompts


def math_example(fmt: ChatFormat, problem_type: str, question: str, solution: int,
                 rng: np.random.Generator, s: PretrainSettings) -> tuple:
    """(prompt ids, answer ids) of one few-shot question, exactly as the pipeline prompts it."""
    msgs = few_shot_dialog(problem_type, question, rng, complexity=s.complexity,
                           limit_solution_digits=s.limit_solution_digits)
    prompt = fmt.encode_dialog_prompt(msgs)
    answer = fmt.tokenizer.encode(str(int(solution)), bos=False, eos=False)
    return prompt, answer


def number_example(fmt: ChatFormat, n: int, rng: np.random.Generator) -> tuple:
    """(prompt ids, answer ids) of a number-writing prompt; teaches two-token numbers (>= 1000)."""
    if rng.random() < 0.5:
        ask = f"Repeat {n}."
    else:
        ask = f"Write the digits {' '.join(str(n))} as one number."
    msgs = [{"role": "system", "content": NUMBER_SYSTEM}, {"role": "user", "content": ask}]
    return fmt.encode_dialog_prompt(msgs), fmt.tokenizer.encode(str(n), bos=False, eos=False)


# ---------------------------------------------------------------------------- non-math prompts
NO_PROBLEM = (None, None, None)  # read-out target of a non-math prompt: no type, digits absent

# A small hand-written English pool (deliberately not the pipeline's held-out non-math questions).
_NOUNS = ("weather music gardens cooking football oceans mountains trains coffee friendship language "
          "money sleep dreams forests birds computers movies poetry medicine school travel markets "
          "farming bicycles islands libraries museums newspapers chess painting dancing winter summer "
          "holidays neighbours families cats dogs horses bread cheese tea volcanoes deserts planets "
          "stars robots phones email fashion sport theatre novels science engineering architecture "
          "democracy elections taxes jobs careers teachers doctors nurses hospitals bridges roads "
          "airports ships kitchens recipes vegetables fruit breakfast cities villages traffic "
          "electricity batteries rain snow clouds whales insects flowers trees photography "
          "jazz opera comedy games puzzles magic kings castles maps languages grammar spelling").split()
_VERBS = ("learn cook paint build repair plan organise explain describe enjoy choose visit write read "
          "improve clean grow save protect teach remember forget design discover share celebrate").split()
_ADJECTIVES = ("good bad interesting difficult easy strange beautiful important popular useful "
               "dangerous expensive cheap modern ancient quiet noisy healthy fair polite").split()
_TEMPLATES_NM = (
    "What do you think about {n}?", "Why do people enjoy {n}?", "How can I {v} {n} better?",
    "Tell me a short story about {n}.", "Write a poem about {n} and {n2}.", "Explain {n} to a child.",
    "What is the history of {n}?", "Should I {v} {n} this weekend?", "Is {n} more {a} than {n2}?",
    "Describe your favourite {n}.", "Why are {n} so {a}?", "Give me three tips to {v} {n}.",
    "What would the world look like without {n}?", "How are {n} and {n2} connected?",
    "Can you recommend a book about {n}?", "My friend says {n} are {a}. Do you agree?",
    "What is the most {a} thing about {n}?", "Help me {v} a plan for {n}.",
    "Summarise the debate about {n} in a few sentences.", "Which is better, {n} or {n2}, and why?",
    "I want to {v} something about {n}. Where should I start?", "How do {n} work?",
    "What did people in the year {k} think about {n}?", "Name {m} {a} facts about {n}.",
    "Translate the sentence 'I like {n}' into French.", "Is it {a} to {v} {n} at night?",
)
_SYSTEMS_NM = (
    "You are a helpful assistant.",
    "You are a friendly guide who answers questions about everyday life.",
    "You are a patient teacher. Explain things clearly and simply.",
    "You are a creative writer who answers with imagination.",
    "Answer the user's questions honestly and in detail.",
    "You are a calm assistant who gives balanced, considered opinions.",
    "You are an expert assistant. Be precise and thorough in your replies.",
    "You are a wise companion. Reflect on the question before replying.",
)
_PREFIXES_NM = ("", "", "", "Please answer: ", "Quick question: ", "I was wondering: ",
                "Take your time with this one: ", "Be honest: ", "In your own words: ")
_WORD_RE = re.compile(r" ?[A-Za-z]{2,}")


def common_word_ids(tokenizer: Tokenizer, limit: int) -> list:
    """Word-like ids (letters, optional leading space) among the first ``limit`` ids: with BPE's
    merge order these are the most common English words and word pieces."""
    return [i for i in range(256, min(limit, tokenizer.n_words))
            if _WORD_RE.fullmatch(tokenizer.decode([i]))]


def non_math_question(rng: np.random.Generator, word_pool: list) -> str:
    """One generated non-arithmetic question: a template over the word list, or (a third of the
    time) a string of common tokens, sometimes wrapped in a request."""
    if word_pool and rng.random() < 1 / 3:
        k = int(rng.integers(4, 16))
        soup = "".join(word_pool[i] for i in rng.integers(0, len(word_pool), size=k)).strip()
        wrap = ("{}", "{}?", "{}.", "What does this mean: {}?", "Please rewrite this: {}",
                "Continue the text: {}")
        return wrap[int(rng.integers(len(wrap)))].format(soup[:1].upper() + soup[1:])
    tpl = _TEMPLATES_NM[int(rng.integers(len(_TEMPLATES_NM)))]
    n, n2 = rng.choice(len(_NOUNS), size=2, replace=False)
    return tpl.format(n=_NOUNS[n], n2=_NOUNS[n2], v=_VERBS[int(rng.integers(len(_VERBS)))],
                      a=_ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))],
                      k=int(rng.integers(1500, 2000)), m=int(rng.integers(2, 10)))


def non_math_messages(rng: np.random.Generator, word_pool: list) -> list:
    """A non-arithmetic chat in one of several layouts: system + user, user only, or system +
    an earlier non-math exchange + user."""
    layout = rng.random()
    msgs = []
    if layout < 0.75:
        msgs.append({"role": "system", "content": _SYSTEMS_NM[int(rng.integers(len(_SYSTEMS_NM)))]})
    if layout >= 0.5 and layout < 0.75:
        msgs += [{"role": "user", "content": non_math_question(rng, word_pool)},
                 {"role": "assistant", "content": NON_MATH_REPLY}]
    prefix = _PREFIXES_NM[int(rng.integers(len(_PREFIXES_NM)))]
    msgs.append({"role": "user", "content": prefix + non_math_question(rng, word_pool)})
    return msgs


def non_math_example(fmt: ChatFormat, rng: np.random.Generator, word_pool: list) -> tuple:
    """(prompt ids, answer ids) of a non-math prompt; the answer is the fixed NON_MATH_REPLY."""
    prompt = fmt.encode_dialog_prompt(non_math_messages(rng, word_pool))
    return prompt, fmt.tokenizer.encode(NON_MATH_REPLY, bos=False, eos=False)


def make_examples(s: PretrainSettings, fmt: ChatFormat, n: int) -> list:
    """``n`` training examples in a seeded order (math, number and non-math prompts interleaved)."""
    rng = np.random.default_rng([s.seed, 1])
    u = rng.random(n)
    is_number = u < s.number_prompt_fraction
    is_other = (u >= s.number_prompt_fraction) & (u < s.number_prompt_fraction + s.non_math_fraction)
    n_math = int((~is_number & ~is_other).sum())
    word_pool = [fmt.tokenizer.decode([i]) for i in common_word_ids(fmt.tokenizer, s.common_token_limit)]
    nm_rng = np.random.default_rng([s.seed, 2])  # own stream: the math prompts do not depend on it
    df = generate_problems(max(n_math, 1), s.problem_types, complexity=s.complexity, x_gt_y=s.x_gt_y,
                           seed=s.seed + 1000, limit_solution_digits=s.limit_solution_digits)
    type_index = {p: i for i, p in enumerate(PROBLEM_TYPES)}
    rows = iter(df.itertuples(index=False))
    eot = fmt.tokenizer.eot_id
    out = []
    for number, other in progress_bar(zip(is_number, is_other), total=n, desc="prompts", unit="prompt"):
        if other:
            prompt, answer = non_math_example(fmt, nm_rng, word_pool)
            aux = NO_PROBLEM
        elif number:
            big = rng.random() < s.big_number_fraction
            value = int(rng.integers(1000, 1999)) if big else int(rng.integers(0, 1000))
            prompt, answer = number_example(fmt, value, rng)
            aux = None
        else:
            r = next(rows)
            prompt, answer = math_example(fmt, r.problem_type, r.question, r.solution, rng, s)
            aux = (type_index[r.problem_type], int(r.x), int(r.y))
        out.append(Example(prompt + answer + [eot], len(prompt), aux))
    return out
