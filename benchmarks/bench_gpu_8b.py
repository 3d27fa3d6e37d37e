"""Llama 3.1 8B-shaped model (random weights, bf16) on one CUDA GPU: prefill and decode throughput.

Usage: python benchmarks/bench_gpu_8b.py            (needs CUDA; otherwise prints why and exits 0)
       python benchmarks/bench_gpu_8b.py --smoke    (tiny shapes on the CPU: checks the script runs)

Measures, with torch.inference_mode and CUDA synchronisation around each timed region:
- prefill tokens/s, batch 64 x 96 tokens, logits of the last position only (as generation does),
  and with all logits;
- decode tokens/s (one token per row per step under the KV cache) at batch 1 and 64, eager (the
  model's forward per step) and as CUDA-graph replays of the static step (static_decode.py);
- Llama.generate end to end (64 prompts of 96 tokens, 32 new tokens, greedy), eager and graph;
- peak GPU memory.
"""
import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

import torch

from card import LLAMA_31_8B, matmul_peak, memory_bandwidth, random_model, sync, timed
from neurosymbolic_llm.llama.model import ModelArgs
from neurosymbolic_llm.llama.static_decode import StaticDecoder, static_cache_len

SMOKE = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=32,
             norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=True)


@torch.inference_mode()
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU (script check)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode_steps", type=int, default=64)
    opt = ap.parse_args()
    if opt.smoke:
        device, dtype, params = torch.device("cpu"), torch.float32, SMOKE
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("bench_gpu_8b: no CUDA device here; run it on a machine with a GPU "
                  "(about 17 GB of GPU memory for the weights plus the KV cache).")
            return 0
        device, dtype, params = torch.device("cuda"), torch.bfloat16, LLAMA_31_8B
    B, S, new = 64, 96, opt.decode_steps
    args = ModelArgs.from_params(params, max_seq_len=S + new, max_batch_size=B)
    t0 = time.perf_counter()
    model = random_model(params, device, dtype, max_seq_len=S + new, max_batch_size=B)
    sync(device)
    n_params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, {dtype}, {n_params / 1e9:.2f} B parameters, "
          f"built in {time.perf_counter() - t0:.1f} s")

    g = torch.Generator(device="cpu").manual_seed(0)
    tokens = torch.randint(0, args.vocab_size, (B, S), generator=g).to(device)
    last = torch.tensor([S - 1], device=device)
    rows = []

    t = timed(lambda: model(tokens, output_positions=last), device, opt.repeats)
    rows.append((f"prefill {B}x{S}, last-position logits", B * S / t, t))
    t = timed(lambda: model(tokens), device, opt.repeats)
    rows.append((f"prefill {B}x{S}, all logits", B * S / t, t))

    cuda = device.type == "cuda"
    for b, static in [(1, False), (1, True), (B, False), (B, True)]:
        def decode(b=b, static=static):
            with model.kv_cache(b, static_cache_len(S + new) if static else S + new):
                logits = model(tokens[:b], output_positions=last)
                pad = torch.zeros(b, dtype=torch.long, device=device)
                step = StaticDecoder(model, pad, S + new, capture=cuda) if static else None
                sync(device)
                t = time.perf_counter()
                nxt = logits[:, -1].argmax(-1)
                for i in range(new):
                    nxt = (step(nxt, S + i) if static else model(nxt[:, None], S + i)[:, -1]).argmax(-1)
                sync(device)
                return time.perf_counter() - t
        decode()  # warm-up
        t = min(decode() for _ in range(opt.repeats))
        how = ("CUDA graphs" if cuda else "static, uncaptured") if static else "eager"
        rows.append((f"decode batch {b}, {how} ({new} steps after {S} tokens)", b * new / t, t))

    from neurosymbolic_llm.llama.generation import Llama
    from neurosymbolic_llm.llama.tokenizer import Tokenizer, default_tokenizer_path
    llama = Llama(model, Tokenizer(default_tokenizer_path()), args, device)
    prompts = tokens.tolist()
    for mode in ("eager", "graph" if cuda else "static"):
        t = timed(lambda: llama.generate(prompts, max_gen_len=32, stop_tokens=[], decode=mode), device, 1)
        rows.append((f"Llama.generate {B} prompts x {S}, 32 new tokens, {mode}", B * 32 / t, t))

    print(f"{'':<60} {'tokens/s':>12} {'seconds':>9}")
    for label, tps, sec in rows:
        print(f"{label:<60} {tps:>12,.0f} {sec:>9.4f}")
    if device.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
        card_limits(model, device)
    return 0


def card_limits(model, device) -> None:
    """The card's limits for this model, measured here: prefill is bounded by the bf16 matmul peak
    (2 FLOPs per weight and token), batch-1 decoding by memory bandwidth (every weight read once per
    token)."""
    peak, bandwidth = matmul_peak(device), memory_bandwidth(device)
    n_weights = sum(p.numel() for name, p in model.named_parameters() if "tok_embeddings" not in name)
    bytes_ = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "tok_embeddings" not in name)
    print(f"card limits (measured): bf16 matmul {peak / 1e12:.0f} TFLOP/s -> prefill <= "
          f"{peak / (2 * n_weights):,.0f} tokens/s; memory {bandwidth / 1e12:.2f} TB/s -> batch-1 decode <= "
          f"{bandwidth / bytes_:,.0f} tokens/s")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
