"""The flush of expired tokens: API tokens and revoked sessions past their expiry go, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backend_common.db import session_scope
from backend_common.db.local import ApiToken, RevokedToken, User
from backend_scheduler import jobs
from backend_scheduler.testing import add_tokens
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker


def test_flush_deletes_only_expired_tokens(sessions: sessionmaker[Session]) -> None:
    add_tokens(
        sessions,
        [timedelta(hours=-1), timedelta(seconds=-1), timedelta(hours=1), timedelta(days=30)],
        [timedelta(minutes=-1), timedelta(days=1)],
    )

    with session_scope(sessions) as session:
        deleted = jobs.flush_expired_tokens(session, datetime.now(UTC))
    with session_scope(sessions) as session:
        again = jobs.flush_expired_tokens(session, datetime.now(UTC))

    assert (deleted, again) == (3, 0)
    with sessions() as session:
        expiries = session.scalars(select(ApiToken.expires_at)).all()
        revoked = session.scalars(select(RevokedToken.expires_at)).all()
        users = session.scalar(select(func.count()).select_from(User))
    assert len(expiries) == 2 and all(expiry > datetime.now(UTC) for expiry in expiries)
    assert len(revoked) == 1 and revoked[0] > datetime.now(UTC)
    assert users == 1
