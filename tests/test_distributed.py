"""Scaling out (issue #7): the entry scripts under torchrun (gloo, real processes, tiny model) give
the single-process results.

- model parallel (M=2 from a checkpoint resharded to 2 shards): the gathered hidden states of the
  stage-1 entry script equal one process's to float32 rounding; resuming redoes only missing shards;
- stage 3 through fine_tune_decoders.py: data parallel (N=2, M=1) and model parallel (N=2, M=2)
  training + evaluation give the single-process responses, losses and fine-tuned decoder; the
  baseline-only evaluation with gate statistics (--test_baseline 2) is split over 2 data-parallel ranks;
- the rank layout (DP rank, MP rank, rows, writer) for N=4, M=2 without processes;
- the reshard entry script: 1 -> 2 -> 1 gives identical tensors, a size that does not divide the
  heads is a one-line error.
(The logits of a 2-process model-parallel model: test_llama_parallel.py; data-parallel gathering
with M=1: test_gathering.py; data-parallel evaluate/train in-process: test_fine_tuning.py.)
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neurosymbolic_llm.pipeline.distributed import DistInfo, init_distributed, row_slice

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "Programs"
VSA, LAYER = 64, 2
ENV = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")


def stage3(argv) -> int:
    """fine_tune_decoders.py's main in this process."""
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig
    from neurosymbolic_llm.stages.fine_tune import run
    from neurosymbolic_llm.pipeline.options import parse_config

    return run(parse_config(FineTuneConfig, argv))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: str, argv: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(PROGRAMS / script), *argv]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def mp2_ckpt(tiny_ckpt, tmp_path_factory):
    from neurosymbolic_llm.llama.checkpoint import reshard

    return reshard(tiny_ckpt, tmp_path_factory.mktemp("mp2") / "ckpt", 2)


# ----------------------------------------------------------------------------- rank layout
def test_rank_layout_model_and_data_parallel(monkeypatch):
    """N=4, M=2: ranks {0,1} and {2,3} hold one model each (same rows), rows split in 2 in order."""
    infos = [DistInfo(rank=r, world_size=4, model_parallel_size=2) for r in range(4)]
    assert [i.dp_rank for i in infos] == [0, 0, 1, 1] and [i.mp_rank for i in infos] == [0, 1, 0, 1]
    assert [i.is_writer for i in infos] == [True, False, True, False] and infos[0].dp_size == 2
    slices = [row_slice(7, i) for i in infos]
    assert slices[0] == slices[1] == slice(0, 4) and slices[2] == slices[3] == slice(4, 7)
    # a model-parallel size > 1 without torchrun is a clear error, not a hang
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    from neurosymbolic_llm.pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="torchrun --nproc_per_node 2"):
        init_distributed("cpu", 2)


def test_default_model_parallel_size_is_the_shard_count(tiny_ckpt, mp2_ckpt, tmp_path):
    from neurosymbolic_llm.pipeline.distributed import resolve_model_parallel_size

    assert resolve_model_parallel_size(0, tiny_ckpt) == 1 and resolve_model_parallel_size(0, mp2_ckpt) == 2
    assert resolve_model_parallel_size(4, mp2_ckpt) == 4 and resolve_model_parallel_size(0, tmp_path / "no") == 1


# ----------------------------------------------------------------------------- stage 1
def _gather_args(ckpt, root, rows=(10, 3, 5)):
    return ["--run_name", "t", "--chpt_dir", str(ckpt), "--programs_dir", str(root),
            "--train_data_rounds", str(rows[0]), "--val_data_rounds", str(rows[1]),
            "--testing_data_rounds", str(rows[2]), "--VSA_dim", "128", "--max_digits", "4", "--device", "cpu",
            "--n_samples", "2", "--save_frequency", "2"]


def _assert_same_store(a_root, b_root, exact_hidden: bool):
    from neurosymbolic_llm.pipeline.hidden_store import HiddenStore

    a, b = HiddenStore(a_root), HiddenStore(b_root)
    assert a.read_manifest()["complete"] and a.read_manifest()["rows"] == b.read_manifest()["rows"]
    for split in ("train", "val", "test"):
        x, y = a.load_split(split), b.load_split(split)
        for name in ("targets", "row", "type_id", "x", "y"):
            assert torch.equal(getattr(x, name), getattr(y, name)), (split, name)
        if exact_hidden:
            assert torch.equal(x.hidden, y.hidden), split
        else:  # the model-parallel matmuls sum in another order: float32 rounding
            torch.testing.assert_close(x.hidden, y.hidden, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_model_parallel_gather_equals_one_process(tiny_ckpt, mp2_ckpt, tmp_path):
    """torchrun --nproc_per_node 2 on a 2-shard checkpoint: M=2 by default (one model over both
    processes), rank 0 writes; the store equals a single process's on the 1-shard checkpoint."""
    from neurosymbolic_llm.pipeline.configs import TrainEncodersConfig
    from neurosymbolic_llm.stages.gather import run_gather
    from neurosymbolic_llm.pipeline.options import parse_config

    res = torchrun("gather_hidden_states.py", _gather_args(mp2_ckpt, tmp_path / "mp"))
    assert "initializing model parallel with size 2" in res.stdout + res.stderr
    sp = run_gather(parse_config(TrainEncodersConfig, _gather_args(tiny_ckpt, tmp_path / "sp")))
    mp_root = tmp_path / "mp" / "gathered_data_t"
    _assert_same_store(mp_root, sp, exact_hidden=False)
    # resuming per rank: a lost shard is redone, the others are kept as they are
    lost, kept = mp_root / "train" / "shard_00003.pt", mp_root / "train" / "shard_00000.pt"
    mtime = kept.stat().st_mtime_ns
    lost.unlink()
    torchrun("gather_hidden_states.py", _gather_args(mp2_ckpt, tmp_path / "mp"))
    assert lost.is_file() and kept.stat().st_mtime_ns == mtime
    _assert_same_store(mp_root, sp, exact_hidden=False)


# ----------------------------------------------------------------------------- stage 3
def _write_maps(folder: Path, ckpt) -> tuple[Path, Path]:
    """The same random encoder/decoder weights, stamped with `ckpt`'s fingerprint."""
    from neurosymbolic_llm.llama.checkpoint import checkpoint_fingerprint
    from neurosymbolic_llm.pipeline.maps import model_info, save_maps
    from neurosymbolic_llm.symbolic.engine import SymbolicEngine

    folder.mkdir(parents=True, exist_ok=True)
    engine = SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)
    info = model_info(checkpoint_fingerprint(ckpt), 64, 4)
    g = torch.Generator().manual_seed(0)
    enc, dec = torch.randn(VSA, 64, generator=g) / 8, torch.randn(64, VSA, generator=g) / 8
    return (save_maps(folder / "encoders_run.pth", "encoder", {LAYER: enc}, engine.state_dict(), info),
            save_maps(folder / "decoders_run.pth", "decoder", {LAYER: dec}, engine.state_dict(), info))


def _write_csvs(folder: Path) -> dict:
    from neurosymbolic_llm.symbolic.problems import generate_problems

    out = {}
    for split, n, seed in (("train", 8, 1), ("val", 3, 2), ("test", 3, 3)):
        types = ["gcd", "modulo"] + (["addition"] if split == "test" else [])
        df = pd.concat([generate_problems(n, [t], complexity=2, seed=seed + i) for i, t in enumerate(types)],
                       ignore_index=True)
        out[split] = folder / f"{split}.csv"
        df.to_csv(out[split], index=False)
    return out


def _fine_tune_args(ckpt, root: Path, csv: dict, maps, run: str, extra: list[str]) -> list[str]:
    return ["--chpt_dir", str(ckpt), "--programs_dir", str(root), "--run_name", run, "--device", "cpu",
            "--encoder_path", str(maps[0]), "--decoder_path", str(maps[1]),
            "--training_data_df_path", str(csv["train"]), "--val_data_df_path", str(csv["val"]),
            "--testing_data_df_path", str(csv["test"]), "--symbolic_encoding_layer", str(LAYER),
            "--symbolic_decoding_layers", str(LAYER), "--problem_type", "gcd,modulo",
            "--testing_problems", "gcd,modulo,addition", "--eval_batch_size", "4", "--max_seq_len", "512",
            "--problem_score_threshold", "-100", "--learning_rate", "0.01", *extra]


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["neurosymbolic/loss"] for r in rows if "neurosymbolic/loss" in r]


def _assert_same_responses(a_dir: Path, b_dir: Path):
    a, b = pd.read_csv(a_dir / "responses.csv"), pd.read_csv(b_dir / "responses.csv")
    assert len(a) == len(b) > 0
    for col in ("method", "problem_type", "question", "expected", "parsed", "correct", "decoded_type",
                "decoded_x", "decoded_y"):
        assert a[col].fillna(-1).tolist() == b[col].fillna(-1).tolist(), col
    assert a["generated"].fillna("").tolist() == b["generated"].fillna("").tolist()
    for col in ("cross_entropy", "gate_score"):
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-4, atol=1e-4,
                                   equal_nan=True, err_msg=col)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["data_parallel", "model_parallel"])
def test_fine_tune_entry_under_torchrun_equals_one_process(layout, tiny_ckpt, mp2_ckpt, tmp_path):
    """fine_tune_decoders.py --test_baseline 1 (train the decoder, evaluate it and the plain model)
    under torchrun --nproc_per_node 2 equals one process.

    data_parallel (1 shard: M=1, 2 groups): each group takes n_samples=2 rows per step, so one process
    with n_samples=4 makes the same steps (gradients averaged over the 2 groups).
    model_parallel (2 shards: M=2, 1 group): the same n_samples; the two ranks hold the same rows, so
    their gradients must not be summed (the logged losses would double)."""
    from neurosymbolic_llm.pipeline.maps import load_maps

    csv = _write_csvs(tmp_path)
    ckpt, per_rank = (tiny_ckpt, "2") if layout == "data_parallel" else (mp2_ckpt, "4")
    single = "4"
    dist_maps = _write_maps(tmp_path / "dist", ckpt)
    one_maps = _write_maps(tmp_path / "one", tiny_ckpt)
    train = ["--test_baseline", "1", "--num_epochs", "1", "--inference_to_backprop_ratio", "1"]
    torchrun("fine_tune_decoders.py", _fine_tune_args(ckpt, tmp_path, csv, dist_maps, "D",
                                                      train + ["--n_samples", per_rank]))
    assert stage3(_fine_tune_args(tiny_ckpt, tmp_path, csv, one_maps, "S", train + ["--n_samples", single])) == 0
    d_dir, s_dir = tmp_path / "results" / "D", tmp_path / "results" / "S"
    _assert_same_responses(d_dir, s_dir)
    d_loss, s_loss = _losses(d_dir), _losses(s_dir)
    assert len(d_loss) == len(s_loss) == 4  # 16 training rows, 4 per step over all ranks
    np.testing.assert_allclose(d_loss, s_loss, rtol=1e-4)
    tuned = [load_maps(m[1].with_name(f"decoders_run_post_fine_tuning_{r}.pth"), "decoder").weights[LAYER]
             for m, r in ((dist_maps, "D"), (one_maps, "S"))]
    assert not torch.equal(tuned[1], load_maps(one_maps[1], "decoder").weights[LAYER])
    torch.testing.assert_close(tuned[0], tuned[1], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_baseline_evaluation_data_parallel_equals_one_process(tiny_ckpt, tmp_path):
    """--test_baseline 2 with gate statistics (--test_on_unrelated_questions 1) split over 2 ranks."""
    csv = _write_csvs(tmp_path)
    maps = _write_maps(tmp_path, tiny_ckpt)
    extra = ["--test_baseline", "2", "--test_on_unrelated_questions", "1"]
    torchrun("fine_tune_decoders.py", _fine_tune_args(tiny_ckpt, tmp_path, csv, maps, "D", extra))
    assert stage3(_fine_tune_args(tiny_ckpt, tmp_path, csv, maps, "S", extra)) == 0
    d_dir, s_dir = tmp_path / "results" / "D", tmp_path / "results" / "S"
    _assert_same_responses(d_dir, s_dir)
    pd.testing.assert_frame_equal(pd.read_csv(d_dir / "results.csv"), pd.read_csv(s_dir / "results.csv"),
                                  rtol=1e-4)
    g_d, g_s = pd.read_csv(d_dir / "gate_scores.csv"), pd.read_csv(s_dir / "gate_scores.csv")
    assert g_d[["group", "problem_type"]].equals(g_s[["group", "problem_type"]])
    np.testing.assert_allclose(g_d["score"], g_s["score"], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- reshard script
def test_reshard_entry_script_round_trip(tiny_ckpt, tmp_path):
    def reshard(*argv):
        return subprocess.run([sys.executable, str(PROGRAMS / "reshard_checkpoint.py"), *argv], env=ENV,
                              capture_output=True, text=True, timeout=120)

    assert reshard(str(tiny_ckpt), str(tmp_path / "two"), "--model_parallel_size", "2").returncode == 0
    assert sorted(p.name for p in (tmp_path / "two").glob("*.pth")) == ["consolidated.00.pth", "consolidated.01.pth"]
    assert (tmp_path / "two" / "tokenizer.model").is_file()
    assert reshard(str(tmp_path / "two"), str(tmp_path / "one"), "-m", "1").returncode == 0
    a = torch.load(tiny_ckpt / "consolidated.00.pth", weights_only=True)
    b = torch.load(tmp_path / "one" / "consolidated.00.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "one" / "params.json").read_text()) == json.loads(
        (tiny_ckpt / "params.json").read_text())
    res = reshard(str(tiny_ckpt), str(tmp_path / "three"), "-m", "3")
    err = res.stderr
    assert res.returncode == 2
    assert err.count("\n") == 1 and "model-parallel size 3: it must divide n_heads = 4" in err
    assert not (tmp_path / "three").exists()


def test_model_parallel_needs_torchrun_and_no_lora(mp2_ckpt, tmp_path, capsys):
    """A 2-shard checkpoint in one process, or LoRA (peft) on fairscale's layers: one-line errors."""
    from neurosymbolic_llm.pipeline.errors import run_entry_point

    argv = ["--chpt_dir", str(mp2_ckpt), "--programs_dir", str(tmp_path), "--test_baseline", "2", "--device", "cpu"]
    assert run_entry_point(stage3, argv) == 2
    assert "launch with torchrun --nproc_per_node 2" in capsys.readouterr().err
    assert run_entry_point(stage3, argv + ["--lora_baseline", "1"]) == 2
    assert "--lora_baseline 1 needs model-parallel size 1" in capsys.readouterr().err


def test_stage2_under_torchrun_runs_on_rank_0_only(tmp_path, monkeypatch):
    """Stage 2 has no language model to split: ranks other than 0 return at once (no store needed)."""
    from neurosymbolic_llm.pipeline.configs import TrainEncodersConfig
    from neurosymbolic_llm.cli.train_encoders_and_decoders import run
    from neurosymbolic_llm.pipeline.options import parse_config

    monkeypatch.setenv("RANK", "1")
    assert run(parse_config(TrainEncodersConfig, ["--generate_data", "0", "--run_name", "x",
                                                  "--programs_dir", str(tmp_path)])) == 0
    assert not any(tmp_path.iterdir())
