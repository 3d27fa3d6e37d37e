"""Stage-1 gathering with 1 and 2 data-parallel processes on the CPU, side by side.

Each run is `torchrun --nproc_per_node N Programs/gather_hidden_states.py` (gloo, one thread per
process, OMP_NUM_THREADS=1) over the same rows on the same tiny random-weight model (dim 64, 4 layers,
the real 128k vocabulary); the stores are checked identical afterwards. Two rates per run:
  end-to-end  all rows / wall time of the whole command (Python start, model load, gather, merge)
  gather      rows / time spent gathering, from each rank's shard write times (its first shard
              excluded: that one also pays the start), summed over the ranks
The ratio 2 proc / 1 proc is the data-parallel speed-up (ideal 2.0 with two free cores; the machine's
cores may be shared with other work, so run it on a quiet machine for a clean number).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_distributed.py [--prompts 400] [--rows_per_shard 25]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

TINY = {"dim": 64, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 128256, "multiple_of": 32,
        "ffn_dim_multiplier": None, "norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True}


def make_ckpt(folder: Path) -> Path:
    import torch

    torch.set_num_threads(1)
    from neurosymbolic_llm.llama.checkpoint import save_checkpoint
    from neurosymbolic_llm.llama.model import ModelArgs, Transformer

    model = Transformer(ModelArgs.from_params(TINY)).init_weights(seed=0)
    return save_checkpoint(model, TINY, folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(nproc: int, ckpt: Path, root: Path, prompts: int, rows_per_shard: int, batch: int) -> dict:
    from neurosymbolic_llm.pipeline.distributed import DistInfo, row_slice
    from neurosymbolic_llm.pipeline.hidden_store import n_shards, shard_range

    argv = ["--run_name", "bench", "--chpt_dir", str(ckpt), "--programs_dir", str(root), "--device", "cpu",
            "--train_data_rounds", str(prompts), "--val_data_rounds", "1", "--testing_data_rounds", "1",
            "--VSA_dim", "256", "--max_digits", "4", "--layer_numbers", "[2,4]",
            "--n_samples", str(batch), "--save_frequency", str(rows_per_shard)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(ROOT / "Programs" / "gather_hidden_states.py"), *argv]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", TQDM_DISABLE="1")
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"torchrun --nproc_per_node {nproc} failed:\n{res.stderr[-3000:]}")
    store = root / "gathered_data_bench"
    total = prompts
    k_all = n_shards(total, rows_per_shard)
    rate = 0.0
    for r in range(nproc):  # each rank's contiguous block of train shards
        ks = list(range(k_all))[row_slice(k_all, DistInfo(rank=r, world_size=nproc))]
        if len(ks) < 2:
            continue
        t = [(store / "train" / f"shard_{k:05d}.pt").stat().st_mtime for k in ks]
        rows = sum(shard_range(k, total, rows_per_shard)[1] - shard_range(k, total, rows_per_shard)[0] for k in ks[1:])
        rate += rows / max(max(t) - min(t), 1e-9)
    return {"wall_s": wall, "end_to_end": (prompts + 2) / wall, "gather": rate, "store": store}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=400, help="training rows to gather (+1 val, +1 test)")
    ap.add_argument("--rows_per_shard", type=int, default=25)
    ap.add_argument("--batch", type=int, default=16, help="prompts per forward (--n_samples)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = make_ckpt(tmp / "ckpt")
        out = {n: run(n, ckpt, tmp / f"n{n}", a.prompts, a.rows_per_shard, a.batch) for n in (1, 2)}
        import torch
        from neurosymbolic_llm.pipeline.hidden_store import HiddenStore

        for split in ("train", "val", "test"):
            x, y = HiddenStore(out[1]["store"]).load_split(split), HiddenStore(out[2]["store"]).load_split(split)
            assert torch.equal(x.hidden, y.hidden) and torch.equal(x.row, y.row), split
    print(f"stage-1 gather, tiny model (dim 64, 4 layers), {a.prompts} + 2 prompts, batch {a.batch}, "
          f"{a.rows_per_shard} rows/shard, 1 thread per process, gloo; {os.cpu_count()} CPU cores")
    print(f"{'':24s}{'1 process':>12s}{'2 processes':>14s}{'ratio':>8s}")
    print(f"{'wall time (s)':24s}{out[1]['wall_s']:12.2f}{out[2]['wall_s']:14.2f}"
          f"{out[1]['wall_s'] / out[2]['wall_s']:8.2f}")
    for key, label in (("end_to_end", "end-to-end prompts/s"), ("gather", "gather prompts/s")):
        print(f"{label:24s}{out[1][key]:12.1f}{out[2][key]:14.1f}{out[2][key] / out[1][key]:8.2f}")
    print("stores identical (hidden, rows): yes")


if __name__ == "__main__":
    main()
