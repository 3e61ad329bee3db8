"""The Celery application of the scheduler: its tasks and its beat schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from backend_common import queues
from backend_common.celery_app import create_celery_app
from backend_common.db import make_engine, make_session_factory, session_scope
from backend_common.logging import get_logger
from backend_common.metrics import counter
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from backend_scheduler import jobs
from backend_scheduler.settings import SchedulerSettings

logger = get_logger("backend_scheduler")

JOB_ITEMS = counter("scheduler_job_items_total", "Items handled by periodic jobs", ["job"])


@lru_cache(maxsize=1)
def _sessions(database_url: str) -> sessionmaker[Session]:
    # One engine per process, made on first use (after the worker forked).
    return make_session_factory(make_engine(database_url, pool_size=1))


def create_app(settings: SchedulerSettings) -> Celery:
    app = create_celery_app("scheduler", settings.celery, settings.organization.org_name)

    @app.task(name=queues.FLUSH_EXPIRED_TOKENS_TASK, ignore_result=False)  # type: ignore[untyped-decorator]
    def flush_expired_tokens() -> int:
        with session_scope(_sessions(settings.database_url)) as session:
            deleted = jobs.flush_expired_tokens(session, datetime.now(UTC))
        JOB_ITEMS.labels(job="flush_expired_tokens").inc(deleted)
        logger.info("expired tokens flushed", deleted=deleted)
        return deleted

    app.conf.beat_schedule = {
        "flush-expired-tokens": {
            "task": queues.FLUSH_EXPIRED_TOKENS_TASK,
            "schedule": float(settings.celery.flush_expired_tokens_period),
            "options": {"queue": queues.SCHEDULER_QUEUE},
        },
    }
    return app
