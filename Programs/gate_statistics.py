"""Gate statistics on the validation split.

The original command line; the command itself is neurosymbolic_llm/cli/gate_statistics.py (`--help` for its
options; also `nsllm gate-statistics`). Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("gate_statistics"))
