"""Build a Llama (checkpoint + tokenizer) and generate from batches of left-padded prompts."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch

from neurosymbolic_llm.llama.errors import LlamaError
from neurosymbolic_llm.llama.formats import open_checkpoint
from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.llama.static_decode import choose_mode, static_cache_len, stepper
from neurosymbolic_llm.llama.tokenizer import ChatFormat


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device) -> torch.dtype:
    """bf16 on CUDA (fp16 where bf16 is unsupported), float32 on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int):
    """-> (tokens [B,S] long, pad_lengths [B] long): every row ends at position S-1."""
    if len(seqs) == 0:
        raise LlamaError("left_pad: no sequences given")
    S = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), S), int(pad_id), dtype=torch.long)
    pad_lengths = torch.empty(len(seqs), dtype=torch.long)
    for b, s in enumerate(seqs):
        pad_lengths[b] = S - len(s)
        if len(s):
            tokens[b, S - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
    return tokens, pad_lengths


def sample_top_p(probs: torch.Tensor, p: float, generator: Optional[torch.Generator] = None):
    """probs [B,V] -> [B] ids drawn from the smallest set of tokens whose mass reaches ``p``."""
    sorted_p, idx = torch.sort(probs, dim=-1, descending=True)  # [B,V]
    outside = torch.cumsum(sorted_p, dim=-1) - sorted_p > p  # [B,V]
    sorted_p = sorted_p.masked_fill(outside, 0.0)
    choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)  # [B,1]
    return torch.gather(idx, -1, choice)[:, 0]  # [B]


class Llama:
    """A model with its tokenizer and chat format. ``formatter`` defaults to Llama 3's format."""

    def __init__(self, model: Transformer, tokenizer, args: ModelArgs, device: torch.device,
                 fingerprint: str = "", ckpt_dir: Optional[Path] = None, formatter=None,
                 tokenizer_fingerprint: str = "", checkpoint_format: str = "meta", weight_samples=None):
        self.model = model
        self.tokenizer = tokenizer
        self.formatter = formatter if formatter is not None else ChatFormat(tokenizer)
        self.args = args
        self.device = device
        self.fingerprint = fingerprint
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.ckpt_dir = ckpt_dir
        self.checkpoint_format = checkpoint_format
        self.weight_samples = weight_samples  # fingerprint.WeightSamples (None: not read)

    @staticmethod
    def build(ckpt_dir, tokenizer_path=None, max_seq_len: int = 2048, max_batch_size: int = 64,
              device=None, dtype: Optional[torch.dtype] = None,
              model_parallel_size: Optional[int] = None, seed: int = 1) -> "Llama":
        """Load a checkpoint of any format (neurosymbolic_llm/llama/formats.py: a Meta folder, a Hugging Face
        folder or a GGUF file) with its tokenizer and chat format. ``tokenizer_path`` overrides
        the tokenizer of a Meta folder (see ``resolve_tokenizer_path``)."""
        ckpt = open_checkpoint(ckpt_dir, tokenizer_path)
        args = ckpt.args()
        tokenizer, formatter = ckpt.load_tokenizer()
        ckpt.check_vocabulary(tokenizer, args)
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype if dtype is not None else default_dtype(device)
        torch.manual_seed(seed)
        model = ckpt.load_model(max_seq_len=max_seq_len, max_batch_size=max_batch_size,
                                device=device, dtype=dtype, model_parallel_size=model_parallel_size)
        llama = Llama(model, tokenizer, model.args, device, ckpt.fingerprint(), ckpt.path, formatter,
                      ckpt.tokenizer_fingerprint(), ckpt.format, ckpt.weight_samples())
        ckpt.close()
        return llama

    def _check_prompts(self, prompt_tokens) -> None:
        if len(prompt_tokens) == 0:
            raise LlamaError("generate: no prompts given")
        if len(prompt_tokens) > self.args.max_batch_size:
            raise LlamaError(f"generate: {len(prompt_tokens)} prompts exceed max_batch_size "
                            f"{self.args.max_batch_size} (Llama.build(max_batch_size=...))")
        for b, p in enumerate(prompt_tokens):
            if len(p) == 0:
                raise LlamaError(f"generate: prompt {b} is empty")
            if len(p) > self.args.max_seq_len:
                raise LlamaError(f"generate: prompt {b} has {len(p)} tokens, longer than max_seq_len "
                                f"{self.args.max_seq_len} (Llama.build(max_seq_len=...))")

    @torch.no_grad()
    def generate(self, prompt_tokens: Sequence[Sequence[int]], max_gen_len: int,
                 temperature: float = 0.0, top_p: float = 0.9,
                 stop_tokens: Optional[Iterable[int]] = None, decode: Optional[str] = None) -> list[list[int]]:
        """Greedy (temperature 0) or top-p sampling for a batch of prompts (lists of ids).

        Returns the generated ids per row, cut before its first stop token (default: the
        tokenizer's stop tokens). At most ``max_gen_len`` tokens and ``max_seq_len`` in total.
        ``decode``: auto (CUDA graphs of the decode step where possible), eager, static or graph;
        see static_decode.py (default: $NSLLM_DECODE, else auto)."""
        self._check_prompts(prompt_tokens)
        pad_id = self.tokenizer.pad_id
        tokens, pad_lengths = left_pad(prompt_tokens, pad_id)
        tokens, pad_lengths = tokens.to(self.device), pad_lengths.to(self.device)
        B, S = tokens.shape
        n_new = max(0, min(int(max_gen_len), self.args.max_seq_len - S))
        stops = torch.tensor(sorted(self.tokenizer.stop_tokens if stop_tokens is None else set(stop_tokens)),
                             dtype=torch.long, device=self.device)
        out = torch.full((B, n_new), pad_id, dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        if n_new == 0:
            return [[] for _ in range(B)]
        mode = choose_mode(self.model, self.device, decode)
        with self.model.kv_cache(B, S + n_new if mode == "eager" else static_cache_len(S + n_new)):
            last = torch.tensor([S - 1], device=self.device)
            logits = self.model(tokens, 0, pad_lengths=pad_lengths, output_positions=last)[:, -1]  # [B,V]
            step = stepper(self.model, mode, pad_lengths, S + n_new)
            for i in range(n_new):
                if temperature > 0:
                    nxt = sample_top_p(torch.softmax(logits / temperature, dim=-1), top_p)
                else:
                    nxt = logits.argmax(-1)  # [B]
                nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
                out[:, i] = nxt
                done |= torch.isin(nxt, stops)
                if i + 1 == n_new or bool(done.all()):
                    break
                logits = step(nxt, S + i)  # [B,V]
        stop_set = set(stops.tolist())
        result = []
        for row in out.tolist():
            cut = next((j for j, t in enumerate(row) if t in stop_set), None)
            result.append(row[:cut] if cut is not None else row)
        return result
