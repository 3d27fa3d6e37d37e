"""Pre-training recipe of the embedded demo model (a tiny Llama 3 that stands in for the 8B one).

The model is trained from scratch on the pipeline's own few-shot prompts (``prompts.few_shot_dialog``,
the ten problem types, operands 1-999, answers from the exact solver), with the real Llama 3
tokenizer, and saved as a plain full-vocabulary Meta-format checkpoint. Three deliberate properties
(measured as Programs/demo/README.md describes) make it behave like the paper's LLM:

1. An auxiliary linear read-out of the residual entering block ``aux_layer`` at the last prompt
   position predicts the problem type and the digits of x and y (squared error on one-hot targets).
   The head is thrown away; it only makes the operands linearly readable there, as they are in
   Llama 3.1 8B at its middle layers. (This builds the encoder's input into the model: the demo
   shows the method's mechanics, not that a tiny model learns such representations by itself.)
2. The embedding and output rows of the number tokens 0-999 are sums of learned (position, digit)
   vectors plus a length vector, so that a linear decoder can select an answer token digit by
   digit. They are materialised into ordinary rows at save time.
3. A share of number-writing prompts ("Repeat 1165.", 30%) teaches the two-token answers (>= 1000).
4. A share of non-arithmetic chat prompts (10%), generated here: templates over a small
   hand-written word list, and (a third of them) strings of common English tokens, in several chat
   layouts, with and without a system message. Their read-out target is "no problem" (no type,
   every digit "absent") and their answer is one fixed sentence. Without them the model never sees
   ordinary text, its layer-2 state of a non-math prompt is out of distribution, and the pipeline's
   linear encoder maps it onto a type atom: with the arithmetic-only recipe (preset ``arith_only``)
   the gate opened for 93% of the pipeline's non-math prompts (type score ~1.05); with this one it
   stays closed for all of them (mean ~0.16, like the paper's ~0.35), while the neurosymbolic
   accuracy after stages 1-3 stays where it was (93.8% on the seen types vs 94.8%; plain 11.1%).
   The evaluation's non-math questions (``prompts.non_math_questions``), their system message and
   prefix are never used in training: they stay held out.
   What did not work (preset ``non_math``): 15% non-math prompts, only 20% number prompts, a
   ~23k-id vocabulary (common_token_limit 30000) and a bias-free read-out head: the gate closed,
   but the stage-3 decoder's answers no longer came out as the right tokens (12.4% on seen types).

Training runs over a compact vocabulary (the ids the prompts use, plus the word-like ids among the
first ``common_token_limit`` = 12000 tokenizer ids, i.e. the most common English words and word pieces)
with logits only at the answer positions: a 128,256-way head would cost more than the rest of the
model. At save time the tables are expanded to the full vocabulary; rows of ids never seen in
training get the mean of the trained rows that are never targets, so they never win an argmax.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.pipeline.files import atomic_write_json
from neurosymbolic_llm.pipeline.runtime import progress as progress_bar
from neurosymbolic_llm.llama.tokenizer import ChatFormat, Tokenizer, default_tokenizer_path
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.prompts import few_shot_dialog
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

RECIPE_VERSION = 3  # bump when the recipe changes in a way the settings do not capture
SETTINGS_FILE = "demo_settings.json"
N_NUMBER_DIGITS = 3  # number tokens 0..999 have at most three digits
NUMBER_SYSTEM = "You write numbers exactly as asked, as bare digits without any other text."
NON_MATH_REPLY = "That is not an arithmetic question."  # the answer of every non-math prompt


@dataclass
class PretrainSettings:
    """Everything that determines the demo checkpoint (its hash names the build)."""
    # architecture (Llama 3 layout; SwiGLU hidden = 352 from multiple_of 32)
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    multiple_of: int = 32
    ffn_dim_multiplier: float = 1.0
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    # data: the pipeline's prompts over all ten types (the LLM knows every type; the paper's
    # held-out types are held out from the encoder/decoder training, not from the LLM)
    problem_types: list = field(default_factory=lambda: list(PROBLEM_TYPES))
    complexity: int = 2
    limit_solution_digits: bool = True
    x_gt_y: bool = True
    number_prompt_fraction: float = 0.3  # "Repeat 1165." prompts
    big_number_fraction: float = 0.5  # of those, numbers 1000-1998 (two tokens)
    # non-arithmetic chat prompts (read-out target: no problem) and the common-word vocabulary; they
    # close the pipeline's gate on (held-out) non-math prompts. 0 / 0: the arithmetic-only recipe
    non_math_fraction: float = 0.1
    common_token_limit: int = 12000  # word-like ids below this join the vocabulary and the word soup
    # auxiliary read-out: residual entering block aux_layer, last prompt position
    aux_layer: int = 2
    aux_weight: float = 3.0
    aux_bias: bool = True  # False: no bias, like the pipeline's encoder ("no problem" = zero read-out)
    # optimisation
    steps: int = 1000  # 1500 in the study; 1000 measured as good (see report) and a third cheaper
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 30
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    save_dtype: str = "float32"  # exact expansion (bfloat16 would halve the 134 MB shard)

    def model_params(self) -> dict:
        """params.json of the saved checkpoint (Meta's keys)."""
        return {"dim": self.dim, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "n_kv_heads": self.n_kv_heads, "vocab_size": 128256, "multiple_of": self.multiple_of,
                "ffn_dim_multiplier": self.ffn_dim_multiplier, "norm_eps": self.norm_eps,
                "rope_theta": self.rope_theta, "use_scaled_rope": False}

    def fingerprint(self) -> str:
        blob = json.dumps({"recipe": RECIPE_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Named variants; `reduced` is for CI (a build in about a minute, weaker model). Measured after
# stages 1-3 (NS / plain accuracy, mean over the 8 seen types; gate open on the pipeline's non-math
# prompts), one core:
#   full                93.8% / 11.1%, non-math gate open 0% (mean 0.16), build 252 s
#   arith_only          94.8% / 11.3%, non-math gate open 93% (~1.05)  (recipe 2, the old default)
#   non_math_templates  92.1% / 10.6%, non-math gate open 0% (mean 0.26), build 228 s (no word soup:
#                       the vocabulary gains only the template words)
#   non_math            12.4% NS: does NOT work for stage 3 (kept as a record; see the docstring)
# `reduced` (CI's end-to-end test) is the arithmetic-only recipe at a quarter of the steps: with the
# non-math prompts, 250 steps are too few for the decoder route (measured NS 22% vs plain 7%).
PRESETS = {"full": {}, "reduced": {"steps": 250, "warmup_steps": 10, "non_math_fraction": 0.0,
                                   "common_token_limit": 0},
           "arith_only": {"non_math_fraction": 0.0, "common_token_limit": 0},
           "non_math_templates": {"common_token_limit": 0},
           "non_math": {"number_prompt_fraction": 0.2, "non_math_fraction": 0.15,
                        "common_token_limit": 30000, "aux_bias": False}}


# ============================================================================ data
@dataclass
class Example:
    tokens: list  # full-vocabulary ids: prompt, answer tokens, <|eot_id|>
    n_prompt: int
    aux: Optional[tuple]  # (type index, x, y) for math prompts, NO_PROBLEM for non-math, None for number prompts


def math_example(fmt: ChatFormat, problem_type: str, question: str, solution: int,
                 rng: np.random.Generator, s: PretrainSettings) -> tuple:
    """(prompt ids, answer ids) of one few-shot question, exactly as the pipeline prompts it."""
    msgs = few_shot_dialog(problem_type, question, rng, complexity=s.complexity,
                           limit_solution_digits=s.limit_solution_digits)
    prompt = fmt.encode_dialog_prompt(msgs)
    answer = fmt.tokenizer.encode(str(int(solution)), bos=False, eos=False)
    return prompt, answer


def number_example(fmt: ChatFormat, n: int, rng: np.random.Generator) -> tuple:
    """(prompt ids, answer ids) of a number-writing prompt; teaches two-token numbers (>= 1000)."""
    if rng.random() < 0.5:
        ask = f"Repeat {n}."
    else:
        ask = f"Write the digits {' '.join(str(n))} as one number."
    msgs = [{"role": "system", "content": NUMBER_SYSTEM}, {"role": "user", "content": ask}]
    return fmt.encode_dialog_prompt(msgs), fmt.tokenizer.encode(str(n), bos=False, eos=False)


# ---------------------------------------------------------------------------- non-math prompts
NO_PROBLEM = (None, None, None)  # read-out target of a non-math prompt: no type, digits absent

# A small hand-written English pool (deliberately not the pipeline's held-out non-math questions).
_NOUNS = ("weather music gardens cooking football oceans mountains trains coffee friendship language "
          "money sleep dreams forests birds computers movies poetry medicine school travel markets "
          "farming bicycles islands libraries museums newspapers chess painting dancing winter summer "
          "holidays neighbours families cats dogs horses bread cheese tea volcanoes deserts planets "
          "stars robots phones email fashion sport theatre novels science engineering architecture "
          "democracy elections taxes jobs careers teachers doctors nurses hospitals bridges roads "
          "airports ships kitchens recipes vegetables fruit breakfast cities villages traffic "
          "electricity batteries rain snow clouds whales insects flowers trees photography "
          "jazz opera comedy games puzzles magic kings castles maps languages grammar spelling").split()
_VERBS = ("learn cook paint build repair plan organise explain describe enjoy choose visit write read "
          "improve clean grow save protect teach remember forget design discover share celebrate").split()
_ADJECTIVES = ("good bad interesting difficult easy strange beautiful important popular useful "
               "dangerous expensive cheap modern ancient quiet noisy healthy fair polite").split()
_TEMPLATES_NM = (
    "What do you think about {n}?", "Why do people enjoy {n}?", "How can I {v} {n} better?",
    "Tell me a short story about {n}.", "Write a poem about {n} and {n2}.", "Explain {n} to a child.",
    "What is the history of {n}?", "Should I {v} {n} this weekend?", "Is {n} more {a} than {n2}?",
    "Describe your favourite {n}.", "Why are {n} so {a}?", "Give me three tips to {v} {n}.",
    "What would the world look like without {n}?", "How are {n} and {n2} connected?",
    "Can you recommend a book about {n}?", "My friend says {n} are {a}. Do you agree?",
    "What is the most {a} thing about {n}?", "Help me {v} a plan for {n}.",
    "Summarise the debate about {n} in a few sentences.", "Which is better, {n} or {n2}, and why?",
    "I want to {v} something about {n}. Where should I start?", "How do {n} work?",
    "What did people in the year {k} think about {n}?", "Name {m} {a} facts about {n}.",
    "Translate the sentence 'I like {n}' into French.", "Is it {a} to {v} {n} at night?",
)
_SYSTEMS_NM = (
    "You are a helpful assistant.",
    "You are a friendly guide who answers questions about everyday life.",
    "You are a patient teacher. Explain things clearly and simply.",
    "You are a creative writer who answers with imagination.",
    "Answer the user's questions honestly and in detail.",
    "You are a calm assistant who gives balanced, considered opinions.",
    "You are an expert assistant. Be precise and thorough in your replies.",
    "You are a wise companion. Reflect on the question before replying.",
)
_PREFIXES_NM = ("", "", "", "Please answer: ", "Quick question: ", "I was wondering: ",
                "Take your time with this one: ", "Be honest: ", "In your own words: ")
_WORD_RE = re.compile(r" ?[A-Za-z]{2,}")


def common_word_ids(tokenizer: Tokenizer, limit: int) -> list:
    """Word-like ids (letters, optional leading space) among the first ``limit`` ids: with BPE's
    merge order these are the most common English words and word pieces."""
    return [i for i in range(256, min(limit, tokenizer.n_words))
            if _WORD_RE.fullmatch(tokenizer.decode([i]))]


def non_math_question(rng: np.random.Generator, word_pool: list) -> str:
    """One generated non-arithmetic question: a template over the word list, or (a third of the
    time) a string of common tokens, sometimes wrapped in a request."""
    if word_pool and rng.random() < 1 / 3:
        k = int(rng.integers(4, 16))
        soup = "".join(word_pool[i] for i in rng.integers(0, len(word_pool), size=k)).strip()
        wrap = ("{}", "{}?", "{}.", "What does this mean: {}?", "Please rewrite this: {}",
                "Continue the text: {}")
        return wrap[int(rng.integers(len(wrap)))].format(soup[:1].upper() + soup[1:])
    tpl = _TEMPLATES_NM[int(rng.integers(len(_TEMPLATES_NM)))]
    n, n2 = rng.choice(len(_NOUNS), size=2, replace=False)
    return tpl.format(n=_NOUNS[n], n2=_NOUNS[n2], v=_VERBS[int(rng.integers(len(_VERBS)))],
                      a=_ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))],
                      k=int(rng.integers(1500, 2000)), m=int(rng.integers(2, 10)))


def non_math_messages(rng: np.random.Generator, word_pool: list) -> list:
    """A non-arithmetic chat in one of several layouts: system + user, user only, or system +
    an earlier non-math exchange + user."""
    layout = rng.random()
    msgs = []
    if layout < 0.75:
        msgs.append({"role": "system", "content": _SYSTEMS_NM[int(rng.integers(len(_SYSTEMS_NM)))]})
    if layout >= 0.5 and layout < 0.75:
        msgs += [{"role": "user", "content": non_math_question(rng, word_pool)},
                 {"role": "assistant", "content": NON_MATH_REPLY}]
    prefix = _PREFIXES_NM[int(rng.integers(len(_PREFIXES_NM)))]
    msgs.append({"role": "user", "content": prefix + non_math_question(rng, word_pool)})
    return msgs


def non_math_example(fmt: ChatFormat, rng: np.random.Generator, word_pool: list) -> tuple:
    """(prompt ids, answer ids) of a non-math prompt; the answer is the fixed NON_MATH_REPLY."""
    prompt = fmt.encode_dialog_prompt(non_math_messages(rng, word_pool))
    return prompt, fmt.tokenizer.encode(NON_MATH_REPLY, bos=False, eos=False)


def make_examples(s: PretrainSettings, fmt: ChatFormat, n: int) -> list:
    """``n`` training examples in a seeded order (math, number and non-math prompts interleaved)."""
    rng = np.random.default_rng([s.seed, 1])
    u = rng.random(n)
    is_number = u < s.number_prompt_fraction
    is_other = (u >= s.number_prompt_fraction) & (u < s.number_prompt_fraction + s.non_math_fraction)
    n_math = int((~is_number & ~is_other).sum())
    word_pool = [fmt.tokenizer.decode([i]) for i in common_word_ids(fmt.tokenizer, s.common_token_limit)]
    nm_rng = np.random.default_rng([s.seed, 2])  # own stream: the math prompts do not depend on it
    df = generate_problems(max(n_math, 1), s.problem_types, complexity=s.complexity, x_gt_y=s.x_gt_y,
                           seed=s.seed + 1000, limit_solution_digits=s.limit_solution_digits)
    type_index = {p: i for i, p in enumerate(PROBLEM_TYPES)}
    rows = iter(df.itertuples(index=False))
    eot = fmt.tokenizer.eot_id
    out = []
    for number, other in progress_bar(zip(is_number, is_other), total=n, desc="prompts", unit="prompt"):
        if other:
            prompt, answer = non_math_example(fmt, nm_rng, word_pool)
            aux = NO_PROBLEM
        elif number:
            big = rng.random() < s.big_number_fraction
            value = int(rng.integers(1000, 1999)) if big else int(rng.integers(0, 1000))
            prompt, answer = number_example(fmt, value, rng)
            aux = None
        else:
            r = next(rows)
            prompt, answer = math_example(fmt, r.problem_type, r.question, r.solution, rng, s)
            aux = (type_index[r.problem_type], int(r.x), int(r.y))
        out.append(Example(prompt + answer + [eot], len(prompt), aux))
    return out


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
