"""Which checkpoint format a path holds, and format-independent access to it.

``FORMATS`` lists one ``CheckpointFormat`` object per format (neurosymbolic_llm/llama/
checkpoint_format.py), each defined beside its reader: a Meta folder (checkpoint.py), a Hugging Face
folder (hf_checkpoint.py), a GGUF file or a folder holding exactly one (gguf_checkpoint.py).
Detection and ``Checkpoint`` only loop over it, so a new format is its reader module plus its entry
here.

``open_checkpoint(path, tokenizer_path=None) -> Checkpoint`` detects the format once;
``Checkpoint.args(...)``, ``.load_model(...)``, ``.load_tokenizer() -> (tokenizer, chat format)``,
``.fingerprint()``, ``.weight_samples()`` and ``.tokenizer_fingerprint()`` then work the same for
every format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from neurosymbolic_llm.llama.chat import chat_format_for
from neurosymbolic_llm.llama.checkpoint import META
from neurosymbolic_llm.llama.checkpoint_format import CheckpointFormat
from neurosymbolic_llm.llama.errors import CheckpointError, LlamaError
from neurosymbolic_llm.llama.gguf_checkpoint import GGUF
from neurosymbolic_llm.llama.hf_checkpoint import HF
from neurosymbolic_llm.llama.model import ModelArgs, Transformer

# Detection tries them in this order: a folder holding complete files of both Hugging Face and
# Meta is read as Hugging Face.
FORMATS: tuple[CheckpointFormat, ...] = (HF, META, GGUF)


def _needs() -> str:
    """What each format needs, for an error about a path that is none of them."""
    return "; ".join(f.needs for f in FORMATS)


def _titles(flag: str, plural: bool) -> str:
    """The formats that have ``flag``, as messages name them: 'Meta folders' or 'a Meta folder'."""
    return " or ".join(f"{f.title}s" if plural else f"a {f.title}" for f in FORMATS if getattr(f, flag))


def _detect(path) -> tuple[CheckpointFormat, Path]:
    path = Path(path).expanduser()
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
    elif path.is_file():
        names = None
    else:
        raise CheckpointError(f"checkpoint {path} does not exist: {_needs()}")
    # a folder holding a format's architecture file is that format's, or an error saying what it lacks
    marked = [f for f in FORMATS if names is not None and f.marker in names]
    for fmt in marked or FORMATS:
        found = fmt.find(path, names)
        if found is not None:
            return fmt, found
    listed = names or []
    shown = ", ".join(listed[:8]) + (f", ... ({len(listed)} entries)" if len(listed) > 8 else "")
    for fmt in FORMATS:
        reason = fmt.refusal(path, names, shown)
        if reason is not None:  # a file names nothing to add, so it lists what each format needs
            raise CheckpointError(reason if names is not None else f"{reason}: {_needs()}")
    raise CheckpointError(f"{path} holds [{shown or 'nothing'}], which is no checkpoint format "
                          f"known: {_needs()}")


def detect_format(path) -> tuple[str, Path]:
    """(format name, the path to read) of a checkpoint; a one-line error saying what was found and
    what each format needs otherwise."""
    fmt, found = _detect(path)
    return fmt.name, found


@dataclass
class Checkpoint:
    """A checkpoint whose format is known. ``tokenizer_path`` overrides the tokenizer (formats with
    ``tokenizer_override``: Meta)."""
    fmt: CheckpointFormat
    path: Path
    tokenizer_path: Optional[Path] = None
    _handle: Any = field(default=None, repr=False)  # what fmt.open returned (GGUF: the parsed file)
    _samples: Any = field(default=None, repr=False)  # the weight samples, read once

    @property
    def format(self) -> str:
        """The format's name: "meta", "hf" or "gguf"."""
        return self.fmt.name

    def handle(self) -> Any:
        """What the format's readers share (``CheckpointFormat.open``), opened once."""
        if self._handle is None:
            self._handle = self.fmt.open(self.path)
        return self._handle

    def close(self) -> None:
        """Drop the shared handle (a GGUF file's metadata and mapping); the model keeps what it needs."""
        self._handle = None

    def args(self, **runtime) -> ModelArgs:
        """The architecture without loading weights (``runtime``: max_seq_len, max_batch_size)."""
        return self.fmt.args(self, **runtime)

    def load_model(self, *, max_seq_len: int = 2048, max_batch_size: int = 32, device="cpu",
                   dtype: torch.dtype = torch.float32,
                   model_parallel_size: Optional[int] = None) -> Transformer:
        """The frozen network in eval mode on ``device`` in ``dtype``. Model parallelism (several
        shards, torchrun) is available for formats with ``model_parallel`` only (Meta)."""
        kw = dict(max_seq_len=max_seq_len, max_batch_size=max_batch_size, device=device, dtype=dtype)
        if self.fmt.model_parallel:
            kw["model_parallel_size"] = model_parallel_size
        elif model_parallel_size not in (None, 1):
            raise LlamaError(f"{self.path}: model parallelism needs {_titles('model_parallel', False)}; "
                             f"convert this {self.format} checkpoint first (save_checkpoint + reshard)")
        return self.fmt.load_model(self, **kw)

    def load_tokenizer(self):
        """(tokenizer, chat format) of the model: the chat format follows the chat template, or the
        special tokens where there is none (chat.py)."""
        if self.tokenizer_path and not self.fmt.tokenizer_override:
            raise LlamaError(f"--tokenizer_path applies to {_titles('tokenizer_override', True)} only; the "
                             f"{self.format} checkpoint {self.path} carries its own tokenizer")
        tok, template = self.fmt.tokenizer(self)
        return tok, chat_format_for(tok, template, str(self.fmt.tokenizer_file(self)))

    def check_vocabulary(self, tokenizer, args: ModelArgs) -> None:
        """The tokenizer's ids must fit the embedding (and fill it, for ``exact_vocab`` formats)."""
        exact = self.fmt.exact_vocab
        if tokenizer.n_words > args.vocab_size or (exact and tokenizer.n_words != args.vocab_size):
            args_file = self.path / self.fmt.marker if self.fmt.marker else self.path
            raise CheckpointError(f"tokenizer {self.fmt.tokenizer_file(self)} has {tokenizer.n_words} "
                                  f"tokens but {args_file} says vocab_size {args.vocab_size}: "
                                  f"{'they must be equal' if exact else 'the embedding has too few rows'}")

    def weight_samples(self):
        """The weights' samples (neurosymbolic_llm/llama/fingerprint.py: ``WeightSamples``; read once)."""
        if self._samples is None:
            self._samples = self.fmt.weight_samples(self)
        return self._samples

    def fingerprint(self) -> str:
        """Fingerprint of the weights' content, the same for one model in any format and the same
        dtype (neurosymbolic_llm/llama/fingerprint.py)."""
        return self.weight_samples().digest()

    def tokenizer_fingerprint(self) -> str:
        return self.fmt.tokenizer_fingerprint(self)


def open_checkpoint(path, tokenizer_path=None) -> Checkpoint:
    """Detect the format of ``path`` (see the module docstring)."""
    fmt, found = _detect(path)
    return Checkpoint(fmt, found, Path(tokenizer_path).expanduser() if tokenizer_path else None)
