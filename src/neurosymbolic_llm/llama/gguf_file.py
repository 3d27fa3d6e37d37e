"""The GGUF container (version 2 and 3, little-endian): metadata and tensor index, memory-mapped.

``gguf.GGUFReader`` builds a numpy view per metadata item, which takes seconds for a vocabulary of
50k tokens and merges (about 5 s for SmolLM2's file, growing with the vocabulary); this
parser reads the same layout in a fraction of a second and leaves the tensor data in the mapped
file. The ``gguf`` package still supplies the tensor types and dequantization.

Layout: magic ``GGUF``, u32 version, u64 tensor count, u64 metadata count; metadata as (string key,
u32 type, value); tensor infos as (string name, u32 n_dims, u64 dims (ne0 = row length first),
u32 type, u64 offset); tensor data from the next multiple of ``general.alignment`` (default 32).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurosymbolic_llm.llama.errors import CheckpointError
from neurosymbolic_llm.llama.mapped_file import MappedFile

# GGUF metadata value types -> struct format (strings and arrays are handled apart)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


@dataclass
class GGUFTensor:
    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple  # GGUF order: ne0 (the row length) first
    n_bytes: int
    offset: int  # of the data in the file
    data: np.ndarray  # F32/F16/...: typed [rows, ne0]; quantized: uint8 [rows, bytes per row]


class GGUFFile:
    """``fields``: metadata key -> value (str, int, float, bool or list); ``tensors``: in file order."""

    def __init__(self, path):
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
        self.path = Path(path)
        self.file = MappedFile(self.path)
        self._map = self.file.array
        self._buf = memoryview(self.file.mmap)
        self._pos = 0
        try:
            if bytes(self._buf[:4]) != b"GGUF":
                raise CheckpointError(f"{self.path} is not a GGUF file (no GGUF magic bytes)")
            self._pos = 4
            version = self._unpack("<I")
            if version not in (2, 3):
                raise CheckpointError(f"{self.path}: GGUF version {version} is not supported "
                                      f"(2 and 3, little-endian)")
            n_tensors, n_kv = self._unpack("<Q"), self._unpack("<Q")
            self.fields: dict[str, Any] = {}
            for _ in range(n_kv):
                key = self._string()
                self.fields[key] = self._value(self._unpack("<I"))
            infos = []
            for _ in range(n_tensors):
                name = self._string()
                dims = [self._unpack("<Q") for _ in range(self._unpack("<I"))]
                infos.append((name, dims, self._unpack("<I"), self._unpack("<Q")))
            align = int(self.fields.get("general.alignment", 32))
            start = -(-self._pos // align) * align
            self.tensors: list[GGUFTensor] = []
            for name, dims, type_id, offset in infos:
                try:
                    qtype = GGMLQuantizationType(type_id)
                except ValueError:
                    raise CheckpointError(f"{self.path}: tensor {name!r} has the unknown type "
                                          f"{type_id}") from None
                block, type_size = GGML_QUANT_SIZES[qtype]
                n = int(np.prod(dims)) if dims else 1
                n_bytes = n // block * type_size
                begin = start + offset
                if begin + n_bytes > len(self._map):
                    raise CheckpointError(f"{self.path}: tensor {name!r} runs past the end of the "
                                          f"file (truncated download?)")
                raw = self._map[begin:begin + n_bytes]
                rows = n // dims[0] if dims else 1
                if block == 1:  # plain types: a typed view [rows, ne0]
                    data = raw.view(np.dtype(_plain_dtype(qtype))).reshape(rows, dims[0] if dims else 1)
                else:
                    data = raw.reshape(rows, n_bytes // rows)
                self.tensors.append(GGUFTensor(name, qtype, tuple(dims), n_bytes, begin, data))
        except (struct.error, IndexError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{self.path}: corrupt GGUF header at byte {self._pos}: {e}") from e

    # ---------------------------------------------------------------- parsing
    def _unpack(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self._buf, self._pos)
        self._pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._unpack("<Q")
        if self._pos + n > len(self._buf):
            raise struct.error("a string runs past the end of the file")
        s = bytes(self._buf[self._pos:self._pos + n]).decode("utf-8")
        self._pos += n
        return s

    def _value(self, kind: int):
        if kind in _SCALARS:
            return self._unpack(_SCALARS[kind])
        if kind == _STRING:
            return self._string()
        if kind == _ARRAY:
            sub, n = self._unpack("<I"), self._unpack("<Q")
            if sub in _NUMPY:
                dt = np.dtype(_NUMPY[sub]).newbyteorder("<")
                arr = np.frombuffer(self._buf, dtype=dt, count=n, offset=self._pos)
                self._pos += n * dt.itemsize
                return arr.tolist()
            return [self._value(sub) for _ in range(n)]
        raise struct.error(f"unknown metadata value type {kind}")


def _plain_dtype(qtype):
    from gguf import GGMLQuantizationType as Q
    table = {Q.F32: np.float32, Q.F16: np.float16, Q.F64: np.float64, Q.I8: np.int8,
             Q.I16: np.int16, Q.I32: np.int32, Q.I64: np.int64, Q.BF16: np.uint16}
    if qtype not in table:
        raise CheckpointError(f"GGUF tensor type {qtype.name} is not supported")
    return table[qtype]
