"""Objects as plain files under `<root>/<bucket>/<key>`: single-machine deployments and tests."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from backend_common.storage.base import (
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStorage,
    ObjectStream,
    StorageError,
    StoredObject,
    StreamDigest,
    iter_chunks,
    validate_bucket,
    validate_key,
    validate_prefix,
)

# Writes go to a hidden temp file next to the object, then os.replace: readers never see a partial object.
_TEMP_PREFIX = ".put-"
_TEMP_SUFFIX = ".tmp"
_MKDIR_ATTEMPTS = 3


class FilesystemStorage(ObjectStorage):
    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.root = Path(root)
        # fsync makes a stored object survive a power loss, at the price of slower writes.
        self.fsync = fsync

    def __repr__(self) -> str:
        return f"FilesystemStorage({str(self.root)!r})"

    def path(self, bucket: str, key: str) -> Path:
        """Where the object lives (or would live)."""
        return self._bucket_dir(bucket) / validate_key(key)

    def put(
        self,
        bucket: str,
        key: str,
        chunks: Iterable[bytes] | BinaryIO,
        *,
        max_size: int | None = None,
        checksum_salt: bytes = b"",
    ) -> StoredObject:
        path = self.path(bucket, key)
        digest = StreamDigest(bucket, key, max_size)
        fd, temp_name = self._make_temp_file(bucket, key, path.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                # mkstemp creates 0600 files; objects are read by other processes (and users) of the backend.
                os.fchmod(file.fileno(), 0o644)
                for chunk in iter_chunks(chunks):
                    digest.update(chunk)
                    file.write(chunk)
                if self.fsync:
                    file.flush()
                    os.fsync(file.fileno())
            try:
                os.replace(temp_name, path)
            except IsADirectoryError:
                raise _key_conflict(bucket, key) from None
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        if self.fsync:
            _fsync_directory(path.parent)
        return digest.stored(checksum_salt)

    def open(self, bucket: str, key: str, offset: int = 0) -> ObjectStream:
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        path = self.path(bucket, key)
        try:
            file = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(bucket, key) from None
        try:
            size = os.fstat(file.fileno()).st_size
            file.seek(offset)  # past the end is allowed: reads then return nothing
        except BaseException:
            file.close()
            raise
        return ObjectStream(file, size=max(size - offset, 0))

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        try:
            info = self.path(bucket, key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(bucket, key) from None
        if not stat.S_ISREG(info.st_mode):
            raise ObjectNotFoundError(bucket, key)
        return ObjectInfo(size=info.st_size)

    def delete(self, bucket: str, key: str) -> None:
        path = self.path(bucket, key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        self._prune_empty_dirs(path.parent, self._bucket_dir(bucket))

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        bucket_dir = self._bucket_dir(bucket)
        validate_prefix(prefix)
        head, _, _ = prefix.rpartition("/")
        start = bucket_dir / head if head else bucket_dir
        if not start.is_dir():
            return 0
        deleted = 0
        visited: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(start):
            directory = Path(dirpath)
            visited.append(directory)
            relative = directory.relative_to(bucket_dir).as_posix()
            base = "" if relative == "." else f"{relative}/"
            # Only descend where keys can still start with the prefix.
            dirnames[:] = [name for name in dirnames if _may_hold(f"{base}{name}/", prefix)]
            for name in filenames:
                if not f"{base}{name}".startswith(prefix) or _is_temp_file(name):
                    continue
                try:
                    (directory / name).unlink()
                except FileNotFoundError:
                    continue
                deleted += 1
        for directory in reversed(visited):
            if directory != bucket_dir:
                _remove_if_empty(directory)
        self._prune_empty_dirs(start.parent, bucket_dir)
        return deleted

    def _bucket_dir(self, bucket: str) -> Path:
        return self.root / validate_bucket(bucket)

    def _make_temp_file(self, bucket: str, key: str, directory: Path) -> tuple[int, str]:
        for attempt in range(_MKDIR_ATTEMPTS):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                return tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX)
            except (FileExistsError, NotADirectoryError):
                raise _key_conflict(bucket, key) from None
            except FileNotFoundError:
                # A concurrent delete pruned the directory between mkdir and mkstemp: create it again.
                if attempt == _MKDIR_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _prune_empty_dirs(self, directory: Path, bucket_dir: Path) -> None:
        # Deleted objects must not leave empty directories behind (one per model otherwise).
        while directory != bucket_dir and directory.is_relative_to(bucket_dir):
            if not _remove_if_empty(directory):
                return
            directory = directory.parent


def _key_conflict(bucket: str, key: str) -> StorageError:
    return StorageError(
        f"key {key!r} conflicts with an existing object or prefix in bucket {bucket!r}: "
        "a filesystem storage cannot hold both 'a' and 'a/b'"
    )


def _may_hold(directory_prefix: str, prefix: str) -> bool:
    return directory_prefix.startswith(prefix) or prefix.startswith(directory_prefix)


def _is_temp_file(name: str) -> bool:
    return name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)


def _remove_if_empty(directory: Path) -> bool:
    try:
        directory.rmdir()
    except OSError:  # not empty, already gone, or not ours to remove
        return False
    return True


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
