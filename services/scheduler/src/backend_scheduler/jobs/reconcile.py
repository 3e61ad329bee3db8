"""Reconciliation: work the events service decided, or should have, that did not happen.

Each job reads the replica, checks the orchestrator (the source of truth, the replica may be
behind) and sends what is missing through the same outbox as the events service
(`backend_common.dispatch`), then publishes its own rows at once:

* `redispatch_stale_tasks`: a task of this organization EXECUTING whose execution guard no process
  holds (no live worker runs it), neither started nor dispatched for `EXECUTING_TASK_STALE_AFTER`,
  is sent again to its plan's worker replica, at most `EXECUTING_TASK_MAX_REDISPATCHES` times; then
  it is failed with an INTERNAL failure report.
* `dispatch_forgotten_tasks`: a task of this organization WAITING_FOR_EXECUTOR_SLOT that was never
  dispatched, runnable for `UNDISPATCHED_TASK_GRACE` (its parents ended that long ago), is
  dispatched; a waiting task of a terminated plan is canceled instead, as the events service does.
* `tear_down_finished_plans`: a plan that stopped running (done, failed or canceled)
  `PLAN_TEARDOWN_GRACE` ago whose worker mapping is still open gets its teardown
  (`delete_cp_pod_and_dirs`), unless one was sent less than `PLAN_TEARDOWN_GRACE` ago; at most
  `MAX_TEARDOWN_RESENDS` times after the first.

All are idempotent: a dispatch is recorded once per task (`task_dispatches`, its attempts count)
and per dedupe key, whoever decides it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from backend_common.db import session_scope
from backend_common.db.local import CeleryDispatch, ComputePlanWorkerMapping, TaskDispatch
from backend_common.db.locks import compute_task_lock_id, is_free
from backend_common.db.replica import ComputePlan, ComputeTask, ComputeTaskInput
from backend_common.dispatch import outbox, work
from backend_common.dispatch.compute_tasks import compute_task_work, runnable_task
from backend_common.dispatch.work import Work
from backend_common.logging import get_logger
from backend_common.orchestrator import AlreadyExistsError, FailedPreconditionError, OrchestratorError
from backend_common.protos import computetask_pb2, failure_report_pb2
from backend_common.replica import running_plans
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from backend_scheduler.context import SchedulerContext

logger = get_logger("backend_scheduler.jobs.reconcile")

STATUS_EXECUTING = "STATUS_EXECUTING"
STATUS_WAITING_FOR_EXECUTOR_SLOT = "STATUS_WAITING_FOR_EXECUTOR_SLOT"


def _send(
    context: SchedulerContext,
    channel: str,
    job: str,
    decide: Callable[[Session], Work],
    now: datetime,
    *,
    attempts: int | None = None,
) -> Work | None:
    """Record the work `decide` returns in the outbox (a re-dispatch of a compute task when
    `attempts` is given), in one transaction, then publish it; None when someone else decided it
    first. A failed publication leaves the row pending: the events service's publisher sends it."""
    event_id = f"scheduler:{job}"
    with session_scope(context.sessions) as session:
        decided = decide(session)
        if attempts is None:
            row_id = outbox.record(session, channel, event_id, decided, now=now)
        else:
            row_id = outbox.record_redispatch(session, channel, event_id, decided, attempts=attempts, now=now)
        if row_id is None:
            return None
        context.publisher.recorded([row_id])
    try:
        context.publisher.publish_pending(row_ids=[row_id])
    except Exception as error:
        logger.warning(
            "work recorded, not sent yet", job=job, dedupe_key=decided.dedupe_key, error=repr(error)
        )
    return decided


def _compute_task(
    context: SchedulerContext, channel: str, task: computetask_pb2.ComputeTask
) -> Callable[[Session], Work]:
    def decide(session: Session) -> Work:
        return compute_task_work(
            session, context.org_name, channel, task, context.settings.jobs.worker_replicas
        )

    return decide


def _constant(decided: Work) -> Callable[[Session], Work]:
    def decide(_: Session) -> Work:
        return decided

    return decide


# --- tasks whose worker was lost -------------------------------------------------------------------


def redispatch_stale_tasks(context: SchedulerContext, now: datetime) -> int:
    """Send again (or fail) the EXECUTING tasks of this organization no live worker runs."""
    jobs = context.settings.jobs
    cutoff = now - timedelta(seconds=jobs.executing_task_stale_after)
    with context.sessions() as session:
        rows = session.execute(
            select(
                ComputeTask.key,
                ComputeTask.channel,
                ComputeTask.start_date,
                TaskDispatch.dispatched_at,
                TaskDispatch.attempts,
            )
            .outerjoin(TaskDispatch, TaskDispatch.compute_task_key == ComputeTask.key)
            .where(
                ComputeTask.status == STATUS_EXECUTING,
                ComputeTask.worker == context.msp_id,
                ComputeTask.channel.in_(context.channels),
            )
            .order_by(ComputeTask.start_date, ComputeTask.key)
        ).all()
    handled = 0
    for task_key, channel, start_date, dispatched_at, attempts in rows:
        last_activity = max((date for date in (start_date, dispatched_at) if date is not None), default=None)
        if last_activity is not None and last_activity > cutoff:
            continue
        if not is_free(context.engine, compute_task_lock_id(str(task_key))):
            continue  # a live worker is running it
        try:
            recovered = _recover(context, channel, str(task_key), attempts, now)
        except OrchestratorError as error:
            logger.warning("lost task not recovered yet", task_key=str(task_key), error=str(error))
            continue
        handled += int(recovered)
    return handled


def _recover(
    context: SchedulerContext, channel: str, task_key: str, attempts: int | None, now: datetime
) -> bool:
    client = context.orchestrator(channel)
    task = client.get_task(task_key)
    if task.status != computetask_pb2.STATUS_EXECUTING or task.worker != context.msp_id:
        return False  # the replica is behind
    redispatches = max((attempts or 1) - 1, 0)
    max_redispatches = context.settings.jobs.executing_task_max_redispatches
    if redispatches >= max_redispatches:
        return _fail(context, channel, task_key, redispatches)
    # Never dispatched through the outbox (dispatches before it existed): recorded as a first one.
    decided = _send(
        context,
        channel,
        "redispatch_stale_tasks",
        _compute_task(context, channel, task),
        now,
        attempts=attempts,
    )
    if decided is None:
        return False
    logger.warning(
        "task lost by its worker sent again",
        task_key=task_key,
        queue=decided.queue,
        redispatch=redispatches + 1,
        max_redispatches=max_redispatches,
    )
    return True


def _fail(context: SchedulerContext, channel: str, task_key: str, redispatches: int) -> bool:
    report = failure_report_pb2.NewFailureReport(
        asset_key=task_key,
        error_type=failure_report_pb2.ERROR_TYPE_INTERNAL,
        asset_type=failure_report_pb2.FAILED_ASSET_COMPUTE_TASK,
    )
    try:
        context.orchestrator(channel).register_failure_report(report)
    except (AlreadyExistsError, FailedPreconditionError) as error:
        logger.info("lost task already failed or over", task_key=task_key, error=str(error))
        return False
    logger.error(
        "task lost by its worker failed",
        task_key=task_key,
        redispatches=redispatches,
        reason="no worker ran it after it was sent again",
    )
    return True


# --- runnable tasks never dispatched ---------------------------------------------------------------


def dispatch_forgotten_tasks(context: SchedulerContext, now: datetime) -> int:
    """Dispatch the runnable tasks of this organization the events service never handed out."""
    cutoff = now - timedelta(seconds=context.settings.jobs.undispatched_task_grace)
    parent = aliased(ComputeTask)
    # Runnable since its creation or the end of its last parent, whichever came last.
    runnable_since = func.greatest(ComputeTask.creation_date, func.max(parent.end_date))
    with context.sessions() as session:
        rows = session.execute(
            select(ComputeTask.key, ComputeTask.channel)
            .outerjoin(
                ComputeTaskInput,
                (ComputeTaskInput.task_key == ComputeTask.key)
                & ComputeTaskInput.parent_task_key.is_not(None),
            )
            .outerjoin(parent, parent.key == ComputeTaskInput.parent_task_key)
            .where(
                ComputeTask.status == STATUS_WAITING_FOR_EXECUTOR_SLOT,
                ComputeTask.worker == context.msp_id,
                ComputeTask.channel.in_(context.channels),
                ~select(TaskDispatch.compute_task_key)
                .where(TaskDispatch.compute_task_key == ComputeTask.key)
                .exists(),
            )
            .group_by(ComputeTask.key, ComputeTask.channel, ComputeTask.creation_date)
            .having(runnable_since <= cutoff)
            .order_by(ComputeTask.creation_date, ComputeTask.key)
        ).all()
    dispatched = 0
    for task_key, channel in rows:
        try:
            task = runnable_task(context.orchestrator(channel), str(task_key))
        except OrchestratorError as error:
            logger.warning("forgotten task not checked", task_key=str(task_key), error=str(error))
            continue
        if task is None:
            continue
        decided = _send(
            context, channel, "dispatch_forgotten_tasks", _compute_task(context, channel, task), now
        )
        if decided is not None:
            logger.warning("runnable task never dispatched sent", task_key=task.key, queue=decided.queue)
            dispatched += 1
    return dispatched


# --- plans whose teardown was missed ---------------------------------------------------------------

# Teardowns sent again for one mapping before the scheduler gives up on it.
MAX_TEARDOWN_RESENDS = 10


def tear_down_finished_plans(context: SchedulerContext, now: datetime) -> int:
    """Send the teardown of the plans that stopped running and still hold their worker mapping."""
    grace = timedelta(seconds=context.settings.jobs.plan_teardown_grace)
    ended = func.coalesce(ComputePlan.cancelation_date, ComputePlan.failure_date, ComputePlan.end_date)
    with context.sessions() as session:
        rows = session.execute(
            select(
                ComputePlanWorkerMapping.compute_plan_key,
                ComputePlanWorkerMapping.id,
                ComputePlanWorkerMapping.worker_index,
                ComputePlan.channel,
            )
            .join(ComputePlan, ComputePlan.key == ComputePlanWorkerMapping.compute_plan_key)
            .where(
                ComputePlanWorkerMapping.release_date.is_(None),
                ComputePlan.channel.in_(context.channels),
                ComputePlan.key.not_in(running_plans()),
                ended <= now - grace,
            )
            .order_by(ComputePlanWorkerMapping.creation_date)
        ).all()
    sent = 0
    for plan_key, mapping_id, worker_index, channel in rows:
        key = str(plan_key)
        with context.sessions() as session:
            task_count = session.scalar(
                select(func.count()).select_from(ComputeTask).where(ComputeTask.compute_plan_key == key)
            )
            # The events service's occasion for this mapping and task count, then ours: exact keys,
            # read through the outbox's unique index.
            first = work.plan_teardown_occasion(mapping_id, int(task_count or 0))
            occasions = [first, *(f"{first}:reconciled-{n}" for n in range(1, MAX_TEARDOWN_RESENDS + 1))]
            dedupe_keys = {work.plan_teardown_dedupe_key(key, occasion): occasion for occasion in occasions}
            already = dict(
                session.execute(
                    select(CeleryDispatch.dedupe_key, CeleryDispatch.created_at).where(
                        CeleryDispatch.dedupe_key.in_(list(dedupe_keys))
                    )
                ).all()
            )
        if already and max(already.values()) > now - grace:
            continue  # sent recently: give the worker its time
        occasion = next((dedupe_keys[k] for k in dedupe_keys if k not in already), None)
        if occasion is None:
            logger.error("plan teardown given up: its worker never did it", compute_plan_key=key)
            continue
        teardown = work.delete_plan_resources(context.org_name, channel, key, worker_index, occasion)
        if _send(context, channel, "tear_down_finished_plans", _constant(teardown), now):
            logger.warning("missed plan teardown sent", compute_plan_key=key, queue=teardown.queue)
            sent += 1
    return sent
