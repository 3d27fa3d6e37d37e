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

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurosymbolic_llm.llama.errors import CheckpointError, shown
from neurosymbolic_llm.llama.mapped_file import MappedFile

# GGUF metadata value types -> struct format (strings and arrays are handled apart)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9
MAGIC = b"GGUF"
MAX_DIMS = 4  # ggml's GGML_MAX_DIMS
_MAX_NESTING = 8  # arrays of arrays: llama.cpp writes none; deeper ones would exhaust the stack
# the fewest bytes a metadata item (key length, type, 1-byte value) and a tensor info (name length,
# n_dims, one dim, type, offset) can take: counts are checked against the bytes left
_MIN_KV, _MIN_TENSOR_INFO = 8 + 4 + 1, 8 + 4 + 8 + 4 + 8


@dataclass
class GGUFTensor:
    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple  # GGUF order: ne0 (the row length) first
    n_bytes: int
    offset: int  # of the data in the file
    data: np.ndarray  # F32/F16/...: typed [rows, ne0]; quantized: uint8 [rows, bytes per row]


def has_gguf_magic(path) -> bool:
    """Whether the file at ``path`` begins with the GGUF magic bytes (False when unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


class GGUFFile:
    """``fields``: metadata key -> value (str, int, float, bool or list); ``tensors``: in file order.

    Refused with one line naming the file: counts or arrays longer than the file, more than
    ``MAX_DIMS`` or a zero dimension, ``general.alignment`` not a positive multiple of 8, a tensor
    offset not a multiple of it, tensors outside the data section or overlapping, repeated tensor
    names or metadata keys, unknown or unsupported tensor types."""

    def __init__(self, path):
        self.path = Path(path)
        self.file = MappedFile(self.path)
        self._map = self.file.array
        self._buf = memoryview(self.file.mmap)
        self._pos = 0
        try:
            if bytes(self._buf[:4]) != MAGIC:
                raise CheckpointError(f"{self.path} is not a GGUF file (no GGUF magic bytes)")
            self._pos = 4
            version = self._unpack("<I")
            if version not in (2, 3):
                raise CheckpointError(f"{self.path}: GGUF version {version} is not supported "
                                      f"(2 and 3, little-endian)")
            n_tensors = self._count(self._unpack("<Q"), _MIN_TENSOR_INFO, "tensor count")
            n_kv = self._count(self._unpack("<Q"), _MIN_KV, "metadata count")
            self.fields: dict[str, Any] = {}
            for _ in range(n_kv):
                key = self._string()
                if key in self.fields:
                    raise CheckpointError(f"{self.path}: metadata key {shown(key)} appears twice")
                self.fields[key] = self._value(self._unpack("<I"))
            infos = [self._tensor_info() for _ in range(n_tensors)]
            align = self._alignment()
            self.data_start = -(-self._pos // align) * align
            self.tensors = [self._tensor(*info, align) for info in infos]
        except (struct.error, UnicodeDecodeError) as e:
            raise CheckpointError(f"{self.path}: corrupt GGUF header at byte {self._pos}: {e}") from e
        self._check_layout()

    # ---------------------------------------------------------------- parsing
    def _unpack(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self._buf, self._pos)
        self._pos += struct.calcsize(fmt)
        return value

    def _count(self, n: int, min_bytes: int, what: str) -> int:
        """A count of items of at least ``min_bytes`` each, checked against the bytes left."""
        if n * min_bytes > len(self._buf) - self._pos:
            raise struct.error(f"the {what} {n} is more than the {len(self._buf) - self._pos} "
                               f"bytes left can hold")
        return n

    def _string(self) -> str:
        n = self._unpack("<Q")
        if self._pos + n > len(self._buf):
            raise struct.error("a string runs past the end of the file")
        s = bytes(self._buf[self._pos:self._pos + n]).decode("utf-8")
        self._pos += n
        return s

    def _value(self, kind: int, depth: int = 0):
        if kind in _SCALARS:
            return self._unpack(_SCALARS[kind])
        if kind == _STRING:
            return self._string()
        if kind == _ARRAY:
            if depth >= _MAX_NESTING:
                raise struct.error(f"arrays nested more than {_MAX_NESTING} deep")
            sub = self._unpack("<I")
            if sub in _NUMPY:
                dt = np.dtype(_NUMPY[sub]).newbyteorder("<")
                n = self._count(self._unpack("<Q"), dt.itemsize, "array length")
                arr = np.frombuffer(self._buf, dtype=dt, count=n, offset=self._pos)
                self._pos += n * dt.itemsize
                return arr.tolist()
            n = self._count(self._unpack("<Q"), 8 if sub == _STRING else 12, "array length")
            return [self._value(sub, depth + 1) for _ in range(n)]
        raise struct.error(f"unknown metadata value type {kind}")

    def _tensor_info(self) -> tuple:
        """(name, dims, type id, offset) as stored."""
        name = self._string()
        n_dims = self._unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise CheckpointError(f"{self.path}: tensor {shown(name)} has {n_dims} dimensions "
                                  f"(GGUF allows 1 to {MAX_DIMS})")
        dims = [self._unpack("<Q") for _ in range(n_dims)]
        if 0 in dims:
            raise CheckpointError(f"{self.path}: tensor {shown(name)} has a zero dimension {dims}")
        return name, dims, self._unpack("<I"), self._unpack("<Q")

    def _alignment(self) -> int:
        align = self.fields.get("general.alignment", 32)
        if isinstance(align, bool) or not isinstance(align, int) or align <= 0 or align % 8:
            raise CheckpointError(f"{self.path}: general.alignment = {shown(align)} must be a "
                                  f"positive multiple of 8 (GGUF spec; default 32)")
        return align

    def _tensor(self, name: str, dims: list, type_id: int, offset: int, align: int) -> GGUFTensor:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
        try:
            qtype = GGMLQuantizationType(type_id)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise CheckpointError(f"{self.path}: tensor {shown(name)} has the unknown type "
                                  f"{type_id}") from None
        if dims[0] % block:
            raise CheckpointError(f"{self.path}: tensor {shown(name)} has rows of {dims[0]} values, "
                                  f"not a multiple of {qtype.name}'s block of {block}")
        if offset % align:
            raise CheckpointError(f"{self.path}: tensor {shown(name)} starts at offset {offset}, not "
                                  f"a multiple of general.alignment {align}")
        n = math.prod(dims)  # Python integers: no overflow
        n_bytes = n // block * type_size
        begin = self.data_start + offset
        if begin + n_bytes > len(self._map):
            raise CheckpointError(f"{self.path}: tensor {shown(name)} runs past the end of the "
                                  f"file (truncated download?)")
        raw = self._map[begin:begin + n_bytes]
        rows = n // dims[0]
        if block == 1:  # plain types: a typed view [rows, ne0]
            data = raw.view(np.dtype(_plain_dtype(qtype, self.path, name))).reshape(rows, dims[0])
        else:
            data = raw.reshape(rows, n_bytes // rows)
        return GGUFTensor(name, qtype, tuple(dims), n_bytes, begin, data)

    def _check_layout(self) -> None:
        """Tensor names are unique and no two tensors share bytes."""
        names: set = set()
        for t in self.tensors:
            if t.name in names:
                raise CheckpointError(f"{self.path}: tensor {shown(t.name)} appears twice")
            names.add(t.name)
        spans = sorted((t.offset, t.offset + t.n_bytes, t.name) for t in self.tensors)
        for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
            if begin < end:
                raise CheckpointError(f"{self.path}: tensors {shown(a)} and {shown(b)} overlap in "
                                      f"the file")


def _plain_dtype(qtype, path, name):
    from gguf import GGMLQuantizationType as Q
    table = {Q.F32: np.float32, Q.F16: np.float16, Q.F64: np.float64, Q.I8: np.int8,
             Q.I16: np.int16, Q.I32: np.int32, Q.I64: np.int64, Q.BF16: np.uint16}
    if qtype not in table:
        raise CheckpointError(f"{path}: tensor {shown(name)} has the type {qtype.name}, which is "
                              f"not supported")
    return table[qtype]
