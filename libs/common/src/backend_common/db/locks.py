"""PostgreSQL advisory locks shared by every process of the organization.

* A compute task's execution guard (`execution_guard`): held by the worker process that runs the
  task, for the whole run; one run at a time across every worker, and a task whose guard is free is
  run by no live process (`is_free`): the scheduler's reconciliation relies on it.
* A periodic job's lock (`try_lock` with `job_lock_id`): one scheduler-worker replica runs a job at
  a time; the others skip their turn.

Session-level locks on an AUTOCOMMIT connection: no transaction stays open while they are held, and
the database releases them when the holding process dies, so a killed process never blocks anyone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, func, select


def lock_id(namespace: str, name: str) -> int:
    """A signed 64-bit advisory lock key for `name` in `namespace`."""
    return int.from_bytes(hashlib.sha256(f"{namespace}:{name}".encode()).digest()[:8], "big", signed=True)


def compute_task_lock_id(task_key: str) -> int:
    return lock_id("compute-task", task_key)


def job_lock_id(job_name: str) -> int:
    return lock_id("scheduler-job", job_name)


@contextmanager
def try_lock(engine: Engine, key: int) -> Iterator[bool]:
    """Hold the advisory lock `key` for the block if it is free; yields whether it was taken."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        acquired = bool(connection.execute(select(func.pg_try_advisory_lock(key))).scalar())
        try:
            yield acquired
        finally:
            if acquired:
                connection.execute(select(func.pg_advisory_unlock(key)))


def is_free(engine: Engine, key: int) -> bool:
    """Whether no session holds the advisory lock `key` right now (taken and released at once)."""
    with try_lock(engine, key) as acquired:
        return acquired


@contextmanager
def execution_guard(engine: Engine, task_key: str) -> Iterator[bool]:
    """Hold the task's guard for the block; yields False if another session holds it."""
    with try_lock(engine, compute_task_lock_id(task_key)) as acquired:
        yield acquired
