"""Models: the MODEL outputs of tasks (`orchestrator-grpc.md` 9.9)."""

from __future__ import annotations

from collections.abc import Sequence

from backend_common.protos import common_pb2, computetask_pb2, event_pb2, model_pb2

from standalone_orchestrator.db.tables import models as table
from standalone_orchestrator.domain.assets import COMPUTE_TASK, FUNCTION, MODEL, ensure_new_keys
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.task_state import Status
from standalone_orchestrator.domain.validation import Checker
from standalone_orchestrator.errors import (
    ErrorCode,
    OrchestratorError,
    bad_request,
    internal,
    not_found,
    permission_denied,
)
from standalone_orchestrator.store import addressables
from standalone_orchestrator.store import compute_tasks as task_store
from standalone_orchestrator.store import functions as function_store
from standalone_orchestrator.store import models as store

AssetKind = common_pb2.AssetKind


def register_models(request: Request, new_models: Sequence[model_pb2.NewModel]) -> list[model_pb2.Model]:
    if not new_models:
        # The reference crashes on an empty list.
        raise bad_request("no model to register")
    connection, channel = request.connection, request.channel
    task_key = new_models[0].compute_task_key
    counts = task_store.output_asset_counts(connection, task_key)
    task = task_store.get_task(connection, channel, task_key)
    if task is None:
        raise not_found(COMPUTE_TASK, task_key)
    function = function_store.get_function(connection, channel, task.function_key)
    if function is None:
        raise not_found(FUNCTION, task.function_key)
    models: list[tuple[model_pb2.Model, str]] = []
    output_assets: list[tuple[computetask_pb2.ComputeTaskOutputAsset, int]] = []
    for new in new_models:
        if new.compute_task_key != task.key:
            raise bad_request("All models should be part of the same task")
        checker = Checker()
        checker.uuid("key", new.key)
        checker.uuid("compute_task_key", new.compute_task_key)
        checker.required("compute_task_output_identifier", new.compute_task_output_identifier)
        checker.addressable("address", new.address, present=new.HasField("address"))
        checker.check(MODEL)
        identifier = new.compute_task_output_identifier
        if task.worker != request.requester:
            raise permission_denied(f'only "{task.worker}" worker can register model')
        if task.status != Status.STATUS_EXECUTING:
            raise bad_request(f'cannot register model for task with status "{Status.Name(task.status)}"')
        output = task.outputs.get(identifier)
        if output is None:
            raise OrchestratorError(
                ErrorCode.MISSING_TASK_OUTPUT, f'Task "{task.key}" has no output named "{identifier}"'
            )
        function_output = function.outputs.get(identifier)
        if function_output is None:
            # Outputs are checked against the function at registration: this cannot happen.
            raise internal(f'missing function output "{identifier}" for task "{task.key}"')
        if function_output.kind != AssetKind.ASSET_MODEL:
            raise OrchestratorError(
                ErrorCode.INCOMPATIBLE_KIND,
                f'Incompatible kind for task "{task.key}": output "{identifier}" expects '
                f'"{AssetKind.Name(function_output.kind)}", received "ASSET_MODEL"',
            )
        position = counts.get(identifier, 0)
        if position >= 1 and not function_output.multiple:
            raise OrchestratorError(
                ErrorCode.CONFLICT,
                f'compute task "{task.key}" already has its unique output "{identifier}" registered',
            )
        model = model_pb2.Model(
            key=new.key,
            compute_task_key=task.key,
            address=new.address,
            permissions=output.permissions,
            owner=request.requester,
            creation_date=request.timestamp,
        )
        output_asset = computetask_pb2.ComputeTaskOutputAsset(
            compute_task_key=task.key,
            compute_task_output_identifier=identifier,
            asset_kind=AssetKind.ASSET_MODEL,
            asset_key=model.key,
        )
        models.append((model, identifier))
        output_assets.append((output_asset, position))
        counts[identifier] = position + 1
        request.emit(event_pb2.EVENT_ASSET_CREATED, AssetKind.ASSET_MODEL, model.key, model)
        # The output asset event is keyed by the task, not by the model.
        request.emit(
            event_pb2.EVENT_ASSET_CREATED, AssetKind.ASSET_COMPUTE_TASK_OUTPUT_ASSET, task.key, output_asset
        )
    keys = [model.key for model, _ in models]
    if len(set(keys)) != len(keys):
        raise OrchestratorError(ErrorCode.CONFLICT, "a model key appears twice in the batch")
    ensure_new_keys(request, MODEL, table.c.key, table.c.channel, keys)
    addressables.claim_addresses(connection, channel, [(model.key, model.address) for model, _ in models])
    store.insert_models(connection, channel, models)
    task_store.insert_output_assets(connection, output_assets)
    return [model for model, _ in models]


def get_model(request: Request, key: str) -> model_pb2.Model:
    model = store.get_model(request.connection, request.channel, key)
    if model is None:
        raise not_found(MODEL, key)
    return model


def get_compute_task_output_models(request: Request, task_key: str) -> list[model_pb2.Model]:
    return store.models_of_task(request.connection, request.channel, task_key)


def disable_models(request: Request, keys: Sequence[str]) -> None:
    """Forget the models' addresses (their files may be deleted); emit MODEL/DISABLED for each."""
    models = store.get_models(request.connection, request.channel, keys)
    addresses: list[str] = []
    for key in keys:
        model = models.get(key)
        if model is None:
            raise not_found(MODEL, key)
        if model.HasField("address"):
            addresses.append(model.address.storage_address)
            model.ClearField("address")
    store.disable_models(request.connection, keys)
    addressables.release_addresses(request.connection, addresses)
    for key in keys:
        request.emit(event_pb2.EVENT_ASSET_DISABLED, AssetKind.ASSET_MODEL, key, models[key])
