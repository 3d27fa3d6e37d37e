"""Option values checked while parsing, before any model loads (issue #30, classes 8 and 9): a strict
YAML reader (keys given twice, unknown sections, booleans where numbers belong), bounds on every
count, factor, seed and complexity, and the aliases with conventional names (issue #28)."""
import re

import pytest

from neurosymbolic_llm.pipeline.configs import (AskConfig, FineTuneConfig, GateStatisticsConfig, GatherConfig,
                                                TrainEncodersConfig)
from neurosymbolic_llm.pipeline.errors import ConfigError
from neurosymbolic_llm.pipeline.options import parse_config


def _yaml(tmp_path, text: str) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return ["--config", str(path)]


# ----------------------------------------------------------------------------- class 9: strict YAML
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml: key 'learning_rate' is given twice \(lines 2 and 4\)"):
        parse_config(FineTuneConfig, _yaml(tmp_path, "seed: 1\nlearning_rate: 0.1\nnum_epochs: 1\nlearning_rate: 0.2\n"))
    with pytest.raises(ConfigError, match=r"c.yaml: key 'num_epochs' is given twice \(lines 2 and 3\)"):
        parse_config(FineTuneConfig, _yaml(tmp_path, "fine_tune_decoders:\n  num_epochs: 1\n  num_epochs: 2\n"))
    with pytest.raises(ConfigError, match=r"c.yaml: key '100' is given twice \(lines 1 and 1\)"):
        parse_config(FineTuneConfig, _yaml(tmp_path, "lr_decay: {100: 0.5, 100: 0.1}\n"))
    with pytest.raises(ConfigError, match=r"command line: option 'lr_decay'.*key '10' is given twice"):
        parse_config(FineTuneConfig, ["--lr_decay", "{10: 0.5, 10: 0.1}"])


def test_a_misspelled_section_or_an_unknown_mapping_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml: unknown option\(s\) for fine_tune_decoders: fine_tune_decoder "
                                          r"\(a mapping: no command has this section"):
        parse_config(FineTuneConfig, _yaml(tmp_path, "fine_tune_decoder:\n  num_epochs: 0\n"))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) for train_encoders_and_decoders: extras \(a mapping"):
        parse_config(TrainEncodersConfig, _yaml(tmp_path, "extras: {a: 1}\n"))
    # a typo inside another command's section is found by every command that reads the file
    with pytest.raises(ConfigError, match=r"unknown option\(s\) for train_encoders_and_decoders: "
                                          r"fine_tune_decoders.num_epoch\b"):
        parse_config(TrainEncodersConfig, _yaml(tmp_path, "fine_tune_decoders:\n  num_epoch: 0\n"))


@pytest.mark.parametrize("text,option", [("learning_rate: yes", "learning_rate"), ("num_epochs: on", "num_epochs"),
                                         ("run_name: no", "run_name"), ("lr_decay: {100: yes}", "lr_decay"),
                                         ("symbolic_decoding_layers: [true]", "symbolic_decoding_layers")])
def test_a_boolean_is_read_only_where_a_bool_is_expected(tmp_path, text, option):
    with pytest.raises(ConfigError, match=rf"c.yaml: option '{option}': cannot read .*a boolean where a "
                                          rf"(number|string) is expected"):
        parse_config(FineTuneConfig, _yaml(tmp_path, text + "\n"))
    assert parse_config(FineTuneConfig, _yaml(tmp_path, "restart: yes\n")).restart is True


@pytest.mark.parametrize("text,message", [("learning_rate:\n", r"option 'learning_rate': no value \(expected float\)"),
                                          ("chpt_dir: [a, b]\n", r"option 'chpt_dir': cannot read .*a list where a string"),
                                          ("restart: 1.0\n", r"option 'restart': cannot read 1.0 as bool")])
def test_a_value_of_the_wrong_kind_is_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match="c.yaml: " + message):
        parse_config(FineTuneConfig, _yaml(tmp_path, text))


# ----------------------------------------------------------------------------- class 8: bounds
@pytest.mark.parametrize("schema,argv,message", [
    (FineTuneConfig, ["--seed", "-1"], "option seed must be from 0 to 4294967295 (got -1)"),
    (TrainEncodersConfig, ["--vsa_seed", "-4"], "option vsa_seed must be from 0"),
    (TrainEncodersConfig, ["--complexity", "40"], "option complexity must be from 0 to 17 (got 40)"),
    (TrainEncodersConfig, ["--complexity", "6", "--max_digits", "5"], "option complexity 6: operands of up to 7 digits do not fit --max_digits 5"),
    (TrainEncodersConfig, ["--max_digits", "30"], "option max_digits must be from 1 to 18"),
    (TrainEncodersConfig, ["--VSA_dim", "0"], "option VSA_dim must be from 8"),
    (TrainEncodersConfig, ["--learning_rate", "-0.1"], "option learning_rate must be above 0 (got -0.1)"),
    (FineTuneConfig, ["--learning_rate", "0"], "option learning_rate must be above 0 (got 0)"),
    (TrainEncodersConfig, ["--decoder_learning_rate=-1e-3"], "option decoder_learning_rate must be at least 0"),
    (TrainEncodersConfig, ["--ridge=-1e-9"], "option ridge must be at least 0"),
    (TrainEncodersConfig, ["--encoder_lr_schedule", "{50: -0.5}"], "option encoder_lr_schedule must be above 0"),
    (FineTuneConfig, ["--lr_decay", "{-5: 0.5}"], "option lr_decay: step -5 must be at least 0"),
    (GatherConfig, ["--train_data_rounds", "-5"], "option train_data_rounds must be at least 1 (got -5)"),
    (GatherConfig, ["--save_frequency", "0"], "option save_frequency must be at least 1"),
    (GatherConfig, ["--layer_numbers", "[1, -2]"], "option layer_numbers must be at least 0 (got -2)"),
    (FineTuneConfig, ["--validation_rows", "-3"], "option validation_rows must be at least 0 (got -3)"),
    (FineTuneConfig, ["--training_rows", "-1"], "option training_rows must be at least 0"),
    (FineTuneConfig, ["--testing_n_samples", "0"], "option testing_n_samples must be at least 1"),
    (FineTuneConfig, ["--num_steps", "-10"], "option num_steps must be at least 1"),
    (FineTuneConfig, ["--max_seq_len", "0"], "option max_seq_len must be at least 1"),
    (FineTuneConfig, ["--starting_skip_strength", "1.5"], "option starting_skip_strength must be from 0 to 1"),
    (FineTuneConfig, ["--lora_rank", "0"], "option lora_rank must be at least 1 (got 0)"),
    (FineTuneConfig, ["--lora_alpha", "-16"], "option lora_alpha must be above 0"),
    (FineTuneConfig, ["--lora_dropout", "1"], "option lora_dropout must be from 0 to 0.99"),
    (FineTuneConfig, ["--lora_targets", "[wq, q_proj]"], "option 'lora_targets': 'q_proj' is not one of wq|wk|"),
    (FineTuneConfig, ["--cot_max_new_tokens", "0"], "option cot_max_new_tokens must be at least 1"),
    (FineTuneConfig, ["--lora_baseline", "1", "--lora_targets", "[]"], "--lora_targets is empty"),
    (FineTuneConfig, ["--symbolic_decoding_layers", "[]"], "--symbolic_decoding_layers is empty"),
    (FineTuneConfig, ["--symbolic_encoding_layer", "-1"], "option symbolic_encoding_layer must be at least 0"),
    (FineTuneConfig, ["--record_score_per_problem", "4"], "option 'record_score_per_problem': 4 is not one of 0|1|2|3 (or none|train|test|both)"),
    (AskConfig, ["--max_new_tokens", "-1"], "option max_new_tokens must be at least 0 (got -1)"),
    (GateStatisticsConfig, ["--eval_batch_size", "0"], "option eval_batch_size must be at least 1"),
])
def test_an_out_of_range_value_is_one_line_naming_the_option(schema, argv, message):
    """Each of these parsed on the old code and failed later (a traceback, often after the model loaded)
    or ran with odd sizes."""
    with pytest.raises(ConfigError, match="^(command line: )?" + re.escape(message)):
        parse_config(schema, argv)


def test_a_bound_from_a_yaml_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml: option validation_rows must be at least 0 \(got -3\)"):
        parse_config(FineTuneConfig, _yaml(tmp_path, "validation_rows: -3\n"))


def test_wandb_without_the_login_its_mode_needs_is_refused_while_parsing(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ConfigError, match="option log_wandb: WANDB_MODE=online needs a wandb login"):
        parse_config(FineTuneConfig, ["--log_wandb", "1"])
    monkeypatch.setenv("WANDB_MODE", "onlin")
    with pytest.raises(ConfigError, match="WANDB_MODE='onlin' is none of online, offline, disabled"):
        parse_config(FineTuneConfig, ["--log_wandb", "1"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert parse_config(FineTuneConfig, ["--log_wandb", "1"]).log_wandb
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "online")
    assert parse_config(FineTuneConfig, ["--log_wandb", "1"]).log_wandb


def test_the_shipped_configs_are_within_bounds():
    from pathlib import Path

    programs = Path(__file__).resolve().parents[1] / "Programs"
    for path in [*programs.glob("configs/*.yaml"), *programs.glob("real/*.yaml"), programs / "demo" / "demo.yaml"]:
        for schema in (TrainEncodersConfig, FineTuneConfig, GateStatisticsConfig):
            parse_config(schema, ["--config", str(path)])


# ----------------------------------------------------------------------------- aliases (issue #28)
ALIASES = [  # (original command line, the same with the conventional names)
    (["--chpt_dir", "/m"], ["--ckpt_dir", "/m"]),
    (["--VSA_dim", "1024"], ["--vsa_dim", "1024"]),
    (["--training_data_df_path", "t.csv", "--val_data_df_path", "v.csv", "--testing_data_df_path", "s.csv"],
     ["--train_csv", "t.csv", "--val_csv", "v.csv", "--test_csv", "s.csv"]),
    (["--problem_type", "gcd,lcm", "--testing_problems", "gcd"], ["--train_types", "gcd,lcm", "--test_types", "gcd"]),
    (["--test_baseline", "1"], ["--test_baseline", "also"]),
    (["--test_baseline", "2"], ["--test_baseline", "only"]),
    (["--record_score_per_problem", "3"], ["--record_score_per_problem", "both"]),
]


@pytest.mark.parametrize("original,alias", ALIASES)
def test_an_alias_parses_to_the_same_options_as_the_original(original, alias):
    assert parse_config(FineTuneConfig, alias) == parse_config(FineTuneConfig, original)
    assert parse_config(FineTuneConfig, original) != parse_config(FineTuneConfig, [])


def test_aliases_work_in_yaml_and_an_option_given_under_both_names_is_refused(tmp_path):
    cfg = parse_config(TrainEncodersConfig, _yaml(tmp_path, "ckpt_dir: /m\ntrain_encoders_and_decoders:\n  vsa_dim: 512\n"))
    assert (cfg.chpt_dir, cfg.VSA_dim) == ("/m", 512)
    with pytest.raises(ConfigError, match=r"c.yaml: 'chpt_dir' is given twice \(as chpt_dir and its alias ckpt_dir\)"):
        parse_config(TrainEncodersConfig, _yaml(tmp_path, "chpt_dir: /a\nckpt_dir: /b\n"))
    assert parse_config(FineTuneConfig, _yaml(tmp_path, "test_baseline: only\n")).test_baseline == 2
    assert parse_config(FineTuneConfig, _yaml(tmp_path, "test_baseline: only\n") + ["--test_baseline", "none"]
                        ).test_baseline == 0
