"""Files of a create: put in object storage and recorded in `stored_files`, or removed again.

Files are stored before the orchestrator call, because the events it emits may reach this
organization's worker before the response does; they are removed when the registration fails, so a
refused create leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from backend_common.storage import StoredObject
from sqlalchemy.orm import Session
from starlette.requests import Request

from backend_server import archives, validation
from backend_server.data import files
from backend_server.multipart import MultipartForm, Upload
from backend_server.state import ServerState, blocking, in_transaction, server_state


@dataclass(frozen=True)
class StoredUpload:
    """A file put in object storage for an asset, recorded in `stored_files` once registered."""

    role: str
    stored: StoredObject
    filename: str


def put_upload(
    state: ServerState, bucket: str, object_key: str, upload: Upload, *, role: str, filename: str
) -> StoredUpload:
    upload.file.seek(0)
    stored = state.storage.put(
        bucket, object_key, upload.file, max_size=state.settings.storage.data_upload_max_size
    )
    return StoredUpload(role, stored, filename)


def remove_objects(state: ServerState, uploads: Sequence[StoredUpload]) -> None:
    for upload in uploads:
        state.storage.delete(upload.stored.bucket, upload.stored.key)


async def record_files(request: Request, asset_uploads: Sequence[tuple[str, StoredUpload]]) -> None:
    now = datetime.now(UTC)

    def record(session: Session) -> None:
        for asset_key, upload in asset_uploads:
            files.add_file(
                session,
                asset_key=asset_key,
                role=upload.role,
                bucket=upload.stored.bucket,
                object_key=upload.stored.key,
                checksum=upload.stored.sha256,
                size=upload.stored.size,
                filename=upload.filename,
                now=now,
            )

    await in_transaction(request, record)


async def forget_files(request: Request, asset_keys: list[str], uploads: Sequence[StoredUpload]) -> None:
    state = server_state(request)
    await in_transaction(request, lambda session: files.delete_files(session, asset_keys))
    await blocking(lambda: remove_objects(state, uploads))


def required_file(form: MultipartForm, field: str) -> Upload:
    upload = form.file(field)
    if upload is None:
        raise validation.file_error(f"{field}: No file was submitted.")
    if upload.size == 0:
        raise validation.file_error(f"{field}: The submitted file is empty.")
    return upload


def check_small_file(state: ServerState, upload: Upload) -> None:
    if upload.size > state.settings.api.small_file_max_size:
        raise validation.file_error(
            f"{upload.field}: the file is larger than {state.settings.api.small_file_max_size} bytes"
        )


def distinct_names(first: str, second: str) -> tuple[str, str]:
    """Object names under one asset prefix must differ."""
    return (first, f"description-{second}") if first == second else (first, second)


def archive_limits(state: ServerState) -> archives.ArchiveLimits:
    api = state.settings.api
    return archives.ArchiveLimits(
        max_uncompressed_size=api.archive_max_uncompressed_size,
        max_compression_ratio=api.archive_max_compression_ratio,
        max_entries=api.archive_max_entries,
    )
