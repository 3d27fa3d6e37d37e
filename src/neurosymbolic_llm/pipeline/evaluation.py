"""Evaluation on one harness for every method: batched greedy generation + teacher-forced CE.

Per row: greedy generation (Llama.generate, the method's hooks attached) stopped at the model's stop
tokens or after `answer_token_budget` new tokens (the paper's 8 = complexity + 6, more where the
tokenizer needs it: one token per digit; CoT and answers in words: --cot_max_new_tokens), the
integer parsed (prompts.parse_answer, parse_cot_answer after "Final Answer:", parse_word_answer for
words), exact match against the solution, and the teacher-forced
mean token cross-entropy of the answer tokens (without <|eot_id|>, as the original's evaluation).
A method that answers by itself (Method.respond: read and print) replaces the generation; it has
no answer distribution, so its cross-entropy is NaN.

CoT cross-entropy (our choice, as the paper does not define the span; docs/METHOD.md): the
answer tokens are scored after the prompt, the model's own generated text up to and including the
first "Final Answer:" (re-tokenised), and a space; when the model wrote no marker, after its whole
text followed by "\n\nFinal Answer:" and a space. So CE asks how likely the right number is at the
point where the model states its answer.

Under torchrun each data-parallel rank evaluates a contiguous slice of the rows and rank 0 receives
all of them in row order, so the result equals a single process's.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from neurosymbolic_llm.llama.generation import left_pad
from neurosymbolic_llm.pipeline.distributed import DistInfo, gather_objects, row_slice
from neurosymbolic_llm.pipeline.results import RESULT_COLUMNS
from neurosymbolic_llm.pipeline.runtime import progress
from neurosymbolic_llm.pipeline.training import Examples, Method, answer_cross_entropy
from neurosymbolic_llm.symbolic.prompts import FINAL_MARKER, parse_answer, parse_cot_answer, parse_word_answer

RESPONSE_COLUMNS = ["method", "problem_type", "seen", "question", "expected", "generated", "parsed", "correct",
                    "cross_entropy", "gate_score", "gate_open", "decoded_type", "decoded_x", "decoded_y"]


def answer_token_budget(tokenizer, complexity: int, limit_solution_digits: bool, extra_digits: int = 0) -> int:
    """New tokens for a bare-integer answer: the paper's budget (it forces a stop once more than
    complexity + 5 tokens were generated, so complexity + 6 = 8 can be written; docs/METHOD.md), or
    the tokens of the longest possible answer plus the stop token and one spare when that is more.
    Operands have up to complexity + 1 digits, so answers have up to complexity + 2 (a sum, an or)
    or, for unreduced products and lcms, 2 * (complexity + 1) digits. Llama 3 writes up to three
    digits per token, SmolLM2 one. `extra_digits`: digits a further step may add to the answer (the
    two-step questions, symbolic/two_step.py)."""
    digits = (complexity + 2 if limit_solution_digits else 2 * (complexity + 1)) + extra_digits
    longest = len(tokenizer.encode("9" * digits, bos=False, eos=False))
    return max(complexity + 6, longest + 2)


def _cot_continuations(tok, texts: Sequence[str]) -> list[list[int]]:
    """Tokens of the model's text up to and including the answer marker (appended if absent), then a space."""
    out = []
    for text in texts:
        k = text.lower().find(FINAL_MARKER.lower())
        prefix = text[:k + len(FINAL_MARKER)] if k >= 0 else text.rstrip() + "\n\n" + FINAL_MARKER
        out.append(tok.encode(prefix + " ", bos=False, eos=False))
    return out


def parsed_column(values: Sequence[int | None]) -> pd.arrays.IntegerArray:
    """Parsed answers as a nullable int64 column; a number too long for int64 (a runaway digit
    string) cannot equal any answer and becomes missing, like an unparsable one."""
    lo, hi = -(2 ** 63), 2 ** 63 - 1
    return pd.array([v if v is not None and lo <= v <= hi else None for v in values], dtype="Int64")


@torch.no_grad()
def evaluate(llama, method: Method, ex: Examples, *, max_new_tokens: int, batch_size: int,
             seen_types: Sequence[str], problem_list: Sequence[str], info: DistInfo = DistInfo(),
             desc: str = "") -> pd.DataFrame:
    """One row per example (RESPONSE_COLUMNS); complete on rank 0, this rank's share elsewhere."""
    model, tok = llama.model, llama.tokenizer
    mine = range(len(ex))[row_slice(len(ex), info)]
    iv = method.intervention
    cot = method.prompt == "cot"
    parts = []
    bar = progress(total=len(mine), desc=desc or f"eval {method.name}", unit="q", enabled=info.is_main)
    with method.attach():
        for b0 in range(mine.start, mine.stop, batch_size):
            idx = list(range(b0, min(b0 + batch_size, mine.stop)))
            prompts = [ex.prompts[i] for i in idx]
            answers = [ex.answers[i] for i in idx]
            rows = ex.rows.iloc[idx]
            truth = ex.truth(idx)
            if iv is not None:
                iv.set_truth(*truth)
            if method.respond is None:
                texts = [tok.decode(g) for g in llama.generate(prompts, max_new_tokens)]
            else:
                texts = method.respond(prompts, max_new_tokens)
            rec = iv.take_records() if iv is not None else {}
            parse = parse_cot_answer if cot else parse_word_answer if ex.words else parse_answer
            parsed = [parse(t) for t in texts]
            ce_prompts = [p + c for p, c in zip(prompts, _cot_continuations(tok, texts))] if cot else prompts
            ce = (answer_cross_entropy(model, ce_prompts, answers, fill_id=tok.eot_id, intervention=iv, truth=truth)
                  if method.respond is None else torch.full((len(idx),), float("nan")))  # printed: no distribution
            part = pd.DataFrame({
                "method": method.name,
                "problem_type": rows["problem_type"].values,
                "question": rows["question"].values,
                "expected": rows["solution"].values.astype("int64"),
                "generated": texts,
                "parsed": parsed_column(parsed),
                "cross_entropy": ce.float().cpu().numpy(),
            })
            part["correct"] = (part["parsed"] == part["expected"]).fillna(False).astype(bool)
            _add_records(part, rec, problem_list)
            parts.append(part)
            bar.update(len(idx))
    bar.close()
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RESPONSE_COLUMNS)
    df["seen"] = df["problem_type"].isin(list(seen_types))
    df = df[RESPONSE_COLUMNS]
    if not info.distributed:
        return df
    gathered = gather_objects(df.to_dict(orient="list"), info)
    if not info.is_main:
        return df
    dp_first = [g for r, g in enumerate(gathered) if r % info.model_parallel_size == 0]
    return pd.concat([pd.DataFrame(g) for g in dp_first], ignore_index=True)[RESPONSE_COLUMNS]


def _add_records(part: pd.DataFrame, rec: dict, problem_list: Sequence[str]) -> None:
    n = len(part)
    if not rec:
        part["gate_score"], part["gate_open"] = float("nan"), pd.array([pd.NA] * n, dtype="boolean")
        part["decoded_type"] = ""
        part["decoded_x"] = part["decoded_y"] = pd.array([pd.NA] * n, dtype="Int64")
        return
    names = list(problem_list)
    part["gate_score"] = rec["score"].float().numpy()
    part["gate_open"] = rec["gate"].numpy()
    part["decoded_type"] = [names[t] if 0 <= t < len(names) else "" for t in rec["type_id"].tolist()]
    part["decoded_x"] = rec["x"].numpy()
    part["decoded_y"] = rec["y"].numpy()


@torch.no_grad()
def gate_scores(llama, method: Method, prompts: Sequence[Sequence[int]], *, batch_size: int,
                info: DistInfo = DistInfo(), desc: str = "gate") -> torch.Tensor:
    """Best problem-type score at the last prompt position of each prompt: [N] float (rank 0: all)."""
    iv = method.intervention
    mine = range(len(prompts))[row_slice(len(prompts), info)]
    out = []
    with method.attach():
        for b0 in progress(range(mine.start, mine.stop, batch_size), desc=desc, unit="batch", enabled=info.is_main):
            tokens, pad = left_pad(prompts[b0:min(b0 + batch_size, mine.stop)], llama.tokenizer.pad_id)
            iv.set_truth()
            llama.model(tokens.to(llama.device), 0, pad_lengths=pad.to(llama.device), stop_at_layer=iv.enc_layer)
            out.append(iv.take_records()["score"])
    scores = torch.cat(out) if out else torch.zeros(0)
    if not info.distributed:
        return scores
    gathered = gather_objects(scores.tolist(), info)
    return torch.tensor([s for r, g in enumerate(gathered) if r % info.model_parallel_size == 0 for s in g])


def summarize(responses: pd.DataFrame) -> pd.DataFrame:
    """Per method and problem type: n, accuracy in [0, 1], mean cross-entropy (results.csv rows)."""
    if responses.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    g = responses.groupby(["method", "problem_type", "seen"], sort=False)
    out = g.agg(n=("correct", "size"), accuracy=("correct", "mean"), cross_entropy=("cross_entropy", "mean"))
    return out.reset_index()[RESULT_COLUMNS]
