"""One checkpoint format as one object: how a path is recognised, what it needs, how it is read.

Every format is a ``CheckpointFormat`` instance defined at the end of its own reader module
(checkpoint.py ``META``, hf_checkpoint.py ``HF``, gguf_checkpoint.py ``GGUF``) and listed once in
formats.py's ``FORMATS``, which detection and ``Checkpoint`` loop over. Adding a format is a reader
module ending in its object plus its entry in ``FORMATS`` (docs/ARCHITECTURE.md, formats.py).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # the readers get the Checkpoint of formats.py, which imports this module
    from neurosymbolic_llm.llama.formats import Checkpoint
    from neurosymbolic_llm.llama.model import ModelArgs, Transformer


class CheckpointFormat(ABC):
    """A checkpoint format. The class attributes describe it, ``find``/``refusal`` recognise it, and
    the readers take the ``Checkpoint`` (``.path``: what ``find`` returned, ``.tokenizer_path``,
    ``.handle()``: what ``open`` returned, opened once per checkpoint)."""

    name: str  # "meta", "hf", "gguf": Checkpoint.format, written into the run manifests
    title: str  # what messages call one checkpoint: "Meta folder" (plural: + "s")
    needs: str  # "a Meta folder needs ...": every format's is listed when none recognises a path
    # the file of a folder that holds the architecture (named in errors); its presence makes a
    # folder this format's even when incomplete (None: a single file holds everything)
    marker: Optional[str] = None
    tokenizer_override = False  # --tokenizer_path may replace the tokenizer
    model_parallel = False  # several shards loaded by several processes (torchrun)
    exact_vocab = False  # the tokenizer must have exactly vocab_size tokens (else: at most)

    def __repr__(self) -> str:
        return f"<{self.name} checkpoint format>"

    @abstractmethod
    def find(self, path: Path, names: Optional[list[str]]) -> Optional[Path]:
        """What to read when ``path`` holds this format, else None. ``names``: the sorted entries
        of the folder ``path``; None when ``path`` is a file."""

    def refusal(self, path: Path, names: Optional[list[str]], found: str) -> Optional[str]:
        """The one-line error for a path that is almost this format (a Meta folder without
        params.json), else None. ``found``: the folder's entries as messages show them."""
        return None

    def open(self, path: Path) -> Any:
        """What the readers share, parsed once per checkpoint (None: nothing)."""
        return None

    def tokenizer_file(self, ckpt: Checkpoint) -> Path:
        """The file the tokenizer is read from (named in errors)."""
        return ckpt.path

    @abstractmethod
    def args(self, ckpt: Checkpoint, **runtime) -> ModelArgs:
        """The architecture without reading weights (``runtime``: max_seq_len, max_batch_size)."""

    @abstractmethod
    def load_model(self, ckpt: Checkpoint, **kw) -> Transformer:
        """The frozen network (``kw``: max_seq_len, max_batch_size, device, dtype, and
        model_parallel_size for a ``model_parallel`` format)."""

    @abstractmethod
    def tokenizer(self, ckpt: Checkpoint) -> tuple[Any, Optional[str]]:
        """(BPETokenizer, chat template or None: the chat format follows the special tokens)."""

    @abstractmethod
    def weight_samples(self, ckpt: Checkpoint):
        """The weights' samples (neurosymbolic_llm/llama/fingerprint.py: ``WeightSamples``)."""

    @abstractmethod
    def tokenizer_fingerprint(self, ckpt: Checkpoint) -> str:
        """A digest of everything the tokenizer and chat format are read from."""
