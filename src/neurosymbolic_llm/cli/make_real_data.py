"""Write the CSV splits of `make real` (columns problem_type,x,y,question,solution).

Seeded, as the demo's (demo/make_demo_data.py: train and validation of the eight trained types,
test of all ten with the same number of questions each, addition and division unseen, no problem in
two splits; train and validation rows take the types in turn, so a prefix holds every type). A user's CSV (the public
dataset's files, for one) replaces a seeded split: it is validated, train and validation keep the
eight trained types only, and the first --n_<split> rows are kept; a seeded split then leaves out
every problem of the given ones.

    python Programs/real/make_real_data.py --out DIR [--n_train N --n_val N --n_test N]
        [--train CSV] [--val CSV] [--test CSV]      # 0 rows: all rows of a given CSV
"""
import argparse
import sys
from pathlib import Path

from neurosymbolic_llm.pipeline.errors import DataError, run_entry_point
from neurosymbolic_llm.pipeline.options import TRAINED_TYPES_DEFAULT

KEY = ["problem_type", "x", "y"]


def read_user_csv(path: str, split: str, n: int, complexity: int):
    """The CSV validated; train and validation keep the trained types only (the public training file
    has all ten, which would make addition and division seen types)."""
    from neurosymbolic_llm.pipeline.problems_csv import load_problems_csv

    df = load_problems_csv(Path(path).expanduser(), max_digits=10, complexity=complexity)
    if split != "test":
        df = df[df["problem_type"].isin(TRAINED_TYPES_DEFAULT)]
    return df.head(n) if n > 0 else df


def make_real_splits(n_train: int, n_val: int, n_test: int, *, given: dict, seed: int = 0, complexity: int = 2):
    """-> dict split -> DataFrame: the given CSVs (capped), the other splits seeded and disjoint from them."""
    import pandas as pd

    from neurosymbolic_llm.pipeline.splits import make_splits

    sizes = {"train": n_train, "val": n_val, "test": n_test}
    out = {s: read_user_csv(p, s, sizes[s], complexity) for s, p in given.items() if p}
    # Seeded splits, drawn larger by the given rows so that enough remain after leaving them out.
    extra = sum(len(df) for df in out.values())
    seeded = make_splits(n_train + extra, n_val + extra, 3 * n_test + 100 + extra, TRAINED_TYPES_DEFAULT, seed=seed,
                         complexity=complexity)  # a larger pool: enough of every type for a balanced test split
    taken = pd.concat(list(out.values()), ignore_index=True)[KEY] if out else pd.DataFrame(columns=KEY)
    for split in ("train", "val", "test"):
        if split in out:
            continue
        df = seeded[split]
        clash = df[KEY].merge(taken.drop_duplicates(), how="left", on=KEY, indicator=True)["_merge"] == "both"
        df = df[~clash.to_numpy()]
        if split == "test":  # the same number of questions of every type (a test CSV is evaluated whole)
            df = df.groupby("problem_type", sort=False).head(sizes[split] // df["problem_type"].nunique())
        else:  # types in turn, so that the first rows (stage 3's --training_rows) hold every type
            df = df.iloc[df.groupby("problem_type", sort=False).cumcount().argsort(kind="stable")]
        out[split] = df.head(sizes[split])
        if len(out[split]) < sizes[split]:
            raise DataError(f"only {len(out[split])} seeded {split} rows left after leaving out the given CSVs")
        taken = pd.concat([taken, out[split][KEY]], ignore_index=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (train.csv, val.csv, test.csv)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n_train", type=int, default=10000)
    ap.add_argument("--n_val", type=int, default=200)
    ap.add_argument("--n_test", type=int, default=1000)
    ap.add_argument("--complexity", type=int, default=2)
    for split in ("train", "val", "test"):
        ap.add_argument(f"--{split}", default="", help=f"a {split} CSV to use instead of the seeded split")
    args = ap.parse_args(argv)
    from neurosymbolic_llm.pipeline.files import atomic_write_csv  # after parsing: --help loads no torch

    splits = make_real_splits(args.n_train, args.n_val, args.n_test, seed=args.seed, complexity=args.complexity,
                              given={s: getattr(args, s) for s in ("train", "val", "test")})
    for name, df in splits.items():
        path = atomic_write_csv(df, Path(args.out) / f"{name}.csv")
        source = getattr(args, name) or "seeded"
        print(f"{path}: {len(df)} rows, {df.problem_type.nunique()} types ({source})")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main))
