"""Measuring the demo model: plain accuracy per problem type, linear read-outs of the problem per
layer, and the problem-type scores of math and non-math prompts (``make_tiny_llama.py --report N``).

The recipe itself is in ``recipe.py``, ``pretraining_data.py`` and ``pretraining.py``; this module only looks at a built checkpoint.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from neurosymbolic_llm.demo.pretraining_data import common_word_ids, non_math_example, number_example
from neurosymbolic_llm.demo.recipe import PretrainSettings
from neurosymbolic_llm.llama.generation import Llama, left_pad
from neurosymbolic_llm.llama.tokenizer import ChatFormat
from neurosymbolic_llm.pipeline.method_table import label
from neurosymbolic_llm.pipeline.options import TRAINED_TYPES_DEFAULT
from neurosymbolic_llm.pipeline.runtime import progress
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.prompts import (few_shot_dialog, non_math_dialog, non_math_questions, parse_answer,
                                                row_rng)
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES


def test_prompts(n: int, seed: int, s: PretrainSettings, fmt: ChatFormat, types=PROBLEM_TYPES,
                 split: str = "test"):
    """Fresh problems (the pipeline's generator and prompts) -> (DataFrame, prompt token lists)."""
    df = generate_problems(n, list(types), complexity=s.complexity, x_gt_y=s.x_gt_y, seed=seed,
                           limit_solution_digits=s.limit_solution_digits)
    prompts = [fmt.encode_dialog_prompt(few_shot_dialog(p, q, row_rng(seed, split, i), complexity=s.complexity,
                                                        limit_solution_digits=s.limit_solution_digits))
               for i, (p, q) in enumerate(zip(df.problem_type, df.question))]
    return df, prompts


def plain_accuracy(llama, df, prompts, max_gen_len: int = 8, batch: int = 64):
    """Greedy answers -> DataFrame (type, correct, well_formed: digits then a stop token)."""
    rows = []
    for i in progress(range(0, len(prompts), batch), desc="generate", unit="batch"):
        outs = llama.generate(prompts[i:i + batch], max_gen_len)
        for j, ids in enumerate(outs):
            r = df.iloc[i + j]
            ans = parse_answer(llama.tokenizer.decode(ids))
            rows.append({"problem_type": r.problem_type, "correct": ans == int(r.solution),
                         "well_formed": ans is not None and len(ids) < max_gen_len,
                         "two_token": int(r.solution) >= 1000})
    return pd.DataFrame(rows)


@torch.no_grad()
def last_position_states(llama, prompts, batch: int = 128) -> torch.Tensor:
    """Residual entering every block (and the final norm output) at the last prompt position:
    [N, n_layers+1, D]."""
    model = llama.model
    grabbed = {}
    handles = [model.register_residual_hook(L, lambda h, ctx: grabbed.__setitem__(ctx.layer, h[:, -1].float()))
               for L in range(model.n_layers + 1)]
    out = []
    try:
        for i in range(0, len(prompts), batch):
            tokens, pads = left_pad(prompts[i:i + batch], llama.tokenizer.pad_id)
            model(tokens, pad_lengths=pads, output_positions=torch.zeros(0, dtype=torch.long))
            out.append(torch.stack([grabbed[L] for L in range(model.n_layers + 1)], 1))
    finally:
        for h in handles:
            h.remove()
    return torch.cat(out)


def problem_vectors(df, engine) -> torch.Tensor:
    """VSA problem vectors [N, V] (float64) of a problems DataFrame."""
    return engine.encode_problem(torch.tensor(df.x.to_numpy().copy()), torch.tensor(df.y.to_numpy().copy()),
                                 engine.type_ids(list(df.problem_type))).double()


def fit_linear(H: torch.Tensor, T: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Ridge least squares W [D, V] with H @ W ~ T (no bias, like the pipeline's encoders)."""
    H = H.double()
    return torch.linalg.solve(H.T @ H + ridge * len(H) * torch.eye(H.shape[1], dtype=H.dtype), H.T @ T)


def encoder_table(h_train, df_train, h_test, df_test, engine):
    """Least-squares linear encoder per layer (residual -> problem vector); exact-decode rates."""
    T = problem_vectors(df_train, engine)
    x, y = torch.tensor(df_test.x.to_numpy().copy()), torch.tensor(df_test.y.to_numpy().copy())
    t = engine.type_ids(list(df_test.problem_type))
    rows = []
    for L in range(h_train.shape[1]):
        pred = (h_test[:, L].double() @ fit_linear(h_train[:, L], T)).float()
        dx, dy = engine.decode_number(pred, "n1"), engine.decode_number(pred, "n2")
        ids, score = engine.decode_problem_type_ids(pred)
        rows.append({"layer": L, "x": float((dx == x).float().mean()), "y": float((dy == y).float().mean()),
                     "type": float((ids == t).float().mean()),
                     "all": float(((dx == x) & (dy == y) & (ids == t)).float().mean()),
                     "type_score": float(score.mean())})
    return pd.DataFrame(rows)


def report(ckpt_dir, n_test: int = 300, seed: int = 1, n_train: int = 3000,
           vsa_settings=((2048, 10), (1024, 5), (512, 4), (256, 4))) -> None:
    """Print the demo model's plain accuracy per type and the per-layer linear read-outs."""
    s = PretrainSettings()
    llama = Llama.build(ckpt_dir, max_seq_len=256, max_batch_size=128, device="cpu")
    df, prompts = test_prompts(n_test, seed + 2000, s, llama.formatter)
    acc = plain_accuracy(llama, df, prompts)
    table = acc.groupby("problem_type")[["correct", "well_formed"]].mean().mul(100).round(1)
    print(f"\n{label('baseline')}: greedy accuracy (%), fresh test problems:\n" + table.to_string())
    print(f"overall {100 * acc.correct.mean():.1f}%  well-formed {100 * acc.well_formed.mean():.1f}%  "
          f"answers >= 1000: {100 * acc[acc.two_token].correct.mean():.1f}% of {int(acc.two_token.sum())}")

    rng = np.random.default_rng(seed)
    numbers = rng.integers(1000, 1999, size=100).tolist()
    outs = llama.generate([number_example(llama.formatter, n, rng)[0] for n in numbers], 4)
    ok = np.mean([llama.tokenizer.decode(o).strip() == str(n) for o, n in zip(outs, numbers)])
    print(f"number-writing prompts with numbers 1000-1998 (two tokens) right: {100 * ok:.0f}%")

    df_tr, p_tr = test_prompts(n_train, seed + 3000, s, llama.formatter, split="train")
    h_tr, h_te = last_position_states(llama, p_tr), last_position_states(llama, prompts)
    for dim, digits in vsa_settings:
        engine = SymbolicEngine(VSA_dim=dim, max_digits=digits)
        print(f"\nlinear encoder, all ten types, VSA_dim {dim}, max_digits {digits} (exact-decode rates):")
        print(encoder_table(h_tr, df_tr, h_te, df, engine).round(3).to_string(index=False))
    # the paper's split: encoder fitted on the eight trained types; type scores of held-out types
    engine = SymbolicEngine(VSA_dim=vsa_settings[0][0], max_digits=vsa_settings[0][1])
    seen = df_tr.problem_type.isin(TRAINED_TYPES_DEFAULT).to_numpy().copy()
    L = s.aux_layer
    W = fit_linear(h_tr[torch.from_numpy(seen), L], problem_vectors(df_tr[seen], engine))
    score = engine.problem_type_scores((h_te[:, L].double() @ W).float()).max(-1).values
    held = ~df.problem_type.isin(TRAINED_TYPES_DEFAULT).to_numpy().copy()
    # non-math prompts: the pipeline's held-out questions (never trained on) and generated ones
    fmt = llama.formatter
    held_out = [fmt.encode_dialog_prompt(non_math_dialog(q)) for _, q in non_math_questions()]
    nm_rng = np.random.default_rng([seed, 99])
    pool = [llama.tokenizer.decode([i]) for i in common_word_ids(llama.tokenizer, s.common_token_limit)]
    generated = [non_math_example(fmt, nm_rng, pool)[0] for _ in range(100)]

    def type_score(prompts):
        return engine.problem_type_scores((last_position_states(llama, prompts)[:, L].double() @ W).float()
                                          ).max(-1).values

    groups = [("trained types", score[torch.tensor(~held)]), ("held-out types", score[torch.tensor(held)]),
              ("non-math (pipeline's)", type_score(held_out)), ("non-math (generated)", type_score(generated))]
    for name, sc in groups:
        print(f"layer {L}, encoder fitted on the 8 trained types: max type score on {name}: "
              f"mean {sc.mean():.2f}, min {sc.min():.2f}, max {sc.max():.2f}, "
              f"> 0.8: {100 * (sc > 0.8).float().mean():.0f}%")
