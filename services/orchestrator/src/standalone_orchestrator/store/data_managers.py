"""Data managers."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from backend_common.protos import datamanager_pb2
from sqlalchemy import Connection, Row, insert, select, update

from standalone_orchestrator.db.tables import data_managers as table
from standalone_orchestrator.store import codec
from standalone_orchestrator.store.common import page


def _from_row(row: Row[Any]) -> datamanager_pb2.DataManager:
    manager = datamanager_pb2.DataManager(
        key=row.key,
        name=row.name,
        owner=row.owner,
        metadata=row.metadata,
        creation_date=codec.timestamp(row.creation_date),
    )
    manager.description.storage_address = row.description_address
    manager.description.checksum = row.description_checksum
    manager.opener.storage_address = row.opener_address
    manager.opener.checksum = row.opener_checksum
    codec.permissions_from_json(row.permissions, manager.permissions)
    codec.permission_from_json(row.logs_permission, manager.logs_permission)
    return manager


def insert_data_manager(connection: Connection, channel: str, manager: datamanager_pb2.DataManager) -> None:
    connection.execute(
        insert(table).values(
            key=manager.key,
            channel=channel,
            name=manager.name,
            owner=manager.owner,
            creation_date=codec.to_datetime(manager.creation_date),
            permissions=codec.permissions_to_json(manager.permissions),
            logs_permission=codec.permission_to_json(manager.logs_permission),
            description_address=manager.description.storage_address,
            description_checksum=manager.description.checksum,
            opener_address=manager.opener.storage_address,
            opener_checksum=manager.opener.checksum,
            metadata=dict(manager.metadata),
        )
    )


def get_data_manager(connection: Connection, channel: str, key: str) -> datamanager_pb2.DataManager | None:
    row = connection.execute(select(table).where(table.c.key == key, table.c.channel == channel)).first()
    return _from_row(row) if row else None


def get_data_managers(
    connection: Connection, channel: str, keys: Collection[str]
) -> dict[str, datamanager_pb2.DataManager]:
    if not keys:
        return {}
    rows = connection.execute(
        select(table).where(table.c.key.in_(list(keys)), table.c.channel == channel)
    ).all()
    return {row.key: _from_row(row) for row in rows}


def query_data_managers(
    connection: Connection, channel: str, offset: int, size: int
) -> list[datamanager_pb2.DataManager]:
    statement = select(table).where(table.c.channel == channel).order_by(table.c.creation_date, table.c.key)
    return [_from_row(row) for row in page(connection, statement, offset, size)]


def set_data_manager_name(connection: Connection, key: str, name: str) -> None:
    connection.execute(update(table).where(table.c.key == key).values(name=name))
