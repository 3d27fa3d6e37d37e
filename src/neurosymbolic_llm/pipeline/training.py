"""Stage 3 training: teacher-forced answer cross-entropy, with only the chosen parameters trained.

One forward per micro-batch over left-padded prompts followed by right-padded answer tokens
(+ <|eot_id|> in training), logits only at the real answer tokens (output_positions (rows, positions));
gradients flow through attention normally (the original detached K/V; see docs/METHOD.md).
For methods that act only at positions >= P-1 (Method.prefix_frozen: the intervention, the adapter)
the forward is split (option prefix_split, on by default): the prompt up to P-2 runs once under
no_grad into a KV cache, the last prompt token + answers run with gradients on top of it (same loss
and gradients, causal attention); LoRA, which changes every position, keeps the single forward.
An optimizer step sees n_samples x inference_to_backprop_ratio samples (gradient accumulation over
micro-batches of n_samples) per data-parallel group: under torchrun with D data-parallel groups a step
sees D times as many (each group its own contiguous slice of the step's rows), the gradients of the
trained parameters are averaged over the data-parallel group only (as DistributedDataParallel would),
and the parameters start from data-parallel rank 0's values. Adam on float32 master weights; the learning-rate schedule
`lr_decay` {step: multiplier} multiplies the rate after that many optimizer steps (cumulative).

A `Method` says what is being trained and evaluated: hooks to attach to the model while it runs
(the intervention, the adapter, or none), its trainable parameters and learning rate, and which
prompt format it uses (few-shot or chain-of-thought).
"""
from __future__ import annotations

import contextlib
import math
import signal
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from neurosymbolic_llm.pipeline.configs import FineTuneOptions
from neurosymbolic_llm.pipeline.distributed import (DistInfo, all_reduce_dp, any_rank, broadcast_dp, gather_objects,
                                                    row_slice)
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError, Interrupted
from neurosymbolic_llm.pipeline.prefix_cache import PrefixCache
from neurosymbolic_llm.pipeline.runtime import progress
from neurosymbolic_llm.pipeline.train_state import TrainingState, deferred_interrupts, rng_state, set_rng_state
from neurosymbolic_llm.symbolic.problems import QUESTION_VARIANTS, number_words, question_text
from neurosymbolic_llm.symbolic.prompts import cot_dialog, few_shot_dialog, row_rng

IGNORE = -100
@dataclass
class Method:
    """What one evaluated system is: hooks, trainable parameters, prompt format."""
    name: str                                    # neurosymbolic | baseline | lora | adapter | cot
    attach: Callable[[], ContextManager] = contextlib.nullcontext
    params: list = field(default_factory=list)   # trainable parameters (empty: nothing to train)
    lr: float = 1e-3
    intervention: object = None                  # SymbolicIntervention (records, truth, prompt length)
    prompt: str = "few_shot"                     # few_shot | cot
    # True when the method changes nothing at positions before the last prompt token P-1 (its hooks
    # read and write only at >= P-1): training then runs the prefix once without gradients
    # (answer_cross_entropy's prefix_frozen). False for methods that change every position (LoRA).
    prefix_frozen: bool = False
    # The first residual layer whose input depends on the trained parameters (teacher forcing): the
    # states entering the layers below are the same in every step (prefix_cache.py keeps them).
    trained_from: int = 0
    # Answers a batch itself instead of the model's generation: respond(prompts, max_new_tokens) ->
    # texts (read_and_print); such a method has no answer distribution (cross-entropy NaN).
    respond: Optional[Callable[[Sequence[Sequence[int]], int], list[str]]] = None


@dataclass
class Examples:
    """A split, tokenised once: rows plus prompt and answer token ids."""
    rows: pd.DataFrame                 # problem_type, x, y, question (as asked), solution
    prompts: list[list[int]]
    answers: list[list[int]]           # answer tokens, without <|eot_id|>
    type_ids: torch.Tensor             # [N] long, index into the engine's problem list
    words: bool = False                # numbers written in words (answers read in digits or words)

    def __len__(self) -> int:
        return len(self.rows)

    def truth(self, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(type ids, x, y) [len(idx)] long of the given rows (for simulate_perfect_encoder)."""
        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        xy = self.__dict__.get("_xy")  # the operand columns as tensors, converted once per split
        if xy is None:
            xy = self.__dict__["_xy"] = tuple(torch.tensor(self.rows[c].to_numpy(dtype=np.int64)) for c in ("x", "y"))
        return self.type_ids[idx], xy[0][idx], xy[1][idx]

    def take(self, idx) -> "Examples":
        idx = np.asarray(idx, dtype=np.int64)
        return Examples(self.rows.iloc[idx].reset_index(drop=True), [self.prompts[i] for i in idx],
                        [self.answers[i] for i in idx], self.type_ids[torch.as_tensor(idx)], self.words)


def build_examples(rows: pd.DataFrame, formatter, split: str, *, seed: int, complexity: int,
                   limit_solution_digits: bool, problem_list: Sequence[str], prompt: str = "few_shot",
                   vary_format: bool = False, words: bool = False) -> Examples:
    """Tokenise the prompts (few-shot examples drawn from row_rng(seed, split, row index)) and answers.

    `vary_format` (--modify_question_format) asks each row in a phrasing drawn from
    row_rng(seed, split + "/format", row) instead of its own text; `words`
    (--test_with_non_numerical_rep) writes the question's numbers, the examples' answers and the
    expected answer in words. Either way the question is rebuilt from (type, x, y). Rows with a
    follow_up column (symbolic/two_step.py) get few-shot examples of their follow-up kind."""
    tok = formatter.tokenizer
    index = {p: i for i, p in enumerate(problem_list)}
    kw = dict(complexity=complexity, limit_solution_digits=limit_solution_digits)
    rows = rows.reset_index(drop=True)
    if vary_format or words:
        rows = rows.assign(question=[
            question_text(r.problem_type, r.x, r.y, words=words, **kw,
                          variant=int(row_rng(seed, split + "/format", i).integers(len(QUESTION_VARIANTS[r.problem_type])))
                          if vary_format else 0)
            for i, r in enumerate(rows.itertuples(index=False))])
    prompts, answers = [], []
    for i, r in enumerate(rows.itertuples(index=False)):
        if prompt == "cot":
            msgs = cot_dialog(r.question)
        else:
            msgs = few_shot_dialog(r.problem_type, r.question, row_rng(seed, split, i), words=words, **kw,
                                   follow_up=getattr(r, "follow_up", None))
        prompts.append(formatter.encode_dialog_prompt(msgs))
        answer = number_words(int(r.solution)) if words else str(int(r.solution))
        answers.append(tok.encode(answer, bos=False, eos=False))
    type_ids = torch.tensor([index.get(p, -1) for p in rows["problem_type"]], dtype=torch.long)
    return Examples(rows, prompts, answers, type_ids, words)


def teacher_batch(prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], fill_id: int):
    """Left-padded prompts + right-padded answers.

    Returns tokens [B, P+A], pad_lengths [B], P, targets [B, A] (IGNORE where padded) and the
    output positions [A] = P-1 .. P+A-2 (the logits there predict the answer tokens).
    """
    B = len(prompts)
    P = max(len(p) for p in prompts)
    A = max(len(a) for a in answers)
    tokens = torch.full((B, P + A), fill_id, dtype=torch.long)
    targets = torch.full((B, A), IGNORE, dtype=torch.long)
    pad = torch.empty(B, dtype=torch.long)
    for b, (p, a) in enumerate(zip(prompts, answers)):
        pad[b] = P - len(p)
        tokens[b, P - len(p):P] = torch.as_tensor(p)
        tokens[b, P:P + len(a)] = torch.as_tensor(a)
        targets[b, :len(a)] = torch.as_tensor(a)
    return tokens, pad, P, targets, torch.arange(P - 1, P + A - 1)


def answer_cross_entropy(model, prompts, answers, *, fill_id: int, intervention=None, truth=None,
                         device=None, prefix_frozen: bool = False, prefix_cache: Optional[PrefixCache] = None,
                         keys: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Teacher-forced mean token cross-entropy of each sample's answer: [B] float32.

    Logits are computed only at the N real answer tokens (not at padding), [N, vocab].
    `prefix_frozen` (the method changes nothing before the last prompt position P-1, see
    Method.prefix_frozen): positions < P-1 run first under no_grad into a KV cache, then
    last prompt token + answers run with gradients on top of it. Same loss and gradients as the one
    forward over everything (causal attention), without the prefix's backward and saved activations.
    With `prefix_cache` (prefix_frozen only) the prefixes of rows `keys` are taken from it when all
    are there, and stored in it otherwise; with its from_layer L > 0 a cached batch runs only the
    layers L.. from the kept residuals (prefix_cache.py).
    """
    tokens, pad, P, targets, _ = teacher_batch(prompts, answers, fill_id)
    device = device or next(model.parameters()).device
    lengths = torch.tensor([len(a) for a in answers], dtype=torch.long)  # [B]
    rows = torch.repeat_interleave(torch.arange(len(answers)), lengths)  # [N] sample of each answer token
    tok_pos = torch.cat([torch.arange(int(n)) for n in lengths]) if len(answers) else torch.zeros(0, dtype=torch.long)
    target = targets[rows, tok_pos]  # [N]
    ctx = contextlib.nullcontext()
    if intervention is not None:
        intervention.set_truth(*truth) if truth is not None else intervention.set_truth()
        ctx = intervention.prompt_length(P)
    tokens, pad = tokens.to(device), pad.to(device)
    start = P - 1 if prefix_frozen and P > 1 else 0
    out = (rows.to(device), (tok_pos + P - 1 - start).to(device))  # chunk positions P-1+k predict token k
    with ctx:
        if start == 0:
            logits = model(tokens, 0, pad_lengths=pad, output_positions=out)  # [N,V]
        else:
            with model.kv_cache(tokens.shape[0], tokens.shape[1]):
                if prefix_cache is not None and prefix_cache.has(keys):
                    prefix_cache.load(model, keys, start)
                    suffix = None if not prefix_cache.from_layer else (
                        prefix_cache.from_layer, prefix_cache.suffix_state(keys, intervention))  # [B,A,D]
                    logits = model(None if suffix else tokens[:, start:], start, pad_lengths=pad, output_positions=out,
                                   start_at=suffix)  # [N,V]
                else:
                    with torch.no_grad():
                        model(tokens[:, :start], 0, pad_lengths=pad, output_positions=torch.zeros(0, dtype=torch.long))
                    capture = (prefix_cache.capturing(model, keys, lengths.tolist(), intervention)
                               if prefix_cache is not None else contextlib.nullcontext())
                    with capture:
                        logits = model(tokens[:, start:], start, pad_lengths=pad, output_positions=out)  # [N,V]
                    if prefix_cache is not None:
                        prefix_cache.store(model, keys, pad, start)
    ce = F.cross_entropy(logits, target.to(device), reduction="none")  # [N]
    total = torch.zeros(len(answers), dtype=ce.dtype, device=device).index_add(0, rows.to(device), ce)  # [B]
    return total / lengths.to(device).clamp_min(1)


def lr_factor(lr_decay: dict[int, float], step: int) -> float:
    """Cumulative multiplier after `step` optimizer steps."""
    return math.prod(m for s, m in lr_decay.items() if step >= int(s))


def samples_per_step(opts: FineTuneOptions, dp_size: int = 1) -> int:
    """Rows per optimizer step over all data-parallel groups (each group takes n_samples x ratio)."""
    return opts.n_samples * opts.inference_to_backprop_ratio * dp_size


def steps_per_epoch(n_rows: int, opts: FineTuneOptions, from_csv: bool, dp_size: int = 1) -> int:
    sps = samples_per_step(opts, dp_size)
    return math.ceil(n_rows / sps) if from_csv else opts.num_steps


def _allreduce_grads(params, info: DistInfo) -> None:
    """Data parallel: sum the gradients of the trained parameters over the data-parallel group (each
    rank already divided by the step's global sample count, so the sum is the mean over the step).
    Equivalent to DDP on the trainable modules, which cannot wrap them here because they run inside
    the frozen model's hooks, not through their own forward. Model-parallel peers hold the same rows
    and the same (replicated) parameters, so they are not part of the reduction."""
    if info.dp_size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective for all parameters
    all_reduce_dp(flat, info)
    off = 0
    for p, g in zip(params, grads):
        p.grad = flat[off:off + g.numel()].view_as(g)
        off += g.numel()


def _solving_truth(method: Method, opts: FineTuneOptions) -> ContextManager:
    """--train_on_true_operands: the solver gets each training row's true operands and type."""
    iv = method.intervention
    return iv.solving_truth() if opts.train_on_true_operands and iv is not None else contextlib.nullcontext()


def train(llama, method: Method, train_ex: Examples, opts: FineTuneOptions, *, from_csv: bool, seed: int,
          tracker=None, info: DistInfo = DistInfo(), validate: Optional[Callable[[int], dict]] = None,
          state: Optional[TrainingState] = None) -> list[dict]:
    """Train `method.params` on `train_ex`; returns the per-step log. `validate(epoch)` runs after every
    opts.validation_interval-th epoch and after the last.

    With a `state` (train_state.py) training resumes from the saved state when there is one, saves
    every `state.every` steps and at the end, and on Ctrl-C/SIGTERM finishes its step, saves and
    raises Interrupted naming the file."""
    model, eot = llama.model, llama.tokenizer.eot_id
    params = list(method.params)
    if not params:
        return []
    sps = samples_per_step(opts, info.dp_size)
    spe = steps_per_epoch(len(train_ex), opts, from_csv, info.dp_size)
    broadcast_dp(params, info)  # every data-parallel group starts from the same weights (as DDP does)
    optim = torch.optim.Adam(params, lr=method.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(opts.lr_decay, s))
    answers = [a + [eot] for a in train_ex.answers]  # training also learns to stop
    use_cache = opts.cache_prompt_prefixes and method.prefix_frozen and opts.prefix_split
    cache = PrefixCache(method.trained_from) if use_cache else None
    log, step, epoch0, s0, validated = [], 0, 0, 0, []
    saved = state.load() if state is not None else None
    if saved is not None:
        _restore(saved, method, params, optim, sched, len(train_ex))
        log, step, epoch0, s0, validated = saved["log"], saved["step"], saved["epoch"], saved["step_in_epoch"], saved["validated"]
        if info.is_main:
            print(f"resuming {method.name} training from {state.path} (step {step} of {spe * opts.num_epochs})")
    steps = gather_objects(step, info)  # every rank reads the state rank 0 writes
    if len(set(steps)) > 1:
        raise ConfigError(f"ranks found different training states in {state.path} (steps {steps}): "
                          f"--programs_dir must be one folder shared by every machine")
    device = next(model.parameters()).device

    def snapshot(epoch: int, next_s: int, order) -> dict:
        return {"method": method.name, "step": step, "epoch": epoch, "step_in_epoch": next_s,
                "order": torch.as_tensor(order, dtype=torch.long), "validated": list(validated),
                "params": [p.detach().cpu().clone() for p in params], "optimizer": optim.state_dict(),
                "scheduler": sched.state_dict(), "rng": rng_state(), "log": log}

    def order_of(epoch: int) -> np.ndarray:  # the data order of an epoch: a function of (seed, epoch) only
        return np.random.default_rng([seed, epoch]).permutation(len(train_ex))

    with deferred_interrupts() as pending:
        for epoch in range(epoch0, opts.num_epochs):
            order = saved["order"].numpy() if saved is not None and epoch == epoch0 else order_of(epoch)
            first = s0 if epoch == epoch0 else 0
            bar = progress(range(first, spe), desc=f"train {method.name} epoch {epoch + 1}/{opts.num_epochs}",
                           unit="step", enabled=info.is_main)
            for s in bar:
                if from_csv:  # the last step of an epoch may be short
                    idx = order[s * sps:(s + 1) * sps]
                else:  # num_steps steps; random mode wraps around the rows
                    idx = order[np.arange(s * sps, (s + 1) * sps) % len(order)]
                mine = idx[row_slice(len(idx), info)]
                optim.zero_grad(set_to_none=True)
                total = torch.zeros((), device=device)
                with method.attach(), _solving_truth(method, opts):
                    for m0 in range(0, len(mine), opts.n_samples):
                        mb = mine[m0:m0 + opts.n_samples]
                        truth = train_ex.truth(mb)
                        ce = answer_cross_entropy(model, [train_ex.prompts[i] for i in mb], [answers[i] for i in mb],
                                                  fill_id=eot, intervention=method.intervention, truth=truth,
                                                  prefix_frozen=method.prefix_frozen and opts.prefix_split,
                                                  prefix_cache=cache, keys=mb)
                        (ce.sum() / len(idx)).backward()
                        total = total + ce.detach().sum()
                _allreduce_grads(params, info)
                optim.step()
                sched.step()
                step += 1
                all_reduce_dp(total, info)
                loss = float(total) / len(idx)
                rec = {"step": step, "epoch": epoch, "loss": loss, "lr": sched.get_last_lr()[0]}
                for name, p in _skips(method):
                    rec[name] = float(p)
                log.append(rec)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{rec['lr']:.2e}", refresh=False)
                if tracker is not None:
                    tracker.log({f"{method.name}/{k}": v for k, v in rec.items() if k != "step"}, step=step)
                stop = any_rank(bool(pending), info)
                if state is not None and (stop or state.due(step) or s + 1 == spe):
                    state.save(snapshot(epoch, s + 1, order))
                if stop:
                    bar.close()
                    raise _interrupted(pending, state, method, step)
            bar.close()
            if cache is not None and epoch == epoch0 and tracker is not None:
                tracker.log({f"{method.name}/prefix_cache_bytes": cache.nbytes()}, step=step)
            due = opts.validation_interval > 0 and (epoch + 1 == opts.num_epochs
                                                    or (epoch + 1) % opts.validation_interval == 0)
            if validate is not None and due and epoch not in validated:
                val = validate(epoch)
                if tracker is not None and val:
                    tracker.log({f"{method.name}/val_{k}": v for k, v in val.items()} | {"epoch": epoch})
                validated.append(epoch)
                if state is not None:
                    last = epoch + 1 == opts.num_epochs
                    state.save(snapshot(epoch, spe, order) if last else snapshot(epoch + 1, 0, order_of(epoch + 1)))
            if any_rank(bool(pending), info):
                raise _interrupted(pending, state, method, step)
    return log


def _restore(saved: dict, method: Method, params, optim, sched, n_rows: int) -> None:
    """Parameters, optimizer, schedule and random states of a saved training state, checked."""
    if saved["method"] != method.name or len(saved["params"]) != len(params) or any(
            a.shape != p.shape for a, p in zip(saved["params"], params)):
        raise DataError(f"the saved training state holds {saved['method']} parameters of other shapes; "
                        f"rerun with --restart 1 to start over")
    if len(saved["order"]) != n_rows:
        raise DataError(f"the saved training state ordered {len(saved['order'])} training rows, there are "
                        f"{n_rows} now; rerun with --restart 1 to start over")
    with torch.no_grad():
        for p, a in zip(params, saved["params"]):
            p.copy_(a.to(p.device, p.dtype))
    optim.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])


def _interrupted(pending: list[int], state, method: Method, step: int) -> Interrupted:
    sig = pending[0] if pending else signal.SIGINT
    what = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    where = (f"training state after step {step} saved in {state.path}; rerun the same command to resume"
             if state is not None and state.enabled else f"stopped after step {step}")
    return Interrupted(f"{what}: {method.name} {where}", 143 if sig == signal.SIGTERM else 130)


def _skips(method: Method):
    iv = method.intervention
    if iv is None or not hasattr(iv, "merges"):
        return []
    return [(f"skip_weights_{l}", m.skip.detach()) for l, m in iv.merges.items() if m.skip.requires_grad]
