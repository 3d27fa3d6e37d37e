"""Hostile inputs to the pipeline (issue 19): each ends in one UserError line naming the file or
option and what is wrong, and nothing is written, deleted or overwritten.

Classes, as numbered in the issue: 1 a symbolic link at a lock file, 2 reshard into a folder of
other files, 3 run names that are paths, 4 NaN and inf (options, gathered data, maps, training
states), 6 files that are not what they claim (CSV, YAML, map files, manifests, shards, compare_runs
inputs; a failed stage-1 attempt blocking the next), 7 over-long echoes and YAML alias bombs,
8 stage 3's maps replaced while it trains.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from neurosymbolic_llm.pipeline.configs import FineTuneConfig, GatherConfig, TrainEncodersConfig
from neurosymbolic_llm.pipeline.errors import (CheckpointError, ConfigError, DataError, OutputError, UserError,
                                               run_entry_point)
from neurosymbolic_llm.pipeline.hidden_store import HiddenStore
from neurosymbolic_llm.pipeline.maps import load_maps, model_info, save_maps
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.problems_csv import load_problems_csv
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems

PROGRAMS = Path(__file__).resolve().parents[1] / "Programs"
ENV = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
SCHEMAS = (GatherConfig, TrainEncodersConfig, FineTuneConfig)


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROGRAMS / name), *args], env=ENV, capture_output=True, text=True,
                          timeout=300)


def one_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    return lines[0]


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ----------------------------------------------------------------------------- 1: lock files
def test_a_symlink_or_fifo_at_the_lock_file_is_refused_and_its_target_untouched(tmp_path):
    from neurosymbolic_llm.pipeline.locks import lock_path, stage_lock

    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    run_dir = tmp_path / "results" / "R"
    run_dir.mkdir(parents=True)
    lock_path(run_dir, "gather_hidden_states").symlink_to(target)
    with pytest.raises(OutputError, match=r"\.gather_hidden_states\.lock: .*symbolic link"):
        with stage_lock(run_dir, "gather_hidden_states", "R"):
            pass
    assert target.read_text() == "keep me\n"
    os.mkfifo(lock_path(run_dir, "fine_tune_decoders"))
    with pytest.raises(OutputError, match="not a regular file"):
        with stage_lock(run_dir, "fine_tune_decoders", "R"):
            pass


# ----------------------------------------------------------------------------- 2: reshard
def test_reshard_refuses_a_folder_of_other_files_and_replaces_only_its_own_shards(tiny_ckpt, tmp_path):
    from neurosymbolic_llm.llama.checkpoint import reshard

    models = tmp_path / "models"
    models.mkdir()
    (models / "encoders_R.pth").write_bytes(b"a run's maps")
    (models / "consolidated.00.pth").write_bytes(b"old shard")
    with pytest.raises(CheckpointError, match=r"encoders_R\.pth.*nothing was deleted"):
        reshard(tiny_ckpt, models, 1)
    assert sorted(p.name for p in models.iterdir()) == ["consolidated.00.pth", "encoders_R.pth"]
    out = tmp_path / "out"
    reshard(tiny_ckpt, out, 2)
    reshard(tiny_ckpt, out, 1)  # an earlier reshard's output is replaced: its 2 shards become 1
    assert sorted(p.name for p in out.iterdir()) == ["consolidated.00.pth", "params.json", "tokenizer.model"]


# ----------------------------------------------------------------------------- 3: run names
@pytest.mark.parametrize("name", ["x/../../../other_model/consolidated.00", "../../x", "../x", "/abs/x", "a/b",
                                  "..", ".", "a b", "x\n"])
def test_run_names_that_are_not_plain_names_are_refused_by_every_stage(name):
    for schema in SCHEMAS:
        with pytest.raises(ConfigError, match="option 'run_name': .* is not a plain run name"):
            parse_config(schema, ["--run_name", name])
    assert parse_config(FineTuneConfig, ["--run_name", "R_lora-2.b"]).run_name == "R_lora-2.b"


def test_a_path_as_run_name_is_one_line_and_creates_nothing(tmp_path):
    line = one_line(script("fine_tune_decoders.py", "--run_name", "../x", "--programs_dir", str(tmp_path / "p"),
                           "--test_baseline", "2", "--device", "cpu"))
    assert "'../x' is not a plain run name" in line
    line = one_line(script("compare_runs.py", "../x", "A", "--programs_dir", str(tmp_path / "p")))
    assert "compare_runs: run: '../x' is not a plain run name" in line
    assert files_under(tmp_path) == []


# ----------------------------------------------------------------------------- 4: NaN and inf
@pytest.mark.parametrize("argv", [["--ridge", "nan"], ["--learning_rate", "inf"], ["--learning_rate=-inf"],
                                  ["--learning_rate", "1e400"], ["--encoder_lr_schedule", "{50: .nan}"]])
def test_non_finite_option_values_are_refused(argv):
    with pytest.raises(ConfigError, match=f"option '{argv[0][2:].split('=')[0]}': cannot read .*not a finite number"):
        parse_config(TrainEncodersConfig, argv)


def test_non_finite_values_in_a_yaml_config_are_refused_but_an_infinite_limit_is_kept(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: .nan\n")
    with pytest.raises(ConfigError, match="c.yaml: option 'learning_rate'.*not a finite number"):
        parse_config(FineTuneConfig, ["--config", str(cfg)])
    assert parse_config(FineTuneConfig, ["--problem_score_max", "inf"]).problem_score_max == float("inf")


def _engine_info():
    return SymbolicEngine(VSA_dim=64, max_digits=4, seed=4), model_info("f" * 16, 32, 4)


def test_maps_with_nan_are_never_saved_and_never_loaded(tmp_path):
    engine, info = _engine_info()
    w = torch.randn(64, 32)
    w[3, 4] = float("nan")
    path = tmp_path / "encoders_R.pth"
    with pytest.raises(UserError, match=r"encoders_R\.pth: the encoder of layer 2 holds 1 NaN/inf values"):
        save_maps(path, "encoder", {2: w}, engine.state_dict(), info)
    assert not path.exists()
    torch.save({"format": "nsllm-maps", "version": 1, "kind": "encoder", "weights": {"2": w},
                "engine": engine.state_dict(), "model": info, "extra": {}}, path)
    with pytest.raises(UserError, match="layer 2 holds 1 NaN/inf"):
        load_maps(path, "encoder")


def test_a_training_state_with_nan_is_neither_saved_nor_resumed(tmp_path):
    from neurosymbolic_llm.pipeline.train_state import TrainingState

    state = TrainingState(tmp_path / "training_state.pt", {"a": 1}, every=1)
    good = {"method": "neurosymbolic", "step": 3, "params": [torch.ones(4)]}
    state.save(good)
    before = state.path.read_bytes()
    with pytest.raises(UserError, match=r"stage 3 after step 4: trained parameter 0 .*last good state"):
        state.save({**good, "step": 4, "params": [torch.tensor([1.0, float("inf"), 0.0, 0.0])]})
    assert state.path.read_bytes() == before
    torch.save({"format": "nsllm-training-state", "version": 1, "identity": {"a": 1}, **good,
                "params": [torch.full((4,), float("nan"))]}, state.path)
    with pytest.raises(UserError, match="--restart 1"):
        TrainingState(state.path, {"a": 1}, every=1).load()


def _store(tmp_path: Path, rows: int = 4, dim: int = 32, vsa: int = 64) -> HiddenStore:
    """A store of one shard per split, written as stage 1 writes it."""
    store = HiddenStore(tmp_path / "gathered_data_R")
    identity = {"model_fingerprint": "f", "tokenizer_fingerprint": "t", "engine_fingerprint": "e", "layers": [1, 2],
                "dtype": "float32", "dim": dim, "rows_per_shard": rows, "sources": {}, "prompt": {},
                "model": {"fingerprint": "f", "dim": dim, "n_layers": 4}}
    manifest = store.open_for_writing(identity, {"train": rows, "val": rows, "test": rows}, {})
    for split in ("train", "val", "test"):
        store.write_shard(split, 0, {"hidden": torch.randn(rows, 2, dim), "targets": torch.randn(rows, vsa),
                                     "row": torch.arange(rows), "type_id": torch.zeros(rows, dtype=torch.long),
                                     "x": torch.arange(rows), "y": torch.arange(rows)})
    store.update_progress(manifest)
    return store


def test_gathered_states_with_nan_are_neither_written_nor_read(tmp_path):
    store = _store(tmp_path)
    shard = store.shard_path("train", 0)
    data = torch.load(shard, weights_only=True)
    data["hidden"][1, 0, 5] = float("nan")
    with pytest.raises(UserError, match=r"stage 1, train shard 0: the hidden states of rows 0\.\.3 holds 1"):
        store.write_shard("train", 0, data)
    torch.save(data, shard)
    with pytest.raises(UserError, match=r"stage 2 input .*shard_00000\.pt: hidden holds 1 NaN/inf.*delete this"):
        store.load_split("train")


# ----------------------------------------------------------------------------- 6: files that are not what they claim
def _csv(tmp_path: Path, question: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "q.csv"
    path.write_bytes(f"problem_type,x,y,question,solution\ngcd,12,8,{question},4\n".encode(encoding))
    return path


@pytest.mark.parametrize("question, encoding, match", [
    ("What is the GCD of 12 and " + "7" * 5000 + "?", "utf-8", r"line 2 .*field 'question': question "
                                                              r"'What is.*\.\.\. \(\d+ characters\) does not contain y"),
    ("Quel est le PGCD de 12 et 8, déjà?", "latin-1", r"q.csv: line 2: not UTF-8 text \(byte 0xe9\)"),
    ("What is the GCD of 12 and 8? " + "x" * 200_000, "utf-8", r"q.csv: line 2: not a readable CSV row "
                                                                  r"\(field larger than field limit"),
])
def test_csv_files_that_break_the_reader_are_one_line(tmp_path, question, encoding, match):
    path = _csv(tmp_path, question, encoding)
    with pytest.raises(DataError, match=match) as err:
        load_problems_csv(path, max_digits=4)
    assert len(str(err.value)) < 400


def test_a_yaml_config_that_is_not_utf8_or_holds_a_huge_number_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes("run_name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(byte 0xe9 at offset 13\)"):
        parse_config(FineTuneConfig, ["--config", str(cfg)])
    cfg.write_text("seed: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML \(Exceeds the limit \(4300 digits\)"):
        parse_config(FineTuneConfig, ["--config", str(cfg)])


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("engine"), "'engine' .* is missing"),
    (lambda d: d["engine"].pop("VSA_dim"), "engine key 'VSA_dim' is missing"),
    (lambda d: d["engine"].update(seed="4"), "engine key 'seed' is missing or not an int"),
    (lambda d: d.pop("model"), "'model' must hold"),
    (lambda d: d.update(weights={"two": torch.zeros(64, 32)}), "weights key 'two' is not a layer number"),
    (lambda d: d.update(weights={"2": [1.0]}), "weights of layer 2 are not a floating-point tensor"),
    (lambda d: d.update(weights={}), "'weights' is missing or holds no layer"),
])
def test_map_files_with_a_missing_or_odd_key_are_one_line(tmp_path, edit, match):
    engine, info = _engine_info()
    path = save_maps(tmp_path / "encoders_R.pth", "encoder", {2: torch.zeros(64, 32)}, engine.state_dict(), info)
    data = torch.load(path, weights_only=True)
    edit(data)
    torch.save(data, path)
    with pytest.raises(DataError, match=match):
        load_maps(path, "encoder", engine=engine)


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "not a hidden-state store manifest"),
    (None, "key 'layers' is missing or not a list"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_a_bad_manifest_is_one_line(tmp_path, text, match):
    store = _store(tmp_path)
    if text is None:
        manifest = json.loads(store.manifest_path.read_text())
        del manifest["layers"]
        text = json.dumps(manifest)
    store.manifest_path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=match):
        store.load_split("train")


@pytest.mark.parametrize("content, match", [
    (b"not a tensor file", r"shard_00000\.pt: not a readable shard"),
    ("truncated", r"shard_00000\.pt: not a readable shard"),
    ({"hidden": torch.zeros(4, 2, 32)}, r"shard_00000\.pt: not a shard of gathered data"),
    ("wide", r"shard_00000\.pt: hidden has shape \(4, 2, 33\), expected \(4, 2, 32\)"),
])
def test_a_gathered_shard_that_is_not_one_names_its_file(tmp_path, content, match):
    store = _store(tmp_path)
    shard = store.shard_path("val", 0)
    if content == "truncated":
        shard.write_bytes(shard.read_bytes()[:300])
    elif content == "wide":
        data = torch.load(shard, weights_only=True)
        torch.save({**data, "hidden": torch.zeros(4, 2, 33)}, shard)
    elif isinstance(content, bytes):
        shard.write_bytes(content)
    else:
        torch.save(content, shard)
    with pytest.raises(DataError, match=match):
        store.load_split("val")


def test_a_manifest_left_by_a_crashed_first_attempt_does_not_block_the_repaired_rerun(tiny_ckpt, tmp_path):
    """Stage 1 crashes on its first shard (a question too long for --max_seq_len) after writing its
    manifest; the rerun with the repaired CSV (another content fingerprint) gathers."""
    from neurosymbolic_llm.stages.gather import run_gather

    csv = tmp_path / "train.csv"
    df = generate_problems(4, ["gcd", "modulo"], seed=1)
    long = df.copy()
    long.loc[0, "question"] = long.loc[0, "question"] + " Think about it." * 150
    long.to_csv(csv, index=False)
    argv = ["--run_name", "t", "--chpt_dir", str(tiny_ckpt), "--programs_dir", str(tmp_path), "--VSA_dim", "64",
            "--max_digits", "4", "--device", "cpu", "--training_data_df_path", str(csv), "--val_data_rounds", "2",
            "--testing_data_rounds", "2", "--max_seq_len", "512"]
    with pytest.raises(ConfigError, match="more than --max_seq_len 512"):
        run_gather(parse_config(GatherConfig, argv))
    store = HiddenStore(tmp_path / "gathered_data_t")
    assert store.manifest_path.is_file() and not list(store.root.rglob("shard_*.pt"))
    df.to_csv(csv, index=False)
    run_gather(parse_config(GatherConfig, argv))
    assert store.read_manifest()["complete"]


def _results(folder: Path, name: str, accuracy="0.5") -> None:
    run = folder / "results" / name
    run.mkdir(parents=True)
    (run / "results.csv").write_text("method,problem_type,seen,n,accuracy,cross_entropy\n"
                                     f"baseline,gcd,True,4,{accuracy},1.5\n")
    (run / "fingerprints.json").write_text(json.dumps({"test_rows": "r", "n_test_rows": 4, "test_questions": {},
                                                       "model": "m", "codebook": None, "seen_types": ["gcd"]}))


@pytest.mark.parametrize("corrupt, match", [
    (lambda run: (run / "results.csv").write_bytes(b"\xff\xfe\x00garbage"), "not a readable results table"),
    (lambda run: (run / "results.csv").write_text("method,problem_type,seen,n,accuracy,cross_entropy\n"
                                                  "baseline,gcd,True,4,lots,1.5\n"),
     r"data row 1, column 'accuracy': 'lots' is not a fraction"),
    (lambda run: (run / "fingerprints.json").write_text("{"), r"fingerprints\.json: not valid JSON"),
    (lambda run: (run / "fingerprints.json").write_text("[]"), r"fingerprints\.json: not the fingerprints"),
])
def test_corrupt_compare_runs_inputs_are_one_line_and_write_nothing(tmp_path, corrupt, match):
    from neurosymbolic_llm.stages.compare_runs import compare_runs

    _results(tmp_path, "A")
    _results(tmp_path, "B")
    corrupt(tmp_path / "results" / "B")
    with pytest.raises(DataError, match=match):
        compare_runs(["A", "B"], programs_dir=str(tmp_path))
    assert not (tmp_path / "results" / "compare_A_B").exists()


def test_a_corrupt_compare_runs_input_through_the_script(tmp_path):
    _results(tmp_path, "A")
    _results(tmp_path, "B", accuracy="1.5")
    line = one_line(script("compare_runs.py", "A", "B", "--programs_dir", str(tmp_path)))
    assert "results.csv: data row 1, column 'accuracy': '1.5' is not a fraction in [0, 1]" in line
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["A", "B"]


# ----------------------------------------------------------------------------- 7: echoes and alias bombs
def alias_bomb(levels: int) -> str:
    """A "billion laughs" config: an option's value of 10**levels strings once its aliases are expanded."""
    nested = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    nested += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return f"problem_type: [{', '.join(nested)}]\n"


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(6))  # a million values once its aliases are expanded
    assert bomb.stat().st_size < 500
    with pytest.raises(ConfigError, match="aliases expand to more than 100000 values") as err:
        parse_config(FineTuneConfig, ["--config", str(bomb)])
    assert len(str(err.value)) < 300


def test_an_error_never_echoes_more_than_a_line(capsys):
    from neurosymbolic_llm.pipeline.options import parse_config as parse

    with pytest.raises(ConfigError) as err:
        parse(FineTuneConfig, ["--num_steps", "9" * 5000])
    assert len(str(err.value)) < 300 and "(5002 characters)" in str(err.value)

    def huge(argv):
        raise UserError("x" * 10_000_000)

    assert run_entry_point(huge) == 2
    assert len(capsys.readouterr().err) < 2200


# ----------------------------------------------------------------------------- 8: maps replaced during stage 3
def test_stage3_refuses_to_save_a_decoder_whose_maps_changed_under_it(tiny_ckpt, tmp_path, monkeypatch):
    from neurosymbolic_llm.llama.checkpoint import checkpoint_fingerprint
    from neurosymbolic_llm.stages import fine_tune as fine_tuning

    engine = SymbolicEngine(VSA_dim=64, max_digits=4, seed=4)
    info = model_info(checkpoint_fingerprint(tiny_ckpt), 64, 4)
    models = tmp_path / "models"
    for kind in ("encoder", "decoder"):
        save_maps(models / f"{kind}s_m.pth", kind, {2: torch.randn(64, 64) / 8}, engine.state_dict(), info)

    def train_while_stage2_reruns(*args, **kwargs):  # stage 2 of the same run name rewrites the maps meanwhile
        save_maps(models / "decoders_m.pth", "decoder", {2: torch.randn(64, 64) / 8}, engine.state_dict(), info)

    monkeypatch.setattr(fine_tuning, "train", train_while_stage2_reruns)
    argv = ["--run_name", "R", "--chpt_dir", str(tiny_ckpt), "--programs_dir", str(tmp_path),
            "--encoder_path", str(models / "encoders_m.pth"), "--decoder_path", str(models / "decoders_m.pth"),
            "--symbolic_encoding_layer", "2", "--symbolic_decoding_layers", "2", "--problem_type", "gcd",
            "--testing_problems", "gcd", "--num_steps", "1", "--n_samples", "2", "--validation_rows", "2",
            "--testing_num_steps", "1", "--testing_n_samples", "2", "--max_seq_len", "512", "--device", "cpu"]
    with pytest.raises(DataError, match=r"--decoder_path .*decoders_m\.pth changed while this run trained.*"
                                        r"not saved; rerun stage 3 with --restart 1"):
        fine_tuning.run(parse_config(FineTuneConfig, argv))
    assert not (models / "decoders_m_post_fine_tuning_R.pth").exists()
    assert not (tmp_path / "results" / "R" / "results.csv").exists()
