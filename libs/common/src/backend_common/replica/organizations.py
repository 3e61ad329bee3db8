"""Organizations of a channel, learned from ORGANIZATION created events."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backend_common.db.replica import Organization
from backend_common.protos import organization_pb2
from backend_common.replica.conversions import to_datetime


def store_organization(session: Session, channel: str, organization: organization_pb2.Organization) -> None:
    """Insert or refresh an organization of `channel` (an organization registers once per channel)."""
    values = {
        "id": organization.id,
        "channel": channel,
        "address": organization.address,
        "creation_date": to_datetime(organization.creation_date),
    }
    statement = insert(Organization).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Organization.id, Organization.channel],
            set_={"address": statement.excluded.address, "creation_date": statement.excluded.creation_date},
        )
    )
