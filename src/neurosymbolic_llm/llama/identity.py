"""Full identities of a model's weights and of its tokenizer, where a sample is not enough.

The weight fingerprint (llama/fingerprint.py) samples a few hundred values per tensor: it names one
model across formats and float dtypes quickly, but a copy with one changed weight elsewhere, or
every weight re-drawn except the sampled ones, keeps it. Where data of two models must never mix
(a hidden-state store resumed by stage 1, a training state resumed by stage 3) the identity is
`content_digest`: the sha256 of every byte of the checkpoint's weight and settings files (one
format's files; the same model in another format is another identity there, as it must be for
bit-exact resumes).

`tokenizer_digest` is the identity of what a tokenizer does, read from the loaded tokenizer, so the
same vocabulary gives the same digest from a tokenizer.model, a tokenizer.json or a GGUF file: the
bytes of every token id in order, the merge priority, the split pattern and the special ids. A
tokenizer with two digits swapped differs. Maps, artefacts, stores and training states record it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".gguf", ".json", ".model")
BLOCK = 1 << 22


def weight_files(path: str | os.PathLike) -> list[Path]:
    """The files `content_digest` reads: the checkpoint file itself, or those of its folder whose
    suffix is a weight, settings or tokenizer file (not READMEs, not hidden or temporary files)."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix in WEIGHT_SUFFIXES)


def content_digest(path: str | os.PathLike) -> str:
    """sha256 over (name, size, sha256 of every byte) of each of `weight_files(path)`; cached per
    process by (path, size, mtime) so a stage computes it once."""
    files = weight_files(path)
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _digest(key)


@functools.lru_cache(maxsize=8)
def _digest(files: tuple) -> str:
    h = hashlib.sha256()
    for name, size, _ in files:
        f_hash = hashlib.sha256()
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(BLOCK), b""):
                f_hash.update(block)
        h.update(f"{Path(name).name}\0{size}\0{f_hash.hexdigest()}\n".encode())
    return h.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """sha256 of what a BPETokenizer (llama/bpe.py) does: every id's bytes, the merge order, the
    split pattern, the special tokens and the bos/eos/eot/pad ids."""
    h = hashlib.sha256()
    for b in tokenizer._id_bytes:
        h.update(len(b).to_bytes(4, "little") + b)
    ranks = sorted(tokenizer.model._mergeable_ranks.items(), key=lambda kv: kv[1])
    for b, _ in ranks:
        h.update(len(b).to_bytes(4, "little") + b)
    h.update(json.dumps(tokenizer._rank_ids).encode())
    h.update(json.dumps({"pattern": tokenizer.pattern, "special": sorted(tokenizer.special_tokens.items()),
                         "ids": [tokenizer.bos_id, tokenizer.eos_id, tokenizer.eot_id, tokenizer.pad_id]}).encode())
    return h.hexdigest()
