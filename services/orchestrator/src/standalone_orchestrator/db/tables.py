"""The schema as SQLAlchemy Core tables (the alembic migrations create the same tables).

Every asset row carries its `channel`; asset keys are primary keys on their own, so a key is
unique across channels (`orchestrator-grpc.md` 7.3). Enum values are stored as their names.
Structured values (permissions, metadata, task inputs and outputs, function inputs and outputs)
are JSONB in protojson shape (camelCase keys), as in the reference schema.

Events keep the serialized `orchestrator.Event` message (`payload`): replaying the log sends
those bytes as they are, without parsing or re-serializing them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Sequence,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

KEY = String(100)
NAME = String(100)
ENUM = String(50)

metadata = MetaData()

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(100), nullable=False),
    Column("channel", String(100), nullable=False),
    Column("address", Text, nullable=False, server_default=""),
    Column("creation_date", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("channel", "id"),
)

# Registry of every storage address in use: the reference refuses two assets sharing one.
addressables = Table(
    "addressables",
    metadata,
    Column("storage_address", Text, primary_key=True),
    Column("checksum", String(64), nullable=False),
    Column("asset_key", KEY, nullable=False),
    Column("channel", String(100), nullable=False),
)

functions = Table(
    "functions",
    metadata,
    Column("key", KEY, primary_key=True),
    Column("channel", String(100), nullable=False),
    Column("name", NAME, nullable=False),
    Column("owner", String(100), nullable=False),
    Column("creation_date", DateTime(timezone=True), nullable=False),
    Column("status", ENUM, nullable=False),
    Column("description_address", Text, nullable=False),
    Column("description_checksum", String(64), nullable=False),
    Column("archive_address", Text, nullable=False),
    Column("archive_checksum", String(64), nullable=False),
    Column("image_address", Text, nullable=False, server_default=""),
    Column("image_checksum", String(64), nullable=False, server_default=""),
    Column("permissions", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("inputs", JSONB, nullable=False),
    Column("outputs", JSONB, nullable=False),
    Index("ix_functions_channel_creation", "channel", "creation_date", "key"),
)

data_managers = Table(
    "data_managers",
    metadata,
    Column("key", KEY, primary_key=True),
    Column("channel", String(100), nullable=False),
    Column("name", NAME, nullable=False),
    Column("owner", String(100), nullable=False),
    Column("creation_date", DateTime(timezone=True), nullable=False),
    Column("permissions", JSONB, nullable=False),
    Column("logs_permission", JSONB, nullable=False),
    Column("description_address", Text, nullable=False),
    Column("description_checksum", String(64), nullable=False),
    Column("opener_address", Text, nullable=False),
    Column("opener_checksum", String(64), nullable=False),
    Column("metadata", JSONB, nullable=False),
    Index("ix_data_managers_channel_creation", "channel", "creation_date", "key"),
)

data_samples = Table(
    "data_samples",
    metadata,
    Column("key", KEY, primary_key=True),
    Column("channel", String(100), nullable=False),
    Column("owner", String(100), nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("creation_date", DateTime(timezone=True), nullable=False),
    Index("ix_data_samples_channel_creation", "channel", "creation_date", "key"),
)

# `position` keeps each sample's data manager list in the order the links were made.
data_sample_data_managers = Table(
    "data_sample_data_managers",
    metadata,
    Column("data_sample_key", KEY, ForeignKey("data_samples.key"), nullable=False),
    Column("data_manager_key", KEY, ForeignKey("data_managers.key"), nullable=False),
    Column("position", Integer, nullable=False),
    PrimaryKeyConstraint("data_sample_key", "data_manager_key"),
    Index("ix_data_sample_data_managers_manager", "data_manager_key"),
)

compute_plans = Table(
    "compute_plans",
    metadata,
    Column("key", KEY, primary_key=True),
    Column("channel", String(100), nullable=False),
    Column("owner", String(100), nullable=False),
    Column("name", NAME, nullable=False),
    Column("tag", String(100), nullable=False, server_default=""),
    Column("metadata", JSONB, nullable=False),
    Column("creation_date", DateTime(timezone=True), nullable=False),
    Column("cancelation_date", DateTime(timezone=True), nullable=True),
    Column("failure_date", DateTime(timezone=True), nullable=True),
    Index("ix_compute_plans_channel_creation", "channel", "creation_date", "key"),
)

compute_tasks = Table(
    "compute_tasks",
    metadata,
    Column("key", KEY, primary_key=True),
    Column("channel", String(100), nullable=False),
    Column("compute_plan_key", KEY, ForeignKey("compute_plans.key"), nullable=False),
    Column("function_key", KEY, ForeignKey("functions.key"), nullable=False),
    Column("owner", String(100), nullable=False),
    Column("worker", String(100), nullable=False),
    Column("status", ENUM, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("creation_date", DateTime(timezone=True), nullable=False),
    Column("logs_permission", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False),
    # Inputs in request order; outputs by identifier.
    Column("inputs", JSONB, nullable=False),
    Column("outputs", JSONB, nullable=False),
    Index("ix_compute_tasks_channel_creation", "channel", "creation_date", "key"),
    Index("ix_compute_tasks_plan_status", "compute_plan_key", "status"),
    Index("ix_compute_tasks_function_status", "function_key", "status"),
    Index("ix_compute_tasks_worker", "worker"),
)

# Parents as derived from `parent_task_output` inputs, de-duplicated, 1-based `position`.
compute_task_parents = Table(
    "compute_task_parents",
    metadata,
    Column("child_task_key", KEY, ForeignKey("compute_tasks.key"), nullable=False),
    Column("parent_task_key", KEY, ForeignKey("compute_tasks.key"), nullable=False),
    Column("position", Integer, nullable=False),
    PrimaryKeyConstraint("child_task_key", "parent_task_key"),
    Index("ix_compute_task_parents_parent", "parent_task_key"),
)

compute_task_output_assets = Table(
    "compute_task_output_assets",
    metadata,
    Column("compute_task_key", KEY, ForeignKey("compute_tasks.key"), nullable=False),
    Column("identifier", String(100), nullable=False),
    Column("position", Integer, nullable=False),
    Column("asset_kind", ENUM, nullable=False),
    Column("asset_key", String(250), nullable=False, unique=True),
    PrimaryKeyConstraint("compute_task_key", "identifier", "position"),
)

models = Table(
    "models",
    metadata,
    Column("key", KEY, primary_key=True),
    Column("channel", String(100), nullable=False),
    Column("compute_task_key", KEY, ForeignKey("compute_tasks.key"), nullable=False),
    Column("identifier", String(100), nullable=False),
    Column("owner", String(100), nullable=False),
    Column("creation_date", DateTime(timezone=True), nullable=False),
    Column("permissions", JSONB, nullable=False),
    # NULL once the model is disabled (DisableOutput).
    Column("address", Text, nullable=True),
    Column("checksum", String(64), nullable=True),
    Index("ix_models_compute_task", "compute_task_key"),
)

performances = Table(
    "performances",
    metadata,
    Column("compute_task_key", KEY, ForeignKey("compute_tasks.key"), nullable=False),
    Column("identifier", String(100), nullable=False),
    Column("channel", String(100), nullable=False),
    # The float32 received, widened exactly to a double.
    Column("value", Double, nullable=False),
    Column("creation_date", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("compute_task_key", "identifier"),
    Index("ix_performances_channel_creation", "channel", "creation_date"),
)

failure_reports = Table(
    "failure_reports",
    metadata,
    Column("asset_key", KEY, primary_key=True),
    Column("channel", String(100), nullable=False),
    Column("asset_type", ENUM, nullable=False),
    Column("error_type", ENUM, nullable=False),
    Column("logs_address", Text, nullable=True),
    Column("logs_checksum", String(64), nullable=True),
    Column("owner", String(100), nullable=False),
    Column("creation_date", DateTime(timezone=True), nullable=False),
)

event_positions = Sequence("event_positions", metadata=metadata)

events = Table(
    "events",
    metadata,
    # Increases in commit order within a channel: writers of a channel hold its lock.
    Column("position", BigInteger, nullable=False),
    Column("id", String(36), nullable=False, unique=True),
    Column("channel", String(100), nullable=False),
    # Performance keys are "<task key>|<identifier>": up to 137 characters.
    Column("asset_key", Text, nullable=False),
    Column("asset_kind", ENUM, nullable=False),
    Column("event_kind", ENUM, nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    # Replays walk this index; positions are unique anyway (one sequence).
    PrimaryKeyConstraint("channel", "position"),
    Index("ix_events_channel_timestamp", "channel", "timestamp", "id"),
    Index("ix_events_asset_key", "asset_key"),
)
