"""Merge the results of several stage-3 runs into one table in the layout of the paper's Table 1.

    python Programs/compare_runs.py R1 R2 ... [--out FOLDER] [--programs_dir DIR] [--allow_mismatch] [--log_wandb 1]

Each argument is a run name (Programs/results/<run>/results.csv) or a path to a results.csv (or
its folder). Rows: problem types (seen first, then unseen, each in the solver's order); columns:
methods, named as in every table and figure (the paper's names in a footnote). Writes results.csv,
results.md and results.png of the combination (default folder: Programs/results/compare_<R1>_<R2>...), prints
the Markdown table, and the headline ratios (neurosymbolic_llm/pipeline/headline.py: how they are computed and
how a zero accuracy is guarded; results.md defines each). A run given the true operands
(--simulate_perfect_encoder) becomes a diagnostic column of its own. With --log_wandb 1 the combined table, figure and headline figures
are also a wandb run of their own (job type "compare", see neurosymbolic_llm/pipeline/tracking.py).

Runs are compared only when they were made on the same test rows (asked the same way), model and VSA
codebook and agree on the seen types (each run's fingerprints.json); otherwise the script names what
differs and exits with code 2. --allow_mismatch merges them anyway, with a warning saying what differs.
"""
import argparse
import sys

from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.options import parse_bool


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run names or results.csv paths")
    ap.add_argument("--out", default="", help="output folder (default: Programs/results/compare_<runs>)")
    ap.add_argument("--programs_dir", default="", help="root of results/ (default: the Programs folder)")
    ap.add_argument("--allow_mismatch", action="store_true",
                    help="merge runs made on different test rows, models, codebooks or seen types (with a warning)")
    ap.add_argument("--log_wandb", type=parse_bool, default=False, help="also log the comparison to wandb: 0|1")
    ap.add_argument("--wandb_project", default="", help="wandb project (default: the stages' default)")
    ap.add_argument("--wandb_group", default="", help="wandb group (default: the output folder's name)")
    args = ap.parse_args(argv)
    from neurosymbolic_llm.stages.compare_runs import compare_runs  # after parsing: --help loads no torch

    written, notes, warnings = compare_runs(args.runs, args.out, args.programs_dir, args.log_wandb, args.wandb_project,
                                            args.wandb_group, allow_mismatch=args.allow_mismatch)
    print(written["md"].read_text())
    for n in notes:
        print(f"note: {n}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"written: {', '.join(str(p) for p in written.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
