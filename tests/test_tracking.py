"""The run record (neurosymbolic_llm/pipeline/tracking.py): one config file per stage, metrics lines that name
run, stage and attempt; and what the stages put into wandb, read back from wandb's own offline run
file (not from our calls): group, job type, tables with their columns and rows, no string metric."""
import json
import os
import struct
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from neurosymbolic_llm.pipeline.configs import FineTuneConfig, TrainEncodersConfig
from neurosymbolic_llm.cli.train_encoders_and_decoders import run as stage12
from neurosymbolic_llm.stages.fine_tune import run as stage3
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.tracking import Tracker


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_each_stage_has_its_config_and_every_line_names_run_stage_attempt(tmp_path):
    g = Tracker(tmp_path, stage="gather", run_name="R", config=TrainEncodersConfig(VSA_dim=128))
    g.log({"rows": 4, "split": "train"})
    g.finish()
    f = Tracker(tmp_path, stage="fine_tune", run_name="R", config=FineTuneConfig(VSA_dim=256), label="baseline")
    f.log({"neurosymbolic/loss": 1.5}, step=3)
    f.summary({"seen_accuracy/baseline": 0.25})
    f.table("results", pd.DataFrame({"a": [1, 2]}), tmp_path / "results.csv")
    f.image("results_plot", tmp_path / "results.png")
    f.finish()

    assert yaml.safe_load((tmp_path / "config_gather.yaml").read_text())["VSA_dim"] == 128
    fine = yaml.safe_load((tmp_path / "config_fine_tune.yaml").read_text())
    assert fine["VSA_dim"] == 256 and fine["run_record"]["label"] == "baseline"
    assert not (tmp_path / "config.yaml").exists()
    recs = lines(tmp_path)
    assert [(r["run"], r["stage"]) for r in recs] == [("R", "gather")] + [("R", "fine_tune")] * 4
    assert recs[0]["attempt"] == g.attempt and recs[1]["attempt"] == f.attempt
    assert g.attempt.endswith(f"-{os.getpid()}") and fine["run_record"]["attempt"] == f.attempt
    assert "step" not in recs[0] and recs[1]["step"] == 3 and recs[1]["neurosymbolic/loss"] == 1.5
    assert recs[0]["split"] == "train"  # strings stay in the local record
    assert [r.get("kind") for r in recs] == [None, None, "summary", "table", "image"]
    assert recs[3]["rows"] == 2 and recs[3]["file"].endswith("results.csv")


def test_record_used_replaces_options_and_the_file_reruns_what_ran(tmp_path):
    cfg = parse_config(FineTuneConfig, ["--VSA_dim", "2048", "--max_digits", "9", "--run_name", "R"])
    t = Tracker(tmp_path, stage="fine_tune", run_name="R", config=cfg)
    t.record_used({"VSA_dim": 64, "max_digits": 4, "engine_fingerprint": "ab12"}, source="engine of enc.pth")
    t.finish()
    data = yaml.safe_load((tmp_path / "config_fine_tune.yaml").read_text())
    assert data["run_record"]["used"] == {"engine of enc.pth": {"VSA_dim": 64, "max_digits": 4,
                                                                "engine_fingerprint": "ab12"}}
    again = parse_config(FineTuneConfig, ["--config", str(tmp_path / "config_fine_tune.yaml")])
    assert (again.VSA_dim, again.max_digits, again.run_name) == (64, 4, "R")


def test_other_ranks_write_nothing_and_stages_are_checked(tmp_path):
    t = Tracker(tmp_path / "r", stage="encoders", run_name="R", config=TrainEncodersConfig(), enabled=False)
    t.log({"a": 1})
    t.summary({"b": 2})
    t.finish()
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="stage 'train'"):
        Tracker(tmp_path, stage="train", run_name="R", config=None)


# ----------------------------------------------------------------------------- wandb, read back
def wandb_records(path: Path):
    """The protobuf records of an offline run file (run-<id>.wandb): a ":W&B" header of 7 bytes,
    then LevelDB-style log records (crc u32, length u16, type u8: 1 full, 2 first, 3 middle,
    4 last) in blocks of 32 KiB."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, part = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        part += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(part)
            part = b""
            yield rec


def read_run(folder: Path, timeout: float = 60.0) -> dict:
    """{run: RunRecord, history: [{key: value}], media: {name: {field: value}}, summary: {key: value}}

    wandb's service writes the file after `finish()` returns: wait for its exit record."""
    (path,) = folder.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path)):
        assert time.monotonic() < deadline, f"{path}: no exit record after {timeout} s"
        time.sleep(0.2)
    out = {"history": [], "media": {}, "summary": {}}
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
        elif kind == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            out["history"].append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    for row in out["history"]:  # a media value is logged as nested keys <name>/_type, <name>/path, ...
        for key in [k for k in row if k.endswith("/_type")]:
            name = key[:-len("/_type")]
            out["media"][name] = {k[len(name) + 1:]: row.pop(k) for k in list(row) if k.startswith(name + "/")}
    return out


def table_of(folder: Path, media: dict) -> pd.DataFrame:
    assert media["_type"] == "table-file"
    t = json.loads((folder / "files" / media["path"]).read_text())
    return pd.DataFrame(t["data"], columns=t["columns"])


def offline_runs(root: Path) -> dict[str, dict]:
    """Every offline run under root, by job type (each job type once)."""
    runs = {}
    for folder in sorted(root.rglob("offline-run-*")):
        r = read_run(folder)
        assert r["run"].job_type not in runs
        runs[r["run"].job_type] = {**r, "folder": folder}
    return runs


def assert_numbers_only(run: dict):
    for row in run["history"]:
        bad = {k: v for k, v in row.items() if not isinstance(v, (int, float))}
        assert not bad, f"{run['run'].job_type}: non-numeric metrics {bad}"


@pytest.mark.slow
def test_a_run_name_in_wandb(tiny_ckpt, tmp_path, monkeypatch):
    """Stages 1-3 and the comparison of run R on the tiny model, wandb offline."""
    from neurosymbolic_llm.stages.train_maps import CSV_COLUMNS
    from neurosymbolic_llm.pipeline.results import RESULT_COLUMNS
    from neurosymbolic_llm.stages.compare_runs import compare_runs

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    common = ["--chpt_dir", str(tiny_ckpt), "--programs_dir", str(tmp_path), "--run_name", "R", "--device", "cpu",
              "--VSA_dim", "128", "--max_digits", "4", "--max_seq_len", "512", "--log_wandb", "1"]
    assert stage12(parse_config(TrainEncodersConfig, common + [
        "--generate_data", "1", "--train_data_rounds", "24", "--val_data_rounds", "8", "--testing_data_rounds", "12",
        "--layer_numbers", "[1, 2]", "--n_samples", "8"])) == 0
    assert stage12(parse_config(TrainEncodersConfig, common + [
        "--generate_data", "0", "--train_data_rounds", "24", "--val_data_rounds", "8", "--testing_data_rounds", "12",
        "--training_epochs", "2", "--decoding_epochs", "2"])) == 0
    models = tmp_path / "models"
    assert stage3(parse_config(FineTuneConfig, common + [
        "--encoder_path", str(models / "encoders_R.pth"), "--decoder_path", str(models / "decoders_R.pth"),
        "--symbolic_encoding_layer", "2", "--symbolic_decoding_layers", "2", "--test_baseline", "1",
        "--problem_type", "gcd,modulo", "--testing_problems", "gcd,addition", "--num_steps", "2", "--n_samples", "2",
        "--validation_rows", "2", "--testing_num_steps", "1", "--testing_n_samples", "2", "--eval_batch_size", "4",
        "--problem_score_threshold", "-100"])) == 0
    compare_runs(["R"], out=str(tmp_path / "results" / "cmp"), programs_dir=str(tmp_path), log_wandb=True,
                 wandb_group="R")

    runs = offline_runs(tmp_path)
    assert sorted(runs) == ["compare", "encoders", "fine_tune", "gather"]
    assert {r["run"].run_group for r in runs.values()} == {"R"}
    assert runs["fine_tune"]["run"].display_name == "R fine_tune (baseline+neurosymbolic)"
    for r in runs.values():
        assert_numbers_only(r)

    gather = runs["gather"]
    assert gather["summary"]["gathered_rows"] == 24 + 8 + 12 and gather["summary"]["complete"] == 1
    assert gather["summary"]["prompts_per_s"] > 0
    assert sum(row["rows"] for row in gather["history"] if "rows" in row) == 44

    enc = runs["encoders"]
    acc = table_of(enc["folder"], enc["media"]["encoding_accuracy"])
    local = pd.read_csv(tmp_path / "results" / "R" / "encoding_accuracy.csv")
    assert list(acc.columns) == CSV_COLUMNS and len(acc) == len(local) > 0
    assert acc["x_accuracy"].tolist() == pytest.approx(local["x_accuracy"].tolist(), abs=1e-4)
    assert list(table_of(enc["folder"], enc["media"]["maps"])["layer"]) == [1, 2]
    plot = table_of(enc["folder"], enc["media"]["encoding_accuracy_vs_layer_table"])  # the line plot's data
    assert set(plot["lineKey"]) >= {"x (seen types)", "y (seen types)", "type (seen types)"}
    assert sorted(set(plot["step"])) == [1, 2]
    assert enc["summary"]["best_layer"] in (1, 2)
    assert enc["media"]["encoding_accuracy_plot"]["_type"] == "image-file"
    assert any("encoder_val_rmse" in row for row in enc["history"])

    fine = runs["fine_tune"]
    res = table_of(fine["folder"], fine["media"]["results"])
    assert list(res.columns) == RESULT_COLUMNS
    assert sorted(zip(res["method"], res["problem_type"])) == sorted(
        (m, t) for m in ("baseline", "neurosymbolic") for t in ("gcd", "addition"))
    responses = pd.read_csv(tmp_path / "results" / "R" / "responses.csv")
    assert len(table_of(fine["folder"], fine["media"]["responses"])) == len(responses) == 8
    gates = table_of(fine["folder"], fine["media"]["gate_scores"])
    assert list(gates.columns) == ["group", "problem_type", "score", "gate_open"] and len(gates) == 4
    summary = fine["summary"]
    local = pd.read_csv(tmp_path / "results" / "R" / "results.csv")
    seen_ns = local[(local.method == "neurosymbolic") & local.seen]["accuracy"].mean()
    assert summary["seen_accuracy/neurosymbolic"] == pytest.approx(seen_ns)
    assert "times_more_solved_vs_baseline" in summary and "gate_open_rate/seen math" in summary
    assert "neurosymbolic/loss" not in summary  # the headline figures, not the last step's values
    assert [row["step"] for row in fine["history"] if "neurosymbolic/loss" in row] == [1, 2]
    assert {"results_plot", "gate_scores_plot"} <= set(fine["media"])

    cmp = runs["compare"]
    assert len(table_of(cmp["folder"], cmp["media"]["results"])) == len(local)
    assert cmp["summary"]["seen_accuracy/neurosymbolic"] == pytest.approx(seen_ns)
    # The local record keeps every stage's lines, without wandb's own records.
    recs = lines(tmp_path / "results" / "R")
    assert {r["stage"] for r in recs} == {"gather", "encoders", "fine_tune"} and all(r["run"] == "R" for r in recs)
    assert not any("image" in r and isinstance(r["image"], str) for r in recs)
    assert {p.name for p in (tmp_path / "results" / "R").glob("config_*.yaml")} == {
        "config_gather.yaml", "config_encoders.yaml", "config_fine_tune.yaml"}
    used = yaml.safe_load((tmp_path / "results" / "R" / "config_fine_tune.yaml").read_text())
    assert used["VSA_dim"] == 128 and "engine_fingerprint" in next(iter(used["run_record"]["used"].values()))
