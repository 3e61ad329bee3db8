"""Declarative base shared by every table of the backend database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, JSON, Boolean, DateTime, MetaData, String, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.orm.properties import MappedColumn

# Stable constraint names so alembic migrations stay reproducible.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on Postgres (indexable with GIN), plain JSON elsewhere.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")
StringList = ARRAY(String(100))

ORGANIZATION_ID_LENGTH = 100
CHANNEL_LENGTH = 100


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def key_column(
    *, primary_key: bool = False, nullable: bool = False, index: bool = False
) -> MappedColumn[Any]:
    """Asset keys are UUIDs chosen by clients or the orchestrator; kept as strings in Python."""
    return mapped_column(Uuid(as_uuid=False), primary_key=primary_key, nullable=nullable, index=index)


def organization_id(*, nullable: bool = False, index: bool = False) -> MappedColumn[Any]:
    return mapped_column(String(ORGANIZATION_ID_LENGTH), nullable=nullable, index=index)


def channel_column() -> MappedColumn[Any]:
    return mapped_column(String(CHANNEL_LENGTH), nullable=False)


def timestamp(*, nullable: bool = False, index: bool = False) -> MappedColumn[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=nullable, index=index)


def flag(default: bool = False) -> MappedColumn[bool]:
    return mapped_column(
        Boolean, nullable=False, default=default, server_default="true" if default else "false"
    )


def id_list() -> MappedColumn[list[str]]:
    return mapped_column(StringList, nullable=False, default=list, server_default="{}")


def metadata_column() -> MappedColumn[dict[str, str]]:
    # `metadata` is reserved on declarative classes: the attribute is `metadata_`, the column `metadata`.
    return mapped_column("metadata", JsonDocument, nullable=False, default=dict, server_default="{}")
