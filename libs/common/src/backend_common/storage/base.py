"""The object storage interface shared by every service: buckets of keyed blobs, streamed and checksummed.

Objects are never held whole in memory: writes consume an iterable of chunks (or a binary file), reads
yield chunks. Checksums are the lowercase hex sha256 of the bytes followed by an optional salt
(compute-engine.md 4.2: models are salted with the producing compute-task key).
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

# Buckets of the reference backend (compute-engine.md 4.1).
DATAMANAGER_BUCKET = "substra-datamanager"
DATASAMPLE_BUCKET = "substra-datasample"
FUNCTION_BUCKET = "substra-function"
MODEL_BUCKET = "substra-model"
ASSET_LOGS_BUCKET = "substra-asset-logs"
BUCKETS = (DATAMANAGER_BUCKET, DATASAMPLE_BUCKET, FUNCTION_BUCKET, MODEL_BUCKET, ASSET_LOGS_BUCKET)

CHUNK_SIZE = 1024 * 1024
# S3's limit; the filesystem backend applies it too so both accept the same keys.
MAX_KEY_BYTES = 1024
READ_BYTES_MAX_SIZE = 64 * 1024 * 1024

# S3 bucket naming rules (lowercase, digits, dots, hyphens; 3 to 63 characters).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_DOWNLOAD_TEMP_PREFIX = ".download-"


class StorageError(Exception):
    """Any failure of the object storage."""


class ObjectNotFoundError(StorageError):
    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"object {key!r} not found in bucket {bucket!r}")
        self.bucket = bucket
        self.key = key


class InvalidKeyError(StorageError, ValueError):
    """An object key, key prefix or bucket name that is refused."""


class ObjectTooLargeError(StorageError):
    def __init__(self, bucket: str, key: str, max_size: int) -> None:
        super().__init__(f"object {key!r} in bucket {bucket!r} exceeds the maximum size of {max_size} bytes")
        self.bucket = bucket
        self.key = key
        self.max_size = max_size


class ChecksumMismatchError(StorageError):
    def __init__(self, bucket: str, key: str, expected: str, actual: str) -> None:
        super().__init__(
            f"object {key!r} in bucket {bucket!r} has checksum {actual}, expected {expected}; not kept"
        )
        self.bucket = bucket
        self.key = key
        self.expected = expected
        self.actual = actual


class StorageAccessError(StorageError):
    """The storage refused the credentials or denied the operation."""


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    size: int


def validate_bucket(bucket: str) -> str:
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise InvalidKeyError(f"invalid bucket name {bucket!r}")
    return bucket


def _check_path_like(value: str, what: str, *, allow_trailing_slash: bool) -> None:
    if not value:
        raise InvalidKeyError(f"empty object {what}")
    if "\x00" in value:
        raise InvalidKeyError(f"object {what} {value!r} contains a NUL character")
    if value.startswith("/"):
        raise InvalidKeyError(f"object {what} {value!r} starts with '/'")
    try:
        encoded_length = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKeyError(f"object {what} {value!r} is not valid UTF-8") from None
    if encoded_length > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object {what} is longer than {MAX_KEY_BYTES} bytes")
    segments = value.split("/")
    if allow_trailing_slash and segments[-1] == "":
        segments.pop()
    # Empty and '.' segments would alias other keys on a filesystem (S3 servers differ on them).
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidKeyError(f"object {what} {value!r} has an empty, '.' or '..' segment")


def validate_key(key: str) -> str:
    _check_path_like(key, "key", allow_trailing_slash=False)
    return key


def validate_prefix(prefix: str) -> str:
    # An empty prefix would select a whole bucket: refused so a bug cannot wipe it.
    _check_path_like(prefix, "prefix", allow_trailing_slash=True)
    return prefix


def iter_chunks(data: Iterable[bytes] | BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The non-empty chunks of an iterable of bytes or of a binary file (read `chunk_size` at a time)."""
    if isinstance(data, bytes | bytearray | memoryview):
        # Iterating bytes yields ints: a caller passing one blob almost certainly meant [blob].
        raise TypeError(
            "put() takes an iterable of byte chunks or a binary file, not bytes: wrap it in a list"
        )
    read: Callable[[int], bytes] | None = getattr(data, "read", None)
    if read is not None:
        while chunk := read(chunk_size):
            yield chunk
        return
    for chunk in data:
        if chunk:
            yield chunk


class StreamDigest:
    """Size and sha256 of a stream, computed as it passes; enforces an optional maximum size."""

    def __init__(self, bucket: str, key: str, max_size: int | None = None) -> None:
        self._bucket = bucket
        self._key = key
        self._max_size = max_size
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._max_size is not None and self.size > self._max_size:
            raise ObjectTooLargeError(self._bucket, self._key, self._max_size)
        self._hash.update(chunk)

    def hexdigest(self, salt: bytes = b"") -> str:
        digest = self._hash.copy()
        digest.update(salt)
        return digest.hexdigest()

    def stored(self, salt: bytes = b"") -> StoredObject:
        return StoredObject(bucket=self._bucket, key=self._key, size=self.size, sha256=self.hexdigest(salt))


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


class ObjectStream(Iterator[bytes]):
    """The chunks of one stored object from an offset. Closes itself at the end; use `with` otherwise."""

    def __init__(self, source: _Readable, *, size: int, chunk_size: int = CHUNK_SIZE) -> None:
        self._source = source
        self._chunk_size = chunk_size
        self._closed = False
        self.size = size  # bytes this stream yields: the object's size minus the offset

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        chunk = self._source.read(self._chunk_size)
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._source.close()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ObjectStorage(abc.ABC):
    """Objects by bucket and key. Keys are '/'-separated paths (see `validate_key`)."""

    @abc.abstractmethod
    def put(
        self,
        bucket: str,
        key: str,
        chunks: Iterable[bytes] | BinaryIO,
        *,
        max_size: int | None = None,
        checksum_salt: bytes = b"",
    ) -> StoredObject:
        """Store the streamed bytes under `key`, replacing any previous object, all or nothing.

        The sha256 covers the bytes followed by `checksum_salt`. Beyond `max_size` bytes,
        `ObjectTooLargeError`; on any error nothing new is stored (a previous object stays).
        """

    @abc.abstractmethod
    def open(self, bucket: str, key: str, offset: int = 0) -> ObjectStream:
        """Stream the object from byte `offset` (an offset at or past the end yields nothing)."""

    @abc.abstractmethod
    def stat(self, bucket: str, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def delete(self, bucket: str, key: str) -> None:
        """Delete the object; a missing object is fine."""

    @abc.abstractmethod
    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object whose key starts with `prefix` (a plain string prefix, as in S3).

        Returns how many objects were deleted.
        """

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
        except ObjectNotFoundError:
            return False
        return True

    def read_bytes(self, bucket: str, key: str, *, max_size: int = READ_BYTES_MAX_SIZE) -> bytes:
        """The whole object, for small ones only (openers, descriptions): refused beyond `max_size`."""
        data = bytearray()
        with self.open(bucket, key) as stream:
            if stream.size > max_size:
                raise ObjectTooLargeError(bucket, key, max_size)
            for chunk in stream:
                data += chunk
                if len(data) > max_size:
                    raise ObjectTooLargeError(bucket, key, max_size)
        return bytes(data)

    def download_to_file(
        self,
        bucket: str,
        key: str,
        path: str | os.PathLike[str],
        expected_sha256: str | None = None,
        *,
        checksum_salt: bytes = b"",
    ) -> StoredObject:
        """Write the object to `path` (parents created), verified against `expected_sha256` when given.

        The file appears only once complete and verified: on a mismatch (`ChecksumMismatchError`) or any
        other error nothing is written at `path`.
        """
        destination = Path(path)
        digest = StreamDigest(bucket, key)
        with self.open(bucket, key) as stream:
            # Only once the object is known to exist: a missing one leaves no directories behind.
            destination.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(
                dir=destination.parent, prefix=_DOWNLOAD_TEMP_PREFIX, suffix=".tmp"
            )
            try:
                with os.fdopen(fd, "wb") as file:
                    # mkstemp creates 0600 files; task processes reading inputs may run as other users.
                    os.fchmod(file.fileno(), 0o644)
                    for chunk in stream:
                        digest.update(chunk)
                        file.write(chunk)
                actual = digest.hexdigest(checksum_salt)
                if expected_sha256 is not None and actual != expected_sha256.lower():
                    raise ChecksumMismatchError(bucket, key, expected_sha256, actual)
                os.replace(temp_name, destination)
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise
        return digest.stored(checksum_salt)
