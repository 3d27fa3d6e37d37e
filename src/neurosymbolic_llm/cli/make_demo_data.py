"""Write the demo's CSV splits (columns problem_type,x,y,question,solution), seeded.

As in the paper's dataset: one pool of distinct problems over all ten types; the test split is drawn
from the pool first (all ten types), then train and validation from the rest, of the trained types
only (default: all but addition and division, which stay unseen). No (type, x, y) is in two splits.

    python Programs/demo/make_demo_data.py            # Programs/data/demo/{train,val,test}.csv
"""
import argparse
import sys
from pathlib import Path

from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.options import TRAINED_TYPES_DEFAULT
from neurosymbolic_llm.pipeline.paths import PROGRAMS_DIR
from neurosymbolic_llm.pipeline.splits import make_splits


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
    from neurosymbolic_llm.pipeline.files import atomic_write_csv  # after parsing: --help loads no torch

    splits = make_splits(args.n_train, args.n_val, args.n_test, args.train_types, seed=args.seed,
                         complexity=args.complexity)
    for name, df in splits.items():
        path = atomic_write_csv(df, Path(args.out) / f"{name}.csv")  # a crash never leaves half a split
        print(f"{path}: {len(df)} rows, {df.problem_type.nunique()} types")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main))
