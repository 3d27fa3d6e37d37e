"""The one way the pipeline writes a file: completely or not at all; and the check of an output
folder before long work.

Every output (gathered shards, manifests, map files, training states, result tables and plots, demo
CSVs) is written to a temporary file in the destination folder, flushed to disk, and renamed over
the destination. A rename within one folder is atomic, so a reader (or a resumed run after kill -9)
sees either the old file or the new one, never half of one; a failed write removes its temporary
file. Temporary names are hidden (".name.tmpPID...") so that leftovers of a killed process are easy
to find and are never mistaken for data.

A write that fails in the operating system (full disk, read-only folder, missing permission) raises
OutputError naming the file, what it was, and the reason; torch.save's own error on a full disk
("enforce fail at inline_container.cc") is traced back to the OSError behind it.
`check_output_folders` is what a stage runs before hours of work: each folder is created, a probe
file written and removed, and its free space compared with what the stage will write there.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from neurosymbolic_llm.pipeline.errors import OutputError

MiB = 2 ** 20


def temporary_name(path: Path) -> Path:
    """Where `atomic_write` writes before the rename: a hidden sibling, unique per process."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def _os_cause(exc: BaseException) -> Optional[OSError]:
    """The OSError behind `exc` (itself, or its cause/context chain), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def ensure_folder(folder: Path) -> None:
    """mkdir -p, except that a file in the way is named as such (mkdir would say "File exists" or
    "Not a directory" about the folder)."""
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{parent} is a file, not a folder", str(parent))
            break
    folder.mkdir(parents=True, exist_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], what: str = "") -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, fsync it, rename it to `path`.

    The parent folder is created. On any error the temporary file is removed and `path` is
    untouched (still the old file, or absent); an operating-system failure becomes OutputError
    ("cannot write <what> <path>: <reason>"), any other error propagates as it is."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        ensure_folder(path.parent)
        write(tmp)
        with open(tmp, "rb+") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        cause = _os_cause(exc)
        if cause is None:
            raise
        kept = "its previous version is kept" if path.is_file() else "no partial file is left"
        raise OutputError(f"cannot write {what + ' ' if what else ''}{path}: {cause.strerror or cause}; "
                          f"{kept}") from exc
    finally:
        _remove_quietly(tmp)
    return path


def replace_folder(folder: Path, files: dict[str, bytes], what: str) -> Path:
    """Make `folder` hold exactly `files` ({name: bytes}) as a unit: they are written and synced in a
    fresh hidden folder beside it, which is then renamed into place; the previous folder is moved
    aside first and removed last, so a failure or a kill before the rename leaves it as it was (a
    kill between the two renames leaves it in ".<name>.old<pid>", named by the next error). Callers
    hold the folder's lock (locks.exclusive) and check that it holds nothing else."""
    folder = Path(folder)
    tmp, old = (folder.with_name(f".{folder.name}.{tag}{os.getpid()}") for tag in ("tmp", "old"))
    try:
        ensure_folder(folder.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_folder(tmp)
        if folder.is_dir() and not folder.is_symlink():
            os.replace(folder, old)
        os.replace(tmp, folder)
        _fsync_folder(folder.parent)
    except OSError as exc:
        if old.is_dir() and not folder.exists():
            os.replace(old, folder)  # put the previous version back
        kept = "its previous version is kept" if folder.is_dir() else "no partial folder is left"
        raise OutputError(f"cannot write {what} {folder}: {exc.strerror or exc}; {kept}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Remove a temporary or probe file if it is there; a failure to remove it is not the error to report."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_text(path, text: str, what: str = "") -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what)


def atomic_write_json(path, data: Any, what: str = "") -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n", what)


def atomic_write_csv(df, path, what: str = "", **to_csv_kwargs) -> Path:
    """A pandas DataFrame as CSV, without its index."""
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, **to_csv_kwargs), what)


def atomic_torch_save(obj: Any, path, what: str = "") -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # through a Python file, so a full disk surfaces as its OSError
            torch.save(obj, f)
    return atomic_write(path, write, what)


def atomic_savefig(fig, path, what: str = "", **savefig_kwargs) -> Path:
    """A matplotlib figure; the format comes from `path`'s suffix (the temporary name keeps it)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs), what)


def check_output_folders(needs: dict[Path, tuple[str, int]]) -> None:
    """Before long work: every folder {path: (what goes there, bytes it needs)} exists (created),
    is writable (a probe file is written and removed) and has the bytes free. Raises OutputError
    naming the folder, what would have been written there and the shortfall."""
    for folder, (what, need) in needs.items():
        folder = Path(folder)
        probe = folder / f".write_probe{os.getpid()}"
        try:
            ensure_folder(folder)
            with open(probe, "wb") as f:
                f.write(b"0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise OutputError(f"{folder}: cannot write {what} there ({exc.strerror or exc}); "
                              f"nothing was started") from None
        finally:
            _remove_quietly(probe)
        free = shutil.disk_usage(folder).free
        if free < need:
            raise OutputError(f"{folder}: {free / MiB:.1f} MiB free, {what} need about {need / MiB:.1f} MiB; "
                              f"free some space or choose another folder; nothing was started")
