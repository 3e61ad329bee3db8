"""The periodic jobs of the scheduler-worker, as plain functions of a session or context and `now`.

Each returns the number of items it handled. `backend_scheduler.tasks` runs them as Celery tasks,
under a lock and with metrics (`backend_common.jobs.run_job`). The jobs that act on a worker's disk
live in the worker package (`backend_worker.maintenance`): beat broadcasts them.
"""

from backend_scheduler.jobs.outbox import purge_published_dispatches
from backend_scheduler.jobs.reconcile import (
    dispatch_forgotten_tasks,
    redispatch_stale_tasks,
    tear_down_finished_plans,
)
from backend_scheduler.jobs.registry import collect_registry_images
from backend_scheduler.jobs.tokens import flush_expired_tokens

__all__ = [
    "collect_registry_images",
    "dispatch_forgotten_tasks",
    "flush_expired_tokens",
    "purge_published_dispatches",
    "redispatch_stale_tasks",
    "tear_down_finished_plans",
]
