"""Compute plans."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from backend_common.protos import computeplan_pb2, computetask_pb2
from sqlalchemy import Connection, Row, func, insert, select, update

from standalone_orchestrator.db.tables import compute_plans as table
from standalone_orchestrator.db.tables import compute_tasks
from standalone_orchestrator.store import codec
from standalone_orchestrator.store.common import page


def _from_row(row: Row[Any]) -> computeplan_pb2.ComputePlan:
    plan = computeplan_pb2.ComputePlan(
        key=row.key,
        owner=row.owner,
        name=row.name,
        tag=row.tag,
        metadata=row.metadata,
        creation_date=codec.timestamp(row.creation_date),
    )
    if row.cancelation_date is not None:
        plan.cancelation_date.CopyFrom(codec.timestamp(row.cancelation_date))
    elif row.failure_date is not None:
        # Only one terminal date can be set; the reference never shows a failure after a cancel.
        plan.failure_date.CopyFrom(codec.timestamp(row.failure_date))
    return plan


def insert_plan(connection: Connection, channel: str, plan: computeplan_pb2.ComputePlan) -> None:
    connection.execute(
        insert(table).values(
            key=plan.key,
            channel=channel,
            owner=plan.owner,
            name=plan.name,
            tag=plan.tag,
            metadata=dict(plan.metadata),
            creation_date=codec.to_datetime(plan.creation_date),
        )
    )


def get_plan(connection: Connection, channel: str, key: str) -> computeplan_pb2.ComputePlan | None:
    row = connection.execute(select(table).where(table.c.key == key, table.c.channel == channel)).first()
    return _from_row(row) if row else None


def get_plans(
    connection: Connection, channel: str, keys: Collection[str]
) -> dict[str, computeplan_pb2.ComputePlan]:
    if not keys:
        return {}
    rows = connection.execute(
        select(table).where(table.c.key.in_(list(keys)), table.c.channel == channel)
    ).all()
    return {row.key: _from_row(row) for row in rows}


def query_plans(
    connection: Connection, channel: str, offset: int, size: int, owner: str = ""
) -> list[computeplan_pb2.ComputePlan]:
    statement = select(table).where(table.c.channel == channel)
    if owner:
        statement = statement.where(table.c.owner == owner)
    statement = statement.order_by(table.c.creation_date, table.c.key)
    return [_from_row(row) for row in page(connection, statement, offset, size)]


def set_plan_name(connection: Connection, key: str, name: str) -> None:
    connection.execute(update(table).where(table.c.key == key).values(name=name))


def set_cancelation_date(connection: Connection, key: str, date: datetime) -> None:
    connection.execute(update(table).where(table.c.key == key).values(cancelation_date=date))


def set_failure_date(connection: Connection, keys: Collection[str], date: datetime) -> None:
    """Fail the plans among `keys` that are not terminated yet (others are left alone)."""
    if keys:
        connection.execute(
            update(table)
            .where(
                table.c.key.in_(list(keys)),
                table.c.cancelation_date.is_(None),
                table.c.failure_date.is_(None),
            )
            .values(failure_date=date)
        )


def task_status_counts(connection: Connection, key: str) -> dict[int, int]:
    """ComputeTaskStatus value -> number of tasks of the plan."""
    rows = connection.execute(
        select(compute_tasks.c.status, func.count())
        .where(compute_tasks.c.compute_plan_key == key)
        .group_by(compute_tasks.c.status)
    ).all()
    return {computetask_pb2.ComputeTaskStatus.Value(status): count for status, count in rows}
