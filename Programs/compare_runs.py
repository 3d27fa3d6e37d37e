"""Merge the results of several stage-3 runs into one table.

The original command line; the command itself is neurosymbolic_llm/cli/compare_runs.py (`--help` for its
options; also `nsllm compare-runs`). Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("compare_runs"))
