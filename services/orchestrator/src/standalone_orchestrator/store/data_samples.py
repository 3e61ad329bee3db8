"""Data samples and their links to data managers."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from backend_common.protos import datasample_pb2
from sqlalchemy import Connection, Row, insert, select

from standalone_orchestrator.db.tables import data_sample_data_managers as links
from standalone_orchestrator.db.tables import data_samples as table
from standalone_orchestrator.store import codec
from standalone_orchestrator.store.common import page


def _with_managers(connection: Connection, rows: Sequence[Row[Any]]) -> list[datasample_pb2.DataSample]:
    samples = [
        datasample_pb2.DataSample(
            key=row.key,
            owner=row.owner,
            checksum=row.checksum,
            creation_date=codec.timestamp(row.creation_date),
        )
        for row in rows
    ]
    if samples:
        by_key = {sample.key: sample for sample in samples}
        link_rows = connection.execute(
            select(links.c.data_sample_key, links.c.data_manager_key)
            .where(links.c.data_sample_key.in_(list(by_key)))
            .order_by(links.c.data_sample_key, links.c.position)
        ).all()
        for sample_key, manager_key in link_rows:
            by_key[sample_key].data_manager_keys.append(manager_key)
    return samples


def insert_data_samples(
    connection: Connection, channel: str, samples: Sequence[datasample_pb2.DataSample]
) -> None:
    if not samples:
        return
    connection.execute(
        insert(table),
        [
            {
                "key": sample.key,
                "channel": channel,
                "owner": sample.owner,
                "checksum": sample.checksum,
                "creation_date": codec.to_datetime(sample.creation_date),
            }
            for sample in samples
        ],
    )
    add_links(
        connection,
        [
            (sample.key, manager_key, position)
            for sample in samples
            for position, manager_key in enumerate(sample.data_manager_keys)
        ],
    )


def add_links(connection: Connection, new_links: Sequence[tuple[str, str, int]]) -> None:
    """Link (sample key, data manager key, position) triples."""
    if new_links:
        connection.execute(
            insert(links),
            [
                {"data_sample_key": sample, "data_manager_key": manager, "position": position}
                for sample, manager, position in new_links
            ],
        )


def get_data_samples(
    connection: Connection, channel: str, keys: Collection[str]
) -> dict[str, datasample_pb2.DataSample]:
    if not keys:
        return {}
    rows = connection.execute(
        select(table).where(table.c.key.in_(list(keys)), table.c.channel == channel)
    ).all()
    return {sample.key: sample for sample in _with_managers(connection, rows)}


def query_data_samples(
    connection: Connection, channel: str, offset: int, size: int, keys: Collection[str] = ()
) -> list[datasample_pb2.DataSample]:
    statement = select(table).where(table.c.channel == channel)
    if keys:
        statement = statement.where(table.c.key.in_(list(keys)))
    statement = statement.order_by(table.c.creation_date, table.c.key)
    return _with_managers(connection, page(connection, statement, offset, size))


def sample_keys_of_manager(connection: Connection, channel: str, manager_key: str) -> list[str]:
    statement = (
        select(table.c.key)
        .join(links, links.c.data_sample_key == table.c.key)
        .where(links.c.data_manager_key == manager_key, table.c.channel == channel)
        .order_by(table.c.creation_date, table.c.key)
    )
    return list(connection.scalars(statement))
