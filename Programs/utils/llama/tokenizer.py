"""Llama 3 tokenizer (tiktoken BPE + 256 special tokens) and Meta's chat format.

Padding: Llama 3 has no pad token (Meta's reference uses -1, which cannot index an embedding). We
pad with ``<|finetune_right_pad_id|>`` (id 128004), the token Meta reserves for padding in Llama 3.1;
pad positions are always masked, so the choice never changes a result.
"""
from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Iterator, Sequence

import tiktoken
from tiktoken.load import load_tiktoken_bpe

from utils.llama.errors import CheckpointError

PAT_STR = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
           r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
NUM_RESERVED_SPECIAL_TOKENS = 256
_NAMED_SPECIAL = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
    "<|image|>",
]
# tiktoken panics on very long inputs, and on long runs of (non-)whitespace: split first.
_MAX_CHARS = 400_000
_MAX_RUN = 25_000


def default_tokenizer_path() -> Path:
    """The Llama 3 ``tokenizer.model`` shipped inside the installed ``llama_models`` package."""
    try:
        path = importlib.resources.files("llama_models") / "llama3" / "tokenizer.model"
    except ModuleNotFoundError as e:  # pragma: no cover
        raise CheckpointError("the package llama-models is not installed: it provides the Llama 3 "
                              "tokenizer.model (pip install llama-models)") from e
    return Path(str(path))


def resolve_tokenizer_path(ckpt_dir, tokenizer_path=None) -> Path:
    """The tokenizer a checkpoint folder is used with: ``tokenizer_path`` when given, else the
    folder's ``tokenizer.model``, else the one shipped in ``llama_models`` (every Llama 3 model has
    the same tokenizer, so a folder of weights alone still works)."""
    if tokenizer_path:
        path = Path(tokenizer_path).expanduser()
        if not path.is_file():
            raise CheckpointError(f"tokenizer {path} not found: expected a Llama 3 tiktoken tokenizer.model")
        return path
    path = Path(ckpt_dir).expanduser() / "tokenizer.model"
    return path if path.is_file() else default_tokenizer_path()


class Tokenizer:
    def __init__(self, model_path: str | os.PathLike):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise CheckpointError(f"tokenizer file {model_path} not found: expected a Llama 3 "
                                  f"tiktoken tokenizer.model")
        try:
            ranks = load_tiktoken_bpe(str(model_path))
        except Exception as e:
            raise CheckpointError(f"{model_path} is not a tiktoken BPE file (a Llama 3 "
                                  f"tokenizer.model): {e}") from e
        n_base = len(ranks)
        names = _NAMED_SPECIAL + [f"<|reserved_special_token_{2 + i}|>"
                                  for i in range(NUM_RESERVED_SPECIAL_TOKENS - len(_NAMED_SPECIAL))]
        self.special_tokens: dict[str, int] = {t: n_base + i for i, t in enumerate(names)}
        self.model = tiktoken.Encoding(name=model_path.name, pat_str=PAT_STR,
                                       mergeable_ranks=ranks, special_tokens=self.special_tokens)
        self.model_path = model_path
        self.n_words: int = self.model.n_vocab
        self.bos_id: int = self.special_tokens["<|begin_of_text|>"]
        self.eos_id: int = self.special_tokens["<|end_of_text|>"]
        self.eot_id: int = self.special_tokens["<|eot_id|>"]
        self.eom_id: int = self.special_tokens["<|eom_id|>"]
        self.pad_id: int = self.special_tokens["<|finetune_right_pad_id|>"]
        self.stop_tokens: set[int] = {self.eos_id, self.eom_id, self.eot_id}

    def encode(self, s: str, *, bos: bool, eos: bool) -> list[int]:
        """Token ids of ``s``; special-token text inside ``s`` is encoded as plain text."""
        if not isinstance(s, str):
            raise TypeError(f"Tokenizer.encode expects a str, got {type(s).__name__}")
        ids: list[int] = [self.bos_id] if bos else []
        for i in range(0, len(s), _MAX_CHARS):
            for piece in _split_runs(s[i:i + _MAX_CHARS], _MAX_RUN):
                ids.extend(self.model.encode(piece, allowed_special=set(), disallowed_special=()))
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.model.decode([int(t) for t in ids])


def _split_runs(s: str, max_run: int) -> Iterator[str]:
    """Cut ``s`` so that no piece holds more than ``max_run`` consecutive whitespace or consecutive
    non-whitespace characters (the cut falls inside such a run, which a BPE would split anyway)."""
    start, run, prev_space = 0, 0, None
    for i, ch in enumerate(s):
        space = ch.isspace()
        run = run + 1 if space == prev_space else 1
        prev_space = space
        if run > max_run:
            yield s[start:i]
            start, run = i, 1
    yield s[start:]


class ChatFormat:
    """Meta's Llama 3 dialog encoding (no system-prompt preamble)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def encode_header(self, message: dict) -> list[int]:
        t = self.tokenizer
        return ([t.special_tokens["<|start_header_id|>"]] + t.encode(message["role"], bos=False, eos=False)
                + [t.special_tokens["<|end_header_id|>"]] + t.encode("\n\n", bos=False, eos=False))

    def encode_message(self, message: dict) -> list[int]:
        return (self.encode_header(message)
                + self.tokenizer.encode(message["content"].strip(), bos=False, eos=False)
                + [self.tokenizer.eot_id])

    def encode_dialog_prompt(self, messages: Sequence[dict]) -> list[int]:
        """BOS, every message, then the open assistant header (the model answers next)."""
        ids = [self.tokenizer.bos_id]
        for m in messages:
            ids.extend(self.encode_message(m))
        ids.extend(self.encode_header({"role": "assistant", "content": ""}))
        return ids
