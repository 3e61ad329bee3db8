"""Functions and their build status (`orchestrator-grpc.md` 9.4)."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias

from backend_common.protos import common_pb2, event_pb2, function_pb2

from standalone_orchestrator.db.tables import functions as table
from standalone_orchestrator.domain import pagination, task_actions
from standalone_orchestrator.domain.assets import FUNCTION, ensure_new_keys, ensure_registered
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.permissions import create_permissions
from standalone_orchestrator.domain.validation import Checker
from standalone_orchestrator.errors import bad_request, invalid_asset, not_found, permission_denied, unknown
from standalone_orchestrator.store import addressables
from standalone_orchestrator.store import functions as store

FunctionStatus = function_pb2.FunctionStatus
AssetKind = common_pb2.AssetKind

_INPUT_KINDS = frozenset({AssetKind.ASSET_MODEL, AssetKind.ASSET_DATA_SAMPLE, AssetKind.ASSET_DATA_MANAGER})
_OUTPUT_KINDS = frozenset({AssetKind.ASSET_MODEL, AssetKind.ASSET_PERFORMANCE})


class Transition(StrEnum):
    BUILDING = "transitionBuilding"
    READY = "transitionReady"
    FAILED = "transitionFailed"
    CANCELED = "transitionCanceled"


# transition -> (allowed source statuses, destination). No WAITING -> FAILED: builds fail while
# building, and an older diagram showing it does not match the reference's code.
StatusValue: TypeAlias = function_pb2.FunctionStatus.ValueType

TRANSITIONS: dict[Transition, tuple[frozenset[StatusValue], StatusValue]] = {
    Transition.BUILDING: (
        frozenset({FunctionStatus.FUNCTION_STATUS_WAITING}),
        FunctionStatus.FUNCTION_STATUS_BUILDING,
    ),
    Transition.READY: (
        frozenset({FunctionStatus.FUNCTION_STATUS_BUILDING}),
        FunctionStatus.FUNCTION_STATUS_READY,
    ),
    Transition.FAILED: (
        frozenset({FunctionStatus.FUNCTION_STATUS_BUILDING}),
        FunctionStatus.FUNCTION_STATUS_FAILED,
    ),
    Transition.CANCELED: (
        frozenset({FunctionStatus.FUNCTION_STATUS_WAITING, FunctionStatus.FUNCTION_STATUS_BUILDING}),
        FunctionStatus.FUNCTION_STATUS_CANCELED,
    ),
}

ACTIONS: dict[function_pb2.FunctionAction.ValueType, Transition] = {
    function_pb2.FUNCTION_ACTION_BUILDING: Transition.BUILDING,
    function_pb2.FUNCTION_ACTION_READY: Transition.READY,
    function_pb2.FUNCTION_ACTION_FAILED: Transition.FAILED,
    function_pb2.FUNCTION_ACTION_CANCELED: Transition.CANCELED,
}


def _validate_new(new: function_pb2.NewFunction) -> None:
    checker = Checker()
    checker.uuid("key", new.key)
    checker.name("name", new.name)
    checker.addressable("description", new.description, present=new.HasField("description"))
    checker.addressable("archive", new.archive, present=new.HasField("archive"))
    checker.metadata("metadata", new.metadata)
    if not new.HasField("new_permissions"):
        checker.fail("new_permissions", "cannot be blank")
    manager_inputs = 0
    sample_inputs = 0
    for identifier, function_input in new.inputs.items():
        field = f"inputs.{identifier}"
        checker.length(f"{field}.identifier", identifier, minimum=1)
        if function_input.kind not in _INPUT_KINDS:
            checker.fail(f"{field}.kind", "must be a valid value")
        if function_input.kind == AssetKind.ASSET_DATA_MANAGER:
            manager_inputs += 1
            if function_input.multiple:
                checker.fail(f"{field}.multiple", "data manager input can't be multiple")
            if function_input.optional:
                checker.fail(f"{field}.optional", "data manager input can't be optional")
        elif function_input.kind == AssetKind.ASSET_DATA_SAMPLE:
            sample_inputs += 1
    if manager_inputs > 1:
        checker.fail("inputs", "there can only be one data manager input")
    if bool(manager_inputs) != bool(sample_inputs):
        checker.fail("inputs", "a data manager input requires data sample inputs and vice versa")
    for identifier, function_output in new.outputs.items():
        field = f"outputs.{identifier}"
        checker.length(f"{field}.identifier", identifier, minimum=1)
        if function_output.kind not in _OUTPUT_KINDS:
            checker.fail(f"{field}.kind", "must be a valid value")
        if function_output.kind == AssetKind.ASSET_PERFORMANCE and function_output.multiple:
            checker.fail(f"{field}.multiple", "performance output can't be multiple")
    checker.check(FUNCTION)


def register_function(request: Request, new: function_pb2.NewFunction) -> function_pb2.Function:
    _validate_new(new)
    ensure_new_keys(request, FUNCTION, table.c.key, table.c.channel, [new.key])
    ensure_registered(request, request.requester)
    function = function_pb2.Function(
        key=new.key,
        name=new.name,
        description=new.description,
        archive=new.archive,
        permissions=create_permissions(request, request.requester, new.new_permissions),
        owner=request.requester,
        creation_date=request.timestamp,
        metadata=new.metadata,
        inputs=new.inputs,
        outputs=new.outputs,
        status=FunctionStatus.FUNCTION_STATUS_WAITING,
        # An empty image until the function is built, present on the wire as in the reference.
        image=common_pb2.Addressable(),
    )
    addressables.claim_addresses(
        request.connection, request.channel, [(new.key, new.description), (new.key, new.archive)]
    )
    store.insert_function(request.connection, request.channel, function)
    request.emit(event_pb2.EVENT_ASSET_CREATED, AssetKind.ASSET_FUNCTION, function.key, function)
    return function


def get_function(request: Request, key: str) -> function_pb2.Function:
    function = store.get_function(request.connection, request.channel, key)
    if function is None:
        raise not_found(FUNCTION, key)
    return function


def query_functions(
    request: Request, page_token: str, page_size: int, compute_plan_key: str
) -> tuple[list[function_pb2.Function], str]:
    offset, size = pagination.parse(page_token, page_size)
    rows = store.query_functions(request.connection, request.channel, offset, size, compute_plan_key)
    return pagination.cut(rows, offset, size)


def update_function(request: Request, param: function_pb2.UpdateFunctionParam) -> None:
    checker = Checker()
    checker.uuid("key", param.key)
    # The name is required even when only the image changes.
    checker.name("name", param.name)
    if param.image.checksum:
        checker.addressable("image", param.image, present=True)
    checker.check(FUNCTION)
    function = get_function(request, param.key)
    if function.owner != request.requester:
        raise permission_denied("requester does not own the function")
    function.name = param.name
    if param.image.checksum:
        function.image.CopyFrom(param.image)
        addressables.claim_addresses(request.connection, request.channel, [(function.key, param.image)])
    if not function.image.checksum and function.status == FunctionStatus.FUNCTION_STATUS_READY:
        raise invalid_asset("function is not valid: image: cannot be blank when the function is ready.")
    store.update_function(request.connection, function)
    request.emit(event_pb2.EVENT_ASSET_UPDATED, AssetKind.ASSET_FUNCTION, function.key, function)


def apply_function_action(
    request: Request, key: str, action: function_pb2.FunctionAction.ValueType, reason: str = ""
) -> None:
    transition = ACTIONS.get(action)
    if transition is None:
        raise bad_request("unsupported action")
    function = get_function(request, key)
    if function.owner != request.requester:
        raise permission_denied("only the function owner can act on it")
    transition_function(request, function, transition, reason or task_actions.USER_ACTION)


def transition_function(
    request: Request, function: function_pb2.Function, transition: Transition, reason: str
) -> None:
    sources, destination = TRANSITIONS[transition]
    if function.status not in sources:
        raise unknown(
            f"event {transition} inappropriate in current state {FunctionStatus.Name(function.status)}"
        )
    function.status = destination
    store.update_function(request.connection, function)
    request.emit(
        event_pb2.EVENT_ASSET_UPDATED,
        AssetKind.ASSET_FUNCTION,
        function.key,
        function,
        {"reason": reason},
    )
    task_actions.propagate_function_status(request, function.key, destination, reason)
