"""The periodic jobs, as plain functions over a database session."""

from __future__ import annotations

from datetime import datetime

from backend_common.db.local import ApiToken
from sqlalchemy import delete
from sqlalchemy.orm import Session


def flush_expired_tokens(session: Session, now: datetime) -> int:
    """Delete every API token (implicit or named) whose expiry has passed; returns how many."""
    result = session.execute(delete(ApiToken).where(ApiToken.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
