"""The purge of the dispatch outbox: only rows published before the retention go, in batches."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from backend_common.db import session_scope
from backend_common.db.local import CeleryDispatch
from backend_scheduler import jobs
from backend_scheduler.context import SchedulerContext
from backend_scheduler.tasks import PURGE_PUBLISHED_DISPATCHES, run_scheduler_job
from backend_scheduler.testing import CHANNEL, concurrently, now
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

RETENTION = timedelta(days=30)


def add_dispatch(sessions: sessionmaker[Session], *, age: timedelta, published: bool) -> str:
    key = f"test:{uuid.uuid4()}"
    created = now() - age
    with session_scope(sessions) as session:
        session.add(
            CeleryDispatch(
                dedupe_key=key,
                celery_task_id=str(uuid.uuid4()),
                channel=CHANNEL,
                event_id="event",
                task_name="substrapp.tasks.tasks_compute_task.compute_task",
                queue="org.worker-0",
                message={"args": [], "kwargs": {}, "then": None},
                created_at=created,
                published_at=created if published else None,
            )
        )
    return key


def remaining(sessions: sessionmaker[Session]) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(CeleryDispatch.dedupe_key)).all())


def test_only_rows_published_before_the_retention_are_purged(sessions: sessionmaker[Session]) -> None:
    old = {add_dispatch(sessions, age=timedelta(days=31), published=True) for _ in range(7)}
    recent = add_dispatch(sessions, age=timedelta(days=29), published=True)
    # Never published (Redis was down for long): still to be sent, kept whatever its age.
    pending = add_dispatch(sessions, age=timedelta(days=60), published=False)

    assert jobs.purge_published_dispatches(sessions, now(), RETENTION, batch=3) == 7
    assert remaining(sessions) >= {recent, pending}
    assert not remaining(sessions) & old
    assert jobs.purge_published_dispatches(sessions, now(), RETENTION, batch=3) == 0


def test_two_schedulers_purge_each_row_once(
    make_context: Callable[..., SchedulerContext], sessions: sessionmaker[Session]
) -> None:
    old = {add_dispatch(sessions, age=timedelta(days=40), published=True) for _ in range(20)}
    first, second = make_context(), make_context()
    counts = concurrently(
        lambda: run_scheduler_job(first, PURGE_PUBLISHED_DISPATCHES),
        lambda: run_scheduler_job(second, PURGE_PUBLISHED_DISPATCHES),
    )
    assert sum(counts) == 20
    assert not remaining(sessions) & old
