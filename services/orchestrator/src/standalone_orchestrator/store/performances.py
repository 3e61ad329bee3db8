"""Performances, keyed by (task, output identifier)."""

from __future__ import annotations

from backend_common.protos import performance_pb2
from sqlalchemy import Connection, insert, select

from standalone_orchestrator.db.tables import performances as table
from standalone_orchestrator.store import codec
from standalone_orchestrator.store.common import page


def insert_performance(
    connection: Connection, channel: str, performance: performance_pb2.Performance
) -> None:
    connection.execute(
        insert(table).values(
            compute_task_key=performance.compute_task_key,
            identifier=performance.compute_task_output_identifier,
            channel=channel,
            value=performance.performance_value,
            creation_date=codec.to_datetime(performance.creation_date),
        )
    )


def performance_exists(connection: Connection, task_key: str, identifier: str) -> bool:
    statement = select(table.c.compute_task_key).where(
        table.c.compute_task_key == task_key, table.c.identifier == identifier
    )
    return connection.execute(statement).first() is not None


def query_performances(
    connection: Connection,
    channel: str,
    *,
    offset: int,
    size: int,
    task_key: str = "",
    identifier: str = "",
) -> list[performance_pb2.Performance]:
    statement = select(table).where(table.c.channel == channel)
    if task_key:
        statement = statement.where(table.c.compute_task_key == task_key)
    if identifier:
        statement = statement.where(table.c.identifier == identifier)
    statement = statement.order_by(table.c.creation_date, table.c.compute_task_key.desc())
    return [
        performance_pb2.Performance(
            compute_task_key=row.compute_task_key,
            compute_task_output_identifier=row.identifier,
            performance_value=row.value,
            creation_date=codec.timestamp(row.creation_date),
        )
        for row in page(connection, statement, offset, size)
    ]
