"""Helpers shared by the data-access modules."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Row, Select, select


def existing_keys(
    connection: Connection, key: Column[Any], channel: Column[Any], keys: Collection[str]
) -> dict[str, str]:
    """key -> channel of the given keys already stored, whatever their channel."""
    if not keys:
        return {}
    rows = connection.execute(select(key, channel).where(key.in_(list(keys)))).all()
    return {row[0]: row[1] for row in rows}


def page(connection: Connection, statement: Select[Any], offset: int, size: int) -> Sequence[Row[Any]]:
    """One page of rows, plus one extra row telling whether another page follows."""
    return connection.execute(statement.offset(offset).limit(size + 1)).all()
