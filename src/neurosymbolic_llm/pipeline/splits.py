"""Seeded train / validation / test splits of distinct problems, as in the paper's dataset (the demo's
and make real's CSVs): one pool over all ten types; the test split is drawn first (all ten types),
then train and validation from the rest, of the trained types only. No (type, x, y) is in two splits."""
from __future__ import annotations

import math

from neurosymbolic_llm.pipeline.errors import UserError
from neurosymbolic_llm.symbolic.problem_types import PROBLEM_TYPES


def make_splits(n_train: int, n_val: int, n_test: int, train_types, *, seed: int = 0,
                complexity: int = 2, x_gt_y: bool = True, limit_solution_digits: bool = True):
    """-> dict split -> DataFrame (train/val: ``train_types`` only; test: all ten types)."""
    import numpy as np

    from neurosymbolic_llm.symbolic.problems import generate_problems

    unknown = sorted(set(train_types) - set(PROBLEM_TYPES))
    if unknown:
        raise UserError(f"--train_types: unknown problem type(s) {', '.join(unknown)}")
    frac = len(set(train_types)) / len(PROBLEM_TYPES)
    n_pool = n_test + math.ceil((n_train + n_val) / frac * 1.1) + 100  # margin for the type draw
    pool = generate_problems(n_pool, PROBLEM_TYPES, complexity=complexity, x_gt_y=x_gt_y,
                             seed=seed, limit_solution_digits=limit_solution_digits)
    pool = pool.iloc[np.random.default_rng(seed).permutation(len(pool))].reset_index(drop=True)
    test, rest = pool.iloc[:n_test], pool.iloc[n_test:]
    seen = rest[rest.problem_type.isin(train_types)]
    if len(seen) < n_train + n_val:  # pragma: no cover - the margin makes this vanishingly rare
        raise UserError(f"only {len(seen)} problems of the trained types drawn; try another --seed")
    return {"train": seen.iloc[:n_train], "val": seen.iloc[n_train:n_train + n_val], "test": test}
