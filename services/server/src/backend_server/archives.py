"""Validation and checksums of uploaded archives (function archives, data samples).

Archives are read as streams from their spool file, never extracted to disk: every regular file is
decompressed once to count its real size (declared sizes can lie) and hash it. Refused with
`ArchiveError`: anything but tar (any compression) or zip, absolute paths or `..` components, links
leaving the tree, device files, too many entries, and expansions beyond the configured size or
compression ratio (zip bombs).

The data-sample checksum is the reference's directory hash (compute-engine.md 4.2): the sha256 of the
sorted concatenation of the hex sha256 of every file's content, names not included. It is computed on
what the reference would extract: a tar symlink to a file inside the tree counts as the target's
content, a zip "symlink" entry (extracted by Python's zipfile as a plain file) as its stored bytes.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

CHUNK_SIZE = 1024 * 1024
# Small archives may legitimately compress very well (text, zeros); the ratio applies beyond this.
RATIO_FLOOR_BYTES = 100 * 1024 * 1024


class ArchiveError(ValueError):
    """The archive is refused; the message says why."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_uncompressed_size: int
    max_compression_ratio: float
    max_entries: int


@dataclass
class ArchiveContent:
    format: str
    # Member path → hex sha256 of its content, for regular files (and resolved links).
    files: dict[str, str] = field(default_factory=dict)
    entries: int = 0

    @property
    def directory_checksum(self) -> str:
        if not self.files:
            raise ArchiveError("the archive contains no file")
        digest = hashlib.sha256()
        for value in sorted(self.files.values()):
            digest.update(value.encode("utf-8"))
        return digest.hexdigest()


def _normalized(name: str) -> str:
    """The member path relative to the archive root; traversal and absolute paths are refused."""
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise ArchiveError(f"absolute path in archive: {name!r}")
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise ArchiveError(f"path traversal in archive: {name!r}")
    return "/".join(parts)


def _inside(target: str, base_directory: str, name: str) -> str:
    """A link target resolved against `base_directory`; refused when it leaves the tree."""
    if target.startswith("/") or target.replace("\\", "/").startswith("/"):
        raise ArchiveError(f"link pointing out of the archive: {name!r} -> {target!r}")
    resolved = posixpath.normpath(posixpath.join(base_directory, target.replace("\\", "/")))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise ArchiveError(f"link pointing out of the archive: {name!r} -> {target!r}")
    return "" if resolved == "." else resolved


class _Budget:
    """Counts decompressed bytes against the size and ratio limits."""

    def __init__(self, limits: ArchiveLimits, compressed_size: int) -> None:
        self.limits = limits
        self.allowed = min(
            limits.max_uncompressed_size,
            max(RATIO_FLOOR_BYTES, int(compressed_size * limits.max_compression_ratio)),
        )
        self.used = 0
        self.entries = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ArchiveError(f"the archive has more than {self.limits.max_entries} entries")

    def consume(self, size: int) -> None:
        self.used += size
        if self.used > self.allowed:
            if self.used > self.limits.max_uncompressed_size:
                raise ArchiveError(f"the archive expands beyond {self.limits.max_uncompressed_size} bytes")
            raise ArchiveError(
                f"the archive's compression ratio exceeds {self.limits.max_compression_ratio:g}"
            )


def _hash_stream(stream: IO[bytes], budget: _Budget) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK_SIZE):
        budget.consume(len(chunk))
        digest.update(chunk)
    return digest.hexdigest()


def _size(file: IO[bytes]) -> int:
    position = file.tell()
    file.seek(0, 2)
    size = file.tell()
    file.seek(position)
    return size


def _is_tar(file: IO[bytes]) -> bool:
    file.seek(0)
    try:
        with tarfile.open(fileobj=file, mode="r:*"):
            return True
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return False
    finally:
        file.seek(0)


def inspect_archive(file: IO[bytes], limits: ArchiveLimits) -> ArchiveContent:
    """Validate the archive in `file` (seekable) and hash its files; tar is tried before zip."""
    budget = _Budget(limits, _size(file))
    try:
        if _is_tar(file):
            return _inspect_tar(file, budget)
        file.seek(0)
        if zipfile.is_zipfile(file):
            file.seek(0)
            return _inspect_zip(file, budget)
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
    ) as error:
        raise ArchiveError(f"corrupted archive: {error}") from None
    finally:
        file.seek(0)
    raise ArchiveError("the file is neither a zip nor a tar archive")


def _inspect_tar(file: IO[bytes], budget: _Budget) -> ArchiveContent:
    content = ArchiveContent(format="tar")
    links: dict[str, str] = {}
    directories: set[str] = set()
    with tarfile.open(fileobj=file, mode="r:*") as archive:
        for member in _members(archive, budget):
            name = _normalized(member.name)
            if member.isdir():
                directories.add(name)
            elif member.isreg():
                extracted = archive.extractfile(member)
                if extracted is None:  # pragma: no cover - regular members always have data
                    raise ArchiveError(f"unreadable member {member.name!r}")
                with extracted:
                    content.files[name] = _hash_stream(extracted, budget)
            elif member.issym():
                links[name] = _inside(member.linkname, posixpath.dirname(name), member.name)
            elif member.islnk():
                links[name] = _inside(member.linkname, "", member.name)
            else:
                raise ArchiveError(f"unsupported member type (device, fifo...): {member.name!r}")
    content.entries = budget.entries
    for name, target in links.items():
        resolved = _resolve(target, links)
        if resolved in content.files:
            content.files[name] = content.files[resolved]
        elif resolved not in directories and resolved != "":
            raise ArchiveError(f"dangling link in archive: {name!r}")
    return content


def _members(archive: tarfile.TarFile, budget: _Budget) -> Iterator[tarfile.TarInfo]:
    for member in archive:
        budget.entry()
        yield member


def _resolve(target: str, links: dict[str, str]) -> str:
    seen: set[str] = set()
    while target in links:
        if target in seen:
            raise ArchiveError(f"link loop in archive at {target!r}")
        seen.add(target)
        target = links[target]
    return target


def _inspect_zip(file: IO[bytes], budget: _Budget) -> ArchiveContent:
    content = ArchiveContent(format="zip")
    with zipfile.ZipFile(file) as archive:
        for info in archive.infolist():
            budget.entry()
            name = _normalized(info.filename)
            mode = info.external_attr >> 16
            if info.is_dir():
                continue
            if stat.S_ISLNK(mode):
                target = archive.read(info)[:4096].decode("utf-8", "replace")
                _inside(target, posixpath.dirname(name), info.filename)
            with archive.open(info) as stream:
                content.files[name] = _hash_stream(stream, budget)
    content.entries = budget.entries
    return content


def check_function_archive(content: ArchiveContent) -> None:
    """The reference's rules: a `Dockerfile` at the root and at least two entries."""
    if "Dockerfile" not in content.files:
        raise ArchiveError("the function archive must contain a Dockerfile at its root")
    if len(content.files) < 2:
        raise ArchiveError("the function archive must contain at least two files")


def directory_checksum(directory: Path) -> str:
    """The reference's directory hash of a directory on this server (files only, links followed)."""
    digests = []
    for root, directories, names in os.walk(directory):
        directories.sort()
        for name in sorted(names):
            path = Path(root) / name
            if not path.is_file():
                raise ArchiveError(f"{path} is not a regular file")
            digest = hashlib.sha256()
            with path.open("rb") as file:
                while chunk := file.read(CHUNK_SIZE):
                    digest.update(chunk)
            digests.append(digest.hexdigest())
    if not digests:
        raise ArchiveError("the directory contains no file")
    total = hashlib.sha256()
    for value in sorted(digests):
        total.update(value.encode("utf-8"))
    return total.hexdigest()


@contextmanager
def tar_directory(directory: Path, spool_dir: str | None = None) -> Iterator[IO[bytes]]:
    """The directory's content as an uncompressed tar in a temporary file (removed afterwards)."""
    with tempfile.TemporaryFile(dir=spool_dir) as file:
        with tarfile.open(fileobj=file, mode="w") as archive:
            for path in sorted(directory.rglob("*")):
                archive.add(path, arcname=str(path.relative_to(directory)), recursive=False)
        file.seek(0)
        yield file
