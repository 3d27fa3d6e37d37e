"""Stage 1: recorded states equal a lone forward, CSV rows each once in order, kill -9 and resume,
clear errors before any heavy work."""
import os
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from neurosymbolic_llm.pipeline.configs import TrainEncodersConfig
from neurosymbolic_llm.cli.train_encoders_and_decoders import run
from neurosymbolic_llm.pipeline.errors import CheckpointError, ConfigError, DataError, run_entry_point
from neurosymbolic_llm.stages.gather import LastTokenRecorder, plan_gather, prompt_tokens, run_gather
from neurosymbolic_llm.pipeline.hidden_store import HiddenStore
from neurosymbolic_llm.pipeline.options import parse_config

PROGRAMS = Path(__file__).resolve().parents[1] / "Programs"
SMALL = ["--VSA_dim", "128", "--max_digits", "4", "--device", "cpu"]


def args(ckpt, root, *extra, rows=(12, 4, 6)):
    return ["--run_name", "t", "--chpt_dir", str(ckpt), "--programs_dir", str(root),
            "--train_data_rounds", str(rows[0]), "--val_data_rounds", str(rows[1]),
            "--testing_data_rounds", str(rows[2]), *SMALL, *extra]


def cfg_of(*argv):
    return parse_config(TrainEncodersConfig, list(argv))


def write_csv(path, n, seed=3):
    from neurosymbolic_llm.symbolic.problems import generate_problems

    df = generate_problems(n, ["gcd", "bitwise_or", "addition", "lcm"], seed=seed)
    df.to_csv(path, index=False)
    return df


def test_recorded_state_equals_lone_forward(tiny_ckpt, tmp_path):
    from neurosymbolic_llm.llama.generation import Llama

    cfg = cfg_of(*args(tiny_ckpt, tmp_path, "--n_samples", "5", "--save_frequency", "7"))
    root = run_gather(cfg)
    data = HiddenStore(root).load_split("train")
    assert data.hidden.shape == (12, 5, 64) and data.targets.shape == (12, 128)

    plan = plan_gather(cfg)
    llama = Llama.build(tiny_ckpt, device="cpu", dtype=torch.float32)
    rec = LastTokenRecorder(llama.model, plan.layers)
    prompts = prompt_tokens(plan, llama.formatter, "train", plan.splits["train"], 0, 12)
    assert len({len(p) for p in prompts}) > 1  # batches really mixed lengths (padding was used)
    with torch.inference_mode():
        for i in (0, 5, 11):
            llama.model(torch.tensor([prompts[i]]), 0, output_positions=torch.empty(0, dtype=torch.long))
            alone = rec.take()[0]  # [L,D]
            torch.testing.assert_close(data.hidden[i], alone, atol=2e-5, rtol=1e-5)
    rec.remove()
    engine = plan.engine
    torch.testing.assert_close(data.targets, engine.encode_problem(data.x, data.y, data.type_id))


def test_csv_rows_each_once_in_order(tiny_ckpt, tmp_path):
    df = write_csv(tmp_path / "test.csv", 7)
    cfg = cfg_of(*args(tiny_ckpt, tmp_path, "--testing_data_df_path", str(tmp_path / "test.csv"),
                       "--n_samples", "2", "--save_frequency", "3", "--layer_numbers", "[1, 4]"))
    root = run_gather(cfg)
    store = HiddenStore(root)
    manifest = store.read_manifest()
    assert manifest["rows"] == {"train": 12, "val": 4, "test": 7} and manifest["complete"]
    assert manifest["layers"] == [1, 4]
    data = store.load_split("test")
    assert data.row.tolist() == list(range(7))
    assert data.x.tolist() == df["x"].tolist() and data.y.tolist() == df["y"].tolist()
    names = [cfg.possible_problems[i] for i in data.type_id.tolist()]
    assert names == df["problem_type"].tolist()
    assert data.hidden.shape == (7, 2, 64)
    assert len(list((root / "test").glob("shard_*.pt"))) == 3


def test_model_loading_is_announced_before_and_after(tiny_ckpt, tmp_path, capsys):
    """Stage 1's first output comes before the model loads (minutes for a large one), the second
    after it, with its time and size; a resumed run with nothing left loads nothing and says so."""
    import re

    run_gather(cfg_of(*args(tiny_ckpt, tmp_path, rows=(2, 1, 1))))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"loading the model from {tiny_ckpt} (cpu, float32) ..."
    assert re.fullmatch(r"loaded in \d+\.\d s: 4 layers, dim 64", lines[1]), lines[:3]
    run_gather(cfg_of(*args(tiny_ckpt, tmp_path, rows=(2, 1, 1))))
    assert "loading the model" not in capsys.readouterr().out

def _gather_cmd(ckpt, root, rows):
    return [sys.executable, str(PROGRAMS / "gather_hidden_states.py"),
            *args(ckpt, root, "--n_samples", "2", "--save_frequency", "2", rows=rows)]


def test_kill_and_resume_gives_same_data(tiny_ckpt, tmp_path):
    rows = (40, 4, 6)
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_gather_cmd(tiny_ckpt, killed, rows), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "gathered_data_t" / "train" / "shard_00000.pt"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the gather never wrote its first shard"
    store = HiddenStore(killed / "gathered_data_t")
    done_before = len(list((store.root / "train").glob("shard_*.pt")))
    print("shards written before the kill:", done_before)
    assert done_before < 20, "the process finished before the kill; the test proved nothing"

    # resume (in process) and an uninterrupted reference run
    cfg_k = cfg_of(*_gather_cmd(tiny_ckpt, killed, rows)[2:])
    run_gather(cfg_k)
    run_gather(cfg_of(*_gather_cmd(tiny_ckpt, tmp_path / "ref", rows)[2:]))
    ref = HiddenStore(tmp_path / "ref" / "gathered_data_t")
    for split in ("train", "val", "test"):
        a, b = store.load_split(split), ref.load_split(split)
        assert a.row.tolist() == list(range(len(b)))
        for name in ("hidden", "targets", "row", "type_id", "x", "y"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (split, name)
    assert store.read_manifest()["rows"] == {"train": 40, "val": 4, "test": 6}
    assert not list(store.root.rglob(".*tmp*"))

    # a finished gather is a no-op
    mtimes = {p: p.stat().st_mtime_ns for p in store.root.rglob("shard_*.pt")}
    run_gather(cfg_k)
    assert mtimes == {p: p.stat().st_mtime_ns for p in store.root.rglob("shard_*.pt")}

    # another engine (or model, or CSV) into the same folder is a clear error
    with pytest.raises(DataError, match="engine_fingerprint"):
        run_gather(cfg_of(*_gather_cmd(tiny_ckpt, killed, rows)[2:], "--vsa_seed", "5"))
    csv = tmp_path / "train.csv"
    write_csv(csv, 40)
    with pytest.raises(DataError, match="sources"):
        run_gather(cfg_of(*_gather_cmd(tiny_ckpt, killed, rows)[2:], "--training_data_df_path", str(csv)))


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load the model fails the test: errors must come before heavy work."""
    from neurosymbolic_llm.llama import generation

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(generation.Llama, "build", staticmethod(boom))


def test_bad_inputs_fail_early(tiny_ckpt, tmp_path, no_model_load, capsys):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("problem_type,x,y\nfoo,1\n")
    with pytest.raises(DataError, match="bad.csv"):
        run_gather(cfg_of(*args(tiny_ckpt, tmp_path, "--training_data_df_path", str(bad_csv))))
    with pytest.raises(DataError, match="nope.csv"):
        run_gather(cfg_of(*args(tiny_ckpt, tmp_path, "--val_data_df_path", str(tmp_path / "nope.csv"))))
    with pytest.raises(CheckpointError, match="missing_ckpt"):
        run_gather(cfg_of(*args(tmp_path / "missing_ckpt", tmp_path)))
    with pytest.raises(ConfigError, match="out of range"):
        run_gather(cfg_of(*args(tiny_ckpt, tmp_path, "--layer_numbers", "[2, 9]")))
    # the entry script turns them into one line on stderr and exit code 2
    assert run_entry_point(lambda argv: run(cfg_of(*argv)), args(tiny_ckpt, tmp_path, "--layer_numbers", "[-1]")) == 2
    assert "layer_numbers" in capsys.readouterr().err
    assert not (tmp_path / "gathered_data_t").exists()


def _free_port() -> int:
    """A port no process listens on now (a fixed one collides with another run of the suite)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_data_parallel_gather_equals_single_process(tiny_ckpt, tmp_path):
    """torchrun with 2 gloo ranks: each takes its own shards; the data read back equals one process's."""
    rows = (10, 3, 5)
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    cmd = _gather_cmd(tiny_ckpt, tmp_path / "dp", rows)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    res = subprocess.run(torchrun + cmd[1:], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    run_gather(cfg_of(*_gather_cmd(tiny_ckpt, tmp_path / "sp", rows)[2:]))
    dp, sp = HiddenStore(tmp_path / "dp" / "gathered_data_t"), HiddenStore(tmp_path / "sp" / "gathered_data_t")
    assert dp.read_manifest()["rows"] == {"train": 10, "val": 3, "test": 5} and dp.read_manifest()["complete"]
    for split in ("train", "val", "test"):
        a, b = dp.load_split(split), sp.load_split(split)
        for name in ("hidden", "targets", "row", "type_id", "x", "y"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (split, name)


def test_failed_model_load_leaves_no_manifest_behind(tiny_ckpt, tmp_path):
    """A first attempt whose checkpoint does not load (a tensor missing: its fingerprint can be taken,
    the strict load fails) writes no manifest, so the rerun with the repaired checkpoint is not
    refused as "different model_fingerprint"."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, ckpt)
    shard = ckpt / "consolidated.00.pth"
    good = shard.read_bytes()
    state = torch.load(shard, weights_only=True)
    del state["norm.weight"]
    torch.save(state, shard)
    with pytest.raises(CheckpointError, match="norm.weight"):
        run_gather(cfg_of(*args(ckpt, tmp_path, rows=(4, 2, 2))))
    store = tmp_path / "gathered_data_t"
    assert not (store / "manifest.json").exists() and not list(store.rglob("shard_*.pt"))
    shard.write_bytes(good)
    run_gather(cfg_of(*args(ckpt, tmp_path, rows=(4, 2, 2))))
    assert HiddenStore(store).read_manifest()["complete"]


def test_params_json_rewritten_keeps_the_fingerprint(tiny_ckpt, tmp_path):
    """The model fingerprint follows what params.json says, not its bytes: re-serialising it (other
    key order and spacing) keeps gathered data and maps valid."""
    import json
    import shutil

    from neurosymbolic_llm.llama.checkpoint import checkpoint_fingerprint

    ckpt = shutil.copytree(tiny_ckpt, tmp_path / "ckpt")
    before = checkpoint_fingerprint(ckpt)
    params = json.loads((ckpt / "params.json").read_text())
    (ckpt / "params.json").write_text(json.dumps(dict(reversed(list(params.items()))), indent=4) + "\n")
    assert checkpoint_fingerprint(ckpt) == before
    params["norm_eps"] = 1e-6  # what the parameters mean changed: another fingerprint
    (ckpt / "params.json").write_text(json.dumps(params))
    assert checkpoint_fingerprint(ckpt) != before
