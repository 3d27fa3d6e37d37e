"""Each command's --help (issues #28, #29): the options that command reads, one line of help each,
grouped; the original scripts' other options still accepted; no torch loaded to print it."""
import contextlib
import dataclasses
import io
import re
import subprocess
import sys

import pytest

from neurosymbolic_llm.cli import COMMANDS
from neurosymbolic_llm.cli import main as nsllm
from neurosymbolic_llm.pipeline.config_files import ENTRY_SCHEMAS
from neurosymbolic_llm.pipeline.configs import AskConfig, ExportConfig, GateStatisticsConfig
from neurosymbolic_llm.pipeline.options import parse_config

TRAINING = {"--learning_rate", "--num_epochs", "--num_steps", "--lr_decay", "--n_samples", "--restart",
            "--checkpoint_every", "--trainable_skip", "--cache_prompt_prefixes", "--prefix_split"}
BASELINES = {"--lora_rank", "--lora_targets", "--lora_baseline", "--cot", "--cot_max_new_tokens", "--adapter_baseline",
             "--test_baseline"}


def help_flags(command: str) -> set[str]:
    """The --flags `nsllm COMMAND --help` lists (each option's first spelling and its aliases)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        nsllm([command, "--help"])
    return set(re.findall(r"^\s+(--[A-Za-z_]+)", out.getvalue(), re.M)) | set(
        re.findall(r", (--[A-Za-z_]+)", out.getvalue()))


def test_gate_statistics_and_ask_list_only_what_they_read():
    gate, ask, export = help_flags("gate-statistics"), help_flags("ask"), help_flags("export-intervention")
    for listed in (gate, ask, export):
        assert not listed & (TRAINING | BASELINES), sorted(listed & (TRAINING | BASELINES))
    assert {"--encoder_path", "--val_data_df_path", "--symbolic_encoding_layer", "--problem_score_max",
            "--eval_batch_size", "--chpt_dir", "--ckpt_dir"} <= gate
    assert {"--run", "--questions_file", "--json", "--problem_score_max", "--intervention"} <= ask
    assert "--testing_data_df_path" not in gate and "--test_with_non_numerical_rep" not in gate
    assert len(gate) < 35 and len(ask) < 40 and len(export) < 35  # 71, 33 and 29 flags before
    stage3 = help_flags("fine-tune-decoders")
    assert (TRAINING | BASELINES) <= stage3 and "--vsa_seed" not in stage3


@pytest.mark.parametrize("schema,argv", [(GateStatisticsConfig, ["--lora_rank", "4", "--num_epochs", "3"]),
                                         (AskConfig, ["--learning_rate", "0.5", "--testing_num_steps", "3"]),
                                         (ExportConfig, ["--cot", "1", "--eval_batch_size", "4"])])
def test_the_original_scripts_options_are_still_accepted_with_a_note(schema, argv, capsys):
    """gate_statistics.py took every stage-3 option, ask and export a saved stage-3 config."""
    cfg = parse_config(schema, argv)
    flags = argv[::2]
    default = parse_config(schema, [])
    assert all(getattr(cfg, f[2:]) != getattr(default, f[2:]) for f in flags)  # parsed, not dropped
    assert f"note: {', '.join(flags)} have no effect here" in capsys.readouterr().err


def test_every_help_text_is_one_short_line():
    long = {f"{s.__name__}.{f.name}": len(f.metadata["help"]) for s in ENTRY_SCHEMAS for f in dataclasses.fields(s)
            if len(f.metadata["help"]) > 120 or "\n" in f.metadata["help"]}
    assert not long, long


def test_the_group_titles_say_what_a_read_only_command_reads():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        nsllm(["ask", "--help"])
    titles = [line for line in out.getvalue().splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert "maps: the stage-2 encoder and decoder files:" in titles
    assert not any("training" in t for t in titles), titles


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_loads_no_torch(command):
    code = ("from neurosymbolic_llm.cli import main\nimport contextlib, io, sys\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try: main(['{command}', '--help'])\n    except SystemExit: pass\n"
            "print(' '.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert "torch" not in loaded and "pandas" not in loaded
