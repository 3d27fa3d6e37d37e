"""Fingerprints of model weights, the same recipe for every checkpoint format.

A fingerprint names what the parameters mean, cheaply, for a model of any size: sha256 over the
format, the parsed architecture (``ModelArgs`` without the runtime sizes) and, per tensor in file
order, its name, stored type, shape, byte size and 4 KiB of its stored bytes at the start, the middle
and the end. A few MB are read whatever the model size; changing a config value, renaming, reshaping
or requantizing a tensor, or editing its ends or middle changes the fingerprint, while copying or
moving the files does not. It is not a cryptographic digest of every weight: an edit that misses all
three samples of a tensor goes unseen (documented in docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Callable, Sequence

SAMPLE = 4096
_RUNTIME = ("max_seq_len", "max_batch_size", "model_parallel_size")


class Fingerprint:
    def __init__(self, fmt: str, args):
        self._h = hashlib.sha256(f"{fmt}\n".encode())
        arch = {k: v for k, v in dataclasses.asdict(args).items() if k not in _RUNTIME}
        self._h.update(json.dumps(arch, sort_keys=True).encode())

    def tensor(self, name: str, kind: str, shape: Sequence[int], nbytes: int,
               read: Callable[[int, int], bytes]) -> None:
        """Add one tensor; ``read(offset, n)`` returns n bytes of its stored data from offset."""
        self._h.update(f"{name}:{kind}:{[int(s) for s in shape]}:{nbytes}\n".encode())
        for start in sorted({0, max(0, nbytes // 2 - SAMPLE // 2), max(0, nbytes - SAMPLE)}):
            self._h.update(read(start, min(SAMPLE, nbytes - start)))

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()
