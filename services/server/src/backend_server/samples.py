"""Data-sample creation: uploaded archives or directories on this server, then one registration."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend_common.storage import DATASAMPLE_BUCKET
from sqlalchemy.orm import Session

from backend_server import archives, validation
from backend_server.data import data_managers, files
from backend_server.errors import bad_request
from backend_server.filestore import StoredUpload, archive_limits, put_upload, remove_objects
from backend_server.http import as_list
from backend_server.multipart import Upload, safe_filename
from backend_server.state import ServerState


def check_own_data_managers(session: Session, channel: str, keys: list[str], own_id: str) -> None:
    for key in keys:
        data_manager = data_managers.get_data_manager(session, channel, key)
        if data_manager is None:
            raise bad_request(f"Data manager {key} not found")
        if data_manager.owner != own_id:
            raise bad_request(f"Data manager {key} is not owned by this organization ({own_id})")


@dataclass(frozen=True)
class NewSample:
    """A sample about to be registered: its archive in object storage, or its directory on this server."""

    key: str
    checksum: str
    upload: StoredUpload | None
    path: str | None = None


def store_uploaded_samples(state: ServerState, uploads: list[Upload]) -> list[NewSample]:
    limits = archive_limits(state)
    checksums = []
    for upload in uploads:
        if upload.size == 0:
            raise validation.file_error(f"{upload.field}: The submitted file is empty.")
        try:
            checksums.append(archives.inspect_archive(upload.file, limits).directory_checksum)
        except archives.ArchiveError as error:
            raise validation.file_error(f"{upload.field}: {error}") from None
    samples: list[NewSample] = []
    try:
        for upload, checksum in zip(uploads, checksums, strict=True):
            key = str(uuid.uuid4())
            stored = put_upload(
                state,
                DATASAMPLE_BUCKET,
                key,
                upload,
                role=files.DATA_SAMPLE,
                filename=safe_filename(upload.filename, key),
            )
            samples.append(NewSample(key, checksum, stored))
    except BaseException:
        remove_objects(state, [sample.upload for sample in samples if sample.upload])
        raise
    return samples


def sample_directories(state: ServerState, document: dict[str, Any]) -> list[Path]:
    root = Path(state.settings.storage.servermedias_root).resolve()
    raw_paths = as_list(document.get("paths")) or as_list(document.get("path"))
    if not raw_paths:
        raise bad_request("path: a directory on the server is required")
    directories: list[Path] = []
    for raw in raw_paths:
        candidate = Path(str(raw))
        if candidate.is_symlink():
            raise bad_request(f"path: {raw} is a symbolic link")
        resolved = candidate.resolve()
        if not resolved.is_relative_to(root):
            raise bad_request(f"path: {raw} is not under the server media directory")
        if not resolved.is_dir():
            raise bad_request(f"path: {raw} is not a directory")
        if document.get("multiple"):
            children = sorted(
                child for child in resolved.iterdir() if child.is_dir() and not child.is_symlink()
            )
            if not children:
                raise bad_request(f"path: {raw} has no sub-directory")
            directories.extend(children)
        else:
            directories.append(resolved)
    return directories


def store_server_samples(state: ServerState, document: dict[str, Any]) -> list[NewSample]:
    directories = sample_directories(state, document)
    checksums = []
    for directory in directories:
        try:
            checksums.append(archives.directory_checksum(directory))
        except archives.ArchiveError as error:
            raise bad_request(f"path: {directory}: {error}") from None
    samples: list[NewSample] = []
    try:
        for directory, checksum in zip(directories, checksums, strict=True):
            key = str(uuid.uuid4())
            if state.settings.storage.datasample_storage_in_servermedias:
                samples.append(NewSample(key, checksum, None, path=str(directory)))
                continue
            with archives.tar_directory(directory, state.settings.api.upload_spool_dir) as archive:
                stored = state.storage.put(DATASAMPLE_BUCKET, key, archive)
            samples.append(NewSample(key, checksum, StoredUpload(files.DATA_SAMPLE, stored, f"{key}.tar")))
    except BaseException:
        remove_objects(state, [sample.upload for sample in samples if sample.upload])
        raise
    return samples
