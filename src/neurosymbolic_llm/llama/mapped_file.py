"""A weights file mapped into memory copy-on-write, for loaders that read it tensor by tensor.

Tensors of the right dtype on the CPU are used in place (views of the mapping: writable, while the
file never changes); a tensor that had to be converted or moved is copied out and its pages are then
dropped (``release``), so loading holds the model plus one tensor, not the model plus the file.
"""
from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import torch

from neurosymbolic_llm.llama.errors import CheckpointError


class MappedFile:
    def __init__(self, path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot map {self.path}: {e}") from e
        self.array = np.frombuffer(self.mmap, dtype=np.uint8)  # [file size] bytes

    def __len__(self) -> int:
        return len(self.array)

    def tensor(self, offset: int, n_bytes: int, dtype: torch.dtype, shape) -> torch.Tensor:
        """A CPU tensor viewing ``n_bytes`` of the file from ``offset`` (no copy)."""
        if offset + n_bytes > len(self.array):
            raise CheckpointError(f"{self.path}: a tensor runs past the end of the file (truncated?)")
        raw = torch.from_numpy(self.array[offset:offset + n_bytes])  # [n_bytes] uint8
        try:
            return raw.view(dtype).view(tuple(shape))
        except RuntimeError:  # an offset not aligned to the element size: copy instead
            return raw.clone().view(dtype).view(tuple(shape))

    def maps(self, address: int) -> bool:
        """Whether a memory address lies in the mapping (a tensor used in place)."""
        base = self.array.ctypes.data
        return base <= address < base + len(self.array)

    def release(self, offset: int, n_bytes: int) -> None:
        """Drop the resident pages of a byte range whose data was copied out. Never for data still
        in use in place: its pages would be read again from the file (same values, more time)."""
        if hasattr(mmap, "MADV_DONTNEED") and n_bytes > 0:
            start = offset // mmap.PAGESIZE * mmap.PAGESIZE
            self.mmap.madvise(mmap.MADV_DONTNEED, start, offset + n_bytes - start)
