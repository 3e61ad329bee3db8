"""Compute task status changes and their side effects (`orchestrator-grpc.md` 9.8, 9.4).

* DONE starts the children waiting for their parents once all their parents are DONE;
* FAILED fails the task's plan (no event, a terminated plan is left alone);
* CANCELED and FAILED do not cascade to children;
* function status changes move the tasks of the function (BUILD_STARTED, BUILD_FINISHED,
  CANCELED, FAILED) without checking task permissions.

Status updates are written in bulk: a function used by thousands of tasks moves them with a
handful of queries. Events are emitted in the order the reference emits them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from backend_common.protos import common_pb2, computetask_pb2, event_pb2, function_pb2

from standalone_orchestrator.domain import task_state
from standalone_orchestrator.domain.assets import COMPUTE_PLAN, COMPUTE_TASK
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.task_state import Action, ActionValue, Status, StatusValue, Transition
from standalone_orchestrator.errors import bad_request, not_found, permission_denied
from standalone_orchestrator.store import compute_plans as plan_store
from standalone_orchestrator.store import compute_tasks as store

USER_ACTION = "User action"

Change = tuple[computetask_pb2.ComputeTask, Transition, str]


def apply_task_action(request: Request, key: str, action: ActionValue, log: str) -> None:
    task = store.get_task(request.connection, request.channel, key)
    if task is None:
        raise not_found(COMPUTE_TASK, key)
    if not task_state.may_apply(action, task, request.requester):
        raise permission_denied("only task owner can update it")
    apply_action(request, task, action, log or USER_ACTION)


def apply_action(
    request: Request, task: computetask_pb2.ComputeTask, action: ActionValue, reason: str
) -> None:
    """Apply `action` without permission checks."""
    if action == Action.TASK_ACTION_BUILD_FINISHED:
        start_dependent_tasks(request, [task], reason)
        return
    transition = task_state.ACTION_POLICY.get(action, (None, None))[0]
    if transition is None:
        raise bad_request("unsupported action")
    if transition is Transition.DONE:
        # As in the reference: a task finishing in a canceled or failed plan ends up canceled,
        # which is how workers cancel the tasks of a canceled plan lazily.
        plan = plan_store.get_plan(request.connection, request.channel, task.compute_plan_key)
        if plan is None:
            raise not_found(COMPUTE_PLAN, task.compute_plan_key)
        if plan.HasField("cancelation_date") or plan.HasField("failure_date"):
            transition = Transition.CANCELED
    transition_tasks(request, [(task, transition, reason)])


def transition_tasks(request: Request, changes: Sequence[Change]) -> None:
    """Apply each (task, transition, reason) in order, then the side effects."""
    new_statuses: dict[StatusValue, list[str]] = defaultdict(list)
    failed_plans: set[str] = set()
    done: list[computetask_pb2.ComputeTask] = []
    for task, transition, _ in changes:
        task.status = task_state.next_status(task.status, transition)
        new_statuses[task.status].append(task.key)
    for status, keys in new_statuses.items():
        store.set_status(request.connection, keys, status)
    for task, transition, reason in changes:
        request.emit(
            event_pb2.EVENT_ASSET_UPDATED,
            common_pb2.ASSET_COMPUTE_TASK,
            task.key,
            task,
            {"reason": reason},
        )
        if transition is Transition.FAILED:
            failed_plans.add(task.compute_plan_key)
        elif transition is Transition.DONE:
            done.append(task)
    plan_store.set_failure_date(request.connection, failed_plans, request.now)
    for task in done:
        _start_children(request, task)


def _start_children(request: Request, parent: computetask_pb2.ComputeTask) -> None:
    # Children still building or waiting for a builder are skipped: their function starts them.
    waiting = [
        child
        for child in store.children(request.connection, parent.key)
        if child.status == Status.STATUS_WAITING_FOR_PARENT_TASKS
    ]
    if not waiting:
        return
    unfinished = store.unfinished_parent_counts(request.connection, [child.key for child in waiting])
    reason = f"Last parent task {parent.key} done"
    transition_tasks(
        request,
        [
            (child, Transition.WAITING_EXECUTOR_SLOT, reason)
            for child in waiting
            if unfinished.get(child.key, 0) == 0
        ],
    )


def start_dependent_tasks(
    request: Request, tasks: Sequence[computetask_pb2.ComputeTask], reason: str
) -> None:
    """After a build: ready to run when every parent is DONE, otherwise wait for the parents."""
    unfinished = store.unfinished_parent_counts(request.connection, [task.key for task in tasks])
    changes: list[Change] = []
    for task in tasks:
        if unfinished.get(task.key, 0):
            if task.status != Status.STATUS_WAITING_FOR_PARENT_TASKS:
                changes.append((task, Transition.WAITING_PARENT_TASKS, reason))
        elif task_state.can(task.status, Transition.WAITING_EXECUTOR_SLOT):
            changes.append((task, Transition.WAITING_EXECUTOR_SLOT, reason))
    transition_tasks(request, changes)


# function status -> (status of the tasks it moves, action applied to them)
_FUNCTION_PROPAGATION: dict[function_pb2.FunctionStatus.ValueType, tuple[StatusValue, ActionValue]] = {
    function_pb2.FUNCTION_STATUS_BUILDING: (
        Status.STATUS_WAITING_FOR_BUILDER_SLOT,
        Action.TASK_ACTION_BUILD_STARTED,
    ),
    function_pb2.FUNCTION_STATUS_READY: (Status.STATUS_BUILDING, Action.TASK_ACTION_BUILD_FINISHED),
    # Only BUILDING tasks: canceling a WAITING function leaves its waiting tasks alone.
    function_pb2.FUNCTION_STATUS_CANCELED: (Status.STATUS_BUILDING, Action.TASK_ACTION_CANCELED),
    function_pb2.FUNCTION_STATUS_FAILED: (Status.STATUS_BUILDING, Action.TASK_ACTION_FAILED),
}


def propagate_function_status(
    request: Request, function_key: str, status: function_pb2.FunctionStatus.ValueType, reason: str
) -> None:
    propagation = _FUNCTION_PROPAGATION.get(status)
    if propagation is None:
        return
    task_status, action = propagation
    tasks = store.tasks_by_function(request.connection, request.channel, function_key, task_status)
    if not tasks:
        return
    if action == Action.TASK_ACTION_BUILD_FINISHED:
        start_dependent_tasks(request, tasks, f"Function {function_key} finished building")
        return
    transition = task_state.ACTION_POLICY[action][0]
    assert transition is not None
    transition_tasks(request, [(task, transition, reason) for task in tasks])
