"""Records of the files this organization keeps in object storage (`stored_files`), and builds."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import BinaryIO

from backend_common.db.local import FunctionBuild, ImageEntrypoint, StoredFile
from backend_common.logging import get_logger
from backend_common.storage import ObjectStorage, StoredObject
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

logger = get_logger("backend_worker.stored_files")


def record_stored_file(
    sessions: sessionmaker[Session],
    *,
    asset_key: str,
    role: str,
    bucket: str,
    object_key: str,
    checksum: str,
    size: int,
    filename: str | None = None,
) -> None:
    """Insert or replace the record of (asset key, role)."""
    values = {
        "asset_key": asset_key,
        "role": role,
        "bucket": bucket,
        "object_key": object_key,
        "checksum": checksum,
        "size": size,
        "filename": filename,
        "path": None,
        "created_at": datetime.now(UTC),
    }
    statement = insert(StoredFile).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[StoredFile.asset_key, StoredFile.role],
        set_={key: value for key, value in values.items() if key not in ("asset_key", "role")},
    )
    with sessions() as session, session.begin():
        session.execute(statement)


def store_file(
    storage: ObjectStorage,
    sessions: sessionmaker[Session],
    *,
    asset_key: str,
    role: str,
    bucket: str,
    object_key: str,
    content: Iterable[bytes] | BinaryIO,
    filename: str,
    checksum_salt: bytes = b"",
) -> StoredObject:
    """Put `content` in object storage and record it as the (asset key, role) file."""
    stored = storage.put(bucket, object_key, content, checksum_salt=checksum_salt)
    record_stored_file(
        sessions,
        asset_key=asset_key,
        role=role,
        bucket=bucket,
        object_key=object_key,
        checksum=stored.sha256,
        size=stored.size,
        filename=filename,
    )
    return stored


def forget_stored_file(sessions: sessionmaker[Session], asset_key: str, role: str) -> StoredFile | None:
    """Delete the record and return what it was (the caller deletes the object)."""
    with sessions() as session, session.begin():
        row = session.scalars(
            select(StoredFile).where(StoredFile.asset_key == asset_key, StoredFile.role == role)
        ).first()
        if row is not None:
            session.execute(delete(StoredFile).where(StoredFile.id == row.id))
        return row


def record_function_build(
    sessions: sessionmaker[Session],
    archive_checksum: str,
    *,
    status: str,
    location: str | None = None,
    error: str | None = None,
    entrypoint: list[str] | None = None,
) -> None:
    """Keep the build state (and the entrypoint) per archive checksum; never fails the caller."""
    now = datetime.now(UTC)
    build = insert(FunctionBuild).values(
        archive_checksum=archive_checksum, status=status, location=location, error=error, updated_at=now
    )
    build = build.on_conflict_do_update(
        index_elements=[FunctionBuild.archive_checksum],
        set_={"status": status, "location": location, "error": error, "updated_at": now},
    )
    try:
        with sessions() as session, session.begin():
            session.execute(build)
            if entrypoint is not None:
                session.execute(
                    insert(ImageEntrypoint)
                    .values(archive_checksum=archive_checksum, entrypoint=entrypoint, created_at=now)
                    .on_conflict_do_nothing(index_elements=[ImageEntrypoint.archive_checksum])
                )
    except SQLAlchemyError as failure:
        logger.warning("function build record lost", archive_checksum=archive_checksum, error=str(failure))
