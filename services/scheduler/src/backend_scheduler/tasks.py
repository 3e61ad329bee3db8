"""The Celery application of the scheduler: thin task adapters over the jobs, and the beat schedule.

Each job runs under a database advisory lock named after it: of several scheduler-worker replicas
receiving the same job, one runs it and the others skip their turn (`backend_common.jobs`). Jobs
acting on a worker's disk are only scheduled here: beat sends them to `<org>.broadcast`, where every
worker and builder runs them (`backend_worker.maintenance`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from backend_common import queues
from backend_common.celery_app import create_celery_app
from backend_common.db import session_scope
from backend_common.db.locks import job_lock_id, try_lock
from backend_common.jobs import run_job
from celery import Celery

from backend_scheduler import jobs
from backend_scheduler.context import SchedulerContext, process_context
from backend_scheduler.settings import SchedulerSettings

FLUSH_EXPIRED_TOKENS = "flush_expired_tokens"
COLLECT_REGISTRY_IMAGES = "collect_registry_images"
REDISPATCH_STALE_TASKS = "redispatch_stale_tasks"
DISPATCH_FORGOTTEN_TASKS = "dispatch_forgotten_tasks"
TEAR_DOWN_FINISHED_PLANS = "tear_down_finished_plans"
PURGE_PUBLISHED_DISPATCHES = "purge_published_dispatches"

Job = Callable[[SchedulerContext, datetime], int]
MIN_EXPIRY_SECONDS = 60


def _flush_expired_tokens(context: SchedulerContext, now: datetime) -> int:
    with session_scope(context.sessions) as session:
        return jobs.flush_expired_tokens(session, now)


def _collect_registry_images(context: SchedulerContext, now: datetime) -> int:
    registry = context.registry()
    if registry is None:
        return 0
    with registry:
        return jobs.collect_registry_images(
            context.sessions,
            registry,
            context.settings.compute.user_image_repository,
            now,
            grace=timedelta(seconds=context.settings.jobs.registry_gc_grace),
        )


def _purge_published_dispatches(context: SchedulerContext, now: datetime) -> int:
    retention = timedelta(seconds=context.settings.jobs.dispatch_retention)
    return jobs.purge_published_dispatches(context.sessions, now, retention)


# Job name → (Celery task name, function).
JOBS: dict[str, tuple[str, Job]] = {
    FLUSH_EXPIRED_TOKENS: (queues.FLUSH_EXPIRED_TOKENS_TASK, _flush_expired_tokens),
    COLLECT_REGISTRY_IMAGES: (queues.DOCKER_REGISTRY_GARBAGE_COLLECTOR_TASK, _collect_registry_images),
    REDISPATCH_STALE_TASKS: (queues.REDISPATCH_STALE_TASKS_TASK, jobs.redispatch_stale_tasks),
    DISPATCH_FORGOTTEN_TASKS: (queues.DISPATCH_FORGOTTEN_TASKS_TASK, jobs.dispatch_forgotten_tasks),
    TEAR_DOWN_FINISHED_PLANS: (queues.TEAR_DOWN_FINISHED_PLANS_TASK, jobs.tear_down_finished_plans),
    PURGE_PUBLISHED_DISPATCHES: (queues.PURGE_PUBLISHED_DISPATCHES_TASK, _purge_published_dispatches),
}


def run_scheduler_job(context: SchedulerContext, name: str, now: datetime | None = None) -> int:
    """Run one job now under its lock; the items it handled (0 when another replica had the lock)."""
    _, job = JOBS[name]
    moment = now or datetime.now(UTC)
    lock = try_lock(context.engine, job_lock_id(name))
    return run_job(name, lambda: job(context, moment), lock=lock).items


def beat_schedule(settings: SchedulerSettings) -> dict[str, dict[str, Any]]:
    """Beat entries of the enabled jobs (period > 0; the registry's only with `REGISTRY`)."""
    periods = settings.jobs
    entries: list[tuple[str, str, int]] = [
        (
            "flush-expired-tokens",
            queues.FLUSH_EXPIRED_TOKENS_TASK,
            settings.celery.flush_expired_tokens_period,
        ),
        (
            "docker-registry-garbage-collector",
            queues.DOCKER_REGISTRY_GARBAGE_COLLECTOR_TASK,
            periods.registry_gc_period if settings.compute.registry else 0,
        ),
        ("redispatch-stale-tasks", queues.REDISPATCH_STALE_TASKS_TASK, periods.redispatch_stale_tasks_period),
        (
            "dispatch-forgotten-tasks",
            queues.DISPATCH_FORGOTTEN_TASKS_TASK,
            periods.dispatch_forgotten_tasks_period,
        ),
        (
            "tear-down-finished-plans",
            queues.TEAR_DOWN_FINISHED_PLANS_TASK,
            periods.tear_down_finished_plans_period,
        ),
        (
            "purge-published-dispatches",
            queues.PURGE_PUBLISHED_DISPATCHES_TASK,
            periods.purge_published_dispatches_period,
        ),
        ("evict-asset-buffer", queues.EVICT_ASSET_BUFFER_TASK, periods.evict_asset_buffer_period),
        ("clean-task-directories", queues.CLEAN_TASK_DIRECTORIES_TASK, periods.clean_task_directories_period),
        (
            "collect-function-environments",
            queues.COLLECT_FUNCTION_ENVIRONMENTS_TASK,
            periods.collect_function_environments_period,
        ),
    ]
    routes = queues.static_task_routes(settings.organization.org_name)
    return {
        entry: {
            "task": task_name,
            "schedule": float(period),
            # A run that waited longer than its period is superseded by the next one.
            "options": {"queue": routes[task_name], "expires": float(max(period, MIN_EXPIRY_SECONDS))},
        }
        for entry, task_name, period in entries
        if period > 0
    }


def create_app(settings: SchedulerSettings) -> Celery:
    app = create_celery_app("scheduler", settings.celery, settings.organization.org_name)

    def register(name: str, task_name: str) -> None:
        @app.task(name=task_name, ignore_result=False)  # type: ignore[untyped-decorator]
        def scheduler_job() -> int:
            return run_scheduler_job(process_context(settings, app), name)

    for name, (task_name, _) in JOBS.items():
        register(name, task_name)
    app.conf.beat_schedule = beat_schedule(settings)
    return app
