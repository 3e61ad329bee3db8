"""Objects in an S3-compatible server (MinIO, SeaweedFS, AWS) through boto3.

Path-style addressing and signature v4, as MinIO-style servers expect. Buckets are created on first
write. Uploads are streamed: a single PutObject when the data fits in one part, else a multipart upload
that is aborted on any error, so a failed write never leaves an object behind.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from backend_common.storage.base import (
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStorage,
    ObjectStream,
    StorageAccessError,
    StorageError,
    StoredObject,
    StreamDigest,
    iter_chunks,
    validate_bucket,
    validate_key,
    validate_prefix,
)

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

logger = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
DELETE_BATCH_SIZE = 1000  # S3's maximum keys per DeleteObjects

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_ACCESS_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403", "InvalidToken"}
)
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})

# One session for every client: a session loads the service models (slow) once. Sessions are not
# thread-safe, hence the lock around client creation; the clients themselves are.
_session = boto3.session.Session()
_session_lock = threading.Lock()


class S3Storage(ObjectStorage):
    def __init__(
        self,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        *,
        part_size: int = PART_SIZE,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_attempts: int = 3,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3 minimum)")
        self.endpoint_url = endpoint_url
        self.region = region
        self._access_key = access_key
        self._part_size = part_size
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            region_name=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            # Flexible checksums (aws-chunked trailers) are not supported by every S3-compatible server;
            # integrity is covered by the signed payload hash (plain HTTP), TLS, and our own sha256.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        with _session_lock:
            self._client: S3Client = _session.client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name=region,
                config=config,
            )
        self._ready_buckets: set[str] = set()
        self._buckets_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Storage({self.endpoint_url!r})"

    @property
    def client(self) -> S3Client:
        return self._client

    def put(
        self,
        bucket: str,
        key: str,
        chunks: Iterable[bytes] | BinaryIO,
        *,
        max_size: int | None = None,
        checksum_salt: bytes = b"",
    ) -> StoredObject:
        validate_bucket(bucket)
        validate_key(key)
        self._ensure_bucket(bucket)
        digest = StreamDigest(bucket, key, max_size)
        # One part in memory at most; a BytesIO is handed to boto3 as is, without a copy.
        part = io.BytesIO()
        upload_id: str | None = None
        completed: list[CompletedPartTypeDef] = []
        try:
            for chunk in iter_chunks(chunks):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    # A full part is sent only once more data follows, so the last part is never empty
                    # and data fitting in one part goes out as a single PutObject.
                    if part.tell() == self._part_size:
                        if upload_id is None:
                            upload_id = self._create_multipart_upload(bucket, key)
                        completed.append(self._upload_part(bucket, key, upload_id, len(completed) + 1, part))
                        part = io.BytesIO()
                    room = self._part_size - part.tell()
                    part.write(view[:room])
                    view = view[room:]
            if upload_id is None:
                part.seek(0)
                with self._errors(bucket, key):
                    self._client.put_object(Bucket=bucket, Key=key, Body=part)
            else:
                completed.append(self._upload_part(bucket, key, upload_id, len(completed) + 1, part))
                with self._errors(bucket, key):
                    self._client.complete_multipart_upload(
                        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": completed}
                    )
        except BaseException:
            if upload_id is not None:
                self._abort_multipart_upload(bucket, key, upload_id)
            raise
        return digest.stored(checksum_salt)

    def open(self, bucket: str, key: str, offset: int = 0) -> ObjectStream:
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        validate_bucket(bucket)
        validate_key(key)
        try:
            if offset:
                response = self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-")
            else:
                response = self._client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            # S3 answers 416 to a range starting at or past the end (or on an empty object).
            if _error_code(exc) == "InvalidRange" and self.stat(bucket, key).size <= offset:
                return ObjectStream(io.BytesIO(), size=0)
            raise self._translate(exc, bucket, key) from exc
        except BotoCoreError as exc:
            raise self._unreachable(exc) from exc
        return ObjectStream(_Body(self, response["Body"], bucket, key), size=response["ContentLength"])

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        validate_bucket(bucket)
        validate_key(key)
        with self._errors(bucket, key):
            response = self._client.head_object(Bucket=bucket, Key=key)
        return ObjectInfo(size=response["ContentLength"])

    def delete(self, bucket: str, key: str) -> None:
        validate_bucket(bucket)
        validate_key(key)
        try:
            with self._errors(bucket, key):
                self._client.delete_object(Bucket=bucket, Key=key)
        except ObjectNotFoundError:
            pass  # the bucket does not exist (a missing key is a success in S3 already)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        validate_bucket(bucket)
        validate_prefix(prefix)
        deleted = 0
        for batch in self._list_keys(bucket, prefix):
            objects: list[ObjectIdentifierTypeDef] = [{"Key": key} for key in batch]
            with self._errors(bucket, prefix):
                response = self._client.delete_objects(
                    Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
                )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(
                    f"object storage at {self.endpoint_url} could not delete {len(errors)} object(s) under "
                    f"{prefix!r} in bucket {bucket!r}, e.g. {first.get('Key')!r}: "
                    f"{first.get('Code')}: {first.get('Message')}"
                )
            deleted += len(batch)
        return deleted

    def _list_keys(self, bucket: str, prefix: str) -> Iterator[list[str]]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": DELETE_BATCH_SIZE}
        )
        try:
            with self._errors(bucket, prefix):
                for page in pages:
                    keys = [item["Key"] for item in page.get("Contents", []) if "Key" in item]
                    if keys:
                        yield keys
        except ObjectNotFoundError:
            return  # no such bucket: nothing to delete

    def _ensure_bucket(self, bucket: str) -> None:
        with self._buckets_lock:
            if bucket in self._ready_buckets:
                return
        # Check first: credentials allowed to write objects may not be allowed to create buckets.
        try:
            with self._errors(bucket, None):
                self._client.head_bucket(Bucket=bucket)
        except ObjectNotFoundError:
            self._create_bucket(bucket)
        with self._buckets_lock:
            self._ready_buckets.add(bucket)

    def _create_bucket(self, bucket: str) -> None:
        try:
            if self.region == "us-east-1":
                self._client.create_bucket(Bucket=bucket)
            else:
                self._client.create_bucket(
                    Bucket=bucket,
                    CreateBucketConfiguration={"LocationConstraint": self.region},  # type: ignore[typeddict-item]
                )
        except ClientError as exc:
            # Another process created it between our check and our request.
            if _error_code(exc) not in _BUCKET_EXISTS_CODES:
                raise self._translate(exc, bucket, None) from exc
        except BotoCoreError as exc:
            raise self._unreachable(exc) from exc

    def _create_multipart_upload(self, bucket: str, key: str) -> str:
        with self._errors(bucket, key):
            return self._client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, part: io.BytesIO
    ) -> CompletedPartTypeDef:
        part.seek(0)
        with self._errors(bucket, key):
            response = self._client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
            )
        return {"ETag": response["ETag"], "PartNumber": number}

    def _abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            # The original error matters more; the server expires abandoned uploads eventually.
            logger.warning(
                "could not abort multipart upload %s of %s/%s", upload_id, bucket, key, exc_info=True
            )

    @contextmanager
    def _errors(self, bucket: str, key: str | None) -> Iterator[None]:
        """Turn botocore errors into the storage's errors."""
        try:
            yield
        except ClientError as exc:
            raise self._translate(exc, bucket, key) from exc
        except BotoCoreError as exc:
            raise self._unreachable(exc) from exc

    def _translate(self, exc: ClientError, bucket: str, key: str | None) -> StorageError:
        code = _error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = exc.response.get("Error", {}).get("Message", "")
        if code in _NOT_FOUND_CODES:
            return ObjectNotFoundError(bucket, key if key is not None else "")
        if code in _ACCESS_CODES or status == 403:
            # HEAD responses carry no body: a bare 403 is either bad credentials or a missing permission.
            return StorageAccessError(
                f"object storage at {self.endpoint_url} refused {exc.operation_name} on bucket {bucket!r} "
                f"with access key {self._access_key!r} ({code}: {message or 'Forbidden'}); check the "
                "credentials (OBJECTSTORE_ACCESSKEY / OBJECTSTORE_SECRETKEY) and their permissions"
            )
        target = f"{bucket}/{key}" if key is not None else bucket
        return StorageError(
            f"object storage at {self.endpoint_url}: {exc.operation_name} on {target!r} failed "
            f"(HTTP {status}, {code}: {message})"
        )

    def _unreachable(self, exc: BotoCoreError) -> StorageError:
        return StorageError(f"object storage at {self.endpoint_url} failed: {exc}")


class _Body:
    """A GetObject body whose read errors (connection reset, timeout) become storage errors."""

    def __init__(self, storage: S3Storage, body: StreamingBody, bucket: str, key: str) -> None:
        self._storage = storage
        self._body = body
        self._bucket = bucket
        self._key = key

    def read(self, size: int, /) -> bytes:
        with self._storage._errors(self._bucket, self._key):
            return self._body.read(size)

    def close(self) -> None:
        self._body.close()


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
