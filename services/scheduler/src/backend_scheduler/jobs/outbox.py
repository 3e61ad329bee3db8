"""Purge of the dispatch outbox: rows published long ago have done their work.

The events service and the scheduler write one `celery_dispatches` row per decided piece of work
(`backend_common.dispatch.outbox`); once published, a row only keeps its dedupe key, which guards
against deciding the same work twice while the triggering events may still be seen again. Past
`DISPATCH_RETENTION` they are deleted, in batches so that no run holds many row locks for long.
Pending rows are never touched, and compute tasks keep their own record (`task_dispatches`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from backend_common.db import session_scope
from backend_common.db.local import CeleryDispatch
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

BATCH = 5000


def purge_published_dispatches(
    sessions: sessionmaker[Session], now: datetime, retention: timedelta, *, batch: int = BATCH
) -> int:
    """Delete the outbox rows published before `now - retention`; returns how many went."""
    cutoff = now - retention
    deleted = 0
    while True:
        with session_scope(sessions) as session:
            oldest = (
                select(CeleryDispatch.id)
                .where(CeleryDispatch.published_at.is_not(None), CeleryDispatch.published_at < cutoff)
                .order_by(CeleryDispatch.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
            statement = delete(CeleryDispatch).where(CeleryDispatch.id.in_(oldest.scalar_subquery()))
            result = session.execute(statement)
            count = int(getattr(result, "rowcount", 0) or 0)
        deleted += count
        if count < batch:
            return deleted
