"""Functions."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from backend_common.protos import function_pb2
from sqlalchemy import Connection, Row, insert, select, update

from standalone_orchestrator.db.tables import compute_tasks
from standalone_orchestrator.db.tables import functions as table
from standalone_orchestrator.store import codec
from standalone_orchestrator.store.common import page


def _from_row(row: Row[Any]) -> function_pb2.Function:
    function = function_pb2.Function(
        key=row.key,
        name=row.name,
        owner=row.owner,
        status=function_pb2.FunctionStatus.Value(row.status),
        metadata=row.metadata,
        creation_date=codec.timestamp(row.creation_date),
    )
    function.description.storage_address = row.description_address
    function.description.checksum = row.description_checksum
    function.archive.storage_address = row.archive_address
    function.archive.checksum = row.archive_checksum
    # The reference always returns an image, empty until the function is built.
    function.image.storage_address = row.image_address
    function.image.checksum = row.image_checksum
    codec.permissions_from_json(row.permissions, function.permissions)
    codec.function_inputs_from_json(row.inputs, function.inputs)
    codec.function_outputs_from_json(row.outputs, function.outputs)
    return function


def insert_function(connection: Connection, channel: str, function: function_pb2.Function) -> None:
    connection.execute(
        insert(table).values(
            key=function.key,
            channel=channel,
            name=function.name,
            owner=function.owner,
            creation_date=codec.to_datetime(function.creation_date),
            status=function_pb2.FunctionStatus.Name(function.status),
            description_address=function.description.storage_address,
            description_checksum=function.description.checksum,
            archive_address=function.archive.storage_address,
            archive_checksum=function.archive.checksum,
            image_address=function.image.storage_address,
            image_checksum=function.image.checksum,
            permissions=codec.permissions_to_json(function.permissions),
            metadata=dict(function.metadata),
            inputs=codec.function_inputs_to_json(function.inputs),
            outputs=codec.function_outputs_to_json(function.outputs),
        )
    )


def get_function(connection: Connection, channel: str, key: str) -> function_pb2.Function | None:
    row = connection.execute(select(table).where(table.c.key == key, table.c.channel == channel)).first()
    return _from_row(row) if row else None


def get_functions(
    connection: Connection, channel: str, keys: Collection[str]
) -> dict[str, function_pb2.Function]:
    if not keys:
        return {}
    rows = connection.execute(
        select(table).where(table.c.key.in_(list(keys)), table.c.channel == channel)
    ).all()
    return {row.key: _from_row(row) for row in rows}


def query_functions(
    connection: Connection, channel: str, offset: int, size: int, compute_plan_key: str = ""
) -> list[function_pb2.Function]:
    statement = select(table).where(table.c.channel == channel)
    if compute_plan_key:
        used = select(compute_tasks.c.function_key).where(
            compute_tasks.c.compute_plan_key == compute_plan_key, compute_tasks.c.channel == channel
        )
        statement = statement.where(table.c.key.in_(used))
    statement = statement.order_by(table.c.creation_date, table.c.key)
    return [_from_row(row) for row in page(connection, statement, offset, size)]


def update_function(connection: Connection, function: function_pb2.Function) -> None:
    """Store the mutable fields: name, image and status."""
    connection.execute(
        update(table)
        .where(table.c.key == function.key)
        .values(
            name=function.name,
            image_address=function.image.storage_address,
            image_checksum=function.image.checksum,
            status=function_pb2.FunctionStatus.Name(function.status),
        )
    )
