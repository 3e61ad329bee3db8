"""Models."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from backend_common.protos import model_pb2
from sqlalchemy import Connection, Row, insert, select, update

from standalone_orchestrator.db.tables import models as table
from standalone_orchestrator.store import codec


def _from_row(row: Row[Any]) -> model_pb2.Model:
    model = model_pb2.Model(
        key=row.key,
        compute_task_key=row.compute_task_key,
        owner=row.owner,
        creation_date=codec.timestamp(row.creation_date),
    )
    if row.address is not None:
        model.address.storage_address = row.address
        model.address.checksum = row.checksum
    codec.permissions_from_json(row.permissions, model.permissions)
    return model


def insert_models(
    connection: Connection, channel: str, models: Sequence[tuple[model_pb2.Model, str]]
) -> None:
    """Insert (model, output identifier) pairs."""
    if models:
        connection.execute(
            insert(table),
            [
                {
                    "key": model.key,
                    "channel": channel,
                    "compute_task_key": model.compute_task_key,
                    "identifier": identifier,
                    "owner": model.owner,
                    "creation_date": codec.to_datetime(model.creation_date),
                    "permissions": codec.permissions_to_json(model.permissions),
                    "address": model.address.storage_address,
                    "checksum": model.address.checksum,
                }
                for model, identifier in models
            ],
        )


def get_model(connection: Connection, channel: str, key: str) -> model_pb2.Model | None:
    row = connection.execute(select(table).where(table.c.key == key, table.c.channel == channel)).first()
    return _from_row(row) if row else None


def get_models(connection: Connection, channel: str, keys: Collection[str]) -> dict[str, model_pb2.Model]:
    if not keys:
        return {}
    rows = connection.execute(
        select(table).where(table.c.key.in_(list(keys)), table.c.channel == channel)
    ).all()
    return {row.key: _from_row(row) for row in rows}


def models_of_task(connection: Connection, channel: str, task_key: str) -> list[model_pb2.Model]:
    statement = (
        select(table)
        .where(table.c.compute_task_key == task_key, table.c.channel == channel)
        .order_by(table.c.creation_date, table.c.key)
    )
    return [_from_row(row) for row in connection.execute(statement).all()]


def disabled_models_of_tasks(connection: Connection, task_keys: Collection[str]) -> dict[str, str]:
    """task key -> key of one of its disabled models, for the tasks that have one."""
    if not task_keys:
        return {}
    statement = (
        select(table.c.compute_task_key, table.c.key)
        .where(table.c.compute_task_key.in_(list(task_keys)), table.c.address.is_(None))
        .order_by(table.c.key)
    )
    result: dict[str, str] = {}
    for task_key, model_key in connection.execute(statement).all():
        result.setdefault(task_key, model_key)
    return result


def disable_models(connection: Connection, keys: Collection[str]) -> None:
    if keys:
        connection.execute(
            update(table).where(table.c.key.in_(list(keys))).values(address=None, checksum=None)
        )
