"""Compute tasks, their parent links and their output assets."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from backend_common.protos import common_pb2, computetask_pb2
from sqlalchemy import Connection, Row, and_, func, insert, or_, select, update

from standalone_orchestrator.db.tables import compute_task_output_assets as output_assets
from standalone_orchestrator.db.tables import compute_task_parents as parents
from standalone_orchestrator.db.tables import compute_tasks as table
from standalone_orchestrator.store import codec
from standalone_orchestrator.store.common import page

Status = computetask_pb2.ComputeTaskStatus


def _from_row(row: Row[Any]) -> computetask_pb2.ComputeTask:
    task = computetask_pb2.ComputeTask(
        key=row.key,
        owner=row.owner,
        compute_plan_key=row.compute_plan_key,
        rank=row.rank,
        status=Status.Value(row.status),
        worker=row.worker,
        function_key=row.function_key,
        metadata=row.metadata,
        creation_date=codec.timestamp(row.creation_date),
    )
    codec.permission_from_json(row.logs_permission, task.logs_permission)
    codec.task_inputs_from_json(row.inputs, task.inputs)
    codec.task_outputs_from_json(row.outputs, task.outputs)
    return task


def insert_tasks(
    connection: Connection,
    channel: str,
    tasks: Sequence[computetask_pb2.ComputeTask],
    parent_links: Sequence[tuple[str, str, int]],
) -> None:
    """Insert tasks (parents before children) and their (child, parent, position) links."""
    if not tasks:
        return
    connection.execute(
        insert(table),
        [
            {
                "key": task.key,
                "channel": channel,
                "compute_plan_key": task.compute_plan_key,
                "function_key": task.function_key,
                "owner": task.owner,
                "worker": task.worker,
                "status": Status.Name(task.status),
                "rank": task.rank,
                "creation_date": codec.to_datetime(task.creation_date),
                "logs_permission": codec.permission_to_json(task.logs_permission),
                "metadata": dict(task.metadata),
                "inputs": codec.task_inputs_to_json(task.inputs),
                "outputs": codec.task_outputs_to_json(task.outputs),
            }
            for task in tasks
        ],
    )
    if parent_links:
        connection.execute(
            insert(parents),
            [
                {"child_task_key": child, "parent_task_key": parent, "position": position}
                for child, parent, position in parent_links
            ],
        )


def get_task(connection: Connection, channel: str, key: str) -> computetask_pb2.ComputeTask | None:
    row = connection.execute(select(table).where(table.c.key == key, table.c.channel == channel)).first()
    return _from_row(row) if row else None


def get_tasks(
    connection: Connection, channel: str, keys: Collection[str]
) -> dict[str, computetask_pb2.ComputeTask]:
    if not keys:
        return {}
    rows = connection.execute(
        select(table).where(table.c.key.in_(list(keys)), table.c.channel == channel)
    ).all()
    return {row.key: _from_row(row) for row in rows}


def query_tasks(
    connection: Connection,
    channel: str,
    offset: int,
    size: int,
    task_filter: computetask_pb2.TaskQueryFilter,
) -> list[computetask_pb2.ComputeTask]:
    statement = select(table).where(table.c.channel == channel)
    if task_filter.worker:
        statement = statement.where(table.c.worker == task_filter.worker)
    if task_filter.status:
        statement = statement.where(table.c.status == Status.Name(task_filter.status))
    if task_filter.compute_plan_key:
        statement = statement.where(table.c.compute_plan_key == task_filter.compute_plan_key)
    if task_filter.function_key:
        statement = statement.where(table.c.function_key == task_filter.function_key)
    statement = statement.order_by(table.c.creation_date, table.c.key)
    return [_from_row(row) for row in page(connection, statement, offset, size)]


def set_status(connection: Connection, keys: Collection[str], status: Status.ValueType) -> None:
    if keys:
        connection.execute(
            update(table).where(table.c.key.in_(list(keys))).values(status=Status.Name(status))
        )


def tasks_by_function(
    connection: Connection, channel: str, function_key: str, status: Status.ValueType
) -> list[computetask_pb2.ComputeTask]:
    statement = (
        select(table)
        .where(
            table.c.function_key == function_key,
            table.c.status == Status.Name(status),
            table.c.channel == channel,
        )
        # Parents before children, so consumers see a parent's status change first.
        .order_by(table.c.rank, table.c.creation_date, table.c.key)
    )
    return [_from_row(row) for row in connection.execute(statement).all()]


def children(connection: Connection, key: str) -> list[computetask_pb2.ComputeTask]:
    statement = (
        select(table)
        .join(parents, parents.c.child_task_key == table.c.key)
        .where(parents.c.parent_task_key == key)
        .order_by(table.c.creation_date, table.c.key)
    )
    return [_from_row(row) for row in connection.execute(statement).all()]


def unfinished_parent_counts(connection: Connection, child_keys: Collection[str]) -> dict[str, int]:
    """child key -> number of its parents not DONE (children without parents are absent)."""
    if not child_keys:
        return {}
    parent = table.alias("parent")
    statement = (
        select(
            parents.c.child_task_key,
            func.count().filter(parent.c.status != Status.Name(Status.STATUS_DONE)),
        )
        .join(parent, parent.c.key == parents.c.parent_task_key)
        .where(parents.c.child_task_key.in_(list(child_keys)))
        .group_by(parents.c.child_task_key)
    )
    return {child: count for child, count in connection.execute(statement).all()}


# --- output assets ---------------------------------------------------------------------------------


def output_asset_counts(connection: Connection, task_key: str) -> dict[str, int]:
    """output identifier -> number of assets registered for it."""
    statement = (
        select(output_assets.c.identifier, func.count())
        .where(output_assets.c.compute_task_key == task_key)
        .group_by(output_assets.c.identifier)
    )
    return {identifier: count for identifier, count in connection.execute(statement).all()}


def insert_output_assets(
    connection: Connection, assets: Sequence[tuple[computetask_pb2.ComputeTaskOutputAsset, int]]
) -> None:
    """Insert (asset, position) pairs."""
    if assets:
        connection.execute(
            insert(output_assets),
            [
                {
                    "compute_task_key": asset.compute_task_key,
                    "identifier": asset.compute_task_output_identifier,
                    "position": position,
                    "asset_kind": common_pb2.AssetKind.Name(asset.asset_kind),
                    "asset_key": asset.asset_key,
                }
                for asset, position in assets
            ],
        )


def output_assets_of(
    connection: Connection, refs: Collection[tuple[str, str]]
) -> dict[tuple[str, str], list[computetask_pb2.ComputeTaskOutputAsset]]:
    """(task key, identifier) -> its output assets by position."""
    if not refs:
        return {}
    conditions = [
        and_(output_assets.c.compute_task_key == task, output_assets.c.identifier == identifier)
        for task, identifier in set(refs)
    ]

    statement = (
        select(output_assets)
        .where(or_(*conditions))
        .order_by(output_assets.c.compute_task_key, output_assets.c.identifier, output_assets.c.position)
    )
    result: dict[tuple[str, str], list[computetask_pb2.ComputeTaskOutputAsset]] = {ref: [] for ref in refs}
    for row in connection.execute(statement).all():
        result[(row.compute_task_key, row.identifier)].append(
            computetask_pb2.ComputeTaskOutputAsset(
                compute_task_key=row.compute_task_key,
                compute_task_output_identifier=row.identifier,
                asset_kind=common_pb2.AssetKind.Value(row.asset_kind),
                asset_key=row.asset_key,
            )
        )
    return result
