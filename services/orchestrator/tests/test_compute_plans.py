"""ComputePlanService."""

from __future__ import annotations

import pytest
from backend_common.orchestrator import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnimplementedError,
    UnknownError,
)
from backend_common.protos import computeplan_pb2, computetask_pb2, event_pb2
from standalone_orchestrator.testing import ORG1, ORG2, Network, new_key

A = computetask_pb2.ComputeTaskAction


def test_register_get_update(net: Network) -> None:
    plan = net.plan()
    assert plan.owner == ORG1 and plan.name == "plan" and plan.tag == "tag"
    assert not plan.HasField("cancelation_date") and not plan.HasField("failure_date")
    assert net.client(ORG2).get_plan(plan.key) == plan
    net.client().update_plan(plan.key, "renamed")
    assert net.client().get_plan(plan.key).name == "renamed"
    with pytest.raises(PermissionDeniedError):
        net.client(ORG2).update_plan(plan.key, "mine")
    with pytest.raises(NotFoundError):
        net.client().get_plan(new_key())
    with pytest.raises(AlreadyExistsError):
        net.client().register_plan(computeplan_pb2.NewComputePlan(key=plan.key, name="again"))


@pytest.mark.parametrize(
    "new",
    [
        computeplan_pb2.NewComputePlan(key="nope", name="p"),
        computeplan_pb2.NewComputePlan(key=new_key(), name=""),
        computeplan_pb2.NewComputePlan(key=new_key(), name="p", tag="t" * 101),
    ],
)
def test_invalid_plan(net: Network, new: computeplan_pb2.NewComputePlan) -> None:
    with pytest.raises(InvalidArgumentError):
        net.client().register_plan(new)


def test_cancel(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    task = net.task(function, plan)
    with pytest.raises(PermissionDeniedError):
        net.client(ORG2).apply_plan_action(plan.key, computeplan_pb2.PLAN_ACTION_CANCELED)
    with pytest.raises(UnimplementedError):
        net.client().apply_plan_action(plan.key, computeplan_pb2.PLAN_ACTION_UNKNOWN)
    net.client().apply_plan_action(plan.key, computeplan_pb2.PLAN_ACTION_CANCELED)
    canceled = net.client().get_plan(plan.key)
    assert canceled.HasField("cancelation_date") and not canceled.HasField("failure_date")
    # Nothing cascades: workers cancel their tasks lazily.
    assert net.client().get_task(task.key).status == computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT
    events = list(net.client().iter_events(event_pb2.EventQueryFilter(asset_key=plan.key)))
    assert [e.event_kind for e in events] == [event_pb2.EVENT_ASSET_CREATED, event_pb2.EVENT_ASSET_UPDATED]
    assert events[1].compute_plan.cancelation_date == canceled.cancelation_date
    # A second cancel is OE0109, which the reference maps to UNKNOWN.
    with pytest.raises(UnknownError) as error:
        net.client().apply_plan_action(plan.key, computeplan_pb2.PLAN_ACTION_CANCELED)
    assert error.value.oe_code == "OE0109"
    # Tasks can still be registered on a terminated plan.
    net.task(function, plan)


def test_done_on_a_canceled_plan_cancels_the_task(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    task = net.task(function, plan, worker=ORG2)
    net.client(ORG2).apply_task_action(task.key, A.TASK_ACTION_EXECUTING)
    net.client().apply_plan_action(plan.key, computeplan_pb2.PLAN_ACTION_CANCELED)
    net.client(ORG2).apply_task_action(task.key, A.TASK_ACTION_DONE)
    assert net.client().get_task(task.key).status == computetask_pb2.STATUS_CANCELED


def test_task_failure_fails_the_plan_without_event(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    task = net.task(function, plan)
    other = net.task(function, plan)
    net.client().apply_task_action(task.key, A.TASK_ACTION_FAILED)
    failed = net.client().get_plan(plan.key)
    assert failed.HasField("failure_date") and not failed.HasField("cancelation_date")
    plan_events = list(net.client().iter_events(event_pb2.EventQueryFilter(asset_key=plan.key)))
    assert len(plan_events) == 1
    # A second failure leaves the date alone; a terminated plan cannot be canceled.
    net.client().apply_task_action(other.key, A.TASK_ACTION_FAILED)
    assert net.client().get_plan(plan.key).failure_date == failed.failure_date
    with pytest.raises(UnknownError):
        net.client().apply_plan_action(plan.key, computeplan_pb2.PLAN_ACTION_CANCELED)


def test_is_plan_running(net: Network) -> None:
    client = net.client()
    with pytest.raises(NotFoundError):
        client.is_plan_running(new_key())
    function = net.function(ready=True)
    empty = net.plan()
    assert client.is_plan_running(empty.key) is False

    plan = net.plan()
    first = net.task(function, plan)
    second = net.task(function, plan)
    assert client.is_plan_running(plan.key) is True
    client.apply_task_action(first.key, A.TASK_ACTION_EXECUTING)
    client.apply_task_action(first.key, A.TASK_ACTION_DONE)
    assert client.is_plan_running(plan.key) is True
    client.apply_task_action(second.key, A.TASK_ACTION_EXECUTING)
    client.apply_task_action(second.key, A.TASK_ACTION_DONE)
    assert client.is_plan_running(plan.key) is False  # all done

    # A canceled task stops the plan even with tasks still pending.
    mixed = net.plan()
    canceled = net.task(function, mixed)
    net.task(function, mixed)
    client.apply_task_action(canceled.key, A.TASK_ACTION_CANCELED)
    assert client.is_plan_running(mixed.key) is False

    terminated = net.plan()
    net.task(function, terminated)
    client.apply_plan_action(terminated.key, computeplan_pb2.PLAN_ACTION_CANCELED)
    assert client.is_plan_running(terminated.key) is False


def test_query_plans(net: Network) -> None:
    mine = {net.plan(ORG2).key for _ in range(3)}
    net.plan(ORG1)
    response = net.client().query_plans(computeplan_pb2.PlanQueryFilter(owner=ORG2), page_size=2)
    assert len(response.plans) == 2 and response.next_page_token == "2"
    listed = [p.key for p in net.client().iter_plans(computeplan_pb2.PlanQueryFilter(owner=ORG2))]
    assert mine <= set(listed)
    assert all(net.client().get_plan(key).owner == ORG2 for key in listed)
