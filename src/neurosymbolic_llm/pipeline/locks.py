"""One live process per run name and stage: a lock file that the kernel releases when its process ends.

`stage_lock(folder, stage, run_name)` takes an exclusive `flock` on `<folder>/.<stage>.lock` and
writes its pid there. A second process asking for the same lock is refused at once with the first
one's pid (RunLockedError). The lock belongs to the open file, not to the file's existence: when
the holder exits in any way (kill -9 included) the kernel drops it, so a dead process never leaves a
run stuck, and the file itself is left in place (removing it could let two processes lock two
different files of the same name). The lock file is opened without following a symbolic link
(O_NOFOLLOW) and must be a regular file: truncating it to write the pid must never empty a file
the link points at.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path
from typing import Iterator, Optional

from neurosymbolic_llm.pipeline.errors import OutputError, RunLockedError
from neurosymbolic_llm.pipeline.files import ensure_folder


def lock_path(folder: Path, stage: str) -> Path:
    return Path(folder) / f".{stage}.lock"


def _open_lock_file(path: Path, what: str, nothing: str) -> int:
    """The lock file opened for reading and writing, never through a link and never a non-regular file."""
    try:
        ensure_folder(path.parent)
        if path.is_symlink():  # O_NOFOLLOW says only "too many levels of symbolic links"
            raise OSError(0, "it is a symbolic link, not a lock file; remove it")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:  # the first write of a stage: a read-only or blocked folder shows here
        raise OutputError(f"{path}: cannot write the lock file of {what} ({exc.strerror or exc}); {nothing}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device put there: never write into it
        os.close(fd)
        raise OutputError(f"{path}: the lock file of {what} is not a regular file; remove it; {nothing}")
    return fd


def _mark(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def holder(path: Path) -> Optional[str]:
    """The pid holding the lock at `path` ("unknown" when it wrote none), or None when no process holds it.
    Takes the lock for an instant to find out, so it is only for readers that then act on files the
    holder writes (export refusing a running stage 3)."""
    if not path.is_file() or path.is_symlink():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on the file `path` for the block, waiting for another holder to finish
    (short critical sections: writing an artefact folder, a store's manifest)."""
    fd = _open_lock_file(Path(path), what, "nothing was written")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _mark(fd)
        yield Path(path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def stage_lock(folder: Path, stage: str, run_name: str, *, enabled: bool = True) -> Iterator[Path]:
    """Hold the lock of (run, stage) for the duration of the block; `enabled=False` (ranks other
    than 0 under torchrun: one run, one lock) does nothing."""
    path = lock_path(folder, stage)
    if not enabled:
        yield path
        return
    with held(path, f"run {run_name!r}", f"{stage} is already running", "use another --run_name") as p:
        yield p


@contextlib.contextmanager
def held(path: Path, whose: str, busy: str, advice: str) -> Iterator[Path]:
    """The lock at `path`, refused at once (RunLockedError "<whose>: <busy> in process N ...; <advice>")
    while another process holds it."""
    fd = _open_lock_file(path, whose, "nothing was started")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(f"{whose}: {busy} in process {pid} (lock {path}); wait for it to finish, "
                                 f"stop it, or {advice}") from None
        _mark(fd)
        yield path
    finally:
        os.close(fd)  # closing the file releases the flock
