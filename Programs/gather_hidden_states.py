"""Stage 1 on its own: gather hidden states and their symbolic targets.

The original command line; the command itself is neurosymbolic_llm/cli/gather_hidden_states.py (`--help` for its
options; also `nsllm gather-hidden-states`). Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("gather_hidden_states"))
