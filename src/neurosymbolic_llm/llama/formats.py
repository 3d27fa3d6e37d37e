"""Which checkpoint format a path holds, and format-independent access to it.

- ``meta``: a folder with ``params.json`` and ``consolidated.*.pth`` (tokenizer: ``tokenizer.model``
  in the folder, an explicit path, or Llama 3's shipped one; see neurosymbolic_llm/llama/checkpoint.py).
- ``hf``: a folder with ``config.json`` and safetensors weights (``model.safetensors`` or
  ``model.safetensors.index.json`` + shards) and ``tokenizer.json`` (neurosymbolic_llm/llama/hf_checkpoint.py).
- ``gguf``: a GGUF file (by its magic bytes, whatever its name), or a folder holding exactly one
  ``*.gguf`` (neurosymbolic_llm/llama/gguf_checkpoint.py).

``open_checkpoint(path, tokenizer_path=None) -> Checkpoint`` detects the format once;
``Checkpoint.args(...)``, ``.load_model(...)``, ``.load_tokenizer() -> (tokenizer, chat format)``,
``.fingerprint()``, ``.weight_samples()`` and ``.tokenizer_fingerprint()`` then work the same for all
three.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from neurosymbolic_llm.llama.errors import CheckpointError, LlamaError
from neurosymbolic_llm.llama.model import ModelArgs, Transformer

FORMATS = ("meta", "hf", "gguf")
_NEEDS = ("a Meta folder needs params.json + consolidated.00.pth (+ tokenizer.model); "
          "a Hugging Face folder needs config.json + model.safetensors or "
          "model.safetensors.index.json with its shards + tokenizer.json; "
          "a GGUF checkpoint is one .gguf file")
_GGUF_MAGIC = b"GGUF"


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == _GGUF_MAGIC
    except OSError:
        return False


def detect_format(path) -> tuple[str, Path]:
    """(format, the path to read) of a checkpoint; a one-line error saying what was found and what
    each format needs otherwise."""
    path = Path(path).expanduser()
    if path.is_file():
        if _is_gguf(path):
            return "gguf", path
        raise CheckpointError(f"{path} is a file but not a GGUF file (no GGUF magic bytes): {_NEEDS}")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist: {_NEEDS}")
    names = sorted(p.name for p in path.iterdir())
    has = set(names)
    if "config.json" in has and ({"model.safetensors", "model.safetensors.index.json"} & has):
        return "hf", path
    if "params.json" in has and any(n.endswith(".pth") for n in names):
        return "meta", path
    ggufs = [path / n for n in names if n.endswith(".gguf")]
    if len(ggufs) == 1 and not ({"config.json", "params.json"} & has):
        return "gguf", ggufs[0]
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
    if len(ggufs) > 1:
        raise CheckpointError(f"{path} holds {len(ggufs)} .gguf files ({shown}): pass one of them")
    if any(n.endswith(".pth") for n in names):
        raise CheckpointError(f"{path / 'params.json'} not found: a Meta folder needs params.json "
                              f"beside consolidated.*.pth (found {shown})")
    if "config.json" in has:
        raise CheckpointError(f"{path} has config.json but no model.safetensors or "
                              f"model.safetensors.index.json: a Hugging Face folder needs safetensors "
                              f"weights (found {shown})")
    raise CheckpointError(f"{path} holds [{shown or 'nothing'}], which is no checkpoint format "
                          f"known: {_NEEDS}")


@dataclass
class Checkpoint:
    """A checkpoint whose format is known. ``tokenizer_path`` overrides the tokenizer (Meta only)."""
    format: str
    path: Path
    tokenizer_path: Optional[Path] = None
    _reader: Any = field(default=None, repr=False)  # the GGUF reader, opened once
    _samples: Any = field(default=None, repr=False)  # the weight samples, read once

    def _gguf(self):
        from neurosymbolic_llm.llama.gguf_checkpoint import open_gguf
        if self._reader is None:
            self._reader = open_gguf(self.path)
        return self._reader

    def close(self) -> None:
        """Drop the GGUF reader (its metadata and file mapping); the model keeps what it needs."""
        self._reader = None

    def args(self, **runtime) -> ModelArgs:
        """The architecture without loading weights (``runtime``: max_seq_len, max_batch_size)."""
        if self.format == "meta":
            from neurosymbolic_llm.llama.checkpoint import load_params, params_args
            return params_args(self.path / "params.json", load_params(self.path), **runtime)
        if self.format == "hf":
            from neurosymbolic_llm.llama.hf_checkpoint import hf_model_args
            return hf_model_args(self.path, **runtime)
        from neurosymbolic_llm.llama.gguf_checkpoint import gguf_model_args
        return gguf_model_args(self._gguf(), **runtime)

    def load_model(self, *, max_seq_len: int = 2048, max_batch_size: int = 32, device="cpu",
                   dtype: torch.dtype = torch.float32,
                   model_parallel_size: Optional[int] = None) -> Transformer:
        """The frozen network in eval mode on ``device`` in ``dtype``. Model parallelism (several
        shards, torchrun) is available for Meta folders only."""
        kw = dict(max_seq_len=max_seq_len, max_batch_size=max_batch_size, device=device, dtype=dtype)
        if self.format == "meta":
            from neurosymbolic_llm.llama.checkpoint import load_model
            return load_model(self.path, model_parallel_size=model_parallel_size, **kw)
        if model_parallel_size not in (None, 1):
            raise LlamaError(f"{self.path}: model parallelism needs a Meta folder; convert this "
                             f"{self.format} checkpoint first (save_checkpoint + reshard)")
        if self.format == "hf":
            from neurosymbolic_llm.llama.hf_checkpoint import load_hf_model
            return load_hf_model(self.path, **kw)
        from neurosymbolic_llm.llama.gguf_checkpoint import load_gguf_model
        return load_gguf_model(self.path, reader=self._gguf(), **kw)

    def load_tokenizer(self):
        """(tokenizer, chat format) of the model."""
        from neurosymbolic_llm.llama.chat import chat_format_for
        if self.format == "meta":
            from neurosymbolic_llm.llama.tokenizer import ChatFormat, Tokenizer, resolve_tokenizer_path
            tok = Tokenizer(resolve_tokenizer_path(self.path, self.tokenizer_path))
            return tok, ChatFormat(tok)
        self._no_tokenizer_override()
        if self.format == "hf":
            from neurosymbolic_llm.llama.hf_checkpoint import hf_tokenizer
            tok, template = hf_tokenizer(self.path)
        else:
            from neurosymbolic_llm.llama.gguf_checkpoint import gguf_tokenizer
            tok, template = gguf_tokenizer(self._gguf())
        return tok, chat_format_for(tok, template, str(self.path))

    def weight_samples(self):
        """The weights' samples (neurosymbolic_llm/llama/fingerprint.py: ``WeightSamples``; read once)."""
        if self._samples is None:
            if self.format == "meta":
                from neurosymbolic_llm.llama.checkpoint import checkpoint_weight_samples
                self._samples = checkpoint_weight_samples(self.path)
            elif self.format == "hf":
                from neurosymbolic_llm.llama.hf_checkpoint import hf_weight_samples
                self._samples = hf_weight_samples(self.path)
            else:
                from neurosymbolic_llm.llama.gguf_checkpoint import gguf_weight_samples
                self._samples = gguf_weight_samples(self.path, self._gguf())
        return self._samples

    def fingerprint(self) -> str:
        """Fingerprint of the weights' content, the same for one model in any format and the same
        dtype (neurosymbolic_llm/llama/fingerprint.py)."""
        return self.weight_samples().digest()

    def tokenizer_fingerprint(self) -> str:
        if self.format == "meta":
            from neurosymbolic_llm.llama.checkpoint import file_fingerprint
            from neurosymbolic_llm.llama.tokenizer import resolve_tokenizer_path
            return file_fingerprint(resolve_tokenizer_path(self.path, self.tokenizer_path))
        if self.format == "hf":
            from neurosymbolic_llm.llama.hf_checkpoint import hf_tokenizer_fingerprint
            return hf_tokenizer_fingerprint(self.path)
        from neurosymbolic_llm.llama.gguf_checkpoint import gguf_tokenizer_fingerprint
        return gguf_tokenizer_fingerprint(self.path, self._gguf())

    def _no_tokenizer_override(self) -> None:
        if self.tokenizer_path:
            raise LlamaError(f"--tokenizer_path applies to Meta folders only; the {self.format} "
                             f"checkpoint {self.path} carries its own tokenizer")


def open_checkpoint(path, tokenizer_path=None) -> Checkpoint:
    """Detect the format of ``path`` (see the module docstring)."""
    fmt, real = detect_format(path)
    return Checkpoint(fmt, real, Path(tokenizer_path).expanduser() if tokenizer_path else None)
