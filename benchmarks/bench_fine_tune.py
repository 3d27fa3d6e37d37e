"""Stage 3 speed, side by side in one process on one thread: this code vs the original's loop.

- fine-tuning: optimizer steps/s with 8 samples a step. Ours: the 8 left-padded prompts up to the
  last prompt token run once under no_grad into a KV cache (the intervention acts only from there
  on), then last prompt token + answers run with gradients; logits only at the real answer tokens,
  one backward through the short suffix. Original
  style: 8 sequential batch-1 greedy episodes (KV cache, logits at every position, forced stop
  after complexity + 5 tokens), CE on the collected logits, one backward over the 8 graphs.
  Goal: >= 3x on CPU.
- evaluation: prompts/s. Ours: evaluation.evaluate (batched greedy generation + batched
  teacher-forced CE). Original style: sequential batch-1 greedy episodes with all-position logits
  under no_grad, CE on the collected logits. Goal: >= 4x on CPU.
Both with the neurosymbolic intervention attached, same tiny model (d 128, 4 layers, real 128,256
vocabulary, random weights), same prompts. On a CUDA machine it also times an 8B-shaped batch-8
training step (random bf16 weights).

    OMP_NUM_THREADS=1 python benchmarks/bench_fine_tune.py [--steps 3] [--prompts 32] 2>/dev/null  (progress bars)
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torch.nn.functional as F
from card import matmul_peak

from neurosymbolic_llm.llama.generation import Llama
from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.llama.tokenizer import Tokenizer, default_tokenizer_path
from neurosymbolic_llm.pipeline import methods
from neurosymbolic_llm.pipeline.configs import FineTuneOptions, InterventionOptions
from neurosymbolic_llm.pipeline.evaluation import evaluate
from neurosymbolic_llm.pipeline.training import build_examples, train
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems

COMPLEXITY = 2
LAYER = 2


def tiny_llama(args: ModelArgs, device="cpu") -> Llama:
    model = Transformer(args).init_weights(seed=0).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Llama(model, Tokenizer(default_tokenizer_path()), args, torch.device(device))


def ns_method(llama, engine, vsa):
    g = torch.Generator().manual_seed(0)
    opts = InterventionOptions(symbolic_encoding_layer=LAYER, symbolic_decoding_layers=[LAYER],
                               problem_score_threshold=-math.inf)
    d = llama.args.dim
    return methods.neurosymbolic(llama.model, engine, torch.randn(vsa, d, generator=g) / d ** 0.5,
                                   {LAYER: torch.randn(d, vsa, generator=g) / vsa ** 0.5}, opts, lr=1e-4,
                                   complexity=COMPLEXITY, limit_solution_digits=True)


def original_episode(llama, prompt, answer, method, *, grad: bool):
    """One batch-1 greedy episode as the original ran it: logits at every position, stop after c+5."""
    model, eot = llama.model, llama.tokenizer.eot_id
    tok = torch.tensor([prompt])
    collected = []
    with model.kv_cache(1, len(prompt) + COMPLEXITY + 7), method.attach():
        method.intervention.set_truth()
        with torch.set_grad_enabled(grad):
            logits = model(tok, 0)  # [1,P,V]: all positions, as the original
        # The cached K/V are detached, so with one written position later steps carry no gradient
        # (docs/METHOD.md, difference 10): run them without a graph. Fresh cache tensors keep the prefill's saved
        # views intact for backward (the original's repeat_kv copied them).
        for layer in model.layers:
            layer.attention.cache_k = layer.attention.cache_k.clone()
            layer.attention.cache_v = layer.attention.cache_v.clone()
        for t in range(COMPLEXITY + 6):
            last = logits[:, -1]  # [1,V]
            collected.append(last)
            nxt = last.argmax(-1)
            if int(nxt) == eot or t == COMPLEXITY + 5:
                break
            with torch.no_grad():
                logits = model(nxt[:, None], len(prompt) + t)
    steps = torch.cat(collected)  # [T,V]
    L = min(len(answer), steps.shape[0])
    return F.cross_entropy(steps[:L], torch.tensor(answer[:L]))


def bench_train(llama, method, ex, steps: int) -> tuple[float, float]:
    opts = FineTuneOptions(n_samples=8, inference_to_backprop_ratio=1, learning_rate=1e-4)
    sub = ex.take(range(8 * steps))
    train(llama, method, sub.take(range(8)), opts, from_csv=True, seed=0)  # warm-up
    t0 = time.perf_counter()
    train(llama, method, sub, opts, from_csv=True, seed=0)
    ours = steps / (time.perf_counter() - t0)

    optim = torch.optim.Adam(method.params, lr=1e-4)
    eot = llama.tokenizer.eot_id
    t0 = time.perf_counter()
    for s in range(steps):
        optim.zero_grad()
        loss = sum(original_episode(llama, sub.prompts[i], sub.answers[i] + [eot], method, grad=True)
                   for i in range(8 * s, 8 * s + 8)) / 8
        loss.backward()
        optim.step()
    orig = steps / (time.perf_counter() - t0)
    return ours, orig


def bench_eval(llama, method, ex, n: int, problem_list) -> tuple[float, float]:
    sub = ex.take(range(n))
    kw = dict(max_new_tokens=COMPLEXITY + 5, batch_size=16, seen_types=["gcd"], problem_list=problem_list)
    evaluate(llama, method, sub.take(range(4)), **kw)  # warm-up
    t0 = time.perf_counter()
    evaluate(llama, method, sub, **kw)
    ours = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(n):
        original_episode(llama, sub.prompts[i], sub.answers[i], method, grad=False)
    orig = n / (time.perf_counter() - t0)
    return ours, orig


def bench_8b_step() -> None:
    """8B-shaped (Llama 3.1 8B dims, random bf16 weights) batch-8 training step on CUDA."""
    args = ModelArgs(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256, multiple_of=1024,
                     ffn_dim_multiplier=1.3, use_scaled_rope=True, max_batch_size=16, max_seq_len=1024)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Transformer(args)
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
            p.requires_grad_(False)
    llama = Llama(model.eval(), Tokenizer(default_tokenizer_path()), args, torch.device("cuda"))
    engine = SymbolicEngine(VSA_dim=2048, max_digits=10).to("cuda")
    method = ns_method(llama, engine, 2048)
    rows = generate_problems(8 * 6, ["gcd", "modulo"], complexity=COMPLEXITY, seed=0)
    ex = build_examples(rows, llama.formatter, "train", seed=0, complexity=COMPLEXITY, limit_solution_digits=True,
                        problem_list=engine.possible_problems)
    opts = FineTuneOptions(n_samples=8, learning_rate=1e-4)
    train(llama, method, ex.take(range(8)), opts, from_csv=True, seed=0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    train(llama, method, ex.take(range(8, 48)), opts, from_csv=True, seed=0)
    torch.cuda.synchronize()
    step = (time.perf_counter() - t0) / 5
    # Useful work of a step: a forward over every token (2 FLOPs per weight and token) plus the
    # backward over the answer part (4 per weight and token: the prefix runs without gradients).
    n_weights = sum(p.numel() for n, p in model.named_parameters() if "tok_embeddings" not in n)
    tokens = sum(len(p) + len(a) for p, a in zip(ex.prompts[8:48], ex.answers[8:48])) / 5
    suffix = sum(len(a) + 1 for a in ex.answers[8:48]) / 5
    flops = 2 * n_weights * tokens + 4 * n_weights * suffix
    peak = matmul_peak()
    print(f"8B-shaped batch-8 training step on {torch.cuda.get_device_name()}: {step * 1000:.0f} ms/step, "
          f"~{flops / step / 1e12:.0f} TFLOP/s of useful work = {flops / step / peak:.0%} of the measured "
          f"bf16 matmul peak ({peak / 1e12:.0f} TFLOP/s, 8192^3)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps (8 samples each)")
    ap.add_argument("--prompts", type=int, default=32, help="timed evaluation prompts")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    args = ModelArgs(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=32,
                     use_scaled_rope=True, max_batch_size=16, max_seq_len=512)
    llama = tiny_llama(args)
    engine = SymbolicEngine(VSA_dim=256, max_digits=4)
    method = ns_method(llama, engine, 256)
    n = max(8 * (a.steps + 1), a.prompts)
    rows = generate_problems(n, ["gcd", "modulo", "bitwise_or", "multiplication"], complexity=COMPLEXITY, seed=0)
    ex = build_examples(rows, llama.formatter, "train", seed=0, complexity=COMPLEXITY, limit_solution_digits=True,
                        problem_list=engine.possible_problems)
    print(f"tiny model d{args.dim} x{args.n_layers} layers, vocab {args.vocab_size}, prompts of "
          f"{min(map(len, ex.prompts))}-{max(map(len, ex.prompts))} tokens, 1 thread")
    ours, orig = bench_train(llama, method, ex, a.steps)
    print(f"fine-tuning (8 samples/step): ours {ours:.2f} steps/s, original-style {orig:.2f} steps/s, "
          f"{ours / orig:.1f}x (goal >= 3x)")
    ours, orig = bench_eval(llama, method, ex, a.prompts, engine.possible_problems)
    print(f"evaluation: ours {ours:.1f} prompts/s, original-style {orig:.1f} prompts/s, "
          f"{ours / orig:.1f}x (goal >= 4x)")
    if torch.cuda.is_available():
        bench_8b_step()
    else:
        print("8B-shaped batch-8 step: skipped (no CUDA device)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
