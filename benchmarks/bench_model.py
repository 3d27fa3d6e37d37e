"""Forward throughput of neurosymbolic_llm.llama vs transformers' Llama (same weights, same inputs, one thread),
and peak memory of loading a checkpoint vs its size on disk (measured in fresh subprocesses).

Usage: python benchmarks/bench_model.py [--quick]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent

import torch

torch.set_num_threads(1)

from neurosymbolic_llm.llama.checkpoint import save_checkpoint
from neurosymbolic_llm.llama.model import ModelArgs, Transformer

TINY = dict(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=32,
            norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=True)
# the same shape family with a small vocabulary, so that the blocks (not the output head) dominate
BODY = dict(dim=256, n_layers=4, n_heads=8, n_kv_heads=2, vocab_size=1024, multiple_of=64,
            norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=True)
# a checkpoint of a few hundred MB for the loading benchmark
LOAD = dict(dim=256, n_layers=16, n_heads=8, n_kv_heads=2, vocab_size=128256, multiple_of=64,
            norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=True)


def _time_pair(f, g, repeats):
    """Best time of each of two functions, runs interleaved (the machine is shared: the minimum is
    the least disturbed run, and interleaving exposes both to the same background load)."""
    f(), g()  # warm-up
    tf, tg = [], []
    for _ in range(repeats):
        for fn, ts in ((f, tf), (g, tg)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return min(tf), min(tg)


@torch.inference_mode()
def bench_forward(name, params, B, S, repeats):
    hf_model = harness.test_module("test_llama_model").hf_model
    ours = Transformer(ModelArgs.from_params(params)).init_weights(seed=0).eval()
    hf = hf_model(ours, attn="sdpa")
    tokens = torch.randint(0, params["vocab_size"], (B, S), generator=torch.Generator().manual_seed(0))
    a, b = ours(tokens), hf(input_ids=tokens).logits.float()
    rel = ((a - b).norm() / b.norm()).item()
    t_ours, t_hf = _time_pair(lambda: ours(tokens), lambda: hf(input_ids=tokens), repeats)
    n = B * S
    print(f"{name:<34} {n / t_ours:>12,.0f} {n / t_hf:>12,.0f} {t_hf / t_ours:>7.2f}x   (rel. diff {rel:.1e})")


LOAD_SNIPPET = r"""
import os, sys, torch
torch.set_num_threads(1)
from neurosymbolic_llm.llama.checkpoint import load_model

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
if {warm!r}:  # pay the one-time library costs (imports, meta-device init kernels) first
    load_model({small!r})
before = rss("VmRSS:")
if {naive!r}:
    from neurosymbolic_llm.llama.model import ModelArgs, Transformer
    import json
    p = json.load(open(os.path.join({ckpt!r}, "params.json")))
    m = Transformer(ModelArgs.from_params(p))
    m.load_state_dict(torch.load(os.path.join({ckpt!r}, "consolidated.00.pth"), weights_only=True))
else:
    m = load_model({ckpt!r}, dtype=torch.float32)
total = sum(float(p.float().sum()) for p in m.parameters())  # touch every weight
print(rss("VmHWM:") - before)
"""


def bench_load():
    with tempfile.TemporaryDirectory() as tmp:
        small = os.path.join(tmp, "small")
        save_checkpoint(Transformer(ModelArgs.from_params({**LOAD, "vocab_size": 256, "n_layers": 1})),
                        {**LOAD, "vocab_size": 256, "n_layers": 1}, small)
        big = os.path.join(tmp, "big")
        model = Transformer(ModelArgs.from_params(LOAD)).init_weights(seed=0)
        save_checkpoint(model, LOAD, big)
        del model
        size = (Path(big) / "consolidated.00.pth").stat().st_size
        print(f"checkpoint on disk: {size / 2**20:,.0f} MiB (float32); peak RSS increase while loading "
              f"and touching every weight, fresh process each")
        print(f"{'loader':<34} {'cold +MiB':>10} {'x disk':>7} {'warm +MiB':>10} {'x disk':>7}")
        for naive, name in ((False, "load_model (mmap, assign)"),
                            (True, "naive torch.load + load_state_dict")):
            row = []
            for warm in (False, True):
                code = LOAD_SNIPPET.format(ckpt=big,
                                           small=small, naive=naive, warm=warm)
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     env=dict(os.environ, OMP_NUM_THREADS="1"))
                if out.returncode:
                    raise RuntimeError(out.stderr)
                row.append(int(out.stdout.split()[-1]))
            print(f"{name:<34} {row[0] / 2**20:>10,.0f} {row[0] / size:>7.2f} "
                  f"{row[1] / 2**20:>10,.0f} {row[1] / size:>7.2f}")
        print("(cold includes one-time costs independent of the checkpoint: imports and the first "
              "meta-device init, ~70 MiB; warm loads a tiny checkpoint first)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    r = 3 if args.quick else 7
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'forward, tokens/s':<34} {'neurosymbolic_llm.llama':>12} {'transformers':>12} {'ratio':>8}")
    bench_forward("tiny (dim 64, vocab 128256) 4x128", TINY, 4, 128, r)
    bench_forward("body (dim 256, vocab 1024) 4x256", BODY, 4, 256, r)
    bench_forward("body (dim 256, vocab 1024) 16x64", BODY, 16, 64, r)
    bench_load()


if __name__ == "__main__":
    main()
