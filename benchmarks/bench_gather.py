"""Stage-1 gathering throughput against the original's way, and stage-2 time, on one thread.

Original way (docs/METHOD.md, difference 18): batches of 2 prompts, a generation of prefill + 2 decode steps (3
forwards, full-vocabulary logits of every prefill position), every layer of every position kept,
then the last prompt position sliced out. Ours: one forward per batch of 16 prompts sorted by
length, stopping after the last wanted layer, no logits, only the last position kept.
Both run on the same tiny random-weight model and the same prompts; the outputs are checked equal.

    OMP_NUM_THREADS=1 python benchmarks/bench_gather.py [--prompts 64]

With CUDA, it also measures an 8B-shaped random-weight model in bf16 (batch 64 vs the original's 2).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch

torch.set_num_threads(1)

from neurosymbolic_llm.llama.generation import Llama, left_pad
from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.llama.tokenizer import ChatFormat, Tokenizer, default_tokenizer_path
from neurosymbolic_llm.stages.gather import LastTokenRecorder, record_hidden
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.prompts import few_shot_dialog, row_rng

TINY = {"dim": 64, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 128256, "multiple_of": 32,
        "ffn_dim_multiplier": None, "norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True}
LLAMA_8B = {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
            "multiple_of": 1024, "ffn_dim_multiplier": 1.3, "norm_eps": 1e-5, "rope_theta": 500000.0,
            "use_scaled_rope": True}


def make_prompts(formatter, n: int) -> list[list[int]]:
    types = ["multiplication", "modulo", "gcd", "lcm", "square_mod", "bitwise_and", "bitwise_xor", "bitwise_or"]
    df = generate_problems(n, types, seed=0)
    return [formatter.encode_dialog_prompt(few_shot_dialog(t, q, row_rng(0, "bench", i)))
            for i, (t, q) in enumerate(zip(df.problem_type, df.question))]


@torch.inference_mode()
def original_way(llama: Llama, prompts: list[list[int]], batch: int = 2, decode_steps: int = 2) -> torch.Tensor:
    """Batch-2 generation keeping every layer of every position; returns [n, L, D] at the last prompt token."""
    model, dev = llama.model, llama.device
    L = model.n_layers + 1
    kept: list[torch.Tensor] = []
    hooks = [model.register_residual_hook(l, lambda h, ctx: kept.append(h.clone())) for l in range(L)]
    out = []
    try:
        for b in range(0, len(prompts), batch):
            tokens, pad = left_pad(prompts[b:b + batch], llama.tokenizer.pad_id)
            tokens, pad = tokens.to(dev), pad.to(dev)
            B, S = tokens.shape
            kept.clear()
            with model.kv_cache(B, S + decode_steps):
                logits = model(tokens, 0, pad_lengths=pad)  # [B,S,vocab]: all positions, as the original
                prefill = torch.stack(kept[:L], dim=1)  # [B,L,S,D]: every layer of every position
                nxt = logits[:, -1].argmax(-1)
                for i in range(decode_steps):
                    nxt = model(nxt[:, None], S + i, pad_lengths=pad)[:, -1].argmax(-1)
            out.append(prefill[:, :, -1, :])  # [B,L,D]
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(out)


def ours(llama: Llama, prompts: list[list[int]], batch: int, dtype) -> torch.Tensor:
    rec = LastTokenRecorder(llama.model, list(range(llama.model.n_layers + 1)))
    try:
        return record_hidden(llama.model, rec, prompts, batch, llama.tokenizer.pad_id, llama.device, dtype)
    finally:
        rec.remove()


def timed(fn, sync=None):
    t0 = time.perf_counter()
    out = fn()
    if sync:
        sync()
    return out, time.perf_counter() - t0


def bench_cpu(n_prompts: int) -> None:
    from neurosymbolic_llm.llama.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        model = Transformer(ModelArgs.from_params(TINY)).init_weights(seed=0)
        save_checkpoint(model, TINY, tmp)
        llama = Llama.build(tmp, device="cpu", dtype=torch.float32)
    prompts = make_prompts(llama.formatter, n_prompts)
    print(f"tiny model (dim {TINY['dim']}, {TINY['n_layers']} layers, vocab {TINY['vocab_size']}), "
          f"{n_prompts} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, 1 thread, cpu")
    ours(llama, prompts[:4], 4, torch.float32)  # warm-up
    ref, t_ref = timed(lambda: original_way(llama, prompts))
    new, t_new = timed(lambda: ours(llama, prompts, 16, torch.float32))
    torch.testing.assert_close(new, ref, atol=5e-5, rtol=1e-5)
    print(f"  original way (batch 2, 3 forwards, all layers x positions): {n_prompts / t_ref:8.1f} prompts/s")
    print(f"  ours (batch 16, one forward, last token only):              {n_prompts / t_new:8.1f} prompts/s"
          f"   speed-up {t_ref / t_new:.1f}x  (outputs equal)")


def bench_stage2() -> None:
    """Stage 2 for all 5 residual layers of the tiny model on gathered data, default epochs (1000 + 1000)."""
    import contextlib
    import io

    from neurosymbolic_llm.llama.checkpoint import save_checkpoint
    from neurosymbolic_llm.pipeline.configs import TrainEncodersConfig
    from neurosymbolic_llm.stages.train_maps import run_training
    from neurosymbolic_llm.stages.gather import run_gather
    from neurosymbolic_llm.pipeline.options import parse_config

    with tempfile.TemporaryDirectory() as tmp:
        model = Transformer(ModelArgs.from_params(TINY)).init_weights(seed=0)
        save_checkpoint(model, TINY, Path(tmp) / "ckpt")
        argv = ["--run_name", "bench", "--programs_dir", tmp, "--chpt_dir", str(Path(tmp) / "ckpt"), "--device", "cpu",
                "--train_data_rounds", "2000", "--val_data_rounds", "200", "--testing_data_rounds", "500",
                "--VSA_dim", "256", "--max_digits", "4"]
        (_, t_gather) = timed(lambda: run_gather(parse_config(TrainEncodersConfig, argv + ["--generate_data", "1"])))
        cfg = parse_config(TrainEncodersConfig, argv + ["--generate_data", "0"])
        with contextlib.redirect_stdout(io.StringIO()):
            out, t_train = timed(lambda: run_training(cfg))
            cfg_full = parse_config(TrainEncodersConfig, argv + ["--generate_data", "0", "--patience", "0"])
            _, t_full = timed(lambda: run_training(cfg_full))
    print(f"stage 1, 2700 prompts through the stage entry point: {t_gather:.1f} s ({2700 / t_gather:.0f} prompts/s)")
    s = out["summary"]
    print(f"stage 2, 5 layers, 2000 train rows, batch {cfg.batch_size}, incl. evaluation and files: "
          f"{t_train:.1f} s with early stopping (patience {cfg.patience}: {s['encoder_epochs_run']}+"
          f"{s['decoder_epochs_run']} epochs), {t_full:.1f} s for the full {cfg.training_epochs}+{cfg.decoding_epochs} epochs")
    print(f"  best validation epoch per layer: encoders {s['encoder_best_epoch']}, decoders {s['decoder_best_epoch']} "
          f"(0 = the least-squares init)")


def bench_cuda(n_prompts: int) -> None:
    """8B-shaped random weights in bf16 (16 GB): batch-64 gather vs the original way."""
    dev = torch.device("cuda")
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(dev):
        model = Transformer(ModelArgs.from_params(LLAMA_8B, max_batch_size=64, max_seq_len=2048))
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 1.0 if "tok_embeddings" in name else 1 / p.shape[-1] ** 0.5) if not name.endswith(
                "norm.weight") else p.fill_(1.0)
    tok = Tokenizer(default_tokenizer_path())
    llama = Llama(model.eval(), tok, model.args, dev)
    prompts = make_prompts(ChatFormat(tok), n_prompts)
    ours(llama, prompts[:64], 64, torch.bfloat16)
    ref, t_ref = timed(lambda: original_way(llama, prompts), torch.cuda.synchronize)
    new, t_new = timed(lambda: ours(llama, prompts, 64, torch.bfloat16), torch.cuda.synchronize)
    err = (new.float() - ref.float()).abs().max().item()
    print(f"8B-shaped model, bf16, {torch.cuda.get_device_name()}: original way {n_prompts / t_ref:.1f} prompts/s, "
          f"ours batch 64 {n_prompts / t_new:.1f} prompts/s, speed-up {t_ref / t_new:.1f}x (max |diff| {err:.3g}, bf16)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--skip_stage2", action="store_true")
    a = ap.parse_args()
    bench_cpu(a.prompts)
    if not a.skip_stage2:
        bench_stage2()
    if torch.cuda.is_available():
        bench_cuda(512)
    else:
        print("(no CUDA device: the 8B-shaped batch-64 GPU measurement is skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
