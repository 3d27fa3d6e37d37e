"""Write make real's CSV splits.

The original command line; the command itself is neurosymbolic_llm/cli/make_real_data.py (`--help` for its
options; also `nsllm make-real-data`). Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("make_real_data"))
