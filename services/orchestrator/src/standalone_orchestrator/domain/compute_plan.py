"""Compute plans (`orchestrator-grpc.md` 9.6).

Plans have no status: `cancelation_date` and `failure_date` are their only terminal markers,
and canceling a plan does not touch its tasks (workers cancel them lazily).
"""

from __future__ import annotations

from backend_common.protos import common_pb2, computeplan_pb2, event_pb2

from standalone_orchestrator.db.tables import compute_plans as table
from standalone_orchestrator.domain import pagination
from standalone_orchestrator.domain.assets import COMPUTE_PLAN, ensure_new_keys, ensure_registered
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.task_state import Status
from standalone_orchestrator.domain.validation import Checker
from standalone_orchestrator.errors import (
    ErrorCode,
    OrchestratorError,
    not_found,
    permission_denied,
    unimplemented,
)
from standalone_orchestrator.store import compute_plans as store

_PENDING = frozenset(
    {
        Status.STATUS_WAITING_FOR_BUILDER_SLOT,
        Status.STATUS_BUILDING,
        Status.STATUS_WAITING_FOR_PARENT_TASKS,
        Status.STATUS_WAITING_FOR_EXECUTOR_SLOT,
        Status.STATUS_EXECUTING,
    }
)


def is_terminated(plan: computeplan_pb2.ComputePlan) -> bool:
    return plan.HasField("cancelation_date") or plan.HasField("failure_date")


def register_plan(request: Request, new: computeplan_pb2.NewComputePlan) -> computeplan_pb2.ComputePlan:
    checker = Checker()
    checker.uuid("key", new.key)
    checker.length("tag", new.tag)
    checker.name("name", new.name)
    checker.metadata("metadata", new.metadata)
    checker.check(COMPUTE_PLAN)
    ensure_new_keys(request, COMPUTE_PLAN, table.c.key, table.c.channel, [new.key])
    ensure_registered(request, request.requester)
    plan = computeplan_pb2.ComputePlan(
        key=new.key,
        owner=request.requester,
        tag=new.tag,
        name=new.name,
        metadata=new.metadata,
        creation_date=request.timestamp,
    )
    store.insert_plan(request.connection, request.channel, plan)
    request.emit(event_pb2.EVENT_ASSET_CREATED, common_pb2.ASSET_COMPUTE_PLAN, plan.key, plan)
    return plan


def get_plan(request: Request, key: str) -> computeplan_pb2.ComputePlan:
    plan = store.get_plan(request.connection, request.channel, key)
    if plan is None:
        raise not_found(COMPUTE_PLAN, key)
    return plan


def query_plans(
    request: Request, page_token: str, page_size: int, owner: str
) -> tuple[list[computeplan_pb2.ComputePlan], str]:
    offset, size = pagination.parse(page_token, page_size)
    rows = store.query_plans(request.connection, request.channel, offset, size, owner)
    return pagination.cut(rows, offset, size)


def update_plan(request: Request, key: str, name: str) -> None:
    checker = Checker()
    checker.uuid("key", key)
    checker.name("name", name)
    checker.check(COMPUTE_PLAN)
    plan = get_plan(request, key)
    if plan.owner != request.requester:
        raise permission_denied("requester does not own the compute plan")
    plan.name = name
    store.set_plan_name(request.connection, key, name)
    request.emit(event_pb2.EVENT_ASSET_UPDATED, common_pb2.ASSET_COMPUTE_PLAN, plan.key, plan)


def apply_plan_action(request: Request, key: str, action: int) -> None:
    plan = get_plan(request, key)
    if plan.owner != request.requester:
        raise permission_denied("only plan owner can act on it")
    if action != computeplan_pb2.PLAN_ACTION_CANCELED:
        raise unimplemented("plan action unimplemented")
    if is_terminated(plan):
        # OE0109 maps to UNKNOWN, as in the reference.
        raise OrchestratorError(
            ErrorCode.TERMINATED_COMPUTE_PLAN, f'compute plan "{key}" is already terminated'
        )
    store.set_cancelation_date(request.connection, key, request.now)
    plan.cancelation_date.CopyFrom(request.timestamp)
    request.emit(event_pb2.EVENT_ASSET_UPDATED, common_pb2.ASSET_COMPUTE_PLAN, plan.key, plan)


def is_plan_running(request: Request, key: str) -> bool:
    """Not running once terminated or when a task failed or was canceled; else while tasks are pending.

    The reference picks an arbitrary status row when several are present; this is its intent.
    """
    plan = get_plan(request, key)
    if is_terminated(plan):
        return False
    counts = store.task_status_counts(request.connection, key)
    if counts.get(Status.STATUS_FAILED) or counts.get(Status.STATUS_CANCELED):
        return False
    return any(counts.get(status) for status in _PENDING)
