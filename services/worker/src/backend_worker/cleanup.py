"""End of task and end of plan (compute-engine.md 9): transient outputs, models, plan directories."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from datetime import UTC, datetime

from backend_common.db.local import ComputePlanWorkerMapping
from backend_common.logging import get_logger
from backend_common.orchestrator import OrchestratorError
from backend_common.storage import StorageError
from sqlalchemy import update

from backend_worker.asset_buffer import AssetKind
from backend_worker.asset_sources import ROLE_MODEL
from backend_worker.context import WorkerContext
from backend_worker.locks import file_lock
from backend_worker.stored_files import forget_stored_file
from backend_worker.task_directory import plan_directory

logger = get_logger("backend_worker.cleanup")


def teardown_compute_plan(context: WorkerContext, channel: str, compute_plan_key: str) -> bool:
    """Remove the plan's directory and release its worker mapping, once the plan no longer runs.

    Waits for the plan's running tasks (they hold the plan lock). Returns whether it tore down.
    """
    client = context.orchestrator(channel)
    directory = plan_directory(context.root, compute_plan_key)
    lock = directory.with_name(directory.name + ".lock")
    with file_lock(lock):
        if client.is_plan_running(compute_plan_key):
            logger.info("compute plan still running: not torn down", compute_plan_key=compute_plan_key)
            return False
        if not context.settings.compute.debug_keep_pod_and_dirs:
            shutil.rmtree(directory, ignore_errors=True)
            # One lock file per plan would pile up; a task of the plan arriving later makes a new one.
            lock.unlink(missing_ok=True)
        with context.sessions() as session, session.begin():
            session.execute(
                update(ComputePlanWorkerMapping)
                .where(
                    ComputePlanWorkerMapping.compute_plan_key == compute_plan_key,
                    ComputePlanWorkerMapping.release_date.is_(None),
                )
                .values(release_date=datetime.now(UTC))
            )
    logger.info("compute plan torn down", compute_plan_key=compute_plan_key)
    return True


def remove_model_from_buffer(context: WorkerContext, model_key: str) -> None:
    context.buffer.discard(AssetKind.MODEL, model_key)


def remove_model_from_storage(context: WorkerContext, model_key: str) -> bool:
    """Delete a disabled model this organization stored (its record, then its object)."""
    record = forget_stored_file(context.sessions, model_key, ROLE_MODEL)
    if record is None:
        return False
    try:
        context.storage.delete(record.bucket, record.object_key)
    except StorageError as error:
        logger.warning("model object not deleted", model_key=model_key, error=str(error))
    return True


def disable_transient_outputs(
    context: WorkerContext, channel: str, outputs: Iterable[tuple[str, str]]
) -> int:
    """`DisableOutput` for each (task key, identifier); refusals (children not final yet) are fine."""
    client = context.orchestrator(channel)
    disabled = 0
    for task_key, identifier in outputs:
        try:
            client.disable_output(task_key, identifier)
            disabled += 1
        except OrchestratorError as error:
            logger.info("output not disabled", task_key=task_key, identifier=identifier, error=str(error))
    return disabled
