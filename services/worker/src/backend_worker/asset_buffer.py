"""The worker's asset buffer: inputs fetched once per host, verified, then hard-linked into tasks.

    <root>/asset_buffer/
        data_samples/<key>/...   extracted sample folders
        openers/<key>            openers, by data manager key
        models/<key>             downloaded or produced models
        .<kind>-<key>.size       the entry's size; its mtime is the entry's last use
        tmp/                     fetches in progress

Every process of the host shares it. Users of the buffer hold a shared lock while they fetch and
link entries; eviction (least recently used first, down to the configured size; and, when asked,
entries unused for longer than an age limit) takes the exclusive lock and is skipped while tasks
are staging, so an entry never disappears between being found and being linked. Files linked into
a running task survive eviction anyway (hard links). Holding the exclusive lock, eviction also
removes what crashed processes left: fetches in progress and entries without their size file.
"""

from __future__ import annotations

import enum
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backend_worker.locks import file_lock, try_file_lock
from backend_worker.task_directory import link_file


class AssetKind(enum.StrEnum):
    DATA_SAMPLE = "data_samples"
    OPENER = "openers"
    MODEL = "models"


@dataclass(frozen=True)
class BufferEntry:
    kind: AssetKind
    key: str
    size: int
    last_used: float


Fetch = Callable[[Path], None]


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for directory, _, files in os.walk(path):
        total += sum(Path(directory, name).stat().st_size for name in files)
    return total


def _make_read_only(path: Path) -> None:
    # The entry is shared by hard links with tasks: none may change it in place.
    paths = [path] if path.is_file() else [Path(d, f) for d, _, files in os.walk(path) for f in files]
    for file in paths:
        file.chmod(stat.S_IMODE(file.stat().st_mode) & ~0o222 | 0o444)


class AssetBuffer:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root.absolute()
        self.max_bytes = max_bytes

    def _lock_file(self) -> Path:
        return self.root / ".buffer.lock"

    def path(self, kind: AssetKind, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"invalid asset key {key!r}")
        return self.root / kind.value / key

    def _size_file(self, kind: AssetKind, key: str) -> Path:
        return self.root / f".{kind.value}-{key}.size"

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold while finding and linking entries: eviction waits for no one and skips its turn."""
        with file_lock(self._lock_file(), shared=True):
            yield

    def get(self, kind: AssetKind, key: str, fetch: Fetch) -> Path:
        """The entry, fetched first if missing: `fetch(path)` creates the verified file or folder.

        Call inside `in_use()`. Concurrent callers for the same entry fetch it once.
        """
        final = self.path(kind, key)
        size_file = self._size_file(kind, key)
        if not size_file.exists():
            with file_lock(self.root / ".locks" / f"{kind.value}-{key}.lock"):
                if not size_file.exists():
                    self._fetch(kind, key, fetch, final, size_file)
        os.utime(size_file)
        return final

    def _fetch(self, kind: AssetKind, key: str, fetch: Fetch, final: Path, size_file: Path) -> None:
        temporary = self.root / "tmp" / uuid.uuid4().hex
        temporary.parent.mkdir(parents=True, exist_ok=True)
        try:
            fetch(temporary)
            _make_read_only(temporary)
            size = _tree_size(temporary)
            final.parent.mkdir(parents=True, exist_ok=True)
            # A half-installed entry of a crashed process has no size file: replace it.
            _remove(final)
            os.replace(temporary, final)
        finally:
            _remove(temporary)
        size_file.write_text(str(size))

    def add_file(self, kind: AssetKind, key: str, source: Path) -> Path:
        """Put a file produced here (an output model) in the buffer, for later tasks of this host."""
        final = self.path(kind, key)
        with self.in_use(), file_lock(self.root / ".locks" / f"{kind.value}-{key}.lock"):
            _remove(final)
            link_file(source, final)
            _make_read_only(final)
            self._size_file(kind, key).write_text(str(final.stat().st_size))
        return final

    def contains(self, kind: AssetKind, key: str) -> bool:
        return self._size_file(kind, key).exists()

    def discard(self, kind: AssetKind, key: str) -> None:
        with file_lock(self.root / ".locks" / f"{kind.value}-{key}.lock"):
            self._size_file(kind, key).unlink(missing_ok=True)
            _remove(self.path(kind, key))

    def entries(self) -> list[BufferEntry]:
        found: list[BufferEntry] = []
        if not self.root.is_dir():
            return found
        for size_file in self.root.glob(".*.size"):
            kind_name, _, key = size_file.name[1 : -len(".size")].partition("-")
            try:
                kind = AssetKind(kind_name)
                info = size_file.stat()
                size = int(size_file.read_text() or 0)
            except (ValueError, OSError):
                continue
            found.append(BufferEntry(kind=kind, key=key, size=size, last_used=info.st_mtime))
        return found

    def size(self) -> int:
        return sum(entry.size for entry in self.entries())

    def evict(
        self, max_bytes: int | None = None, *, max_age: float | None = None, now: float | None = None
    ) -> list[BufferEntry]:
        """Remove least recently used entries until the buffer fits, and entries unused for longer
        than `max_age` seconds; skipped (nothing removed) while the buffer is in use."""
        return self.maintain(max_bytes, max_age=max_age, now=now, leftovers=False)[0]

    def maintain(
        self,
        max_bytes: int | None = None,
        *,
        max_age: float | None = None,
        now: float | None = None,
        leftovers: bool = True,
    ) -> tuple[list[BufferEntry], int, bool]:
        """`evict`, plus (with `leftovers`) the removal of what crashed processes left.

        Returns the entries removed, the number of leftovers removed, and whether the buffer could
        be locked (False: in use, nothing done).
        """
        limit = self.max_bytes if max_bytes is None else max_bytes
        now = time.time() if now is None else now
        removed: list[BufferEntry] = []
        with try_file_lock(self._lock_file()) as acquired:
            if not acquired:
                return removed, 0, False
            entries = sorted(self.entries(), key=lambda entry: entry.last_used)
            total = sum(entry.size for entry in entries)
            for entry in entries:
                too_old = max_age is not None and now - entry.last_used > max_age
                if total <= limit and not too_old:
                    continue
                self.discard(entry.kind, entry.key)
                total -= entry.size
                removed.append(entry)
            removed_leftovers = self._remove_leftovers() if leftovers else 0
        return removed, removed_leftovers, True

    def _remove_leftovers(self) -> int:
        """Under the exclusive lock: fetches in progress and entries without a size file are what
        dead processes left."""
        removed = 0
        temporary = self.root / "tmp"
        if temporary.is_dir():
            for path in temporary.iterdir():
                _remove(path)
                removed += 1
        for kind in AssetKind:
            directory = self.root / kind.value
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                if not self._size_file(kind, path.name).exists():
                    _remove(path)
                    removed += 1
        return removed

    def clear(self) -> None:
        """Empty the buffer (on a full disk), waiting for current users."""
        with file_lock(self._lock_file()):
            for kind in AssetKind:
                _remove(self.root / kind.value)
            for size_file in self.root.glob(".*.size"):
                size_file.unlink(missing_ok=True)
            _remove(self.root / "tmp")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
