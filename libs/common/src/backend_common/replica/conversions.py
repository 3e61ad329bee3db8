"""Orchestrator messages → replica column values (timestamps, permissions, addressables, enum names)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Table

from backend_common.db.base import Base
from backend_common.protos import common_pb2

# The reference backend stores the task tag in the task metadata under this key (rest-api 5.5).
TAG_METADATA_KEY = "__tag__"


class _HasTimestampFields(Protocol):
    def HasField(self, field_name: Any) -> bool: ...  # noqa: N802  # protobuf's name


def to_datetime(timestamp: Timestamp) -> datetime:
    """A protobuf timestamp as an aware UTC datetime (the orchestrator uses microseconds)."""
    return timestamp.ToDatetime(tzinfo=UTC)


def optional_datetime(message: _HasTimestampFields, field: str) -> datetime | None:
    """The timestamp `field` of `message`, or None when it is not set (e.g. `cancelation_date`)."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    assert isinstance(value, Timestamp)
    return to_datetime(value)


def permission_columns(prefix: str, permission: common_pb2.Permission) -> dict[str, Any]:
    """`<prefix>_public` and `<prefix>_authorized_ids` of one Permission."""
    return {
        f"{prefix}_public": permission.public,
        f"{prefix}_authorized_ids": list(permission.authorized_ids),
    }


def permissions_columns(permissions: common_pb2.Permissions) -> dict[str, Any]:
    """The four columns of `PermissionsMixin` from a Permissions message."""
    return {
        **permission_columns("permissions_process", permissions.process),
        **permission_columns("permissions_download", permissions.download),
    }


def addressable(value: common_pb2.Addressable) -> tuple[str | None, str | None]:
    """(storage_address, checksum), both None for an absent or empty addressable."""
    if not value.checksum and not value.storage_address:
        return None, None
    return value.storage_address or None, value.checksum or None


def split_tag(metadata: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(tag, metadata without the tag): the tag travels in the task metadata."""
    rest = dict(metadata)
    tag = rest.pop(TAG_METADATA_KEY, "")
    return tag, rest


def table(model: type[Base]) -> Table:
    """The table of a model, for statements built once and run with parameters."""
    mapped = model.__table__
    assert isinstance(mapped, Table)
    return mapped
