"""Rewrite a Meta-format checkpoint for another model-parallel size.

The original command line; the command itself is neurosymbolic_llm/cli/reshard_checkpoint.py (`--help` for its
options; also `nsllm reshard-checkpoint`). Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("reshard_checkpoint"))
