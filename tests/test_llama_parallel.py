"""Model parallelism over fairscale's layers: two CPU processes (gloo) under torchrun give the logits
and generations of one process. This file is also the torchrun worker (see __main__)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _prompts():
    return [[128000, 128006, 882, 128007, 271, 3923, 374, 220, 717, 128009, 128006, 78191, 128007, 271],
            [128000, 9906, 1917, 0, 128006, 78191, 128007, 271]]


@torch.no_grad()
def _run(ckpt, model_parallel_size):
    """Logits of a padded batch, incremental decoding with a hook, and greedy generation."""
    from neurosymbolic_llm.llama.generation import Llama, left_pad
    llama = Llama.build(ckpt, max_seq_len=64, max_batch_size=4, device="cpu",
                        model_parallel_size=model_parallel_size)
    model = llama.model
    prompts = _prompts()
    tokens, pad = left_pad(prompts, llama.tokenizer.pad_id)
    out = {"logits": model(tokens, pad_lengths=pad)}
    seen = []
    handle = model.register_residual_hook(2, lambda h, ctx: seen.append(h[:, -1].clone()))
    out["generated"] = llama.generate(prompts, max_gen_len=6, stop_tokens=[])
    handle.remove()
    out["hook"] = torch.stack(seen)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_model_parallel_equals_one_process(tiny_ckpt, tmp_path):
    pytest.importorskip("fairscale")
    from neurosymbolic_llm.llama.checkpoint import reshard
    mp2 = reshard(tiny_ckpt, tmp_path / "mp2", 2)
    out_file = tmp_path / "rank0.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # PYTHONPATH: conftest puts src/ first
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(Path(__file__)), str(mp2), str(out_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = torch.load(out_file, weights_only=True)
    ref = _run(tiny_ckpt, 1)
    torch.testing.assert_close(got["logits"], ref["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["hook"], ref["hook"], rtol=1e-5, atol=1e-5)
    assert got["generated"] == ref["generated"]


if __name__ == "__main__":  # torchrun worker: python -m torch.distributed.run ... this_file ckpt out
    torch.set_num_threads(1)
    result = _run(sys.argv[1], 2)
    from fairscale.nn.model_parallel.initialize import get_model_parallel_rank
    if get_model_parallel_rank() == 0:
        torch.save(result, sys.argv[2])
    torch.distributed.destroy_process_group()
