"""Edit valid checkpoint files into hostile ones, for tests/test_hostile_checkpoints.py and the
parser fuzzer (tests/test_fuzz_parsers.py, benchmarks/fuzz_parsers.py). Nothing here uses the
project's parsers: GGUF is read and written from its published layout (magic, u32 version, u64
tensor and metadata counts, metadata (key, u32 type, value), tensor infos (name, u32 n_dims, u64
dims, u32 type, u64 offset), padding to the alignment, tensor data), safetensors as its 8-byte
header length + JSON header + data.

- ``GGUF.parse(raw)`` -> metadata items and tensor infos that can be changed, then ``.to_bytes()``
  (counts may be overridden; tensor data kept byte for byte after the padded header).
- ``safetensors_parts(raw)`` / ``safetensors_bytes(header, data, length=None)``.
- ``json_paths(obj)``, ``set_json(obj, path, value)``: every key path of a JSON document and a
  replacement at one of them.
"""
from __future__ import annotations

import copy
import json
import struct
from dataclasses import dataclass

# GGUF metadata value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
        U64: "<Q", I64: "<q", F64: "<d"}


@dataclass
class Item:
    """One metadata item: its key, value type, value (arrays: (element type, list of values))."""
    key: str
    kind: int
    value: object


@dataclass
class TensorInfo:
    name: str
    dims: list
    type_id: int
    offset: int


@dataclass
class GGUF:
    version: int
    items: list
    tensors: list
    data: bytes
    alignment: int = 32  # the padding the data section was written with

    # ------------------------------------------------------------------ reading
    @classmethod
    def parse(cls, raw: bytes) -> "GGUF":
        pos = 0

        def take(fmt):
            nonlocal pos
            (v,) = struct.unpack_from(fmt, raw, pos)
            pos += struct.calcsize(fmt)
            return v

        def string():
            nonlocal pos
            n = take("<Q")
            s = raw[pos:pos + n].decode()
            pos += n
            return s

        def value(kind):
            if kind in _FMT:
                return take(_FMT[kind])
            if kind == STRING:
                return string()
            sub, n = take("<I"), take("<Q")
            return sub, [value(sub) for _ in range(n)]

        assert raw[:4] == b"GGUF"
        pos = 4
        version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
        items = []
        for _ in range(n_kv):
            key = string()
            kind = take("<I")
            items.append(Item(key, kind, value(kind)))
        tensors = []
        for _ in range(n_tensors):
            name = string()
            dims = [take("<Q") for _ in range(take("<I"))]
            tensors.append(TensorInfo(name, dims, take("<I"), take("<Q")))
        align = next((i.value for i in items if i.key == "general.alignment"), 32)
        start = -(-pos // align) * align
        return cls(version, items, tensors, raw[start:], align)

    # ------------------------------------------------------------------ editing
    def item(self, key: str) -> Item:
        return next(i for i in self.items if i.key == key)

    def set(self, key: str, kind: int, value) -> "GGUF":
        """Set (or add) metadata ``key``; arrays: ``value`` = (element type, values)."""
        for i in self.items:
            if i.key == key:
                i.kind, i.value = kind, value
                return self
        self.items.append(Item(key, kind, value))
        return self

    def tensor(self, name: str) -> TensorInfo:
        return next(t for t in self.tensors if t.name == name)

    # ------------------------------------------------------------------ writing
    def to_bytes(self, n_tensors: int | None = None, n_kv: int | None = None,
                 pad_to: int | None = None) -> bytes:
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version, len(self.tensors) if n_tensors is None else n_tensors,
                           len(self.items) if n_kv is None else n_kv)
        for i in self.items:
            out += _string(i.key) + struct.pack("<I", i.kind) + _value(i.kind, i.value)
        for t in self.tensors:
            out += _string(t.name) + struct.pack("<I", len(t.dims))
            out += b"".join(struct.pack("<Q", d) for d in t.dims)
            out += struct.pack("<IQ", t.type_id, t.offset)
        align = pad_to or self.alignment
        out += bytes(-len(out) % align)
        return bytes(out) + self.data


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _value(kind: int, value) -> bytes:
    if kind in _FMT:
        return struct.pack(_FMT[kind], value)
    if kind == STRING:
        return _string(value)
    sub, values = value
    return struct.pack("<IQ", sub, len(values)) + b"".join(_value(sub, v) for v in values)


# ----------------------------------------------------------------------------- safetensors

def safetensors_parts(raw: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def safetensors_bytes(header, data: bytes, length: int | None = None) -> bytes:
    """A safetensors file; ``length`` overrides the header length written in front."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


# ----------------------------------------------------------------------------- JSON

def json_paths(obj, prefix=(), max_items: int = 30) -> list[tuple]:
    """Every path (tuple of keys / list indices) to a value of ``obj``; of a list or object its
    first ``max_items`` elements only (a vocabulary of thousands would drown the rest)."""
    out = []
    if isinstance(obj, dict):
        items = list(obj.items())[:max_items]
    elif isinstance(obj, list):
        items = list(enumerate(obj[:max_items]))
    else:
        return out
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(json_paths(v, prefix + (k,), max_items))
    return out


def set_json(obj, path: tuple, value):
    """A copy of ``obj`` with the value at ``path`` replaced."""
    obj = copy.deepcopy(obj)
    target = obj
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return obj
