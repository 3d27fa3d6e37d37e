"""Shared by the GPU benchmarks: the Llama 3.1 8B shape, timing, the card's limits measured on the
spot, and random 8B-shaped weights in Meta's layout.

- ``LLAMA_31_8B``: params.json of Llama 3.1 8B (METHOD's shapes; the numbers of the weights are
  random, the time of every matmul is not).
- ``matmul_peak(device, dtype)``: FLOP/s of a large square matrix product (the practical peak of
  the card for that dtype); ``memory_bandwidth(device)``: bytes/s of a 1 GiB device copy (read +
  write).
- ``random_model(params, device, dtype)`` and ``write_random_checkpoint(out_dir, params, ...)``:
  weights with sensible scales (linear N(0, 1/in), embeddings N(0, 1), norms 1, output
  N(0, 4/dim)) generated on the device, written as params.json + consolidated.00.pth +
  tokenizer.model by the project's own ``save_checkpoint``.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path


import torch

LLAMA_31_8B = dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256,
                   ffn_dim_multiplier=1.3, multiple_of=1024, norm_eps=1e-5, rope_theta=500000.0,
                   use_scaled_rope=True)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up, synchronised."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_peak(device="cuda", dtype=torch.bfloat16, n: int = 8192, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matrix product in ``dtype`` (n smaller on a CPU)."""
    if torch.device(device).type != "cuda":
        n = min(n, 512)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = timed(lambda: a @ b, device, repeats)
    return 2 * n ** 3 / t


def memory_bandwidth(device="cuda", nbytes: int = 2 ** 30, repeats: int = 10) -> float:
    """Bytes/s moved by a device copy of ``nbytes`` (each byte read once and written once)."""
    if torch.device(device).type != "cuda":
        nbytes = min(nbytes, 2 ** 26)
    big = torch.empty(nbytes, dtype=torch.uint8, device=device)
    return 2 * nbytes / timed(lambda: big.clone(), device, repeats)


@torch.no_grad()
def random_model(params: dict, device, dtype, *, seed: int = 0, **overrides):
    """A Transformer with random weights of sensible scale, built on ``device`` directly."""
    from neurosymbolic_llm.llama.model import ModelArgs, Transformer

    args = ModelArgs.from_params(params, **overrides)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Transformer(args)
    finally:
        torch.set_default_dtype(prev)
    g = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name.startswith("tok_embeddings"):
            p.normal_(0.0, 1.0, generator=g)
        elif name.startswith("output"):
            p.normal_(0.0, 2 / math.sqrt(args.dim), generator=g)
        else:
            p.normal_(0.0, 1 / math.sqrt(p.shape[1]), generator=g)
        p.requires_grad_(False)
    return model.eval()


def write_random_checkpoint(out_dir, params: dict, *, device="cpu", dtype=torch.bfloat16, seed: int = 0) -> Path:
    """Meta layout (params.json, consolidated.00.pth, tokenizer.model) of random weights."""
    from neurosymbolic_llm.llama.checkpoint import save_checkpoint

    model = random_model(params, device, dtype, seed=seed)
    out = save_checkpoint(model, params, out_dir)
    del model
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return Path(out)


def weight_counts(params: dict) -> tuple[int, int]:
    """(weights of the blocks, weights of the output head): each does 2 FLOPs per token in a
    forward; the embedding is a lookup."""
    from neurosymbolic_llm.llama.model import ModelArgs

    a = ModelArgs.from_params(params)
    hd = a.head_dim
    block = 2 * a.dim * a.n_heads * hd + 2 * a.dim * a.n_kv_heads * hd + 3 * a.dim * a.ffn_hidden_dim
    return a.n_layers * block, a.dim * a.vocab_size


def kv_bytes_per_token(params: dict, element_size: int = 2) -> int:
    """Bytes of K and V one cached token holds over all layers."""
    from neurosymbolic_llm.llama.model import ModelArgs

    a = ModelArgs.from_params(params)
    return 2 * a.n_layers * a.n_kv_heads * a.head_dim * element_size
