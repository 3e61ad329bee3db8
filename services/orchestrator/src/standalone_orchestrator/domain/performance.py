"""Performances: the PERFORMANCE outputs of tasks (`orchestrator-grpc.md` 9.10)."""

from __future__ import annotations

from backend_common.protos import common_pb2, computetask_pb2, event_pb2, performance_pb2

from standalone_orchestrator.domain import pagination
from standalone_orchestrator.domain.assets import COMPUTE_TASK, PERFORMANCE
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.task_state import Status
from standalone_orchestrator.domain.validation import Checker
from standalone_orchestrator.errors import (
    ErrorCode,
    OrchestratorError,
    bad_request,
    conflict,
    not_found,
    permission_denied,
)
from standalone_orchestrator.store import compute_tasks as task_store
from standalone_orchestrator.store import performances as store

AssetKind = common_pb2.AssetKind


def performance_key(task_key: str, identifier: str) -> str:
    return f"{task_key}|{identifier}"


def register_performance(
    request: Request, new: performance_pb2.NewPerformance
) -> performance_pb2.Performance:
    checker = Checker()
    checker.uuid("compute_task_key", new.compute_task_key)
    checker.required("compute_task_output_identifier", new.compute_task_output_identifier)
    checker.check(PERFORMANCE)
    connection = request.connection
    identifier = new.compute_task_output_identifier
    task = task_store.get_task(connection, request.channel, new.compute_task_key)
    if task is None:
        raise not_found(COMPUTE_TASK, new.compute_task_key)
    if task.worker != request.requester:
        raise permission_denied(f'only "{task.worker}" worker can register performance')
    if task.status != Status.STATUS_EXECUTING:
        raise bad_request(f'cannot register performance for task with status "{Status.Name(task.status)}"')
    if identifier not in task.outputs:
        raise OrchestratorError(
            ErrorCode.MISSING_TASK_OUTPUT, f'Task "{task.key}" has no output named "{identifier}"'
        )
    key = performance_key(task.key, identifier)
    if store.performance_exists(connection, task.key, identifier):
        raise conflict(PERFORMANCE, key)
    performance = performance_pb2.Performance(
        compute_task_key=task.key,
        compute_task_output_identifier=identifier,
        performance_value=new.performance_value,
        creation_date=request.timestamp,
    )
    output_asset = computetask_pb2.ComputeTaskOutputAsset(
        compute_task_key=task.key,
        compute_task_output_identifier=identifier,
        asset_kind=AssetKind.ASSET_PERFORMANCE,
        asset_key=key,
    )
    position = task_store.output_asset_counts(connection, task.key).get(identifier, 0)
    store.insert_performance(connection, request.channel, performance)
    task_store.insert_output_assets(connection, [(output_asset, position)])
    request.emit(event_pb2.EVENT_ASSET_CREATED, AssetKind.ASSET_PERFORMANCE, key, performance)
    request.emit(
        event_pb2.EVENT_ASSET_CREATED, AssetKind.ASSET_COMPUTE_TASK_OUTPUT_ASSET, task.key, output_asset
    )
    return performance


def query_performances(
    request: Request,
    page_token: str,
    page_size: int,
    performance_filter: performance_pb2.PerformanceQueryFilter,
) -> tuple[list[performance_pb2.Performance], str]:
    offset, size = pagination.parse(page_token, page_size)
    rows = store.query_performances(
        request.connection,
        request.channel,
        offset=offset,
        size=size,
        task_key=performance_filter.compute_task_key,
        identifier=performance_filter.compute_task_output_identifier,
    )
    return pagination.cut(rows, offset, size)
