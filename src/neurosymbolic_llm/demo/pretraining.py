"""Pre-training of the embedded demo model (a tiny Llama 3 that stands in for the 8B one): `train`
on the prompts of pretraining_data.py with the settings of recipe.py, and `build_demo_model`, which
saves a plain full-vocabulary Meta-format checkpoint (reused when built with the same settings).

Three properties are built in, so that it behaves like the paper's LLM (why, and what each
measured: Programs/demo/README.md, "Why it is built the way it is"):

1. An auxiliary linear read-out of the residual entering block ``aux_layer`` at the last prompt
   position predicts the problem type and the digits of x and y (squared error on one-hot targets;
   NO_PROBLEM for non-math prompts). The head is thrown away; it makes the operands linearly
   readable there, as they are in Llama 3.1 8B at its middle layers.
2. The embedding and output rows of the number tokens 0-999 are sums of learned (position, digit)
   vectors plus a length vector (StructuredTable), so that a linear decoder can select an answer
   token digit by digit. They are materialised into ordinary rows at save time.
3. Training runs over a compact vocabulary (CompactVocab: the ids the prompts use, plus the
   word-like ids among the first ``common_token_limit`` tokenizer ids) with logits only at the
   answer positions: a 128,256-way head would cost more than the rest of the model. At save time
   the tables are expanded to the full vocabulary; rows of ids never seen in training get the mean
   of the trained rows that are never targets, so they never win an argmax.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurosymbolic_llm.demo.pretraining_data import ChatFormat, common_word_ids, make_examples
from neurosymbolic_llm.demo.recipe import RECIPE_VERSION, SETTINGS_FILE, PretrainSettings
from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.llama.tokenizer import Tokenizer, default_tokenizer_path
from neurosymbolic_llm.pipeline.files import atomic_write_json
from neurosymbolic_llm.pipeline.runtime import progress as progress_bar
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

N_NUMBER_DIGITS = 3  # number tokens 0..999 have at most three digits


# ============================================================================ compact vocabulary
class CompactVocab:
    """The token ids training uses, mapped to 0..V-1. ``number_ids[n]`` = compact id of n (0-999)."""

    def __init__(self, tokenizer: Tokenizer, examples: list, extra_ids=()):
        numbers = [tokenizer.encode(str(n), bos=False, eos=False) for n in range(1000)]
        if any(len(t) != 1 for t in numbers):
            raise ValueError("the tokenizer does not write every number 0-999 as one token")
        ids = {t[0] for t in numbers} | {tokenizer.eot_id, tokenizer.eos_id, tokenizer.pad_id}
        ids.update(int(i) for i in extra_ids)
        target_ids = set()
        for ex in examples:
            ids.update(ex.tokens)
            target_ids.update(ex.tokens[ex.n_prompt:])
        self.full_ids = torch.tensor(sorted(ids), dtype=torch.long)  # [V] compact -> full
        self.lookup = torch.full((tokenizer.n_words,), -1, dtype=torch.long)  # full -> compact
        self.lookup[self.full_ids] = torch.arange(len(self.full_ids))
        self.number_ids = self.lookup[torch.tensor([t[0] for t in numbers])]  # [1000]
        self.eot = int(self.lookup[tokenizer.eot_id])
        self.pad = int(self.lookup[tokenizer.pad_id])
        # rows that are targets somewhere (numbers and eot); the others are "never targets"
        self.is_target = torch.zeros(len(self.full_ids), dtype=torch.bool)
        self.is_target[self.number_ids] = True
        self.is_target[self.eot] = True
        self.is_target[self.lookup[torch.tensor(sorted(target_ids), dtype=torch.long)]] = True

    def __len__(self) -> int:
        return len(self.full_ids)


def digit_features(n_digits: int = N_NUMBER_DIGITS) -> tuple:
    """For the numbers 0..999: one-hot (position, digit) [1000, P*10] and length [1000, P]."""
    n = torch.arange(10 ** n_digits)
    length = 1 + sum((n >= 10 ** k).long() for k in range(1, n_digits))  # [1000]
    pos = torch.zeros(len(n), n_digits, 10)
    for k in range(n_digits):
        present = k < length
        pos[present, k, (n[present] // 10 ** k) % 10] = 1.0
    return pos.flatten(1), F.one_hot(length - 1, n_digits).float()


# ============================================================================ model
class StructuredTable(nn.Module):
    """A [V, D] table whose number rows are sum_k digit[k, d_k(n)] + length[len(n)]."""

    def __init__(self, n_rows: int, dim: int, number_ids: torch.Tensor, std: float,
                 gen: torch.Generator):
        super().__init__()
        self.free = nn.Parameter(std * torch.randn(n_rows, dim, generator=gen))
        self.digit = nn.Parameter(0.5 * std * torch.randn(N_NUMBER_DIGITS * 10, dim, generator=gen))
        self.length = nn.Parameter(0.5 * std * torch.randn(N_NUMBER_DIGITS, dim, generator=gen))
        pos, length = digit_features()
        self.register_buffer("pos_onehot", pos, persistent=False)  # [1000, 30]
        self.register_buffer("len_onehot", length, persistent=False)  # [1000, 3]
        self.register_buffer("number_ids", number_ids.clone(), persistent=False)  # [1000]

    def table(self) -> torch.Tensor:
        numbers = self.pos_onehot @ self.digit + self.len_onehot @ self.length  # [1000, D]
        return self.free.index_copy(0, self.number_ids, numbers)  # [V, D]


class StructuredEmbedding(nn.Module):
    def __init__(self, table: StructuredTable):
        super().__init__()
        self.table = table

    def forward(self, tokens):
        return F.embedding(tokens, self.table.table())


class StructuredOutput(nn.Module):
    def __init__(self, table: StructuredTable):
        super().__init__()
        self.table = table

    def forward(self, h):
        return h @ self.table.table().T


def build_training_model(s: PretrainSettings, vocab: CompactVocab) -> Transformer:
    """The Llama network over the compact vocabulary, with digit-structured number rows."""
    args = ModelArgs.from_params({**s.model_params(), "vocab_size": len(vocab)})
    model = Transformer(args)
    gen = torch.Generator().manual_seed(s.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif p.dim() == 2 and not name.startswith(("tok_embeddings", "output")):
                std = 1 / math.sqrt(p.shape[1])
                if name.endswith(("wo.weight", "w2.weight")):  # residual outputs: keep the stream calm
                    std /= math.sqrt(2 * s.n_layers)
                p.copy_(std * torch.randn(p.shape, generator=gen))
    model.tok_embeddings = StructuredEmbedding(StructuredTable(len(vocab), s.dim, vocab.number_ids, 1.0, gen))
    model.output = StructuredOutput(StructuredTable(len(vocab), s.dim, vocab.number_ids,
                                                    1 / math.sqrt(s.dim), gen))
    return model


def aux_size(n_types: int = len(PROBLEM_TYPES)) -> int:
    return n_types + 2 * N_NUMBER_DIGITS * 11  # type, then x and y digits (10 values + "absent")


def aux_targets(aux: list, n_types: int = len(PROBLEM_TYPES)) -> torch.Tensor:
    """One-hot targets [B, aux_size] of (type, x, y) triples; NO_PROBLEM (non-math): no type,
    every digit "absent"."""
    out = torch.zeros(len(aux), aux_size(n_types))
    for b, (t, x, y) in enumerate(aux):
        if t is not None:
            out[b, t] = 1.0
        for j, v in enumerate((x, y)):
            for k in range(N_NUMBER_DIGITS):
                digit = 10 if v is None else (v // 10 ** k) % 10 if (k == 0 or v >= 10 ** k) else 10
                out[b, n_types + (j * N_NUMBER_DIGITS + k) * 11 + digit] = 1.0
    return out


def collate(batch: list, vocab: CompactVocab) -> dict:
    """Right-padded compact tokens, answer positions/targets, read-out rows and targets."""
    B, S = len(batch), max(len(ex.tokens) for ex in batch)
    K = max(len(ex.tokens) - ex.n_prompt for ex in batch)
    tokens = torch.full((B, S), vocab.pad, dtype=torch.long)
    positions = torch.zeros((B, K), dtype=torch.long)
    targets = torch.full((B, K), -100, dtype=torch.long)
    for b, ex in enumerate(batch):
        ids = vocab.lookup[torch.tensor(ex.tokens)]
        tokens[b, :len(ids)] = ids
        n_ans = len(ids) - ex.n_prompt
        positions[b, :n_ans] = torch.arange(ex.n_prompt - 1, len(ids) - 1)  # predicts the next id
        targets[b, :n_ans] = ids[ex.n_prompt:]
    aux_rows = [b for b, ex in enumerate(batch) if ex.aux is not None]
    return {"tokens": tokens, "positions": positions, "targets": targets,
            "last": torch.tensor([ex.n_prompt - 1 for ex in batch]),
            "aux_rows": torch.tensor(aux_rows, dtype=torch.long),
            "aux_targets": aux_targets([batch[b].aux for b in aux_rows])}


def lr_factor(step: int, s: PretrainSettings) -> float:
    """Linear warm-up, then cosine decay to final_lr_fraction."""
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    t = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.final_lr_fraction + (1 - s.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t))


def train(s: PretrainSettings, tokenizer: Tokenizer, *, progress: bool = True):
    """Pre-train; returns (model over the compact vocabulary, vocab, log dict)."""
    fmt = ChatFormat(tokenizer)
    examples = make_examples(s, fmt, s.steps * s.batch_size)
    vocab = CompactVocab(tokenizer, examples, common_word_ids(tokenizer, s.common_token_limit))
    model = build_training_model(s, vocab)
    head = nn.Linear(s.dim, aux_size(), bias=s.aux_bias)  # thrown away after training
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(s.seed + 7))
                          / math.sqrt(s.dim))
        if head.bias is not None:
            head.bias.zero_()
    params = list(model.parameters()) + list(head.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, s))

    captured = {}
    hook = model.register_residual_hook(s.aux_layer, lambda h, ctx: captured.__setitem__("h", h))
    n_groups = 1 + 2 * N_NUMBER_DIGITS
    log = {"answer_loss": [], "aux_loss": []}
    t0 = time.time()
    bar = progress_bar(range(s.steps), desc="pre-training", unit="step", enabled=progress)
    try:
        for step in bar:
            rows = examples[step * s.batch_size:(step + 1) * s.batch_size]
            ce_sum, n_targets, aux_sum, n_aux = 0.0, 0, torch.zeros(()), 0
            # math prompts and the short (number, non-math) prompts in separate forwards: the short
            # ones are not padded to the math prompts' length (same loss, less compute)
            is_math = [e.aux is not None and e.aux[0] is not None for e in rows]
            for part in ([e for e, m in zip(rows, is_math) if m], [e for e, m in zip(rows, is_math) if not m]):
                if not part:
                    continue
                batch = collate(part, vocab)
                logits = model(batch["tokens"], output_positions=batch["positions"])  # [B,K,V]
                ce_sum = ce_sum + F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(),
                                                  ignore_index=-100, reduction="sum")
                n_targets += int((batch["targets"] != -100).sum())
                if len(batch["aux_rows"]):
                    h = captured["h"][batch["aux_rows"], batch["last"][batch["aux_rows"]]]  # [A,D]
                    aux_sum = aux_sum + (head(h) - batch["aux_targets"]).pow(2).sum()
                    n_aux += len(batch["aux_rows"])
            answer_loss = ce_sum / n_targets
            aux_loss = aux_sum / max(1, n_aux) / n_groups
            loss = answer_loss + s.aux_weight * aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            opt.step()
            sched.step()
            log["answer_loss"].append(float(answer_loss.detach()))
            log["aux_loss"].append(float(aux_loss.detach()))
            if step % 20 == 0 or step == s.steps - 1:
                n = min(50, len(log["answer_loss"]))
                bar.set_postfix(ans=f"{np.mean(log['answer_loss'][-n:]):.3f}",
                                aux=f"{np.mean(log['aux_loss'][-n:]):.3f}", refresh=False)
    finally:
        hook.remove()
    log["train_seconds"] = time.time() - t0
    return model, vocab, log


# ============================================================================ expansion and saving
@torch.no_grad()
def expand_table(compact: torch.Tensor, vocab: CompactVocab, n_full: int) -> torch.Tensor:
    """[V, D] compact rows -> [n_full, D]: trained rows in place, every other row the mean of
    the trained rows that are never targets (a logit below the best such row: never wins)."""
    filler = compact[~vocab.is_target].mean(0)
    full = filler.expand(n_full, -1).clone()
    full[vocab.full_ids] = compact
    return full


@torch.no_grad()
def full_state_dict(model: Transformer, vocab: CompactVocab, n_full: int = 128256,
                    dtype: torch.dtype = torch.float32) -> dict:
    """Meta's state-dict keys with full-vocabulary, plain embedding and output tables."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()
          if not k.startswith(("tok_embeddings.", "output."))}
    sd["tok_embeddings.weight"] = expand_table(model.tok_embeddings.table.table(), vocab, n_full)
    sd["output.weight"] = expand_table(model.output.table.table(), vocab, n_full)
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}


def cached_build(out_dir: Path, s: PretrainSettings) -> bool:
    """True when ``out_dir`` holds a complete checkpoint built with exactly these settings."""
    meta = out_dir / SETTINGS_FILE
    if not all((out_dir / f).is_file() for f in ("params.json", "consolidated.00.pth", "tokenizer.model")):
        return False
    try:
        return json.loads(meta.read_text()).get("fingerprint") == s.fingerprint()
    except (OSError, ValueError):
        return False


def build_demo_model(out_dir, s: PretrainSettings, *, force: bool = False, progress: bool = True) -> Path:
    """Train and save the demo checkpoint to ``out_dir`` unless it is already there."""
    from neurosymbolic_llm.llama.checkpoint import save_checkpoint

    out_dir = Path(out_dir)
    if not force and cached_build(out_dir, s):
        print(f"demo model: reusing {out_dir} (settings {s.fingerprint()})")
        return out_dir
    t0 = time.time()
    tok_path = default_tokenizer_path()
    tokenizer = Tokenizer(tok_path)
    model, vocab, log = train(s, tokenizer, progress=progress)
    sd = full_state_dict(model, vocab, tokenizer.n_words, getattr(torch, s.save_dtype))
    (out_dir / SETTINGS_FILE).unlink(missing_ok=True)  # a half-written build is never "cached"
    save_checkpoint(sd, s.model_params(), out_dir, tok_path)
    tail = slice(-min(50, len(log["answer_loss"])), None)
    meta = {"fingerprint": s.fingerprint(), "recipe_version": RECIPE_VERSION,
            "settings": dataclasses.asdict(s), "compact_vocab_size": len(vocab),
            "final_answer_loss": float(np.mean(log["answer_loss"][tail])),
            "final_aux_loss": float(np.mean(log["aux_loss"][tail])),
            "train_seconds": round(log["train_seconds"], 1),
            "build_seconds": round(time.time() - t0, 1),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    atomic_write_json(out_dir / SETTINGS_FILE, meta)
    print(f"demo model: wrote {out_dir} in {meta['build_seconds']} s "
          f"(answer loss {meta['final_answer_loss']:.3f}, read-out loss {meta['final_aux_loss']:.3f})")
    return out_dir
