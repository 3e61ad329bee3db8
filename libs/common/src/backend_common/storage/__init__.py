"""Object storage of every service: S3 when `OBJECTSTORE_URL` is set, else files under `MEDIA_ROOT`."""

from __future__ import annotations

from backend_common.settings import StorageSettings
from backend_common.storage.base import (
    ASSET_LOGS_BUCKET,
    BUCKETS,
    DATAMANAGER_BUCKET,
    DATASAMPLE_BUCKET,
    FUNCTION_BUCKET,
    MODEL_BUCKET,
    ChecksumMismatchError,
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStorage,
    ObjectStream,
    ObjectTooLargeError,
    StorageAccessError,
    StorageError,
    StoredObject,
    validate_bucket,
    validate_key,
    validate_prefix,
)
from backend_common.storage.filesystem import FilesystemStorage
from backend_common.storage.s3 import S3Storage

__all__ = [
    "ASSET_LOGS_BUCKET",
    "BUCKETS",
    "DATAMANAGER_BUCKET",
    "DATASAMPLE_BUCKET",
    "FUNCTION_BUCKET",
    "MODEL_BUCKET",
    "ChecksumMismatchError",
    "FilesystemStorage",
    "InvalidKeyError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStorage",
    "ObjectStream",
    "ObjectTooLargeError",
    "S3Storage",
    "StorageAccessError",
    "StorageError",
    "StoredObject",
    "make_storage",
    "validate_bucket",
    "validate_key",
    "validate_prefix",
]


def make_storage(settings: StorageSettings) -> ObjectStorage:
    if not settings.objectstore_url:
        return FilesystemStorage(settings.media_root)
    if not settings.objectstore_access_key or not settings.objectstore_secret_key:
        raise ValueError("OBJECTSTORE_ACCESSKEY and OBJECTSTORE_SECRETKEY are required with OBJECTSTORE_URL")
    url = settings.objectstore_url
    # The reference (MinIO client) takes a bare `host:port` over plain HTTP.
    if "://" not in url:
        url = f"http://{url}"
    return S3Storage(
        url,
        settings.objectstore_access_key,
        settings.objectstore_secret_key,
        settings.objectstore_region,
    )
