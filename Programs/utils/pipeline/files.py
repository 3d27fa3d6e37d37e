"""The one way the pipeline writes a file: completely or not at all.

Every output (gathered shards, manifests, map files, result tables and plots, demo CSVs) is written
to a temporary file in the destination folder, flushed to disk, and renamed over the destination.
A rename within one folder is atomic, so a reader (or a resumed run after kill -9) sees either the
old file or the new one, never half of one; a failed write removes its temporary file. Temporary
names are hidden (".name.tmpPID...") so that leftovers of a killed process are easy to find and are
never mistaken for data.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch


def temporary_name(path: Path) -> Path:
    """Where `atomic_write` writes before the rename: a hidden sibling, unique per process."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, fsync it, rename it to `path`.

    The parent folder is created. On any error the temporary file is removed and the error
    propagates; `path` is then untouched (still the old file, or absent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_write_csv(df, path, **to_csv_kwargs) -> Path:
    """A pandas DataFrame as CSV, without its index."""
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, **to_csv_kwargs))


def atomic_torch_save(obj: Any, path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_savefig(fig, path, **savefig_kwargs) -> Path:
    """A matplotlib figure; the format comes from `path`'s suffix (the temporary name keeps it)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs))
