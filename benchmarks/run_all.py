"""Run every benchmarks/bench_*.py in turn (each prints its own side-by-side ratios).

Usage: python benchmarks/run_all.py [name-substring ...]
"""
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(a in s.name for a in argv)]
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        env = dict(os.environ, PYTHONPATH=str(here.parent / "src"))  # this checkout's package first
        if subprocess.call([sys.executable, str(script)], env=env) != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
