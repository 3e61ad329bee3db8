"""Readiness and liveness (`operations.md`, section 4.1).

Liveness only says the process answers: restarting the server cannot fix an unreachable database or
orchestrator. Readiness checks what serving requests needs: the database, the orchestrator on every
channel (unless ISOLATED), and the channel rules: a `solo-*` or restricted channel has at most one
organization, and this organization is registered in every configured channel.
"""

from __future__ import annotations

from collections.abc import Callable

from backend_common.db.replica import Organization
from backend_common.orchestrator import OrchestratorClient, OrchestratorError
from backend_common.settings import OrganizationSettings
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker


class NotReadyError(Exception):
    """A readiness check failed; the message says which."""


def check_database(sessions: sessionmaker[Session]) -> None:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as error:
        raise NotReadyError(f"database unreachable: {error.__class__.__name__}") from error


def check_orchestrator(
    organization: OrganizationSettings, client_for: Callable[[str], OrchestratorClient]
) -> None:
    if organization.isolated:
        return
    for channel in organization.channel_names:
        try:
            client_for(channel).query_version()
        except OrchestratorError as error:
            raise NotReadyError(
                f"orchestrator unreachable on channel {channel}: {error.status.name}"
            ) from error


def check_channel_rules(organization: OrganizationSettings, sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        members: dict[str, int] = {
            channel: count
            for channel, count in session.execute(
                select(Organization.channel, func.count()).group_by(Organization.channel)
            )
        }
        registered = set(
            session.scalars(select(Organization.channel).where(Organization.id == organization.msp_id)).all()
        )
    for channel in organization.channels:
        if (channel.restricted or channel.name.startswith("solo-")) and members.get(channel.name, 0) > 1:
            raise NotReadyError(f"channel {channel.name} is restricted to one organization")
        if channel.name not in registered:
            raise NotReadyError(
                f"organization {organization.msp_id} is not registered in channel {channel.name}"
            )
