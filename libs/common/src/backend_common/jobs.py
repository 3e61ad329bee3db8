"""Periodic maintenance jobs: one way to run them, lock them and measure them.

The scheduler-worker runs the jobs that touch the database, the orchestrator and the registry; the
workers run, on a broadcast, the jobs that touch their own disk. Both go through `run_job`:

* a lock first (a database advisory lock between scheduler-worker replicas, a file lock between
  the processes of a worker host): a run that cannot take it skips its turn and says so;
* then the job, a plain function returning the number of items it handled;
* metrics, labelled by job: `substra_scheduler_job_last_run_timestamp_seconds` (end of the last
  successful run), `substra_scheduler_job_duration_seconds`, `substra_scheduler_job_items_total`,
  `substra_scheduler_job_failures_total` (runs that raised) and `substra_scheduler_job_skipped_total`
  (runs that found the lock taken).

Every job is idempotent anyway: a run after another one finds nothing left to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from backend_common.logging import get_logger
from backend_common.metrics import counter, gauge, histogram

logger = get_logger("backend_common.jobs")

LAST_RUN = gauge(
    "scheduler_job_last_run_timestamp_seconds",
    "Unix time at which the last successful run of the job ended",
    ["job"],
    multiprocess_mode="max",
)
DURATION = histogram(
    "scheduler_job_duration_seconds",
    "Duration of the runs of the job",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
ITEMS = counter("scheduler_job_items_total", "Items handled by the job", ["job"])
FAILURES = counter("scheduler_job_failures_total", "Runs of the job that failed", ["job"])
SKIPPED = counter(
    "scheduler_job_skipped_total", "Runs of the job skipped because another process held its lock", ["job"]
)


@dataclass(frozen=True)
class JobRun:
    job: str
    # False when the lock was held elsewhere: the job did not run.
    ran: bool
    items: int = 0
    seconds: float = 0.0


def run_job(name: str, job: Callable[[], int], *, lock: AbstractContextManager[bool]) -> JobRun:
    """Run `job` under `lock` (a context manager yielding whether it was taken), with metrics.

    Exceptions of the job are counted, logged and raised again.
    """
    with lock as acquired:
        if not acquired:
            SKIPPED.labels(job=name).inc()
            logger.info("job skipped: another process is running it", job=name)
            return JobRun(job=name, ran=False)
        started = time.monotonic()
        try:
            items = job()
        except Exception:
            seconds = time.monotonic() - started
            DURATION.labels(job=name).observe(seconds)
            FAILURES.labels(job=name).inc()
            logger.exception("job failed", job=name, seconds=round(seconds, 3))
            raise
        seconds = time.monotonic() - started
    DURATION.labels(job=name).observe(seconds)
    ITEMS.labels(job=name).inc(items)
    LAST_RUN.labels(job=name).set(time.time())
    logger.info("job done", job=name, items=items, seconds=round(seconds, 3))
    return JobRun(job=name, ran=True, items=items, seconds=seconds)
