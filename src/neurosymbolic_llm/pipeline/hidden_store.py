"""Sharded, resumable storage of gathered hidden states and their VSA targets (stage 1 -> stage 2).

Layout of a store folder (`Programs/gathered_data_{run}/`):

    manifest.json              what the data was made from, and how far each split got
    {split}/shard_{k:05d}.pt   rows [k*F, min((k+1)*F, N)) of the split, F = rows_per_shard
    .store.lock                held by the one stage 1 writing the store (`writing`)

A shard is one `torch.save` of plain tensors (read with `weights_only=True`):
    hidden  [n, L, D]  residual stream at the last prompt position of the manifest's layers (model dtype)
    targets [n, V]     true problem vectors (float32)
    row, type_id, x, y [n] long   the split row each sample came from, and its problem
    identity [32] uint8        the manifest's shard_tag (sha256 of its IDENTITY_KEYS): a shard copied
                               from another store (another model, codebook, settings) is refused

The identity includes the model's full content (llama/identity.py: every byte of its files), so a
store is never resumed with another copy of the model; one store has one writer at a time, whatever
run name or --programs_dir names it, and stage 2 does not read it meanwhile.

Why the grid is fixed by the row index and not by the order of work: a shard's content depends only
on (split, k), so a shard either exists completely (written to a temporary name, then renamed) or not
at all. Resuming after any interruption, kill -9 included, redoes exactly the missing shards; ranks of
a data-parallel run take disjoint sets of shards, and reading the shards in k order gives the same
rows in the same order whatever the number of ranks or the batch size was.
"""
from __future__ import annotations

import dataclasses

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from neurosymbolic_llm.pipeline.errors import DataError, RunLockedError, echo
from neurosymbolic_llm.pipeline.files import atomic_torch_save, atomic_write_json
from neurosymbolic_llm.pipeline.finite import require_finite
from neurosymbolic_llm.pipeline.locks import held, holder

FORMAT = "nsllm-hidden-store"
VERSION = 1
SPLITS = ("train", "val", "test")
# Manifest keys that must be equal for a rerun to add to (or reuse) existing data.
IDENTITY_KEYS = ("model_fingerprint", "model_content", "tokenizer_fingerprint", "engine_fingerprint", "layers",
                 "dtype", "dim", "rows_per_shard", "sources", "prompt")
LOCK_NAME = ".store.lock"  # held by the one stage 1 writing the store (locks.py)


@dataclass
class SplitData:
    """One split read back: every shard concatenated in row order."""
    hidden: torch.Tensor   # [N, L, D]
    targets: torch.Tensor  # [N, V]
    row: torch.Tensor      # [N] long
    type_id: torch.Tensor  # [N] long
    x: torch.Tensor        # [N] long
    y: torch.Tensor        # [N] long

    def __len__(self) -> int:
        return self.row.shape[0]

    def joint(self, positions: Optional[list[int]] = None) -> "SplitData":
        """The split with the states of the loaded layers at `positions` (default: all, in order)
        concatenated: hidden [N, L, D] -> [N, 1, k D], the input of an encoder reading k layers at once."""
        hidden = self.hidden if positions is None else self.hidden[:, positions]  # [N,k,D]
        return dataclasses.replace(self, hidden=hidden.reshape(hidden.shape[0], 1, -1))


class HiddenStore:
    """A store folder. `open_for_writing` checks or creates the manifest; `load_split` reads."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.manifest_path = self.root / "manifest.json"
        self.tag: Optional[str] = None  # the manifest's shard_tag: every shard written carries it

    # ------------------------------------------------------------------ one writer
    def writing(self, *, enabled: bool = True):
        """The store's own lock, held while stage 1 writes it: a second stage 1 on the same folder
        (another run name or --programs_dir naming it) is refused at once, and stage 2 refuses to
        read it meanwhile (`check_idle`)."""
        if not enabled:
            return contextlib.nullcontext()
        return held(self.root / LOCK_NAME, f"the hidden-state store {self.root}", "stage 1 is writing it",
                    "give this run another --gathered_data_dir")

    def check_idle(self) -> None:
        pid = holder(self.root / LOCK_NAME)
        if pid is not None:
            raise RunLockedError(f"{self.root}: stage 1 is still writing this store (process {pid}); wait for it "
                                 f"to finish before training maps on it")

    # ------------------------------------------------------------------ manifest
    def read_manifest(self) -> dict:
        if not self.manifest_path.is_file():
            raise DataError(f"{self.root}: no gathered data here (manifest.json missing); "
                            f"run stage 1 first (--generate_data 1) with the same --run_name")
        try:
            manifest = json.loads(self.manifest_path.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise DataError(f"{self.manifest_path}: not valid JSON ({echo(str(exc), 120, quote=False)}); "
                            f"{REGATHER}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise DataError(f"{self.manifest_path}: not a hidden-state store manifest of version {VERSION}; {REGATHER}")
        check_manifest(self.manifest_path, manifest)
        return manifest

    def open_for_writing(self, identity: dict, totals: dict[str, int], config: dict, *, create: bool = True) -> dict:
        """Create the manifest, or check that an existing one describes the same data.

        `identity` holds the IDENTITY_KEYS; a difference is an error naming the key, because mixing
        states of two models (or two codebooks, or two CSVs) in one folder would be silent garbage.
        """
        if self.manifest_path.is_file() and not self.any_shards():
            # a manifest without a single shard is what a failed first attempt leaves (it crashed or
            # was killed before its first shard): it describes no data, so the corrected rerun replaces it
            pass
        elif self.manifest_path.is_file():
            manifest = self.read_manifest()
            for key in IDENTITY_KEYS:
                if key == "model_content" and key not in manifest and manifest.get("complete"):
                    continue  # a complete store of an older version: nothing will be added to it
                if manifest.get(key) != identity.get(key):
                    raise DataError(
                        f"{self.root} already holds data gathered with a different {key} "
                        f"({_short(manifest.get(key))} there, {_short(identity.get(key))} now); "
                        f"use another --run_name or --gathered_data_dir, or delete the folder")
            if manifest.get("totals") != totals:
                raise DataError(f"{self.root}: split sizes {manifest.get('totals')} there, {totals} now")
            self.tag = manifest.get("shard_tag")
            return manifest
        self.tag = shard_tag(identity)
        manifest = {"format": FORMAT, "version": VERSION, **identity, "totals": dict(totals),
                    "rows": {s: 0 for s in totals}, "complete": False, "config": config, "shard_tag": self.tag}
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.manifest_path, manifest)
        return manifest

    def update_progress(self, manifest: dict) -> dict:
        """Recount the rows on disk per split and record them (and completeness) in the manifest."""
        rpf = manifest["rows_per_shard"]
        for split, total in manifest["totals"].items():
            done = self.done_shards(split, total, rpf)
            manifest["rows"][split] = sum(shard_range(k, total, rpf)[1] - shard_range(k, total, rpf)[0] for k in done)
        manifest["complete"] = all(manifest["rows"][s] == t for s, t in manifest["totals"].items())
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    # ------------------------------------------------------------------ shards
    def shard_path(self, split: str, k: int) -> Path:
        return self.root / split / f"shard_{k:05d}.pt"

    def any_shards(self) -> bool:
        return any(self.root.glob("*/shard_*.pt"))

    def done_shards(self, split: str, total: int, rows_per_shard: int) -> set[int]:
        """Shards present on disk (complete by construction: they are renamed into place)."""
        return {k for k in range(n_shards(total, rows_per_shard)) if self.shard_path(split, k).is_file()}

    def write_shard(self, split: str, k: int, data: dict[str, torch.Tensor]) -> Path:
        path = self.shard_path(split, k)
        lo = int(data["row"][0])
        require_finite({f"the hidden states of rows {lo}..{lo + len(data['row']) - 1}": data["hidden"],
                        "the target vectors": data["targets"]}, f"stage 1, {split} shard {k}",
                       "the model's forward pass overflowed: run it in float32 (--dtype float32) or check the "
                       "checkpoint's weights; the shard was not written")
        tensors = {n: t.detach().cpu().contiguous() for n, t in data.items()}
        if self.tag:  # which store the shard belongs to: a shard copied from another store is refused
            tensors["identity"] = torch.frombuffer(bytearray.fromhex(self.tag), dtype=torch.uint8)
        atomic_torch_save(tensors, path)
        return path

    def clean_temporaries(self) -> None:
        """Remove temporary files left by a killed writer (never read as data anyway)."""
        for tmp in self.root.glob(".manifest.json.tmp*"):
            tmp.unlink(missing_ok=True)
        for split in SPLITS:
            for tmp in (self.root / split).glob(".shard_*.tmp*") if (self.root / split).is_dir() else ():
                tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading
    def load_split(self, split: str, layers: Optional[Iterable[int]] = None, manifest: Optional[dict] = None) -> SplitData:
        """All rows of a split in row order, hidden states of `layers` only (default: all stored)."""
        self.check_idle()
        manifest = manifest or self.read_manifest()
        total, rpf = manifest["totals"][split], manifest["rows_per_shard"]
        stored = manifest["layers"]
        want = list(stored if layers is None else layers)
        missing = [l for l in want if l not in stored]
        if missing:
            raise DataError(f"{self.root}: layers {missing} were not gathered (stored: {stored})")
        idx = torch.tensor([stored.index(l) for l in want], dtype=torch.long)
        parts: dict[str, list[torch.Tensor]] = {}
        for k in range(n_shards(total, rpf)):
            path = self.shard_path(split, k)
            if not path.is_file():
                raise DataError(f"{path}: shard missing ({split} is incomplete: "
                                f"{manifest['rows'].get(split)} of {total} rows); rerun stage 1 to finish it")
            lo, hi = shard_range(k, total, rpf)
            shard = read_shard(path, hi - lo, len(stored), manifest["dim"], manifest.get("shard_tag"))
            if int(shard["row"][0]) != lo:
                raise DataError(f"{path}: holds rows starting at {int(shard['row'][0])}, expected {lo}..{hi - 1}; "
                                f"{REGATHER_SHARD}")
            shard["hidden"] = shard["hidden"].index_select(1, idx) if want != stored else shard["hidden"]
            for name, t in shard.items():
                parts.setdefault(name, []).append(t)
        if not parts:
            raise DataError(f"{self.root}: split {split!r} has no rows")
        return SplitData(**{n: torch.cat(parts[n]) for n in ("hidden", "targets", "row", "type_id", "x", "y")})


REGATHER = "delete the folder and rerun stage 1"
REGATHER_SHARD = "delete this shard and rerun stage 1 to gather it again"
SHARD_KEYS = ("hidden", "targets", "row", "type_id", "x", "y")
# Manifest keys stage 2 reads, and their types.
MANIFEST_TYPES = {"layers": list, "dim": int, "rows_per_shard": int, "totals": dict, "rows": dict,
                  "sources": dict, "engine_fingerprint": str, "model": dict, "config": dict}


def check_manifest(path: Path, manifest: dict) -> None:
    """The keys a manifest must hold, with their types: a hand-edited file is one DataError."""
    for key, tp in MANIFEST_TYPES.items():
        if not isinstance(manifest.get(key), tp) or isinstance(manifest.get(key), bool):
            raise DataError(f"{path}: key {key!r} is missing or not a{'n' if tp is int else ''} {tp.__name__}; "
                            f"{REGATHER}")
    sizes = [manifest["rows_per_shard"], *manifest["totals"].values()]
    if manifest["rows_per_shard"] < 1 or not all(isinstance(n, int) and n >= 0 for n in sizes) or \
            set(manifest["totals"]) != set(SPLITS) or not all(isinstance(l, int) for l in manifest["layers"]):
        raise DataError(f"{path}: 'totals', 'rows_per_shard' or 'layers' hold impossible values; {REGATHER}")
    if not all(k in manifest["model"] for k in ("fingerprint", "dim", "n_layers")):
        raise DataError(f"{path}: 'model' lacks fingerprint, dim or n_layers; {REGATHER}")


def shard_tag(identity: dict) -> str:
    """sha256 of a store's identity (IDENTITY_KEYS): the tag its manifest and every shard carry."""
    text = json.dumps({k: identity.get(k) for k in IDENTITY_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def read_shard(path: Path, n_rows: int, n_layers: int, dim: int, tag: Optional[str] = None) -> dict[str, torch.Tensor]:
    """One shard, checked: of this store (its tag, when the manifest has one), readable, every tensor
    there with the expected rows and shapes, finite."""
    try:
        shard = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not a tensor file, foreign pickles
        raise DataError(f"{path}: not a readable shard ({type(exc).__name__}: "
                        f"{echo(str(exc).split('. ')[0], 120, quote=False)}); {REGATHER_SHARD}") from None
    if not isinstance(shard, dict) or not all(torch.is_tensor(shard.get(k)) for k in SHARD_KEYS):
        raise DataError(f"{path}: not a shard of gathered data (tensors {', '.join(SHARD_KEYS)} expected); "
                        f"{REGATHER_SHARD}")
    if tag is not None:
        mine = shard.get("identity")
        if not torch.is_tensor(mine) or mine.dtype != torch.uint8 or mine.numpy().tobytes().hex() != tag:
            raise DataError(f"{path}: not a shard of this store (gathered with another model, codebook or "
                            f"settings than its manifest.json says, or copied from another store); {REGATHER_SHARD}")
    want = {"hidden": (n_rows, n_layers, dim), "row": (n_rows,), "type_id": (n_rows,), "x": (n_rows,), "y": (n_rows,)}
    for key, shape in want.items():
        if tuple(shard[key].shape) != shape:
            raise DataError(f"{path}: {key} has shape {tuple(shard[key].shape)}, expected {shape}; {REGATHER_SHARD}")
    if shard["targets"].ndim != 2 or shard["targets"].shape[0] != n_rows:
        raise DataError(f"{path}: targets has shape {tuple(shard['targets'].shape)}, expected ({n_rows}, VSA_dim); "
                        f"{REGATHER_SHARD}")
    require_finite({"hidden": shard["hidden"], "targets": shard["targets"]}, f"stage 2 input {path}", REGATHER_SHARD)
    return {k: shard[k] for k in SHARD_KEYS}


def n_shards(total: int, rows_per_shard: int) -> int:
    return -(-total // rows_per_shard)


def shard_range(k: int, total: int, rows_per_shard: int) -> tuple[int, int]:
    return k * rows_per_shard, min(total, (k + 1) * rows_per_shard)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."
