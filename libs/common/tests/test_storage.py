"""Object storage against the real filesystem and a real S3 server (SeaweedFS, credentials enforced)."""

from __future__ import annotations

import hashlib
import io
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_common.settings import StorageSettings
from backend_common.storage import (
    MODEL_BUCKET,
    ChecksumMismatchError,
    FilesystemStorage,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStorage,
    ObjectTooLargeError,
    S3Storage,
    StorageAccessError,
    StorageError,
    StoredObject,
    make_storage,
)
from backend_common.storage.s3 import PART_SIZE
from backend_common.testing.seaweedfs import SeaweedFS

MiB = 1024 * 1024
BUCKET = MODEL_BUCKET
# ~20 MiB: three parts of 8 MiB on S3, with chunk sizes that do not line up with parts.
LARGE_SIZE = 20 * MiB + 123
LARGE_CHUNK = 3 * MiB + 1


@pytest.fixture(params=["fs", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest) -> ObjectStorage:
    result: ObjectStorage = request.getfixturevalue(f"{request.param}_storage")
    return result


@pytest.fixture
def prefix() -> str:
    # The S3 server lives for the whole session: every test writes under its own prefix.
    return f"tests/{uuid.uuid4().hex}/"


@pytest.fixture(scope="module")
def large_data() -> bytes:
    return random.Random(20).randbytes(LARGE_SIZE)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def failing_after(data: bytes, chunk_size: int) -> Iterator[bytes]:
    yield from chunked(data, chunk_size)
    raise RuntimeError("input failed mid-stream")


def streamed_sha256(storage: ObjectStorage, bucket: str, key: str, offset: int = 0) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in storage.open(bucket, key, offset):
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def test_round_trip(storage: ObjectStorage, prefix: str) -> None:
    data = b"opener code\n" * 1000
    key = f"{prefix}datamanagers/opener.py"

    stored = storage.put(BUCKET, key, chunked(data, 777))

    assert stored == StoredObject(bucket=BUCKET, key=key, size=len(data), sha256=sha256(data))
    assert storage.read_bytes(BUCKET, key) == data
    with storage.open(BUCKET, key) as stream:
        assert stream.size == len(data)
        assert b"".join(stream) == data
    assert storage.stat(BUCKET, key) == ObjectInfo(size=len(data))
    assert storage.exists(BUCKET, key)


def test_put_from_binary_files(storage: ObjectStorage, prefix: str, tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * MiB + 5)
    source = tmp_path / "source.bin"
    source.write_bytes(data)

    with source.open("rb") as file:
        from_file = storage.put(BUCKET, f"{prefix}file", file)
    from_memory = storage.put(BUCKET, f"{prefix}memory", io.BytesIO(data))

    assert from_file.sha256 == from_memory.sha256 == sha256(data)
    assert storage.read_bytes(BUCKET, f"{prefix}file") == data


def test_put_replaces_and_handles_empty_objects(storage: ObjectStorage, prefix: str) -> None:
    key = f"{prefix}model"
    storage.put(BUCKET, key, [b"first version"])

    stored = storage.put(BUCKET, key, [])

    assert stored == StoredObject(bucket=BUCKET, key=key, size=0, sha256=sha256(b""))
    assert storage.read_bytes(BUCKET, key) == b""
    assert list(storage.open(BUCKET, key)) == []
    assert storage.stat(BUCKET, key).size == 0


def test_put_refuses_a_bare_bytes_object(storage: ObjectStorage, prefix: str) -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        storage.put(BUCKET, f"{prefix}x", b"data")  # type: ignore[arg-type]


def test_salted_checksum(storage: ObjectStorage, prefix: str, tmp_path: Path) -> None:
    # compute-engine.md 4.2: a model's checksum is sha256(bytes + producing task key).
    data = b"model weights" * 100
    task_key = str(uuid.uuid4())
    key = f"{prefix}models/{task_key}/model"

    stored = storage.put(BUCKET, key, chunked(data, 10), checksum_salt=task_key.encode())

    assert stored.sha256 == sha256(data + task_key.encode())
    assert stored.sha256 != sha256(data)
    assert stored.size == len(data)
    downloaded = storage.download_to_file(
        BUCKET, key, tmp_path / "model", stored.sha256, checksum_salt=task_key.encode()
    )
    assert downloaded == stored
    assert (tmp_path / "model").read_bytes() == data


def test_large_object_streamed_from_a_generator(
    storage: ObjectStorage, prefix: str, large_data: bytes
) -> None:
    key = f"{prefix}large"

    stored = storage.put(BUCKET, key, chunked(large_data, LARGE_CHUNK))

    assert stored.size == LARGE_SIZE
    assert stored.sha256 == sha256(large_data)
    assert streamed_sha256(storage, BUCKET, key) == (LARGE_SIZE, sha256(large_data))
    # A ranged read starting just before the first part boundary.
    offset = PART_SIZE - 5
    assert streamed_sha256(storage, BUCKET, key, offset) == (LARGE_SIZE - offset, sha256(large_data[offset:]))


def test_s3_uses_multipart_only_beyond_one_part(
    s3_storage: S3Storage, prefix: str, large_data: bytes
) -> None:
    s3_storage.put(BUCKET, f"{prefix}large", chunked(large_data, LARGE_CHUNK))
    s3_storage.put(BUCKET, f"{prefix}one-part", chunked(large_data[:PART_SIZE], LARGE_CHUNK))

    # Multipart ETags end with "-<number of parts>".
    assert s3_storage.client.head_object(Bucket=BUCKET, Key=f"{prefix}large")["ETag"].endswith('-3"')
    assert "-" not in s3_storage.client.head_object(Bucket=BUCKET, Key=f"{prefix}one-part")["ETag"]
    assert s3_storage.read_bytes(BUCKET, f"{prefix}one-part") == large_data[:PART_SIZE]


def test_offset_reads(storage: ObjectStorage, prefix: str) -> None:
    data = bytes(range(256)) * 10
    key = f"{prefix}object"
    storage.put(BUCKET, key, [data])

    for offset in (0, 1, 255, len(data) - 1, len(data), len(data) + 10):
        with storage.open(BUCKET, key, offset) as stream:
            assert stream.size == max(len(data) - offset, 0)
            assert b"".join(stream) == data[offset:]
    with pytest.raises(ValueError, match="negative offset"):
        storage.open(BUCKET, key, -1)


def test_stat_exists_delete(storage: ObjectStorage, prefix: str) -> None:
    key = f"{prefix}functions/archive.tar.gz"
    storage.put(BUCKET, key, [b"12345"])
    assert storage.stat(BUCKET, key).size == 5
    assert storage.exists(BUCKET, key)

    storage.delete(BUCKET, key)

    assert not storage.exists(BUCKET, key)
    storage.delete(BUCKET, key)  # deleting a missing object is fine
    storage.delete(f"test-never-created-{uuid.uuid4().hex[:8]}", key)


def test_delete_prefix(storage: ObjectStorage, prefix: str) -> None:
    keys = ["models/k1/model", "models/k12/model", "models/k2/model", "models/k2/extra/a", "other"]
    for key in keys:
        storage.put(BUCKET, f"{prefix}{key}", [key.encode()])

    # A plain string prefix, as in S3: "k1" also covers "k12".
    assert storage.delete_prefix(BUCKET, f"{prefix}models/k1") == 2
    assert not storage.exists(BUCKET, f"{prefix}models/k1/model")
    assert not storage.exists(BUCKET, f"{prefix}models/k12/model")
    assert storage.exists(BUCKET, f"{prefix}models/k2/model")

    assert storage.delete_prefix(BUCKET, f"{prefix}models/k2/") == 2
    assert storage.delete_prefix(BUCKET, f"{prefix}nothing/") == 0
    assert storage.delete_prefix(f"test-never-created-{uuid.uuid4().hex[:8]}", "x/") == 0
    assert storage.read_bytes(BUCKET, f"{prefix}other") == b"other"
    with pytest.raises(InvalidKeyError):
        storage.delete_prefix(BUCKET, "")


def test_missing_objects(storage: ObjectStorage, prefix: str, tmp_path: Path) -> None:
    missing_bucket = f"test-never-created-{uuid.uuid4().hex[:8]}"
    for bucket in (BUCKET, missing_bucket):
        key = f"{prefix}missing"
        with pytest.raises(ObjectNotFoundError, match="missing"):
            storage.open(bucket, key)
        with pytest.raises(ObjectNotFoundError):
            storage.open(bucket, key, offset=3)
        with pytest.raises(ObjectNotFoundError):
            storage.read_bytes(bucket, key)
        with pytest.raises(ObjectNotFoundError):
            storage.stat(bucket, key)
        with pytest.raises(ObjectNotFoundError):
            storage.download_to_file(bucket, key, tmp_path / "task" / "out")
        assert not storage.exists(bucket, key)
    assert list(tmp_path.iterdir()) == []


def test_max_size_exceeded_stores_nothing(storage: ObjectStorage, prefix: str) -> None:
    key = f"{prefix}sample"
    assert storage.put(BUCKET, key, [b"12345"], max_size=5).size == 5

    with pytest.raises(ObjectTooLargeError, match="maximum size of 9 bytes"):
        storage.put(BUCKET, f"{prefix}too-large", chunked(b"0123456789", 3), max_size=9)
    with pytest.raises(ObjectTooLargeError):
        storage.put(BUCKET, key, [b"123456"], max_size=5)

    assert not storage.exists(BUCKET, f"{prefix}too-large")
    assert storage.read_bytes(BUCKET, key) == b"12345"  # the previous object stays


def test_max_size_exceeded_during_a_multipart_upload(
    s3_storage: S3Storage, prefix: str, large_data: bytes
) -> None:
    key = f"{prefix}too-large"

    with pytest.raises(ObjectTooLargeError):
        s3_storage.put(BUCKET, key, chunked(large_data, LARGE_CHUNK), max_size=PART_SIZE + MiB)

    assert not s3_storage.exists(BUCKET, key)
    uploads = s3_storage.client.list_multipart_uploads(Bucket=BUCKET, Prefix=key)
    assert uploads.get("Uploads", []) == []


@pytest.mark.parametrize("size", [10, 10 * MiB], ids=["small", "beyond-one-part"])
def test_input_failure_mid_stream_stores_nothing(
    storage: ObjectStorage, prefix: str, large_data: bytes, size: int
) -> None:
    key = f"{prefix}broken"

    with pytest.raises(RuntimeError, match="input failed mid-stream"):
        storage.put(BUCKET, key, failing_after(large_data[:size], MiB))

    assert not storage.exists(BUCKET, key)


def test_filesystem_leaves_no_temporary_files(fs_storage: FilesystemStorage) -> None:
    with pytest.raises(RuntimeError):
        fs_storage.put(BUCKET, "a/broken", failing_after(b"x" * 100, 10))
    with pytest.raises(ObjectTooLargeError):
        fs_storage.put(BUCKET, "a/too-large", [b"x" * 100], max_size=10)
    fs_storage.put(BUCKET, "a/ok", [b"ok"])

    files = [path.relative_to(fs_storage.root) for path in fs_storage.root.rglob("*") if path.is_file()]
    assert files == [Path(BUCKET, "a", "ok")]
    assert (fs_storage.root / BUCKET / "a" / "ok").stat().st_mode & 0o777 == 0o644


def test_filesystem_prunes_empty_directories(fs_storage: FilesystemStorage) -> None:
    fs_storage.put(BUCKET, "models/k1/model", [b"1"])
    fs_storage.put(BUCKET, "models/k2/model", [b"2"])

    fs_storage.delete(BUCKET, "models/k1/model")
    fs_storage.delete_prefix(BUCKET, "models/k2/")

    assert list((fs_storage.root / BUCKET).iterdir()) == []


def test_filesystem_key_conflicts(fs_storage: FilesystemStorage) -> None:
    # S3 allows both "a" and "a/b"; a filesystem cannot, and says so.
    fs_storage.put(BUCKET, "a/b", [b"1"])
    with pytest.raises(StorageError, match="conflicts"):
        fs_storage.put(BUCKET, "a", [b"2"])
    with pytest.raises(StorageError, match="conflicts"):
        fs_storage.put(BUCKET, "a/b/c", [b"3"])
    assert not fs_storage.exists(BUCKET, "a")
    with pytest.raises(ObjectNotFoundError):
        fs_storage.open(BUCKET, "a")
    assert fs_storage.read_bytes(BUCKET, "a/b") == b"1"


INVALID_KEYS = ["", "/absolute", "..", "a/../b", "a/..", "a\x00b", "a//b", "a/", "./a", "x" * 1025, "\udc80"]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused(storage: ObjectStorage, key: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError):
        storage.put(BUCKET, key, [b"data"])
    with pytest.raises(InvalidKeyError):
        storage.open(BUCKET, key)
    with pytest.raises(InvalidKeyError):
        storage.stat(BUCKET, key)
    with pytest.raises(InvalidKeyError):
        storage.exists(BUCKET, key)
    with pytest.raises(InvalidKeyError):
        storage.delete(BUCKET, key)
    with pytest.raises(InvalidKeyError):
        storage.download_to_file(BUCKET, key, tmp_path / "out")


@pytest.mark.parametrize("bucket", ["", "ab", "Upper", "../x", "a..b", "with/slash", "-start"])
def test_invalid_buckets_are_refused(storage: ObjectStorage, bucket: str) -> None:
    with pytest.raises(InvalidKeyError, match="bucket"):
        storage.put(bucket, "key", [b"data"])
    with pytest.raises(InvalidKeyError, match="bucket"):
        storage.delete_prefix(bucket, "key")


def test_read_bytes_refuses_large_objects(storage: ObjectStorage, prefix: str) -> None:
    storage.put(BUCKET, f"{prefix}big", [b"x" * 100])
    with pytest.raises(ObjectTooLargeError):
        storage.read_bytes(BUCKET, f"{prefix}big", max_size=99)


def test_download_to_file(storage: ObjectStorage, prefix: str, tmp_path: Path) -> None:
    data = random.Random(2).randbytes(2 * MiB + 7)
    key = f"{prefix}opener.py"
    stored = storage.put(BUCKET, key, chunked(data, 100_000))
    destination = tmp_path / "task" / "inputs" / "opener.py"

    downloaded = storage.download_to_file(BUCKET, key, destination, stored.sha256.upper())

    assert downloaded == stored
    assert destination.read_bytes() == data


def test_download_with_a_wrong_checksum_leaves_no_file(
    storage: ObjectStorage, prefix: str, tmp_path: Path
) -> None:
    key = f"{prefix}opener.py"
    storage.put(BUCKET, key, [b"print('hello')"])
    destination = tmp_path / "inputs" / "opener.py"

    with pytest.raises(ChecksumMismatchError) as error:
        storage.download_to_file(BUCKET, key, destination, sha256(b"something else"))

    assert error.value.actual == sha256(b"print('hello')")
    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []


def test_s3_creates_buckets_on_first_use(s3_storage: S3Storage, seaweedfs: SeaweedFS) -> None:
    bucket = f"test-created-{uuid.uuid4().hex[:8]}"
    s3_storage.put(bucket, "key", [b"data"])
    # Another process (another storage object) finds the bucket there; a creation race is harmless.
    other = S3Storage(seaweedfs.endpoint_url, seaweedfs.access_key, seaweedfs.secret_key)
    other._create_bucket(bucket)
    other.put(bucket, "other", [b"more"])

    assert s3_storage.read_bytes(bucket, "other") == b"more"


def test_s3_wrong_credentials_give_a_clear_error(
    seaweedfs: SeaweedFS, s3_storage: S3Storage, prefix: str
) -> None:
    key = f"{prefix}object"
    s3_storage.put(BUCKET, key, [b"data"])
    wrong_secret = S3Storage(seaweedfs.endpoint_url, seaweedfs.access_key, "wrong-secret", max_attempts=1)
    unknown_key = S3Storage(seaweedfs.endpoint_url, "unknown-key", seaweedfs.secret_key, max_attempts=1)

    with pytest.raises(StorageAccessError, match="check the credentials") as error:
        wrong_secret.put(BUCKET, f"{prefix}new", [b"data"])
    assert seaweedfs.access_key in str(error.value)
    with pytest.raises(StorageAccessError, match="SignatureDoesNotMatch"):
        wrong_secret.read_bytes(BUCKET, key)
    with pytest.raises(StorageAccessError, match="InvalidAccessKeyId"):
        unknown_key.open(BUCKET, key)
    with pytest.raises(StorageAccessError):
        unknown_key.exists(BUCKET, key)  # never a silent False


def test_s3_unreachable_endpoint() -> None:
    storage = S3Storage("http://127.0.0.1:9", "key", "secret", max_attempts=1, connect_timeout=1)
    with pytest.raises(StorageError, match=r"object storage at http://127\.0\.0\.1:9 failed"):
        storage.stat(BUCKET, "key")


def test_make_storage(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    local = make_storage(StorageSettings(objectstore_url=None, media_root=str(tmp_path / "medias")))
    assert isinstance(local, FilesystemStorage)
    assert local.root == tmp_path / "medias"

    # The reference's OBJECTSTORE_URL is a bare host:port.
    remote = make_storage(
        StorageSettings(
            objectstore_url=seaweedfs.endpoint_url.removeprefix("http://"),
            objectstore_access_key=seaweedfs.access_key,
            objectstore_secret_key=seaweedfs.secret_key,
        )
    )
    assert isinstance(remote, S3Storage)
    assert remote.endpoint_url == seaweedfs.endpoint_url
    key = f"tests/{uuid.uuid4().hex}"
    assert remote.put(BUCKET, key, [b"data"]).size == 4

    with pytest.raises(ValueError, match="OBJECTSTORE_ACCESSKEY"):
        make_storage(StorageSettings(objectstore_url="127.0.0.1:9000", objectstore_access_key=None))
