"""Organizations, registered per channel."""

from __future__ import annotations

from backend_common.protos import organization_pb2
from sqlalchemy import Connection, insert, select

from standalone_orchestrator.db.tables import organizations as table
from standalone_orchestrator.store.codec import timestamp, to_datetime


def insert_organization(
    connection: Connection, channel: str, organization: organization_pb2.Organization
) -> None:
    connection.execute(
        insert(table).values(
            id=organization.id,
            channel=channel,
            address=organization.address,
            creation_date=to_datetime(organization.creation_date),
        )
    )


def organization_exists(connection: Connection, channel: str, organization_id: str) -> bool:
    statement = select(table.c.id).where(table.c.channel == channel, table.c.id == organization_id)
    return connection.execute(statement).first() is not None


def organization_ids(connection: Connection, channel: str) -> set[str]:
    return set(connection.scalars(select(table.c.id).where(table.c.channel == channel)))


def list_organizations(connection: Connection, channel: str) -> list[organization_pb2.Organization]:
    rows = connection.execute(select(table).where(table.c.channel == channel)).all()
    return [
        organization_pb2.Organization(
            id=row.id, address=row.address, creation_date=timestamp(row.creation_date)
        )
        for row in rows
    ]
