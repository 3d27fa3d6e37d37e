"""One config file for every stage (issue #29): a config saved by any stage is accepted by every
other (each ignoring, with one note line, the options of the others), the template
Programs/configs/own_model.yaml runs through a reduced pipeline on the tiny model, and stage 2 warns
when it reads nothing on validation."""
import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import yaml

from neurosymbolic_llm.pipeline.configs import (AskConfig, ExportConfig, FineTuneConfig, GateStatisticsConfig,
                                                GatherConfig, TrainEncodersConfig)
from neurosymbolic_llm.pipeline.errors import ConfigError
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.tracking import Tracker
from neurosymbolic_llm.symbolic.problems import generate_problems

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "Programs" / "configs" / "own_model.yaml"
READERS = (GatherConfig, TrainEncodersConfig, FineTuneConfig, GateStatisticsConfig, AskConfig, ExportConfig)


def _saved(tmp_path, stage: str, schema, argv: list[str]) -> Path:
    """config_<stage>.yaml as the stage writes it (pipeline/tracking.py, with its run_record)."""
    tracker = Tracker(tmp_path / stage, stage=stage, run_name="R", config=parse_config(schema, argv))
    tracker.finish()
    return tracker.config_path


def test_a_config_saved_by_any_stage_is_accepted_by_every_other(tmp_path, capsys):
    shared = ["--chpt_dir", "/models/m.gguf", "--VSA_dim", "512", "--seed", "7", "--max_digits", "5"]
    saved = {"gather": _saved(tmp_path, "gather", GatherConfig, shared + ["--n_samples", "64"]),
             "encoders": _saved(tmp_path, "encoders", TrainEncodersConfig,
                                shared + ["--learning_rate", "0.5", "--training_epochs", "7", "--generate_data", "0"]),
             "fine_tune": _saved(tmp_path, "fine_tune", FineTuneConfig,
                                 shared + ["--learning_rate", "0.07", "--symbolic_encoding_layer", "3"])}
    for stage, path in saved.items():
        for schema in READERS:
            capsys.readouterr()
            cfg = parse_config(schema, ["--config", str(path)])  # "unknown option(s)" before
            assert (cfg.chpt_dir, cfg.VSA_dim, cfg.seed) == ("/models/m.gguf", 512, 7), (stage, schema)
            mine = {f.name for f in dataclasses.fields(schema)}
            if stage != "fine_tune" and "symbolic_encoding_layer" in mine:
                assert cfg.learning_rate == 1e-3, "stage 2's learning rate is not stage 3's"
                assert "option(s) of other stages ignored here: " in capsys.readouterr().err
    stage3 = parse_config(FineTuneConfig, ["--config", str(saved["encoders"])])
    assert (stage3.n_samples, stage3.num_epochs) == (8, 1)  # stage 3's own defaults, not stage 1's 64
    stage2 = parse_config(TrainEncodersConfig, ["--config", str(saved["fine_tune"])])
    assert stage2.learning_rate == 1e-3 and stage2.training_epochs == 1000
    assert parse_config(TrainEncodersConfig, ["--config", str(saved["encoders"])]).learning_rate == 0.5
    assert parse_config(AskConfig, ["--config", str(saved["fine_tune"])]).learning_rate == 0.07
    assert parse_config(GateStatisticsConfig, ["--config", str(saved["fine_tune"])]).symbolic_encoding_layer == 3
    # a key of no stage is still an error
    data = yaml.safe_load(saved["encoders"].read_text())
    saved["encoders"].write_text(yaml.safe_dump({**data, "trainig_epochs": 3}))
    with pytest.raises(ConfigError, match=r"config_encoders.yaml: unknown option\(s\) for fine_tune_decoders: "
                                          r"trainig_epochs"):
        parse_config(FineTuneConfig, ["--config", str(saved["encoders"])])


def test_stage2_warns_when_no_layer_reads_anything_on_validation():
    from neurosymbolic_llm.stages.train_maps import best_layer_line

    def table(val_all: list[float]) -> pd.DataFrame:
        return pd.DataFrame([{"layer": l, "split": "val", "seen": "seen", "all_accuracy": a}
                             for l, a in enumerate(val_all)])

    layer, line = best_layer_line(table([0.0, 0.0, 0.0]))
    assert layer == 0 and "warning: stage 2 reads nothing on validation" in line
    layer, line = best_layer_line(table([0.0, 0.25, 0.0]))
    assert layer == 1 and "warning" not in line


@pytest.mark.slow
def test_the_own_model_template_runs_the_reduced_pipeline_on_the_tiny_model(tiny_ckpt, tmp_path, capsys, monkeypatch):
    """Stages 1 and 2, gate-statistics and stage 3 with the template and nothing but the model, the
    CSVs, the sizes and the gate's bound as the template says to choose it (gate-statistics' proposal)."""
    from neurosymbolic_llm.cli import main as nsllm

    monkeypatch.setenv("WANDB_MODE", "disabled")
    generate_problems(16, ["gcd", "modulo"], seed=1).to_csv(tmp_path / "train.csv", index=False)
    generate_problems(4, ["gcd", "modulo"], seed=2).to_csv(tmp_path / "val.csv", index=False)
    pd.concat([generate_problems(2, [t], seed=3) for t in ("gcd", "modulo", "addition")]).to_csv(
        tmp_path / "test.csv", index=False)
    programs = tmp_path / "Programs"
    common = ["--config", str(TEMPLATE), "--ckpt_dir", str(tiny_ckpt), "--programs_dir", str(programs),
              "--train_csv", str(tmp_path / "train.csv"), "--val_csv", str(tmp_path / "val.csv"),
              "--test_csv", str(tmp_path / "test.csv"), "--train_types", "gcd,modulo"]
    maps = ["--encoder_path", str(programs / "models" / "encoders_R.pth"),
            "--decoder_path", str(programs / "models" / "decoders_R.pth")]
    assert nsllm(["train-encoders-and-decoders", *common, "--run_name", "R", "--generate_data", "1",
                  "--n_samples", "16"]) == 0
    assert nsllm(["train-encoders-and-decoders", *common, "--run_name", "R", "--generate_data", "0",
                  "--training_epochs", "3", "--decoding_epochs", "3"]) == 0
    out = capsys.readouterr().out
    val = pd.read_csv(programs / "results" / "R" / "encoding_accuracy.csv").query("split == 'val' and seen == 'seen'")
    assert ("warning: stage 2 reads nothing on validation" in out) == (val["all_accuracy"].max() == 0)
    assert nsllm(["gate-statistics", *common, *maps, "--run_name", "R_gate", "--eval_batch_size", "8"]) == 0
    proposed = [l for l in capsys.readouterr().out.splitlines() if l.startswith("proposed gate: ")]
    gate_options = proposed[0].split("): ", 1)[1].split()  # --problem_score_max X --gate_min_type_margin Y ...
    assert gate_options[0::2] == ["--problem_score_max", "--gate_min_type_margin", "--gate_min_digit_margin"]
    assert nsllm(["fine-tune-decoders", *common, *maps, "--run_name", "R_ns", "--test_baseline", "also",
                  *gate_options, "--n_samples", "8", "--eval_batch_size", "8",
                  "--validation_rows", "4"]) == 0
    res = pd.read_csv(programs / "results" / "R_ns" / "results.csv")
    assert set(res["method"]) == {"neurosymbolic", "baseline"}
    assert sorted(res["problem_type"].unique()) == ["addition", "gcd", "modulo"]
    saved = yaml.safe_load((programs / "results" / "R_ns" / "config_fine_tune.yaml").read_text())
    best = max(val.itertuples(), key=lambda r: (r.all_accuracy, -r.layer)).layer  # `auto`: the earliest best layer
    assert saved["symbolic_encoding_layer"] == best and saved["symbolic_decoding_layers"] == [4]
