"""Shared pieces of the listing queries: the page result and the row count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from backend_server import prepared
from backend_server.listing import PageRequest, check_page

REPLICA_COUNT = "SELECT count FROM replica_counts WHERE channel = $1 AND kind = $2"


@dataclass(frozen=True)
class Page:
    """One page of a listing: the total count and the items, already serialized as JSON."""

    count: int
    items: list[str]

    @property
    def results_json(self) -> str:
        return "[" + ",".join(self.items) + "]"


def count_rows(session: Session, model: Any, channel: str, conditions: Sequence[ColumnElement[bool]]) -> int:
    """Rows of `model` in `channel` matching `conditions`.

    Without conditions the trigger-maintained `replica_counts` answers without scanning the table.
    """
    if not conditions:
        rows = prepared.execute(session, "replica_count", REPLICA_COUNT, [channel, model.__tablename__])
        return int(rows[0][0]) if rows else 0
    return int(
        session.scalar(select(func.count()).select_from(model).where(model.channel == channel, *conditions))
        or 0
    )


def checked_count(
    session: Session, model: Any, channel: str, conditions: Sequence[ColumnElement[bool]], page: PageRequest
) -> int:
    count = count_rows(session, model, channel, conditions)
    check_page(page, count)
    return count
