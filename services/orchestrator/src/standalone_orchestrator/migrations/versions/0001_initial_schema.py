"""Initial orchestrator schema.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KEY = sa.String(100)


def _date(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("address", sa.Text, nullable=False, server_default=""),
        _date("creation_date"),
        sa.PrimaryKeyConstraint("channel", "id"),
    )
    op.create_table(
        "addressables",
        sa.Column("storage_address", sa.Text, primary_key=True),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("asset_key", KEY, nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
    )
    op.create_table(
        "functions",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        _date("creation_date"),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("description_address", sa.Text, nullable=False),
        sa.Column("description_checksum", sa.String(64), nullable=False),
        sa.Column("archive_address", sa.Text, nullable=False),
        sa.Column("archive_checksum", sa.String(64), nullable=False),
        sa.Column("image_address", sa.Text, nullable=False, server_default=""),
        sa.Column("image_checksum", sa.String(64), nullable=False, server_default=""),
        sa.Column("permissions", JSONB, nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("inputs", JSONB, nullable=False),
        sa.Column("outputs", JSONB, nullable=False),
    )
    op.create_index("ix_functions_channel_creation", "functions", ["channel", "creation_date", "key"])
    op.create_table(
        "data_managers",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        _date("creation_date"),
        sa.Column("permissions", JSONB, nullable=False),
        sa.Column("logs_permission", JSONB, nullable=False),
        sa.Column("description_address", sa.Text, nullable=False),
        sa.Column("description_checksum", sa.String(64), nullable=False),
        sa.Column("opener_address", sa.Text, nullable=False),
        sa.Column("opener_checksum", sa.String(64), nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
    )
    op.create_index("ix_data_managers_channel_creation", "data_managers", ["channel", "creation_date", "key"])
    op.create_table(
        "data_samples",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        _date("creation_date"),
    )
    op.create_index("ix_data_samples_channel_creation", "data_samples", ["channel", "creation_date", "key"])
    op.create_table(
        "data_sample_data_managers",
        sa.Column("data_sample_key", KEY, sa.ForeignKey("data_samples.key"), nullable=False),
        sa.Column("data_manager_key", KEY, sa.ForeignKey("data_managers.key"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("data_sample_key", "data_manager_key"),
    )
    op.create_index("ix_data_sample_data_managers_manager", "data_sample_data_managers", ["data_manager_key"])
    op.create_table(
        "compute_plans",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("tag", sa.String(100), nullable=False, server_default=""),
        sa.Column("metadata", JSONB, nullable=False),
        _date("creation_date"),
        _date("cancelation_date", nullable=True),
        _date("failure_date", nullable=True),
    )
    op.create_index("ix_compute_plans_channel_creation", "compute_plans", ["channel", "creation_date", "key"])
    op.create_table(
        "compute_tasks",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("compute_plan_key", KEY, sa.ForeignKey("compute_plans.key"), nullable=False),
        sa.Column("function_key", KEY, sa.ForeignKey("functions.key"), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("worker", sa.String(100), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        _date("creation_date"),
        sa.Column("logs_permission", JSONB, nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("inputs", JSONB, nullable=False),
        sa.Column("outputs", JSONB, nullable=False),
    )
    op.create_index("ix_compute_tasks_channel_creation", "compute_tasks", ["channel", "creation_date", "key"])
    op.create_index("ix_compute_tasks_plan_status", "compute_tasks", ["compute_plan_key", "status"])
    op.create_index("ix_compute_tasks_function_status", "compute_tasks", ["function_key", "status"])
    op.create_index("ix_compute_tasks_worker", "compute_tasks", ["worker"])
    op.create_table(
        "compute_task_parents",
        sa.Column("child_task_key", KEY, sa.ForeignKey("compute_tasks.key"), nullable=False),
        sa.Column("parent_task_key", KEY, sa.ForeignKey("compute_tasks.key"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("child_task_key", "parent_task_key"),
    )
    op.create_index("ix_compute_task_parents_parent", "compute_task_parents", ["parent_task_key"])
    op.create_table(
        "compute_task_output_assets",
        sa.Column("compute_task_key", KEY, sa.ForeignKey("compute_tasks.key"), nullable=False),
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("asset_kind", sa.String(50), nullable=False),
        sa.Column("asset_key", sa.String(250), nullable=False, unique=True),
        sa.PrimaryKeyConstraint("compute_task_key", "identifier", "position"),
    )
    op.create_table(
        "models",
        sa.Column("key", KEY, primary_key=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("compute_task_key", KEY, sa.ForeignKey("compute_tasks.key"), nullable=False),
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        _date("creation_date"),
        sa.Column("permissions", JSONB, nullable=False),
        sa.Column("address", sa.Text, nullable=True),
        sa.Column("checksum", sa.String(64), nullable=True),
    )
    op.create_index("ix_models_compute_task", "models", ["compute_task_key"])
    op.create_table(
        "performances",
        sa.Column("compute_task_key", KEY, sa.ForeignKey("compute_tasks.key"), nullable=False),
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("value", sa.Double, nullable=False),
        _date("creation_date"),
        sa.PrimaryKeyConstraint("compute_task_key", "identifier"),
    )
    op.create_index("ix_performances_channel_creation", "performances", ["channel", "creation_date"])
    op.create_table(
        "failure_reports",
        sa.Column("asset_key", KEY, primary_key=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("asset_type", sa.String(50), nullable=False),
        sa.Column("error_type", sa.String(50), nullable=False),
        sa.Column("logs_address", sa.Text, nullable=True),
        sa.Column("logs_checksum", sa.String(64), nullable=True),
        sa.Column("owner", sa.String(100), nullable=False),
        _date("creation_date"),
    )
    op.execute(sa.schema.CreateSequence(sa.Sequence("event_positions")))
    op.create_table(
        "events",
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("asset_key", sa.Text, nullable=False),
        sa.Column("asset_kind", sa.String(50), nullable=False),
        sa.Column("event_kind", sa.String(50), nullable=False),
        _date("timestamp"),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("channel", "position"),
    )
    op.create_index("ix_events_channel_timestamp", "events", ["channel", "timestamp", "id"])
    op.create_index("ix_events_asset_key", "events", ["asset_key"])


def downgrade() -> None:
    for table in (
        "events",
        "failure_reports",
        "performances",
        "models",
        "compute_task_output_assets",
        "compute_task_parents",
        "compute_tasks",
        "compute_plans",
        "data_sample_data_managers",
        "data_samples",
        "data_managers",
        "functions",
        "addressables",
        "organizations",
    ):
        op.drop_table(table)
    op.execute(sa.schema.DropSequence(sa.Sequence("event_positions")))
