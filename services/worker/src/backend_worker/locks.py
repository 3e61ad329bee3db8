"""File locks shared by every process of a worker host (worker and builder processes, pool children).

`flock` locks are released by the kernel when their holder dies, so a killed worker never leaves a
stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockTimeoutError(TimeoutError):
    pass


@contextmanager
def file_lock(path: Path, *, shared: bool = False, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive (or shared) lock on `path`, waiting at most `timeout` seconds if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if timeout is None:
            fcntl.flock(fd, mode)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeoutError(f"lock {path} is held by another process") from None
                    time.sleep(0.05)
        yield
    finally:
        os.close(fd)


@contextmanager
def try_file_lock(path: Path) -> Iterator[bool]:
    """Take the exclusive lock if it is free; yields whether it was taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
