"""The backend's own tables: accounts, organization credentials, stored files and worker state.

None of this is on the orchestrator; it lives only in this organization's database.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend_common.db.base import (
    CHANNEL_LENGTH,
    ORGANIZATION_ID_LENGTH,
    Base,
    JsonDocument,
    flag,
    key_column,
    timestamp,
)


class UserRole(enum.StrEnum):
    ADMIN = "ADMIN"
    USER = "USER"


class TokenKind(enum.StrEnum):
    # Created by /api-token-auth/ login; expires after EXPIRY_TOKEN_LIFETIME.
    IMPLICIT = "IMPLICIT"
    # Created by /api-token/ with a note and an explicit expiry.
    NAMED = "NAMED"


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(150), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    # Exactly one channel per user; null = awaiting approval (OIDC sign-ups).
    channel: Mapped[str | None] = mapped_column(String(CHANNEL_LENGTH), nullable=True, index=True)
    role: Mapped[UserRole] = mapped_column(
        Enum(UserRole, name="user_role", native_enum=False, length=16), nullable=False, default=UserRole.USER
    )
    email: Mapped[str] = mapped_column(String(254), nullable=False, default="", server_default="")
    is_active: Mapped[bool] = flag(default=True)
    # Users that log in through an OIDC provider are never removed by the account files.
    is_external: Mapped[bool] = flag()
    created_at: Mapped[datetime] = timestamp()

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all, delete-orphan")


class ApiToken(Base):
    """A bearer token (`Authorization: Token <value>`); only the sha256 of the value is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index(None, "user_id", "kind"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    kind: Mapped[TokenKind] = mapped_column(
        Enum(TokenKind, name="token_kind", native_enum=False, length=16), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = timestamp()
    expires_at: Mapped[datetime] = timestamp(index=True)

    user: Mapped[User] = relationship(back_populates="tokens")


class IncomingOrganization(Base):
    """A peer allowed to call this backend with HTTP Basic; the secret is stored hashed."""

    __tablename__ = "incoming_organizations"

    organization_id: Mapped[str] = mapped_column(String(ORGANIZATION_ID_LENGTH), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(255), nullable=False)


class OutgoingOrganization(Base):
    """Credentials this backend presents to a peer; kept in clear since they are sent as-is."""

    __tablename__ = "outgoing_organizations"

    organization_id: Mapped[str] = mapped_column(String(ORGANIZATION_ID_LENGTH), primary_key=True)
    secret: Mapped[str] = mapped_column(String(255), nullable=False)


class StoredFile(Base):
    """A file this organization holds in object storage for an asset (archive, opener, model, logs...)."""

    __tablename__ = "stored_files"
    __table_args__ = (UniqueConstraint("asset_key", "role"), UniqueConstraint("bucket", "object_key"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    asset_key: Mapped[str] = mapped_column(String(300), nullable=False)
    # What the file is for its asset: function_archive, function_description, opener,
    # data_manager_description, data_sample, model, logs.
    role: Mapped[str] = mapped_column(String(50), nullable=False)
    bucket: Mapped[str] = mapped_column(String(100), nullable=False)
    object_key: Mapped[str] = mapped_column(String(500), nullable=False)
    # Data samples kept in server media are referenced by path instead of an object.
    path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    checksum: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = timestamp()


class ImageEntrypoint(Base):
    """The function's command taken from its Dockerfile ENTRYPOINT, keyed by archive checksum."""

    __tablename__ = "image_entrypoints"

    archive_checksum: Mapped[str] = mapped_column(String(64), primary_key=True)
    entrypoint: Mapped[list[str]] = mapped_column(JsonDocument, nullable=False)
    created_at: Mapped[datetime] = timestamp()


class FunctionBuild(Base):
    """State of the local build of a function environment, keyed by archive checksum."""

    __tablename__ = "function_builds"

    archive_checksum: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    location: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = timestamp()


class ComputePlanWorkerMapping(Base):
    """Pins a compute plan to one worker replica while it has live resources there."""

    __tablename__ = "compute_plan_worker_mappings"
    __table_args__ = (
        # At most one open mapping per plan.
        Index(
            "uq_compute_plan_worker_mappings_open",
            "compute_plan_key",
            unique=True,
            postgresql_where=text("release_date IS NULL"),
        ),
        Index(None, "worker_index", "release_date"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    compute_plan_key: Mapped[str] = key_column()
    worker_index: Mapped[int] = mapped_column(Integer, nullable=False)
    creation_date: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    release_date: Mapped[datetime | None] = timestamp(nullable=True)


class TaskDispatch(Base):
    """Records that a compute task was handed to a worker, so it is dispatched once across restarts."""

    __tablename__ = "task_dispatches"

    compute_task_key: Mapped[str] = key_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(CHANNEL_LENGTH), nullable=False)
    queue: Mapped[str] = mapped_column(String(200), nullable=False)
    celery_task_id: Mapped[str] = mapped_column(String(100), nullable=False)
    dispatched_at: Mapped[datetime] = timestamp()
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")


class CeleryDispatch(Base):
    """A Celery task the events service decided to send: a transactional outbox.

    The row is written in the transaction that applies the triggering event and moves the event
    cursor, and the message is published after that commit (`published_at` then set). A crash
    between the two leaves the row pending, to be published on restart; `dedupe_key` keeps repeated
    events from deciding the same work twice.
    """

    __tablename__ = "celery_dispatches"
    __table_args__ = (
        Index(
            "ix_celery_dispatches_pending",
            "channel",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # What the work is about, e.g. `compute_task:<task key>`; each key is dispatched once.
    dedupe_key: Mapped[str] = mapped_column(String(400), nullable=False, unique=True)
    celery_task_id: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    channel: Mapped[str] = mapped_column(String(CHANNEL_LENGTH), nullable=False)
    # The orchestrator event whose processing decided it.
    event_id: Mapped[str] = mapped_column(String(100), nullable=False)
    task_name: Mapped[str] = mapped_column(String(200), nullable=False)
    queue: Mapped[str] = mapped_column(String(200), nullable=False)
    # {"args": [...], "kwargs": {...}, "then": <the task to chain, same shape plus its name and
    # queue> | null}, all JSON.
    message: Mapped[dict[str, object]] = mapped_column(JsonDocument, nullable=False)
    created_at: Mapped[datetime] = timestamp()
    published_at: Mapped[datetime | None] = timestamp(nullable=True)


class RevokedToken(Base):
    """A JWT refresh token that may no longer be used (rotated by /me/refresh/ or logged out)."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Rows past their expiry can be deleted: the token would be refused anyway.
    expires_at: Mapped[datetime] = timestamp(index=True)


__all__ = [
    "ApiToken",
    "CeleryDispatch",
    "ComputePlanWorkerMapping",
    "FunctionBuild",
    "ImageEntrypoint",
    "IncomingOrganization",
    "OutgoingOrganization",
    "RevokedToken",
    "StoredFile",
    "TaskDispatch",
    "TokenKind",
    "User",
    "UserRole",
]
