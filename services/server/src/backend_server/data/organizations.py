"""Organizations of a channel."""

from __future__ import annotations

from collections.abc import Sequence

from backend_common.db.replica import Organization
from sqlalchemy import select
from sqlalchemy.orm import Session


def channel_organizations(session: Session, channel: str) -> Sequence[Organization]:
    return session.scalars(
        select(Organization)
        .where(Organization.channel == channel)
        .order_by(Organization.creation_date, Organization.id)
    ).all()


def address(session: Session, channel: str, organization_id: str) -> str | None:
    return session.scalar(
        select(Organization.address).where(
            Organization.channel == channel, Organization.id == organization_id
        )
    )
