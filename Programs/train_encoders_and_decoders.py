"""Stage 1 (--generate_data 1) and stage 2 (--generate_data 0).

The original command line; the command itself is neurosymbolic_llm/cli/train_encoders_and_decoders.py (`--help` for its
options; also `nsllm train-encoders-and-decoders`). Needs the package installed: `make venv` or `pip install -e .`.
"""
from neurosymbolic_llm.cli import run_command

if __name__ == "__main__":
    raise SystemExit(run_command("train_encoders_and_decoders"))
