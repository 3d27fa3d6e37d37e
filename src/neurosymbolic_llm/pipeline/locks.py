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
from typing import Iterator

from neurosymbolic_llm.pipeline.errors import OutputError, RunLockedError
from neurosymbolic_llm.pipeline.files import ensure_folder


def lock_path(folder: Path, stage: str) -> Path:
    return Path(folder) / f".{stage}.lock"


@contextlib.contextmanager
def stage_lock(folder: Path, stage: str, run_name: str, *, enabled: bool = True) -> Iterator[Path]:
    """Hold the lock of (run, stage) for the duration of the block; `enabled=False` (ranks other
    than 0 under torchrun: one run, one lock) does nothing."""
    path = lock_path(folder, stage)
    if not enabled:
        yield path
        return
    try:
        ensure_folder(path.parent)
        if path.is_symlink():  # O_NOFOLLOW says only "too many levels of symbolic links"
            raise OSError(0, "it is a symbolic link, not a lock file; remove it")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:  # the first write of a stage: a read-only or blocked folder shows here
        raise OutputError(f"{path}: cannot write the lock file of run {run_name!r} ({exc.strerror or exc}); "
                          f"nothing was started") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device put there: never write into it
            raise OutputError(f"{path}: the lock file of run {run_name!r} is not a regular file; remove it; "
                              f"nothing was started")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(f"run {run_name!r}: {stage} is already running in process {holder} "
                                 f"(lock {path}); wait for it to finish, stop it, or use another "
                                 f"--run_name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the file releases the flock
