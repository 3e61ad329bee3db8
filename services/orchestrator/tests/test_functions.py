"""FunctionService: registration, updates, the build state machine and its propagation to tasks."""

from __future__ import annotations

import pytest
from backend_common.orchestrator import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnknownError,
)
from backend_common.protos import common_pb2, computetask_pb2, event_pb2, function_pb2
from standalone_orchestrator.testing import (
    DATA_MANAGER,
    DATA_SAMPLE,
    MODEL,
    ORG1,
    ORG2,
    PERFORMANCE,
    Network,
    addressable,
    new_key,
    permissions,
)

S = computetask_pb2.ComputeTaskStatus
F = function_pb2.FunctionStatus
A = function_pb2.FunctionAction


def _new(**overrides: object) -> function_pb2.NewFunction:
    fields: dict[str, object] = {
        "key": new_key(),
        "name": "f",
        "description": addressable(),
        "archive": addressable(),
        "new_permissions": permissions(),
        "metadata": {"k": "v"},
        "inputs": {"model": function_pb2.FunctionInput(kind=MODEL, optional=True)},
        "outputs": {"model": function_pb2.FunctionOutput(kind=MODEL)},
    }
    fields.update(overrides)
    return function_pb2.NewFunction(**fields)  # type: ignore[arg-type]


def test_register_and_get(net: Network) -> None:
    new = _new(new_permissions=permissions(False, [ORG2]))
    function = net.client(ORG1).register_function(new)
    assert function.key == new.key
    assert function.owner == ORG1
    assert function.status == F.FUNCTION_STATUS_WAITING
    assert function.HasField("image") and function.image.checksum == ""
    # The owner is appended; download mirrors process.
    assert list(function.permissions.process.authorized_ids) == [ORG2, ORG1]
    assert function.permissions.download == function.permissions.process
    assert dict(function.metadata) == {"k": "v"}
    assert function.inputs["model"].optional
    assert net.client(ORG2).get_function(new.key) == function


def test_public_permissions_still_list_the_owner(net: Network) -> None:
    function = net.client(ORG1).register_function(_new(new_permissions=permissions(True)))
    assert function.permissions.process.public
    assert list(function.permissions.process.authorized_ids) == [ORG1]


@pytest.mark.parametrize(
    "overrides",
    [
        {"key": "not-a-uuid"},
        {"name": ""},
        {"name": "x" * 101},
        {"description": common_pb2.Addressable(checksum="zz", storage_address="http://a")},
        {"archive": common_pb2.Addressable(checksum="a" * 64, storage_address="")},
        {"metadata": {"k": "v" * 101}},
        {"inputs": {"x": function_pb2.FunctionInput(kind=PERFORMANCE)}},
        {"inputs": {"dm": function_pb2.FunctionInput(kind=DATA_MANAGER)}},
        {
            "inputs": {
                "dm": function_pb2.FunctionInput(kind=DATA_MANAGER, multiple=True),
                "ds": function_pb2.FunctionInput(kind=DATA_SAMPLE),
            }
        },
        {"outputs": {"perf": function_pb2.FunctionOutput(kind=PERFORMANCE, multiple=True)}},
        {"outputs": {"x": function_pb2.FunctionOutput(kind=DATA_SAMPLE)}},
    ],
)
def test_invalid_function(net: Network, overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        net.client().register_function(_new(**overrides))
    assert error.value.details.startswith("OE0101: function is not valid:")


def test_missing_permissions_is_invalid(net: Network) -> None:
    new = _new()
    new.ClearField("new_permissions")
    with pytest.raises(InvalidArgumentError):
        net.client().register_function(new)


def test_unknown_authorized_organization(net: Network) -> None:
    with pytest.raises(FailedPreconditionError) as error:
        net.client().register_function(_new(new_permissions=permissions(False, ["Nobody"])))
    assert error.value.details == "OE0003: invalid permission input values"
    # Public permissions do not check the ids.
    net.client().register_function(_new(new_permissions=permissions(True, ["Nobody"])))


def test_conflicts(net: Network) -> None:
    new = _new()
    net.client().register_function(new)
    with pytest.raises(AlreadyExistsError):
        net.client().register_function(new)
    # The same key in another channel is a conflict too, reported as such.
    with pytest.raises(AlreadyExistsError) as error:
        net.client(ORG1, "yourchannel").register_function(_new(key=new.key))
    assert "another channel" in error.value.details
    # So is a storage address already used by another asset.
    with pytest.raises(AlreadyExistsError) as error:
        net.client().register_function(_new(archive=new.archive))
    assert "storage address" in error.value.details


def test_get_unknown(net: Network) -> None:
    with pytest.raises(NotFoundError) as error:
        net.client().get_function(new_key())
    assert error.value.oe_code == "OE0002"


def test_query_by_plan_and_pagination(net: Network) -> None:
    used = net.function(ready=True)
    net.function()
    plan = net.plan()
    net.task(used, plan)
    net.task(used, plan)
    filtered = net.client().query_functions(function_pb2.FunctionQueryFilter(compute_plan_key=plan.key))
    assert [f.key for f in filtered.Functions] == [used.key]
    assert filtered.next_page_token == ""
    first = net.client().query_functions(page_size=1)
    assert len(first.Functions) == 1 and first.next_page_token == "1"
    second = net.client().query_functions(page_token="1", page_size=1)
    assert second.Functions[0].key != first.Functions[0].key
    everything = list(net.client().iter_functions(page_size=7))
    keys = [f.key for f in everything]
    assert len(keys) == len(set(keys))
    assert [(f.creation_date.ToNanoseconds(), f.key) for f in everything] == sorted(
        (f.creation_date.ToNanoseconds(), f.key) for f in everything
    )
    with pytest.raises(UnknownError):
        net.client().query_functions(page_token="abc")


def test_update(net: Network) -> None:
    function = net.function()
    image = addressable()
    net.client().update_function(function.key, "renamed", image)
    updated = net.client().get_function(function.key)
    assert updated.name == "renamed" and updated.image == image
    # The image is kept when none is given; the name is always required.
    net.client().update_function(function.key, "again")
    assert net.client().get_function(function.key).image == image
    with pytest.raises(InvalidArgumentError):
        net.client().update_function(function.key, "")
    with pytest.raises(PermissionDeniedError):
        net.client(ORG2).update_function(function.key, "mine")
    with pytest.raises(NotFoundError):
        net.client().update_function(new_key(), "x")


def test_ready_function_needs_an_image(net: Network) -> None:
    function = net.function()
    net.client().apply_function_action(function.key, A.FUNCTION_ACTION_BUILDING)
    net.client().apply_function_action(function.key, A.FUNCTION_ACTION_READY)
    with pytest.raises(InvalidArgumentError):
        net.client().update_function(function.key, "no image yet")


@pytest.mark.parametrize(
    ("start", "action", "expected"),
    [
        ([], A.FUNCTION_ACTION_BUILDING, F.FUNCTION_STATUS_BUILDING),
        ([], A.FUNCTION_ACTION_CANCELED, F.FUNCTION_STATUS_CANCELED),
        ([], A.FUNCTION_ACTION_READY, None),
        ([], A.FUNCTION_ACTION_FAILED, None),
        ([A.FUNCTION_ACTION_BUILDING], A.FUNCTION_ACTION_READY, F.FUNCTION_STATUS_READY),
        ([A.FUNCTION_ACTION_BUILDING], A.FUNCTION_ACTION_FAILED, F.FUNCTION_STATUS_FAILED),
        ([A.FUNCTION_ACTION_BUILDING], A.FUNCTION_ACTION_CANCELED, F.FUNCTION_STATUS_CANCELED),
        ([A.FUNCTION_ACTION_BUILDING], A.FUNCTION_ACTION_BUILDING, None),
        ([A.FUNCTION_ACTION_BUILDING, A.FUNCTION_ACTION_READY], A.FUNCTION_ACTION_CANCELED, None),
        ([A.FUNCTION_ACTION_BUILDING, A.FUNCTION_ACTION_FAILED], A.FUNCTION_ACTION_READY, None),
        ([A.FUNCTION_ACTION_CANCELED], A.FUNCTION_ACTION_BUILDING, None),
    ],
)
def test_function_state_machine(net: Network, start: list[int], action: int, expected: int | None) -> None:
    function = net.function()
    client = net.client()
    for previous in start:
        client.apply_function_action(function.key, previous)  # type: ignore[arg-type]
    before = client.get_function(function.key).status
    if expected is None:
        with pytest.raises(UnknownError) as error:
            client.apply_function_action(function.key, action)  # type: ignore[arg-type]
        assert "inappropriate in current state" in error.value.details
        assert client.get_function(function.key).status == before
    else:
        client.apply_function_action(function.key, action)  # type: ignore[arg-type]
        assert client.get_function(function.key).status == expected


def test_function_action_checks(net: Network) -> None:
    function = net.function()
    with pytest.raises(PermissionDeniedError):
        net.client(ORG2).apply_function_action(function.key, A.FUNCTION_ACTION_BUILDING)
    with pytest.raises(NotFoundError):
        net.client().apply_function_action(new_key(), A.FUNCTION_ACTION_BUILDING)
    with pytest.raises(FailedPreconditionError):
        net.client().apply_function_action(function.key, A.FUNCTION_ACTION_UNKNOWN)


def _statuses(net: Network, *keys: str) -> list[int]:
    return [net.client().get_task(key).status for key in keys]


def test_build_propagates_to_tasks(net: Network) -> None:
    function = net.function()
    plan = net.plan()
    parent = net.task(function, plan)
    child = net.task(function, plan, inputs=[_parent(parent.key)])
    assert _statuses(net, parent.key, child.key) == [S.STATUS_WAITING_FOR_BUILDER_SLOT] * 2
    net.client().apply_function_action(function.key, A.FUNCTION_ACTION_BUILDING)
    assert _statuses(net, parent.key, child.key) == [S.STATUS_BUILDING] * 2
    # Registered while building: starts building.
    late = net.task(function, plan)
    assert late.status == S.STATUS_BUILDING
    net.client().update_function(function.key, "f", addressable())
    net.client().apply_function_action(function.key, A.FUNCTION_ACTION_READY)
    assert _statuses(net, parent.key, child.key, late.key) == [
        S.STATUS_WAITING_FOR_EXECUTOR_SLOT,
        S.STATUS_WAITING_FOR_PARENT_TASKS,
        S.STATUS_WAITING_FOR_EXECUTOR_SLOT,
    ]
    events = list(
        net.client().iter_events(
            event_pb2.EventQueryFilter(asset_key=child.key, event_kind=event_pb2.EVENT_ASSET_UPDATED)
        )
    )
    reasons = [e.metadata["reason"] for e in events]
    assert f"Function {function.key} finished building" in reasons


def _parent(key: str) -> computetask_pb2.ComputeTaskInput:
    return computetask_pb2.ComputeTaskInput(
        identifier="model",
        parent_task_output=computetask_pb2.ParentTaskOutputRef(
            parent_task_key=key, output_identifier="model"
        ),
    )


def test_cancel_propagates_to_building_tasks_only(net: Network) -> None:
    waiting_function = net.function()
    plan = net.plan()
    waiting = net.task(waiting_function, plan)
    net.client().apply_function_action(waiting_function.key, A.FUNCTION_ACTION_CANCELED)
    # Canceling from WAITING leaves the waiting tasks alone.
    assert _statuses(net, waiting.key) == [S.STATUS_WAITING_FOR_BUILDER_SLOT]

    building_function = net.function()
    building = net.task(building_function, plan)
    net.client().apply_function_action(building_function.key, A.FUNCTION_ACTION_BUILDING)
    net.client().apply_function_action(building_function.key, A.FUNCTION_ACTION_CANCELED)
    assert _statuses(net, building.key) == [S.STATUS_CANCELED]
    # Later tasks of a canceled function start canceled.
    assert net.task(building_function, plan).status == S.STATUS_CANCELED


def test_failed_build_fails_tasks_and_plans(net: Network) -> None:
    function = net.function()
    plan = net.plan()
    task = net.task(function, plan)
    net.client().apply_function_action(function.key, A.FUNCTION_ACTION_BUILDING)
    net.client().apply_function_action(function.key, A.FUNCTION_ACTION_FAILED)
    assert _statuses(net, task.key) == [S.STATUS_FAILED]
    assert net.client().get_plan(plan.key).HasField("failure_date")
    function_event = next(
        net.client().iter_events(
            event_pb2.EventQueryFilter(asset_key=function.key, event_kind=event_pb2.EVENT_ASSET_UPDATED),
            sort=common_pb2.DESCENDING,
        )
    )
    assert function_event.function.status == F.FUNCTION_STATUS_FAILED
    assert dict(function_event.metadata) == {"reason": "User action"}
