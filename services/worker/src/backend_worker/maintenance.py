"""Periodic maintenance of a worker host's disk, sent by the scheduler on `<org>.broadcast`.

Every worker and builder receives each broadcast; the processes sharing a host directory
(`SUBTUPLE_DIR`) take turns through a file lock per job, the others skip theirs. Each job is a plain
function of the process' `WorkerContext` and of the current time, returning how many items it
removed, run through `backend_common.jobs.run_job` (lock, logs, `substra_scheduler_job_*`
metrics):

* `evict_asset_buffer`: entries beyond `ASSET_BUFFER_MAX_SIZE_BYTES` (least recently used first)
  and unused for longer than `ASSET_BUFFER_MAX_AGE`, and the leftovers of crashed fetches; skipped
  while tasks are staging inputs;
* `clean_task_directories`: task directories of dead processes; plan directories and locks of
  plans no longer running, and build scratch directories, older than `TASK_DIR_MAX_AGE`;
* `collect_function_environments`: environments unused for longer than
  `FUNCTION_ENVIRONMENT_MAX_AGE` whose archive no running plan uses.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from backend_common.jobs import JobRun, run_job
from backend_common.logging import get_logger
from backend_common.replica import archive_checksums_in_use, is_plan_running

from backend_worker.context import WorkerContext
from backend_worker.locks import try_file_lock
from backend_worker.task_directory import plan_directory

logger = get_logger("backend_worker.maintenance")

EVICT_ASSET_BUFFER = "evict_asset_buffer"
CLEAN_TASK_DIRECTORIES = "clean_task_directories"
COLLECT_FUNCTION_ENVIRONMENTS = "collect_function_environments"

_PLAN_KEY = re.compile(r"[0-9a-fA-F-]{36}")


def evict_asset_buffer(context: WorkerContext, now: float) -> int:
    execution = context.settings.execution
    removed, leftovers, locked = context.buffer.maintain(
        execution.asset_buffer_max_bytes, max_age=execution.asset_buffer_max_age or None, now=now
    )
    if not locked:
        logger.info("asset buffer in use: eviction skipped until the next run")
    return len(removed) + leftovers


def _age(path: Path, now: float) -> float | None:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return None


def _old_plan_keys(directory: Path, now: float, max_age: float) -> set[str]:
    """Plans with a directory or a lock file under `compute_plans/` untouched for `max_age`."""
    keys: set[str] = set()
    if not directory.is_dir():
        return keys
    for path in directory.iterdir():
        key = path.name.removesuffix(".lock")
        age = _age(path, now)
        if _PLAN_KEY.fullmatch(key) and age is not None and age > max_age:
            keys.add(key)
    return keys


def _remove_plan_directory(context: WorkerContext, plan_key: str, now: float, max_age: float) -> bool:
    directory = plan_directory(context.root, plan_key)
    lock = directory.with_name(directory.name + ".lock")
    # Tasks of the plan hold its lock (shared) while they run; a teardown holds it too.
    with try_file_lock(lock) as acquired:
        if not acquired:
            return False
        if directory.exists() and (_age(directory, now) or 0.0) <= max_age:
            return False
        shutil.rmtree(directory, ignore_errors=True)
        lock.unlink(missing_ok=True)
    return True


def clean_task_directories(context: WorkerContext, now: float) -> int:
    removed = context.executor.remove_leftovers()
    max_age = context.settings.execution.task_dir_max_age
    if not max_age:
        return removed
    if not context.settings.compute.debug_keep_pod_and_dirs:
        candidates = _old_plan_keys(context.root / "compute_plans", now, max_age)
        if candidates:
            with context.sessions() as session:
                finished = {key for key in candidates if not is_plan_running(session, key)}
            for plan_key in sorted(finished):
                if _remove_plan_directory(context, plan_key, now, max_age):
                    logger.info("leftover plan directory removed", compute_plan_key=plan_key)
                    removed += 1
    scratch = context.root / "tmp"
    if scratch.is_dir():
        for path in scratch.iterdir():
            age = _age(path, now)
            if age is not None and age > max_age:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed += 1
    return removed


def collect_function_environments(context: WorkerContext, now: float) -> int:
    max_age = context.settings.execution.function_environment_max_age
    if not max_age:
        return 0
    since = now - max_age
    stale = [image for image in context.executor.images() if image.last_used <= since]
    if not stale:
        return 0
    with context.sessions() as session:
        in_use = archive_checksums_in_use(session, created_after=datetime.fromtimestamp(since, UTC))
    removed = 0
    for image in stale:
        if image.archive_checksum.lower() in in_use:
            continue
        if context.executor.remove_image_unused_since(image.archive_checksum, since):
            logger.info("unused function environment removed", archive_checksum=image.archive_checksum)
            removed += 1
    return removed


JOBS: dict[str, Callable[[WorkerContext, float], int]] = {
    EVICT_ASSET_BUFFER: evict_asset_buffer,
    CLEAN_TASK_DIRECTORIES: clean_task_directories,
    COLLECT_FUNCTION_ENVIRONMENTS: collect_function_environments,
}


def run_maintenance(context: WorkerContext, job: str, now: float | None = None) -> JobRun:
    """Run one job on this host, unless another process of the host is running it."""
    function = JOBS[job]
    moment = time.time() if now is None else now
    lock = try_file_lock(context.root / ".maintenance" / f"{job}.lock")
    return run_job(job, lambda: function(context, moment), lock=lock)
