"""Write the demo's CSV splits (columns problem_type,x,y,question,solution), seeded.

As in the paper's dataset: one pool of distinct problems over all ten types; the test split is drawn
from the pool first (all ten types), then train and validation from the rest, of the trained types
only (default: all but addition and division, which stay unseen). No (type, x, y) is in two splits.

    python Programs/demo/make_demo_data.py            # Programs/data/demo/{train,val,test}.csv
"""
import argparse
import math
import sys
from pathlib import Path

from neurosymbolic_llm.pipeline.errors import UserError, run_entry_point
from neurosymbolic_llm.pipeline.files import atomic_write_csv
from neurosymbolic_llm.pipeline.options import TRAINED_TYPES_DEFAULT
from neurosymbolic_llm.pipeline.paths import PROGRAMS_DIR
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(PROGRAMS_DIR / "data" / "demo"), help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n_train", type=int, default=10000)
    ap.add_argument("--n_val", type=int, default=200)
    ap.add_argument("--n_test", type=int, default=1000)
    ap.add_argument("--train_types", nargs="+", default=TRAINED_TYPES_DEFAULT,
                    help="types of the train and validation splits (the test split has all ten)")
    ap.add_argument("--complexity", type=int, default=2)
    args = ap.parse_args(argv)
    splits = make_splits(args.n_train, args.n_val, args.n_test, args.train_types, seed=args.seed,
                         complexity=args.complexity)
    for name, df in splits.items():
        path = atomic_write_csv(df, Path(args.out) / f"{name}.csv")  # a crash never leaves half a split
        print(f"{path}: {len(df)} rows, {df.problem_type.nunique()} types")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main))
