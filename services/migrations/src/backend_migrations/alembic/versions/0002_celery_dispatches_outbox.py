"""celery dispatches outbox

The events service records the Celery work it decides in the transaction that applies the event
and moves the cursor, then publishes it (`backend_common.db.local.CeleryDispatch`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 22:55:42.509821
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "celery_dispatches",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(length=400), nullable=False),
        sa.Column("celery_task_id", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("task_name", sa.String(length=200), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column(
            "message",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_celery_dispatches")),
        sa.UniqueConstraint("celery_task_id", name=op.f("uq_celery_dispatches_celery_task_id")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_celery_dispatches_dedupe_key")),
    )
    op.create_index(
        "ix_celery_dispatches_pending",
        "celery_dispatches",
        ["channel", "id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_celery_dispatches_pending",
        table_name="celery_dispatches",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("celery_dispatches")
