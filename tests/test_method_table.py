"""The method table and the torch-free command-line layer: what each stage-3 option combination runs,
that every row's builder and flag exist, that option parsing and --help load no torch, and that the
symbolic package does not reach into the pipeline."""
import dataclasses
import subprocess
import sys

import pytest

from neurosymbolic_llm.cli import COMMANDS
from neurosymbolic_llm.pipeline import methods
from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.method_table import METHODS, label, ordered


def test_every_row_names_a_builder_and_an_option():
    fields = {f.name for f in dataclasses.fields(FineTuneConfig)}
    for spec in METHODS.values():
        assert callable(methods.BUILDERS[spec.name]), spec.name
        assert spec.flag is None or spec.flag in fields, spec.flag
        assert spec.prompt in ("few_shot", "cot")
    labels = [s.label for s in METHODS.values()]
    assert len(set(labels)) == len(labels)  # one name per method, no two alike


def test_builders_are_found_by_reference():
    assert set(methods.BUILDERS) == set(METHODS)  # (methods.py refuses to import otherwise)
    for name in ("baseline", "cot"):  # the two that need no model to build
        method = methods.build(name, FineTuneConfig(), None)
        assert (method.name, method.prompt, method.params) == (name, METHODS[name].prompt, [])


@pytest.mark.parametrize("options, expected", [
    ({}, ["neurosymbolic"]),
    ({"test_baseline": 1}, ["baseline", "neurosymbolic"]),
    ({"test_baseline": 1, "read_and_print": True}, ["baseline", "read_and_print", "neurosymbolic"]),
    ({"test_baseline": 2}, ["baseline"]),
    ({"test_baseline": 2, "cot": True}, ["baseline", "cot"]),
    ({"test_baseline": 2, "read_and_print": True}, ["baseline", "read_and_print"]),
    ({"lora_baseline": True}, ["lora"]),
    ({"test_baseline": 1, "adapter_baseline": True}, ["baseline", "adapter"]),
    ({"cot": True}, ["cot"]),
])
def test_methods_of_a_run(options, expected):
    cfg = FineTuneConfig(**options)
    assert cfg.methods() == expected
    trains = [m for m in expected if m in ("neurosymbolic", "lora", "adapter")]
    assert cfg.trained_method() == (trains[0] if trains else None)
    assert dataclasses.replace(cfg, num_epochs=0).trained_method() is None
    maps = any(m in ("neurosymbolic", "read_and_print", "adapter") for m in expected)
    assert cfg.needs_maps() == maps
    if "adapter" in expected:
        assert not dataclasses.replace(cfg, adapter_init="fresh").needs_maps()


def test_two_main_methods_are_refused():
    from neurosymbolic_llm.pipeline.errors import ConfigError
    from neurosymbolic_llm.pipeline.options import parse_config

    with pytest.raises(ConfigError, match="at most one of --cot, --adapter_baseline, --lora_baseline"):
        parse_config(FineTuneConfig, ["--cot", "1", "--lora_baseline", "1"])


def test_labels_and_order():
    assert label("baseline") == "plain model" and label("something_else") == "something_else"
    assert ordered(["lora", "x", "baseline", "neurosymbolic", "lora"]) == ["neurosymbolic", "baseline", "lora", "x"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_loads_no_torch(command):
    loaded = _modules_after("from neurosymbolic_llm.cli import main\n"
                            "import contextlib, io\n"
                            "with contextlib.redirect_stdout(io.StringIO()):\n"
                            f"    try: main(['{command}', '--help'])\n"
                            "    except SystemExit: pass")
    assert "torch" not in loaded and "pandas" not in loaded


def test_symbolic_does_not_import_the_pipeline():
    loaded = _modules_after("import neurosymbolic_llm.symbolic.engine, neurosymbolic_llm.symbolic.problems, "
                            "neurosymbolic_llm.symbolic.prompts, neurosymbolic_llm.symbolic.solver")
    assert not any(m.startswith("neurosymbolic_llm.pipeline") for m in loaded)
