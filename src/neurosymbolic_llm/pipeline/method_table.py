"""The methods stage 3 compares, in one table: how each is selected, whether it trains, what it
needs, its prompt, its names (docs/METHOD.md, "Baselines"). Its builder is methods.BUILDERS[name]
(a dict of functions, checked against this table when methods.py is imported).

This module imports no torch (the command line's --help and the results tables use it). Adding a
method: one row here and its builder in methods.BUILDERS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union


@dataclass(frozen=True)
class MethodSpec:
    name: str                  # its key in results.csv, responses.csv and metrics
    label: str                 # how tables, figures, the console and the docs name it
    paper_name: Optional[str]  # the paper's name for it (None: not in the paper)
    flag: Optional[str]        # the stage-3 option that selects it (None: the default main method)
    main: bool                 # a run's main method (at most one per run) rather than an addition
    trains: bool               # trains parameters on the training rows
    needs_maps: Union[bool, Callable[[Any], bool]]  # reads the stage-2 map files (or: a test on the config)
    hooks_layers: bool         # reads or writes residual layers (the layer options must fit the model)
    prompt: str                # few_shot or cot (symbolic/prompts.py)


METHODS: dict[str, MethodSpec] = {m.name: m for m in (  # in the order of tables and figures
    MethodSpec("neurosymbolic", label="neurosymbolic", paper_name="NS LLM", flag=None, main=True, trains=True,
               needs_maps=True, hooks_layers=True, prompt="few_shot"),
    MethodSpec("baseline", label="plain model", paper_name="standard LLM", flag="test_baseline", main=False,
               trains=False, needs_maps=False, hooks_layers=False, prompt="few_shot"),
    MethodSpec("cot", label="chain of thought", paper_name="CoT", flag="cot", main=True, trains=False,
               needs_maps=False, hooks_layers=False, prompt="cot"),
    MethodSpec("adapter", label="adapter (paper's LoRA)", paper_name="LoRA", flag="adapter_baseline", main=True,
               trains=True, needs_maps=lambda cfg: cfg.adapter_init == "stage2", hooks_layers=True,
               prompt="few_shot"),
    MethodSpec("lora", label="LoRA (peft)", paper_name=None, flag="lora_baseline", main=True, trains=True,
               needs_maps=False, hooks_layers=False, prompt="few_shot"),
    MethodSpec("read_and_print", label="read and print", paper_name=None, flag="read_and_print", main=False,
               trains=False, needs_maps=True, hooks_layers=True, prompt="few_shot"),
)}
DEFAULT_MAIN = "neurosymbolic"
MAIN_FLAGS = [m.flag for m in METHODS.values() if m.main and m.flag]
# The methods --two_step_questions compares (symbolic/two_step.py): writing the answer, printing it, neither.
TWO_STEP_METHODS = ("baseline", "read_and_print", "neurosymbolic")


# Columns compare_runs gives runs of the neurosymbolic method with the true operands (diagnostics).
DIAGNOSTIC_LABELS = {"true_operands": "true operands", "write_side_alone": "write side alone"}


def label(name: str) -> str:
    """The display name of a method key (an unknown key, e.g. from another version's results, as it is)."""
    return METHODS[name].label if name in METHODS else DIAGNOSTIC_LABELS.get(name, name)


def ordered(names) -> list[str]:
    """Method keys in the table's order; unknown keys after them, in their own order."""
    names = list(dict.fromkeys(names))
    return [m for m in METHODS if m in names] + [m for m in names if m not in METHODS]


def needs_maps(name: str, cfg: Any) -> bool:
    spec = METHODS[name]
    return spec.needs_maps(cfg) if callable(spec.needs_maps) else spec.needs_maps
