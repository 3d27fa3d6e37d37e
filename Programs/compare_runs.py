"""Merge the results of several stage-3 runs into one table in the layout of the paper's Table 1.

    python Programs/compare_runs.py R1 R2 ... [--out FOLDER] [--programs_dir DIR]

Each argument is a run name (Programs/results/<run>/results.csv) or a path to a results.csv (or
its folder). Rows: problem types (seen first); columns: methods. Writes results.csv, results.md
and results.png of the combination (default folder: Programs/results/compare_<R1>_<R2>...), prints
the Markdown table, and the paper's headline ratios (see utils/results.py for how they are computed
and how a zero accuracy is guarded).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.errors import DataError, run_entry_point  # noqa: E402
from utils.paths import results_dir  # noqa: E402
from utils.results import combine, read_results, write_results  # noqa: E402


def resolve(arg: str, programs_dir: str) -> Path:
    p = Path(arg).expanduser()
    for cand in (p, p / "results.csv", results_dir(arg, programs_dir) / "results.csv"):
        if cand.is_file():
            return cand
    raise DataError(f"{arg}: neither a results.csv, a folder holding one, nor a run with "
                    f"{results_dir(arg, programs_dir) / 'results.csv'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run names or results.csv paths")
    ap.add_argument("--out", default="", help="output folder (default: Programs/results/compare_<runs>)")
    ap.add_argument("--programs_dir", default="", help="root of results/ (default: the Programs folder)")
    args = ap.parse_args(argv)
    paths = [resolve(r, args.programs_dir) for r in args.runs]
    names = [p.parent.name for p in paths]
    merged, notes = combine([read_results(p) for p in paths], names)
    out = Path(args.out).expanduser() if args.out else results_dir("compare_" + "_".join(names), args.programs_dir)
    written = write_results(out, merged, title="Comparison of runs " + ", ".join(names))
    print(written["md"].read_text())
    for n in notes:
        print(f"note: {n}")
    print(f"written: {', '.join(str(p) for p in written.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
