"""Which rows each split holds: the one rule for CSV splits and for random draws, for every stage.

A split comes from its CSV (`--training_data_df_path`, `--val_data_df_path`,
`--testing_data_df_path`), rows as they are, or else from a random draw. The random rows of a
split are one seeded stream per (seed, split): blocks of `BLOCK` candidate problems, each drawn
from its own generator, duplicates of earlier rows dropped. A block depends only on (seed, split,
block index), so a shorter draw is a prefix of a longer one: stage 1 gathers the first
`--train_data_rounds` rows of the stream and stage 3 trains on the first `num_steps x samples per
step` rows of the same stream, so for the same seed both stages see the same problems. The test
split of stage 3 takes the first rows of each evaluated type from its stream, as it caps a test CSV.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from neurosymbolic_llm.llama.checkpoint import file_fingerprint
from neurosymbolic_llm.pipeline.errors import DataError
from neurosymbolic_llm.pipeline.problems_csv import load_problems_csv
from neurosymbolic_llm.symbolic.problems import distinct_problems, generate_problems

SPLITS = ("train", "val", "test")
CSV_OPTION = {"train": "training_data_df_path", "val": "val_data_df_path", "test": "testing_data_df_path"}
ROUNDS_OPTION = {"train": "train_data_rounds", "val": "val_data_rounds", "test": "testing_data_rounds"}
BLOCK = 512  # candidate rows per block of the random stream
# Recorded with every random source (stage 1's manifest): a change of the drawing rule must not let
# a rerun add rows drawn by another rule to data gathered earlier.
DRAW_RULE = "blocks-512"


def split_seed(seed: int, split: str) -> int:
    """The seed of a split's random stream (train, val and test never share one)."""
    return seed * 1000 + SPLITS.index(split) + 1


def csv_path(cfg, split: str) -> str:
    """The split's CSV path ('' when its rows are drawn at random)."""
    return getattr(cfg, CSV_OPTION[split])


def random_types(cfg, split: str) -> list[str]:
    """Types of a split's random rows: the trained ones, all evaluated ones for the test split."""
    return list(cfg.testing_problems if split == "test" else cfg.problem_type)


def read_csv_rows(cfg, split: str, max_digits: int) -> pd.DataFrame:
    """The split's CSV, validated (operands of at most `max_digits` digits, solutions checked)."""
    path = Path(csv_path(cfg, split)).expanduser()
    if not path.is_file():
        raise DataError(f"--{CSV_OPTION[split]} {path}: file not found")
    return load_problems_csv(path, max_digits=max_digits, complexity=cfg.complexity,
                             limit_solution_digits=cfg.limit_solution_digits)


def draw_rows(cfg, split: str, n: int = 0, *, per_type: int = 0) -> pd.DataFrame:
    """The first `n` rows of the split's random stream, or (with `per_type`) its first `per_type`
    rows of each of the split's types, in stream order."""
    types = random_types(cfg, split)
    cap = distinct_problems(len(types), cfg.complexity, cfg.x_gt_y)
    if (per_type * len(types) if per_type else n) > cap:
        raise DataError(f"split {split!r}: cannot draw {per_type or n} distinct problems{' per type' if per_type else ''}: "
                        f"only {cap} exist for {len(types)} types at complexity {cfg.complexity}")

    def missing(rows: pd.DataFrame) -> bool:
        if not per_type:
            return len(rows) < n
        counts = rows["problem_type"].value_counts()
        return any(counts.get(t, 0) < per_type for t in types)

    rows, block = None, 0
    while rows is None or missing(rows):
        new = generate_problems(min(BLOCK, cap), types, complexity=cfg.complexity, x_gt_y=cfg.x_gt_y,
                                seed=[split_seed(cfg.seed, split), block],
                                limit_solution_digits=cfg.limit_solution_digits)
        rows = new if rows is None else pd.concat([rows, new], ignore_index=True).drop_duplicates(
            ["problem_type", "x", "y"], ignore_index=True)
        block += 1
    if per_type:
        return rows.groupby("problem_type", sort=False).head(per_type).reset_index(drop=True)
    return rows.iloc[:n].reset_index(drop=True)


def split_source(cfg, split: str, n_random: Optional[int] = None) -> dict:
    """What a split's rows come from: its CSV (path and content fingerprint) or its random stream
    (the first `n_random` rows; None: the split's rounds option). Stage 1 records it in the store,
    so that a rerun never mixes rows of two sources."""
    if n_random is None:
        n_random = getattr(cfg, ROUNDS_OPTION[split])
    if csv_path(cfg, split):
        path = Path(csv_path(cfg, split)).expanduser()
        if not path.is_file():
            raise DataError(f"--{CSV_OPTION[split]} {path}: file not found")
        return {"csv": str(path.resolve()), "fingerprint": file_fingerprint(path)}
    return {"random": n_random, "types": random_types(cfg, split), "x_gt_y": cfg.x_gt_y,
            "seed": split_seed(cfg.seed, split), "draw": DRAW_RULE}


def check_types(df: pd.DataFrame, known: Sequence[str], split: str) -> None:
    unknown = sorted(set(df["problem_type"]) - set(known))
    if unknown:
        raise DataError(f"split {split!r}: problem types {unknown} are not in --possible_problems")
