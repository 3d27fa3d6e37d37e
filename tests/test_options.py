"""The one-schema configuration: defaults < YAML (top level, then the entry's section) < CLI."""
from dataclasses import dataclass
from typing import ClassVar

import pytest

from neurosymbolic_llm.pipeline.errors import ConfigError
from neurosymbolic_llm.pipeline.options import RunOptions, option, parse_config


@dataclass
class StageA(RunOptions):
    """stage a"""

    config_section: ClassVar[str] = "stage_a"
    learning_rate: float = option(1e-3, "lr")
    layers: list[int] = option([17], "layers")
    schedule: dict[int, float] = option({100: 0.5}, "lr schedule")


def test_defaults_come_from_the_schema():
    cfg = parse_config(StageA, [])
    assert (cfg.learning_rate, cfg.layers, cfg.schedule, cfg.log_wandb) == (1e-3, [17], {100: 0.5}, False)
    # mutable defaults are not shared between instances
    cfg.layers.append(3)
    assert parse_config(StageA, []).layers == [17]


def test_yaml_top_level_then_section_then_cli(tmp_path):
    cfg_file = tmp_path / "preset.yaml"
    import neurosymbolic_llm.pipeline.configs  # noqa: F401  (registers the commands' sections)

    cfg_file.write_text("learning_rate: 0.01\nseed: 7\nstage_a:\n  learning_rate: 0.03\n"
                        "fine_tune_decoders:\n  num_epochs: 1\n")  # another command's section
    cfg = parse_config(StageA, ["--config", str(cfg_file)])
    assert cfg.learning_rate == 0.03 and cfg.seed == 7
    cfg = parse_config(StageA, ["--config", str(cfg_file), "--learning_rate", "0.5", "--layers", "1,2",
                                "--schedule", "{10: 0.1}", "--log_wandb", "true"])
    assert (cfg.learning_rate, cfg.layers, cfg.schedule, cfg.log_wandb) == (0.5, [1, 2], {10: 0.1}, True)


@pytest.mark.parametrize("text,expected", [("0", False), ("1", True), ("false", False), ("True", True)])
def test_booleans_accept_numbers_and_words(text, expected):
    assert parse_config(StageA, ["--log_wandb", text]).log_wandb is expected


def test_unknown_yaml_key_and_bad_values_are_named(tmp_path):
    cfg_file = tmp_path / "typo.yaml"
    cfg_file.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown option\(s\) for stage_a: learning_rat"):
        parse_config(StageA, ["--config", str(cfg_file)])
    cfg_file.write_text("stage_a:\n  layerz: [1]\n")
    with pytest.raises(ConfigError, match=r"stage_a.layerz"):
        parse_config(StageA, ["--config", str(cfg_file)])
    with pytest.raises(ConfigError, match=r"command line: option 'learning_rate': cannot read 'fast'"):
        parse_config(StageA, ["--learning_rate", "fast"])
    with pytest.raises(ConfigError, match=r"config file not found"):
        parse_config(StageA, ["--config", str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize("preset", ["demo.yaml", "paper.yaml"])
def test_shipped_presets_parse_for_every_entry_point(preset):
    from pathlib import Path

    from neurosymbolic_llm.pipeline.configs import FineTuneConfig, TrainEncodersConfig

    programs = Path(__file__).resolve().parents[1] / "Programs"
    path = programs / ("demo" if preset == "demo.yaml" else "configs") / preset
    stage12 = parse_config(TrainEncodersConfig, ["--config", str(path)])
    stage3 = parse_config(FineTuneConfig, ["--config", str(path)])
    assert stage12.VSA_dim == stage3.VSA_dim and stage12.max_digits == stage3.max_digits
    assert stage3.symbolic_encoding_layer in range(0, 33)


def test_help_has_a_section_per_group_and_each_default_once(capsys):
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig, GatherConfig, TrainEncodersConfig
    from neurosymbolic_llm.pipeline.options import build_parser

    text = build_parser(TrainEncodersConfig).format_help()
    titles = [line[:-1] for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert titles[1:] == ["which stage runs", "stage 1: gathering hidden states", "stage 2: training encoders and decoders",
                          "model: the Llama checkpoint and how it runs",
                          "symbolic: the VSA engine and the problems' number format",
                          "data: the three splits (CSV files, or random problems)",
                          "run: name, outputs, logging, seed and device"]
    flat = " ".join(text.split())
    assert flat.count("(default: 1000)") == 3  # training_epochs, decoding_epochs, save_frequency: once each
    assert "(default: 0: --learning_rate)" not in flat and "default 0: --learning_rate" in flat
    stage3 = build_parser(FineTuneConfig).format_help()
    for hidden in ("--vsa_seed", "--max_digits", "--possible_problems"):
        assert hidden not in stage3, hidden
    assert "--generate_data" not in build_parser(GatherConfig).format_help()
    assert "--training_epochs" not in build_parser(GatherConfig).format_help()
    capsys.readouterr()
    cfg = parse_config(FineTuneConfig, ["--vsa_seed", "9"])  # an old command line still parses
    assert cfg.vsa_seed == 9 and "--vsa_seed has no effect here: stage 3 takes the VSA engine" in capsys.readouterr().err


def test_the_original_options_exist_and_are_documented():
    """--modify_question_format, --encode_counter and --test_with_non_numerical_rep were "unrecognized
    arguments"; they parse, --help explains them, and the counter requires multi-token writing."""
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig
    from neurosymbolic_llm.pipeline.options import build_parser

    cfg = parse_config(FineTuneConfig, ["--modify_question_format", "1", "--encode_counter", "1",
                                        "--multi_token_intervention", "1", "--test_with_non_numerical_rep", "1"])
    assert cfg.modify_question_format and cfg.encode_counter and cfg.test_with_non_numerical_rep
    text = " ".join(build_parser(FineTuneConfig).format_help().split())
    assert "--modify_question_format BOOL ask each test question in a phrasing drawn at random" in text
    assert "--encode_counter BOOL with --multi_token_intervention: add the counter x^t" in text
    assert "--test_with_non_numerical_rep BOOL write the numbers of each test question" in text
    with pytest.raises(ConfigError, match="--encode_counter 1 needs --multi_token_intervention 1"):
        parse_config(FineTuneConfig, ["--encode_counter", "1"])


def test_paper_preset_evaluates_every_test_row(tmp_path):
    """The paper evaluated the whole test CSV; paper.yaml capped it at 200 questions per type."""
    from pathlib import Path

    from neurosymbolic_llm.pipeline.configs import FineTuneConfig
    from neurosymbolic_llm.pipeline.fine_tune_inputs import load_rows
    from neurosymbolic_llm.symbolic.problems import generate_problems

    test = generate_problems(500, ["gcd"], seed=1)  # more than 200 rows of one type
    test.to_csv(tmp_path / "test.csv", index=False)
    preset = Path(__file__).resolve().parents[1] / "Programs" / "configs" / "paper.yaml"
    cfg = parse_config(FineTuneConfig, ["--config", str(preset), "--testing_data_df_path", str(tmp_path / "test.csv")])
    rows, from_csv = load_rows(cfg, "test")
    assert from_csv and len(rows) == 500 and rows["x"].tolist() == test["x"].tolist()
    random_rows, _ = load_rows(parse_config(FineTuneConfig, ["--config", str(preset), "--testing_problems", "gcd"]), "test")
    assert len(random_rows) == 200  # without a CSV: testing_num_steps x testing_n_samples per type


def test_unknown_problem_type_is_refused_before_anything_runs():
    """--testing_problems / --problem_type with a name that is none of the ten: refused while parsing
    (it used to surface only after the model had loaded, as no test rows of that type)."""
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig, TrainEncodersConfig
    from neurosymbolic_llm.pipeline.errors import ConfigError
    from neurosymbolic_llm.pipeline.options import parse_config

    with pytest.raises(ConfigError, match=r"option 'testing_problems': unknown problem type 'xor' \(known: addition"):
        parse_config(FineTuneConfig, ["--testing_problems", "[gcd, xor]"])
    with pytest.raises(ConfigError, match=r"option 'problem_type': unknown problem type 'x{79}\.\.\. \(82 char"):
        parse_config(TrainEncodersConfig, ["--problem_type", "[" + "x" * 80 + "]"])
    assert parse_config(FineTuneConfig, ["--testing_problems", "[gcd]"]).testing_problems == ["gcd"]
