"""The per-channel resume cursor: the id of the last event applied to the replica."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backend_common.db.replica import LastEvent


def load_cursor(session: Session, channel: str) -> str:
    """The last applied event id of `channel`, "" before the first (subscribe from the start)."""
    return session.scalar(select(LastEvent.event_id).where(LastEvent.channel == channel)) or ""


def save_cursor(session: Session, channel: str, event_id: str, event_timestamp: datetime | None) -> None:
    """Store the cursor in the caller's transaction, i.e. with the replica changes it covers."""
    statement = insert(LastEvent).values(channel=channel, event_id=event_id, event_timestamp=event_timestamp)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[LastEvent.channel],
            set_={
                "event_id": statement.excluded.event_id,
                "event_timestamp": statement.excluded.event_timestamp,
            },
        )
    )
