"""Build the embedded demo model.

The original command line; the command itself is neurosymbolic_llm/cli/make_tiny_llama.py (`--help` for its
options; also `nsllm make-tiny-llama`). Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("make_tiny_llama"))
