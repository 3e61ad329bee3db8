"""The compute task state machine as data (`orchestrator-grpc.md` 9.8).

Two tables: the transitions (from which statuses, to which status) and the action policy (which
transition an `ApplyTaskAction` action triggers, and who may ask for it through the RPC). The
build actions are refused to everybody: only function status changes trigger them.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import TypeAlias

from backend_common.protos import computetask_pb2

from standalone_orchestrator.errors import OrchestratorError, unknown

Status = computetask_pb2.ComputeTaskStatus
Action = computetask_pb2.ComputeTaskAction
StatusValue: TypeAlias = computetask_pb2.ComputeTaskStatus.ValueType
ActionValue: TypeAlias = computetask_pb2.ComputeTaskAction.ValueType

S = Status  # shorthand for the tables below


class Transition(StrEnum):
    # Names of the reference's state machine events: they appear in its error messages.
    BUILDING = "transitionBuilding"
    WAITING_PARENT_TASKS = "transitionWaitingParentTasks"
    WAITING_EXECUTOR_SLOT = "transitionWaitingExecutorSlot"
    EXECUTING = "transitionExecuting"
    DONE = "transitionDone"
    CANCELED = "transitionCanceled"
    FAILED = "transitionFailed"


class Actor(Enum):
    OWNER = "owner"
    WORKER = "worker"


_ACTIVE = frozenset(
    {
        S.STATUS_WAITING_FOR_BUILDER_SLOT,
        S.STATUS_BUILDING,
        S.STATUS_WAITING_FOR_EXECUTOR_SLOT,
        S.STATUS_WAITING_FOR_PARENT_TASKS,
        S.STATUS_EXECUTING,
    }
)

# transition -> (allowed source statuses, destination status)
TRANSITIONS: dict[Transition, tuple[frozenset[StatusValue], StatusValue]] = {
    Transition.BUILDING: (frozenset({S.STATUS_WAITING_FOR_BUILDER_SLOT}), S.STATUS_BUILDING),
    Transition.WAITING_PARENT_TASKS: (frozenset({S.STATUS_BUILDING}), S.STATUS_WAITING_FOR_PARENT_TASKS),
    Transition.WAITING_EXECUTOR_SLOT: (
        frozenset({S.STATUS_BUILDING, S.STATUS_WAITING_FOR_PARENT_TASKS}),
        S.STATUS_WAITING_FOR_EXECUTOR_SLOT,
    ),
    Transition.EXECUTING: (frozenset({S.STATUS_WAITING_FOR_EXECUTOR_SLOT}), S.STATUS_EXECUTING),
    Transition.DONE: (frozenset({S.STATUS_EXECUTING}), S.STATUS_DONE),
    Transition.CANCELED: (_ACTIVE, S.STATUS_CANCELED),
    Transition.FAILED: (_ACTIVE, S.STATUS_FAILED),
}

# action -> (transition, who may apply it through ApplyTaskAction)
ACTION_POLICY: dict[ActionValue, tuple[Transition | None, frozenset[Actor]]] = {
    Action.TASK_ACTION_EXECUTING: (Transition.EXECUTING, frozenset({Actor.WORKER})),
    Action.TASK_ACTION_DONE: (Transition.DONE, frozenset({Actor.WORKER})),
    Action.TASK_ACTION_CANCELED: (Transition.CANCELED, frozenset({Actor.OWNER, Actor.WORKER})),
    Action.TASK_ACTION_FAILED: (Transition.FAILED, frozenset({Actor.OWNER, Actor.WORKER})),
    Action.TASK_ACTION_BUILD_STARTED: (Transition.BUILDING, frozenset()),
    # Resolved at run time: waiting for the executor or for the parents (see task_actions).
    Action.TASK_ACTION_BUILD_FINISHED: (None, frozenset()),
}


def actors(task: computetask_pb2.ComputeTask, requester: str) -> frozenset[Actor]:
    result = set()
    if requester == task.owner:
        result.add(Actor.OWNER)
    if requester == task.worker:
        result.add(Actor.WORKER)
    return frozenset(result)


def may_apply(action: ActionValue, task: computetask_pb2.ComputeTask, requester: str) -> bool:
    """Whether `requester` may ask for `action` on `task` through the RPC (status aside)."""
    policy = ACTION_POLICY.get(action)
    return policy is not None and bool(policy[1] & actors(task, requester))


def can(status: StatusValue, transition: Transition) -> bool:
    return status in TRANSITIONS[transition][0]


def next_status(status: StatusValue, transition: Transition) -> StatusValue:
    sources, destination = TRANSITIONS[transition]
    if status not in sources:
        raise transition_error(transition, status)
    return destination


def transition_error(transition: Transition, status: StatusValue) -> OrchestratorError:
    # Code-less, hence UNKNOWN (retried by the reference backend), with the reference's wording.
    return unknown(f"event {transition} inappropriate in current state {Status.Name(status)}")


def is_final(status: StatusValue) -> bool:
    """No transition leaves the status (DONE, CANCELED, FAILED and also UNKNOWN)."""
    return not any(status in sources for sources, _ in TRANSITIONS.values())


def policy_table() -> dict[tuple[StatusValue, ActionValue], tuple[StatusValue, frozenset[Actor]] | None]:
    """(status, action) -> (new status, who may trigger it), None when refused: for docs and tests."""
    table: dict[tuple[StatusValue, ActionValue], tuple[StatusValue, frozenset[Actor]] | None] = {}
    for status in Status.values():
        for action in Action.values():
            transition, who = ACTION_POLICY.get(action, (None, frozenset()))
            if transition is None or not can(status, transition):
                table[(status, action)] = None
            else:
                table[(status, action)] = (TRANSITIONS[transition][1], who)
    return table
