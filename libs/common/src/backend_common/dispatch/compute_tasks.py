"""Handing a compute task to a worker: when it may run, and to which replica it goes.

Shared by the events service (a task became WAITING_FOR_EXECUTOR_SLOT) and the scheduler (a task
that was never dispatched, or whose worker was lost).

Runnable (checked on the orchestrator, the source of truth, since the replica may be behind): the
task is still WAITING_FOR_EXECUTOR_SLOT and its plan has neither a cancelation nor a failure date.
A task of a terminated plan is canceled here, as the reference worker does, so the plan does not
wait for it forever.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session

from backend_common.dispatch import routing, work
from backend_common.dispatch.work import Work
from backend_common.logging import get_logger
from backend_common.orchestrator import NotFoundError, OrchestratorError, UnavailableError
from backend_common.protos import computeplan_pb2, computetask_pb2

logger = get_logger("backend_common.dispatch.compute_tasks")

WAITING_FOR_EXECUTOR_SLOT = computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT
PLAN_TERMINATED_REASON = "compute plan is terminated"


class Orchestrator(Protocol):
    """The orchestrator calls dispatching needs (`OrchestratorClient` has them)."""

    def get_task(self, key: str) -> computetask_pb2.ComputeTask: ...

    def get_plan(self, key: str) -> computeplan_pb2.ComputePlan: ...

    def apply_task_action(
        self, compute_task_key: str, action: computetask_pb2.ComputeTaskAction.ValueType, log: str = ""
    ) -> None: ...


def plan_is_terminated(plan: computeplan_pb2.ComputePlan) -> bool:
    return plan.HasField("cancelation_date") or plan.HasField("failure_date")


def runnable_task(orchestrator: Orchestrator, task_key: str) -> computetask_pb2.ComputeTask | None:
    """The task, as the orchestrator has it now, if it may run; None otherwise.

    A task waiting in a terminated plan is canceled.
    """
    try:
        task = orchestrator.get_task(task_key)
    except NotFoundError:
        logger.warning("task to run unknown to the orchestrator", task_key=task_key)
        return None
    if task.status != WAITING_FOR_EXECUTOR_SLOT:
        return None
    if plan_is_terminated(orchestrator.get_plan(task.compute_plan_key)):
        cancel_task(orchestrator, task.key)
        return None
    return task


def cancel_task(orchestrator: Orchestrator, task_key: str) -> None:
    """Cancel a task of a terminated plan; a refusal (someone moved it first) is fine."""
    try:
        orchestrator.apply_task_action(task_key, computetask_pb2.TASK_ACTION_CANCELED, PLAN_TERMINATED_REASON)
    except UnavailableError:
        raise  # retried by the caller, once the orchestrator is back
    except OrchestratorError as error:
        logger.info("task of a terminated plan not canceled", task_key=task_key, error=str(error))
    else:
        logger.info("task of a terminated plan canceled", task_key=task_key)


def compute_task_work(
    session: Session, org_name: str, channel: str, task: computetask_pb2.ComputeTask, worker_replicas: int
) -> Work:
    """`compute_task` on the replica the task's plan is pinned to (pinning it first if needed)."""
    index = routing.worker_index_for_plan(session, task.compute_plan_key, worker_replicas)
    return work.compute_task(org_name, channel, task, index)
