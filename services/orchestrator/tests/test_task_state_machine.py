"""Every task status x action x requester, over the wire, plus the cascades of DONE."""

from __future__ import annotations

import itertools

import pytest
from backend_common.orchestrator import PermissionDeniedError, UnknownError
from backend_common.protos import computetask_pb2, event_pb2, function_pb2
from standalone_orchestrator.domain import task_state
from standalone_orchestrator.testing import MODEL, ORG1, ORG2, ORG3, Network, parent_input

S = computetask_pb2.ComputeTaskStatus
A = computetask_pb2.ComputeTaskAction

OWNER, WORKER, STRANGER = ORG1, ORG2, ORG3
ACTIVE = {
    S.STATUS_WAITING_FOR_BUILDER_SLOT,
    S.STATUS_BUILDING,
    S.STATUS_WAITING_FOR_PARENT_TASKS,
    S.STATUS_WAITING_FOR_EXECUTOR_SLOT,
    S.STATUS_EXECUTING,
}
# The expected policy, written independently of the implementation's table.
WHO = {
    A.TASK_ACTION_EXECUTING: {WORKER},
    A.TASK_ACTION_DONE: {WORKER},
    A.TASK_ACTION_CANCELED: {OWNER, WORKER},
    A.TASK_ACTION_FAILED: {OWNER, WORKER},
}
MOVES = {
    A.TASK_ACTION_EXECUTING: ({S.STATUS_WAITING_FOR_EXECUTOR_SLOT}, S.STATUS_EXECUTING),
    A.TASK_ACTION_DONE: ({S.STATUS_EXECUTING}, S.STATUS_DONE),
    A.TASK_ACTION_CANCELED: (ACTIVE, S.STATUS_CANCELED),
    A.TASK_ACTION_FAILED: (ACTIVE, S.STATUS_FAILED),
}
STATUSES = sorted(ACTIVE | {S.STATUS_DONE, S.STATUS_CANCELED, S.STATUS_FAILED})
ACTIONS = sorted(A.values())


@pytest.fixture(scope="module")
def functions(orchestrator: Network) -> dict[str, function_pb2.Function]:
    building = orchestrator.function()
    orchestrator.client().apply_function_action(building.key, function_pb2.FUNCTION_ACTION_BUILDING)
    return {
        "waiting": orchestrator.function(),
        "building": orchestrator.client().get_function(building.key),
        "ready": orchestrator.function(ready=True),
    }


def _task_in(
    net: Network, functions: dict[str, function_pb2.Function], status: int
) -> computetask_pb2.ComputeTask:
    plan = net.plan(OWNER)
    if status == S.STATUS_WAITING_FOR_BUILDER_SLOT:
        return net.task(functions["waiting"], plan, worker=WORKER)
    if status == S.STATUS_BUILDING:
        return net.task(functions["building"], plan, worker=WORKER)
    if status == S.STATUS_WAITING_FOR_PARENT_TASKS:
        parent = net.task(functions["ready"], plan, worker=WORKER)
        return net.task(functions["ready"], plan, worker=WORKER, inputs=[parent_input("model", parent.key)])
    task = net.task(functions["ready"], plan, worker=WORKER)
    worker = net.client(WORKER)
    if status in (S.STATUS_EXECUTING, S.STATUS_DONE):
        worker.apply_task_action(task.key, A.TASK_ACTION_EXECUTING)
    if status == S.STATUS_DONE:
        worker.apply_task_action(task.key, A.TASK_ACTION_DONE)
    if status == S.STATUS_CANCELED:
        worker.apply_task_action(task.key, A.TASK_ACTION_CANCELED)
    if status == S.STATUS_FAILED:
        worker.apply_task_action(task.key, A.TASK_ACTION_FAILED)
    return worker.get_task(task.key)


@pytest.mark.parametrize(
    ("status", "action", "requester"),
    list(itertools.product(STATUSES, ACTIONS, (OWNER, WORKER, STRANGER))),
    ids=lambda value: S.Name(value) if isinstance(value, int) and value in S.values() else str(value),
)
def test_transition(
    net: Network, functions: dict[str, function_pb2.Function], status: int, action: int, requester: str
) -> None:
    task = _task_in(net, functions, status)
    assert task.status == status
    client = net.client(requester)
    if requester not in WHO.get(action, set()):  # type: ignore[call-overload]
        with pytest.raises(PermissionDeniedError) as denied:
            client.apply_task_action(task.key, action, "why")  # type: ignore[arg-type]
        assert denied.value.details == "OE0102: only task owner can update it"
        assert client.get_task(task.key).status == status
        return
    sources, destination = MOVES[action]  # type: ignore[index]
    if status not in sources:
        with pytest.raises(UnknownError) as refused:
            client.apply_task_action(task.key, action, "why")  # type: ignore[arg-type]
        assert "inappropriate in current state " + S.Name(status) in refused.value.details  # type: ignore[arg-type]
        assert client.get_task(task.key).status == status
        return
    client.apply_task_action(task.key, action, "why")  # type: ignore[arg-type]
    assert client.get_task(task.key).status == destination
    last = list(
        client.iter_events(
            event_pb2.EventQueryFilter(asset_key=task.key, event_kind=event_pb2.EVENT_ASSET_UPDATED)
        )
    )
    assert [e.compute_task.status for e in last][-1] == destination
    assert dict(last[-1].metadata) == {"reason": "why"}


def test_policy_table_matches(net: Network) -> None:
    """The implementation's table says the same as the expectations above."""
    table = task_state.policy_table()
    names = {OWNER: task_state.Actor.OWNER, WORKER: task_state.Actor.WORKER}
    for status, action in itertools.product(STATUSES, ACTIONS):
        entry = table[(status, action)]  # type: ignore[index]
        if action not in MOVES:
            # Build actions exist for function propagation only: nobody may trigger them.
            assert entry is None or entry[1] == frozenset()
            continue
        if status not in MOVES[action][0]:  # type: ignore[index]
            assert entry is None
            continue
        assert entry is not None
        assert entry[0] == MOVES[action][1]  # type: ignore[index]
        assert entry[1] == {names[who] for who in WHO[action]}  # type: ignore[index]
    assert task_state.is_final(S.STATUS_UNKNOWN)


def test_default_reason(net: Network, functions: dict[str, function_pb2.Function]) -> None:
    task = _task_in(net, functions, S.STATUS_WAITING_FOR_EXECUTOR_SLOT)
    net.client(WORKER).apply_task_action(task.key, A.TASK_ACTION_EXECUTING)
    event = list(net.client().iter_events(event_pb2.EventQueryFilter(asset_key=task.key)))[-1]
    assert dict(event.metadata) == {"reason": "User action"}


def test_done_starts_children_whose_parents_are_all_done(
    net: Network, functions: dict[str, function_pb2.Function]
) -> None:
    ready = functions["ready"]
    multiple = net.function(
        inputs={"model": function_pb2.FunctionInput(kind=MODEL, multiple=True)},
        ready=True,
    )
    plan = net.plan()
    worker = net.client(WORKER)
    first = net.task(ready, plan, worker=WORKER)
    second = net.task(ready, plan, worker=WORKER)
    only_first = net.task(ready, plan, worker=WORKER, inputs=[parent_input("model", first.key)])
    both = net.task(
        multiple,
        plan,
        worker=WORKER,
        inputs=[parent_input("model", first.key), parent_input("model", second.key)],
    )
    building_function = net.function()
    net.client().apply_function_action(building_function.key, function_pb2.FUNCTION_ACTION_BUILDING)
    building_child = net.task(
        building_function, plan, worker=WORKER, inputs=[parent_input("model", first.key)]
    )
    assert building_child.status == S.STATUS_BUILDING

    for task in (first, second):
        worker.apply_task_action(task.key, A.TASK_ACTION_EXECUTING)
    worker.apply_task_action(first.key, A.TASK_ACTION_DONE)
    assert worker.get_task(only_first.key).status == S.STATUS_WAITING_FOR_EXECUTOR_SLOT
    assert worker.get_task(both.key).status == S.STATUS_WAITING_FOR_PARENT_TASKS
    assert worker.get_task(building_child.key).status == S.STATUS_BUILDING  # waits for its build
    started = list(net.client().iter_events(event_pb2.EventQueryFilter(asset_key=only_first.key)))[-1]
    assert dict(started.metadata) == {"reason": f"Last parent task {first.key} done"}
    worker.apply_task_action(second.key, A.TASK_ACTION_DONE)
    assert worker.get_task(both.key).status == S.STATUS_WAITING_FOR_EXECUTOR_SLOT


def test_failure_and_cancel_do_not_cascade(net: Network, functions: dict[str, function_pb2.Function]) -> None:
    ready = functions["ready"]
    plan = net.plan()
    parent = net.task(ready, plan, worker=WORKER)
    child = net.task(ready, plan, worker=WORKER, inputs=[parent_input("model", parent.key)])
    net.client(OWNER).apply_task_action(parent.key, A.TASK_ACTION_FAILED)
    assert net.client().get_task(child.key).status == S.STATUS_WAITING_FOR_PARENT_TASKS
    # Children registered afterwards start canceled.
    late = net.task(ready, plan, worker=WORKER, inputs=[parent_input("model", parent.key)])
    assert late.status == S.STATUS_CANCELED
