"""Meta's Llama 3 tokenizer (``tokenizer.model``: tiktoken BPE + 256 special tokens) and where to
find it. Other formats build the same ``BPETokenizer`` from tokenizer.json or GGUF metadata
(neurosymbolic_llm/llama/bpe.py); chat formats live in neurosymbolic_llm/llama/chat.py (``ChatFormat`` here is Llama 3's).

Padding: Llama 3 has no pad token (Meta's reference uses -1, which cannot index an embedding). We
pad with ``<|finetune_right_pad_id|>`` (id 128004), the token Meta reserves for padding in Llama 3.1;
pad positions are always masked, so the choice never changes a result.
"""
from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from tiktoken.load import load_tiktoken_bpe

from neurosymbolic_llm.llama.bpe import LLAMA3_PATTERN, BPETokenizer
from neurosymbolic_llm.llama.chat import Llama3ChatFormat as ChatFormat  # noqa: F401  (re-exported)
from neurosymbolic_llm.llama.errors import CheckpointError

PAT_STR = LLAMA3_PATTERN
NUM_RESERVED_SPECIAL_TOKENS = 256
_NAMED_SPECIAL = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
    "<|image|>",
]


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


class Tokenizer(BPETokenizer):
    """Llama 3's tokenizer from a tiktoken ``tokenizer.model`` (ranks are token ids)."""

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
        if sorted(ranks.values()) != list(range(n_base)):
            raise CheckpointError(f"{model_path}: token ids must be 0..{n_base - 1} without gaps")
        names = _NAMED_SPECIAL + [f"<|reserved_special_token_{2 + i}|>"
                                  for i in range(NUM_RESERVED_SPECIAL_TOKENS - len(_NAMED_SPECIAL))]
        special = {t: n_base + i for i, t in enumerate(names)}
        id_bytes = [b""] * n_base + [t.encode() for t in names]
        for b, i in ranks.items():
            id_bytes[i] = b
        self.model_path = model_path
        self.eom_id: int = special["<|eom_id|>"]
        super().__init__(name=model_path.name, ranks=ranks, rank_ids=None, id_bytes=id_bytes,
                         pattern=PAT_STR, special_tokens=special,
                         bos_id=special["<|begin_of_text|>"], eos_id=special["<|end_of_text|>"],
                         eot_id=special["<|eot_id|>"], pad_id=special["<|finetune_right_pad_id|>"],
                         stop_tokens=(special["<|end_of_text|>"], special["<|eom_id|>"],
                                      special["<|eot_id|>"]))
