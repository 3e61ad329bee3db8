"""Files this organization keeps in object storage for its assets (`stored_files`)."""

from __future__ import annotations

from datetime import datetime

from backend_common.db.local import StoredFile
from backend_common.db.replica import FailureReport
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

FUNCTION_ARCHIVE = "function_archive"
FUNCTION_DESCRIPTION = "function_description"
FUNCTION_IMAGE = "function_image"
OPENER = "opener"
DATA_MANAGER_DESCRIPTION = "data_manager_description"
DATA_SAMPLE = "data_sample"
MODEL = "model"
LOGS = "logs"


def get_file(session: Session, asset_key: str, role: str) -> StoredFile | None:
    return session.scalars(
        select(StoredFile).where(StoredFile.asset_key == asset_key, StoredFile.role == role)
    ).one_or_none()


def add_file(
    session: Session,
    *,
    asset_key: str,
    role: str,
    bucket: str,
    object_key: str,
    checksum: str,
    size: int,
    filename: str | None,
    now: datetime,
    path: str | None = None,
) -> StoredFile:
    row = StoredFile(
        asset_key=asset_key,
        role=role,
        bucket=bucket,
        object_key=object_key,
        checksum=checksum,
        size=size,
        filename=filename,
        created_at=now,
        path=path,
    )
    session.add(row)
    return row


def delete_files(session: Session, asset_keys: list[str]) -> None:
    session.execute(delete(StoredFile).where(StoredFile.asset_key.in_(asset_keys)))


def failure_report(session: Session, channel: str, asset_key: str) -> FailureReport | None:
    return session.scalars(
        select(FailureReport).where(FailureReport.channel == channel, FailureReport.asset_key == asset_key)
    ).one_or_none()
