"""The methods compared on one harness (same rows, steps and metrics, so their numbers compare):
how each is built as a training.Method.

- neurosymbolic: the intervention (gate + solver) with the stage-2 encoder and decoder(s).
- baseline: the plain frozen model, same prompts, no hooks.
- lora: real LoRA through peft on the frozen model's projections (wq, wk, wv, wo, w1, w2, w3 by
  default), trained on the same data and steps as the decoder.
- adapter: the paper's "LoRA" row (docs/METHOD.md, "Baselines"), a trainable Enc/Dec bottleneck at the
  intervention point, h <- 0.5·Dec(Enc(h)) + 0.5·h at the last prompt position, always on (no
  gate, no solver); initialised from the stage-2 encoder/decoder (--adapter_init stage2, the
  variant the paper's runs most likely used) or freshly (--adapter_init fresh, PyTorch's default
  Kaiming-uniform init of nn.Linear, as the original's initialize_lora=False).
- cot: chain-of-thought prompting of the plain model (prompts.cot_dialog).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from neurosymbolic_llm.pipeline.options import option
from neurosymbolic_llm.pipeline.intervention import InterventionOptions, SymbolicIntervention
from neurosymbolic_llm.pipeline.training import Method

LORA_TARGETS = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


@dataclass
class BaselineOptions:
    """stage 3: baselines and gate statistics"""
    lora_baseline: bool = option(False, "train and evaluate LoRA (peft) on the frozen model instead of the neurosymbolic decoder")
    adapter_baseline: bool = option(False, "train and evaluate the paper's 'LoRA' row: an ungated Enc/Dec bottleneck at the intervention point")
    adapter_init: str = option("stage2", "adapter start: stage2 (the encoder/decoder files) or fresh (random init)", choices=("stage2", "fresh"))
    cot: bool = option(False, "evaluate chain-of-thought prompting of the plain model (no training)")
    cot_max_new_tokens: int = option(1000, "new-token budget of a chain-of-thought answer")
    test_on_unrelated_questions: bool = option(False, "gate statistics on seen math, unseen math and non-math prompts (gate_scores.csv/png)")
    lora_rank: int = option(8, "LoRA rank r")
    lora_alpha: float = option(16.0, "LoRA alpha (scaling alpha / r)")
    lora_targets: list[str] = option(LORA_TARGETS, "module names LoRA wraps")
    lora_learning_rate: float = option(1e-4, "Adam learning rate of the LoRA parameters")
    lora_dropout: float = option(0.0, "LoRA dropout")


def neurosymbolic(model, engine, enc_w, dec_ws, iv_opts: InterventionOptions, *, lr: float, complexity: int,
                  limit_solution_digits: bool, train: bool = True) -> Method:
    iv = SymbolicIntervention(engine, enc_w, dec_ws, iv_opts, complexity=complexity,
                              limit_solution_digits=limit_solution_digits,
                              norm_eps=model.args.norm_eps).to(_device(model))
    return Method("neurosymbolic", attach=lambda: iv.attached(model),
                  params=iv.trainable_parameters() if train else [], lr=lr, intervention=iv, prefix_frozen=True)


def plain(name: str = "baseline", prompt: str = "few_shot") -> Method:
    return Method(name, prompt=prompt)


def adapter(model, enc_w, dec_ws, iv_opts: InterventionOptions, *, lr: float, init: str, seed: int) -> Method:
    """Adapter = the intervention in adapter mode: a = Enc(h), gate always open, convex 0.5 mix."""
    if init == "fresh":
        g = torch.Generator().manual_seed(seed)  # nn.Linear's default init, seeded
        enc_w = _kaiming(enc_w.shape, g)
        dec_ws = {l: _kaiming(w.shape, g) for l, w in dec_ws.items()}
    opts = InterventionOptions(**{f.name: getattr(iv_opts, f.name) for f in dataclasses.fields(InterventionOptions)})
    iv = SymbolicIntervention(None, enc_w, dec_ws, opts, mode="adapter",
                              norm_eps=model.args.norm_eps).to(_device(model))
    return Method("adapter", attach=lambda: iv.attached(model), params=iv.trainable_parameters(), lr=lr,
                  intervention=iv, prefix_frozen=True)


def lora(model, opts: BaselineOptions, seed: int) -> Method:
    """Inject LoRA adapters into `model` in place (peft); only they are trainable, in float32."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=opts.lora_rank, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                     target_modules=list(opts.lora_targets), bias="none")
    inject_adapter_in_model(cfg, model)
    params = []
    for name, p in model.named_parameters():
        is_lora = "lora_" in name
        p.requires_grad_(is_lora)
        if is_lora:
            p.data = p.data.float()  # float32 master weights whatever the base dtype
            params.append(p)
    return Method("lora", params=params, lr=opts.lora_learning_rate)


@contextlib.contextmanager
def lora_disabled(model):
    """Run the base model without its LoRA deltas (the peft layers' adapter switch)."""
    layers = [m for m in model.modules() if hasattr(m, "enable_adapters") and hasattr(m, "lora_A")]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)


def _kaiming(shape, g: torch.Generator) -> torch.Tensor:
    w = torch.empty(shape)
    bound = 1.0 / shape[1] ** 0.5  # nn.Linear default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(in), 1/sqrt(in))
    return w.uniform_(-bound, bound, generator=g)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
