"""Ask a trained intervention questions (the gate, the decoded problem, the symbolic answer, the
model's answer with and without it).

The command itself is neurosymbolic_llm/cli/ask.py (`--help` for its options; also `nsllm ask`).
Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("ask"))
