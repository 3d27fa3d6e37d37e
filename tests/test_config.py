"""The one-schema configuration: defaults < YAML (top level, then the entry's section) < CLI."""
from dataclasses import dataclass
from typing import ClassVar

import pytest

from utils.config import RunOptions, option, parse_config, register
from utils.errors import ConfigError


@register
@dataclass
class StageA(RunOptions):
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
    cfg_file.write_text("learning_rate: 0.01\nseed: 7\nstage_a:\n  learning_rate: 0.03\n"
                        "other_stage:\n  anything: 1\n")
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

    from fine_tune_decoders import FineTuneConfig
    from train_encoders_and_decoders import TrainEncodersConfig

    path = Path(__file__).resolve().parents[1] / "Programs" / "configs" / preset
    stage12 = parse_config(TrainEncodersConfig, ["--config", str(path)])
    stage3 = parse_config(FineTuneConfig, ["--config", str(path)])
    assert stage12.VSA_dim == stage3.VSA_dim and stage12.max_digits == stage3.max_digits
    assert stage3.symbolic_encoding_layer in range(0, 33)
