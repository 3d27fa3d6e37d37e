"""Stage 3: fine-tune the decoder in context, evaluate, run the baselines.

The original command line; the command itself is neurosymbolic_llm/cli/fine_tune_decoders.py (`--help` for its
options; also `nsllm fine-tune-decoders`). Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("fine_tune_decoders"))
