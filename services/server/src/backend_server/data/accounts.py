"""Users, their API tokens and the credentials of other organizations."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from backend_common.db.local import (
    ApiToken,
    IncomingOrganization,
    OutgoingOrganization,
    RevokedToken,
    TokenKind,
    User,
    UserRole,
)
from backend_common.passwords import hash_secret
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from backend_server import prepared

# 40 hexadecimal characters, like the reference's tokens.
TOKEN_BYTES = 20


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class TokenOwner:
    """A token found by its value, with what authentication needs of its user."""

    token_id: uuid.UUID
    kind: TokenKind
    expires_at: datetime
    user_id: uuid.UUID
    username: str
    channel: str | None
    role: UserRole
    is_active: bool


FIND_TOKEN = """
SELECT token.id, token.kind, token.expires_at, account.id, account.username, account.channel, account.role,
    account.is_active
FROM api_tokens AS token JOIN users AS account ON account.id = token.user_id
WHERE token.token_hash = $1
"""  # noqa: S105 (a query, not a secret)


def find_token(session: Session, value: str) -> TokenOwner | None:
    """Every authenticated request looks its token up: a prepared statement."""
    rows = prepared.execute(session, "find_token", FIND_TOKEN, [token_hash(value)])
    if not rows:
        return None
    token_id, kind, expires_at, user_id, username, channel, role, is_active = rows[0]
    return TokenOwner(
        token_id=uuid.UUID(str(token_id)),
        kind=TokenKind(kind),
        expires_at=expires_at,
        user_id=uuid.UUID(str(user_id)),
        username=username,
        channel=channel,
        role=UserRole(role),
        is_active=is_active,
    )


def create_token(
    session: Session,
    user_id: uuid.UUID,
    *,
    kind: TokenKind,
    expires_at: datetime,
    now: datetime,
    note: str | None = None,
) -> tuple[ApiToken, str]:
    """A new token; its value is returned once and only its hash is kept."""
    value = secrets.token_hex(TOKEN_BYTES)
    token = ApiToken(
        token_hash=token_hash(value),
        kind=kind,
        user_id=user_id,
        note=note,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return token, value


def delete_expired_tokens(session: Session, user_id: uuid.UUID, kind: TokenKind, now: datetime) -> None:
    session.execute(
        delete(ApiToken).where(ApiToken.user_id == user_id, ApiToken.kind == kind, ApiToken.expires_at <= now)
    )


def user_tokens(session: Session, user_id: uuid.UUID, kind: TokenKind, now: datetime) -> Sequence[ApiToken]:
    return session.scalars(
        select(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.kind == kind, ApiToken.expires_at > now)
        .order_by(ApiToken.created_at.desc())
    ).all()


def delete_user_token(session: Session, user_id: uuid.UUID, token_id: uuid.UUID) -> bool:
    result = session.execute(delete(ApiToken).where(ApiToken.user_id == user_id, ApiToken.id == token_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- users ---------------------------------------------------------------------------------------------


def get_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def get_user_by_id(session: Session, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id)


def channel_users(
    session: Session,
    channel: str,
    *,
    conditions: Sequence[ColumnElement[bool]],
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[int, Sequence[User]]:
    where = [User.channel == channel, User.is_active.is_(True), *conditions]
    count = session.scalar(select(func.count()).select_from(User).where(*where)) or 0
    order = User.username.desc() if descending else User.username.asc()
    users = session.scalars(select(User).where(*where).order_by(order).offset(offset).limit(limit)).all()
    return count, users


def users_awaiting_approval(session: Session) -> Sequence[User]:
    return session.scalars(
        select(User).where(User.channel.is_(None), User.is_active.is_(True)).order_by(User.username)
    ).all()


def create_user(
    session: Session, *, username: str, password: str, channel: str | None, role: UserRole, now: datetime
) -> User:
    user = User(
        username=username,
        password_hash=hash_secret(password),
        channel=channel,
        role=role,
        created_at=now,
        email="",
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User, password: str) -> None:
    user.password_hash = hash_secret(password)
    # A new password ends every session opened with the old one.
    session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))


# --- JWT refresh tokens ----------------------------------------------------------------------------------


def is_revoked(session: Session, jti: str) -> bool:
    return session.get(RevokedToken, jti) is not None


def revoke(session: Session, jti: str, expires_at: datetime, now: datetime) -> None:
    if session.get(RevokedToken, jti) is None:
        session.add(RevokedToken(jti=jti, expires_at=expires_at))
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))


# --- organizations ----------------------------------------------------------------------------------------


def incoming_secret_hash(session: Session, organization_id: str) -> str | None:
    return session.scalar(
        select(IncomingOrganization.secret_hash).where(
            IncomingOrganization.organization_id == organization_id
        )
    )


def outgoing_secret(session: Session, organization_id: str) -> str | None:
    return session.scalar(
        select(OutgoingOrganization.secret).where(OutgoingOrganization.organization_id == organization_id)
    )
