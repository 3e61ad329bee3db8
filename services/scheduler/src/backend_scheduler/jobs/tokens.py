"""Flush expired API tokens and sessions."""

from __future__ import annotations

from datetime import datetime

from backend_common.db.local import ApiToken, RevokedToken
from sqlalchemy import delete
from sqlalchemy.orm import Session


def flush_expired_tokens(session: Session, now: datetime) -> int:
    """Delete the API tokens (implicit or named) and the revoked refresh tokens (logged-out or
    rotated sessions) whose expiry has passed; returns how many rows went."""
    deleted = 0
    for table in (ApiToken, RevokedToken):
        result = session.execute(delete(table).where(table.expires_at <= now))
        deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted
