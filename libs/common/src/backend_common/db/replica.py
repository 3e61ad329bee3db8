"""The local replica of the orchestrator's assets, kept in sync by the events service.

Every GET endpoint of the server reads these tables; every row carries its channel. Indexes cover
the filters and orderings of the REST API (`rest-api.md`, section 5): the default listing order is
`(channel, creation_date, key)` for every asset kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.orm.properties import MappedColumn

from backend_common.db.base import (
    CHANNEL_LENGTH,
    Base,
    channel_column,
    flag,
    id_list,
    key_column,
    metadata_column,
    organization_id,
    timestamp,
)

ADDRESS_LENGTH = 500
CHECKSUM_LENGTH = 64
STATUS_LENGTH = 64
IDENTIFIER_LENGTH = 100


def _address(*, nullable: bool = False) -> MappedColumn[Any]:
    return mapped_column(String(ADDRESS_LENGTH), nullable=nullable)


def _checksum(*, nullable: bool = False) -> MappedColumn[Any]:
    return mapped_column(String(CHECKSUM_LENGTH), nullable=nullable)


class PermissionsMixin:
    """Process and download permissions; the orchestrator always includes the owner in the ids."""

    permissions_process_public: Mapped[bool] = flag()
    permissions_process_authorized_ids: Mapped[list[str]] = id_list()
    permissions_download_public: Mapped[bool] = flag()
    permissions_download_authorized_ids: Mapped[list[str]] = id_list()


class Organization(Base):
    """An organization registered on a channel (from ORGANIZATION created events)."""

    __tablename__ = "organizations"
    __table_args__ = (PrimaryKeyConstraint("id", "channel"),)

    id: Mapped[str] = organization_id()
    channel: Mapped[str] = channel_column()
    address: Mapped[str] = mapped_column(String(ADDRESS_LENGTH), nullable=False, default="")
    creation_date: Mapped[datetime] = timestamp()


class LastEvent(Base):
    """Resume cursor of the event stream, one per channel, updated with the changes it caused."""

    __tablename__ = "last_events"

    channel: Mapped[str] = mapped_column(String(CHANNEL_LENGTH), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), nullable=False)
    event_timestamp: Mapped[datetime | None] = timestamp(nullable=True)


class Function(PermissionsMixin, Base):
    __tablename__ = "functions"
    __table_args__ = (
        Index(None, "channel", "creation_date", "key"),
        Index(None, "channel", "name"),
        Index(None, "channel", "owner"),
    )

    key: Mapped[str] = key_column(primary_key=True)
    channel: Mapped[str] = channel_column()
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    owner: Mapped[str] = organization_id()
    creation_date: Mapped[datetime] = timestamp()
    metadata_: Mapped[dict[str, str]] = metadata_column()
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH), nullable=False)
    description_address: Mapped[str] = _address()
    description_checksum: Mapped[str] = _checksum()
    archive_address: Mapped[str] = _address()
    archive_checksum: Mapped[str] = _checksum()
    image_address: Mapped[str | None] = _address(nullable=True)
    image_checksum: Mapped[str | None] = _checksum(nullable=True)

    inputs: Mapped[list[FunctionInput]] = relationship(
        back_populates="function", cascade="all, delete-orphan", order_by="FunctionInput.identifier"
    )
    outputs: Mapped[list[FunctionOutput]] = relationship(
        back_populates="function", cascade="all, delete-orphan", order_by="FunctionOutput.identifier"
    )


class FunctionInput(Base):
    __tablename__ = "function_inputs"

    function_key: Mapped[str] = mapped_column(
        ForeignKey("functions.key", ondelete="CASCADE"), primary_key=True
    )
    identifier: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(STATUS_LENGTH), nullable=False)
    optional: Mapped[bool] = flag()
    multiple: Mapped[bool] = flag()

    function: Mapped[Function] = relationship(back_populates="inputs")


class FunctionOutput(Base):
    __tablename__ = "function_outputs"

    function_key: Mapped[str] = mapped_column(
        ForeignKey("functions.key", ondelete="CASCADE"), primary_key=True
    )
    identifier: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(STATUS_LENGTH), nullable=False)
    multiple: Mapped[bool] = flag()

    function: Mapped[Function] = relationship(back_populates="outputs")


class FunctionProfilingStep(Base):
    """Build profiling of a function (`build_image`, `save_function`), from orchestrator events."""

    __tablename__ = "function_profiling_steps"

    function_key: Mapped[str] = mapped_column(
        ForeignKey("functions.key", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel: Mapped[str] = channel_column()
    duration_us: Mapped[int] = mapped_column(BigInteger, nullable=False)


class DataManager(PermissionsMixin, Base):
    __tablename__ = "data_managers"
    __table_args__ = (
        Index(None, "channel", "creation_date", "key"),
        Index(None, "channel", "name"),
        Index(None, "channel", "owner"),
    )

    key: Mapped[str] = key_column(primary_key=True)
    channel: Mapped[str] = channel_column()
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    owner: Mapped[str] = organization_id()
    creation_date: Mapped[datetime] = timestamp()
    metadata_: Mapped[dict[str, str]] = metadata_column()
    description_address: Mapped[str] = _address()
    description_checksum: Mapped[str] = _checksum()
    opener_address: Mapped[str] = _address()
    opener_checksum: Mapped[str] = _checksum()
    logs_permission_public: Mapped[bool] = flag()
    logs_permission_authorized_ids: Mapped[list[str]] = id_list()


class DataSample(Base):
    __tablename__ = "data_samples"
    __table_args__ = (
        Index(None, "channel", "creation_date", "key"),
        Index(None, "channel", "owner"),
    )

    key: Mapped[str] = key_column(primary_key=True)
    channel: Mapped[str] = channel_column()
    owner: Mapped[str] = organization_id()
    checksum: Mapped[str] = _checksum()
    creation_date: Mapped[datetime] = timestamp()


class DataSampleDataManager(Base):
    """Links between data samples and data managers; links are only ever added."""

    __tablename__ = "data_sample_data_managers"

    data_sample_key: Mapped[str] = mapped_column(
        ForeignKey("data_samples.key", ondelete="CASCADE"), primary_key=True
    )
    data_manager_key: Mapped[str] = mapped_column(
        ForeignKey("data_managers.key", ondelete="CASCADE"), primary_key=True, index=True
    )


class ComputePlan(Base):
    __tablename__ = "compute_plans"
    __table_args__ = (
        Index(None, "channel", "creation_date", "key"),
        Index(None, "channel", "owner"),
        Index(None, "channel", "status"),
        Index(None, "channel", "name"),
        Index(None, "channel", "tag"),
        Index(None, "channel", "start_date"),
        Index(None, "channel", "end_date"),
        Index(None, "channel", "creator"),
        Index("ix_compute_plans_metadata", "metadata", postgresql_using="gin"),
    )

    key: Mapped[str] = key_column(primary_key=True)
    channel: Mapped[str] = channel_column()
    owner: Mapped[str] = organization_id()
    name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    tag: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    metadata_: Mapped[dict[str, str]] = metadata_column()
    # Username on the owner's backend; "external" elsewhere, "deleted" once the user is gone.
    creator: Mapped[str | None] = mapped_column(String(150), nullable=True)
    creation_date: Mapped[datetime] = timestamp()
    cancelation_date: Mapped[datetime | None] = timestamp(nullable=True)
    failure_date: Mapped[datetime | None] = timestamp(nullable=True)
    start_date: Mapped[datetime | None] = timestamp(nullable=True)
    end_date: Mapped[datetime | None] = timestamp(nullable=True)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH), nullable=False, default="PLAN_STATUS_CREATED")
    failed_task_key: Mapped[str | None] = key_column(nullable=True)


class ComputeTask(Base):
    __tablename__ = "compute_tasks"
    __table_args__ = (
        Index(None, "channel", "creation_date", "key"),
        Index(None, "compute_plan_key", "status"),
        Index(None, "compute_plan_key", "rank"),
        Index(None, "channel", "status"),
        Index(None, "channel", "worker"),
        Index(None, "channel", "owner"),
        Index(None, "channel", "start_date"),
        Index(None, "channel", "end_date"),
        Index(None, "function_key"),
        Index("ix_compute_tasks_metadata", "metadata", postgresql_using="gin"),
    )

    key: Mapped[str] = key_column(primary_key=True)
    channel: Mapped[str] = channel_column()
    function_key: Mapped[str] = mapped_column(ForeignKey("functions.key"), nullable=False)
    compute_plan_key: Mapped[str] = mapped_column(ForeignKey("compute_plans.key"), nullable=False)
    owner: Mapped[str] = organization_id()
    worker: Mapped[str] = organization_id()
    rank: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH), nullable=False)
    tag: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    metadata_: Mapped[dict[str, str]] = metadata_column()
    creation_date: Mapped[datetime] = timestamp()
    start_date: Mapped[datetime | None] = timestamp(nullable=True)
    end_date: Mapped[datetime | None] = timestamp(nullable=True)
    # ERROR_TYPE_BUILD / ERROR_TYPE_EXECUTION / ERROR_TYPE_INTERNAL once failed.
    error_type: Mapped[str | None] = mapped_column(String(STATUS_LENGTH), nullable=True)
    logs_permission_public: Mapped[bool] = flag()
    logs_permission_authorized_ids: Mapped[list[str]] = id_list()
    logs_address: Mapped[str | None] = _address(nullable=True)
    logs_checksum: Mapped[str | None] = _checksum(nullable=True)
    logs_owner: Mapped[str | None] = organization_id(nullable=True)
    # The REST representations of `inputs` and `outputs`, kept by triggers on their tables
    # (migration 0004): the task list renders a page without one subquery per task.
    inputs_document: Mapped[Any] = mapped_column(JSON, nullable=True)
    outputs_document: Mapped[Any] = mapped_column(JSON, nullable=True)

    inputs: Mapped[list[ComputeTaskInput]] = relationship(
        back_populates="task", cascade="all, delete-orphan", order_by="ComputeTaskInput.position"
    )
    outputs: Mapped[list[ComputeTaskOutput]] = relationship(
        back_populates="task", cascade="all, delete-orphan", order_by="ComputeTaskOutput.identifier"
    )


class ComputeTaskInput(Base):
    """One input of a task, in registration order: an asset key or a parent task's output."""

    __tablename__ = "compute_task_inputs"
    __table_args__ = (
        PrimaryKeyConstraint("task_key", "position"),
        Index(None, "parent_task_key"),
        Index(None, "asset_key"),
    )

    task_key: Mapped[str] = mapped_column(ForeignKey("compute_tasks.key", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    identifier: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH), nullable=False)
    asset_key: Mapped[str | None] = mapped_column(String(100), nullable=True)
    parent_task_key: Mapped[str | None] = key_column(nullable=True)
    parent_task_output_identifier: Mapped[str | None] = mapped_column(
        String(IDENTIFIER_LENGTH), nullable=True
    )

    task: Mapped[ComputeTask] = relationship(back_populates="inputs")


class ComputeTaskOutput(PermissionsMixin, Base):
    __tablename__ = "compute_task_outputs"

    task_key: Mapped[str] = mapped_column(
        ForeignKey("compute_tasks.key", ondelete="CASCADE"), primary_key=True
    )
    identifier: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH), primary_key=True)
    transient: Mapped[bool] = flag()

    task: Mapped[ComputeTask] = relationship(back_populates="outputs")


class ComputeTaskOutputAsset(Base):
    """An asset produced for a task output (a model key, or `<task key>|<identifier>` for a performance)."""

    __tablename__ = "compute_task_output_assets"
    __table_args__ = (
        ForeignKeyConstraint(
            ["task_key", "identifier"],
            ["compute_task_outputs.task_key", "compute_task_outputs.identifier"],
            ondelete="CASCADE",
        ),
        UniqueConstraint("task_key", "identifier", "asset_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    channel: Mapped[str] = channel_column()
    task_key: Mapped[str] = key_column()
    identifier: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH), nullable=False)
    asset_kind: Mapped[str] = mapped_column(String(STATUS_LENGTH), nullable=False)
    asset_key: Mapped[str] = mapped_column(String(300), nullable=False, index=True)


class Model(PermissionsMixin, Base):
    __tablename__ = "models"
    __table_args__ = (
        Index(None, "channel", "creation_date", "key"),
        Index(None, "channel", "owner"),
        Index(None, "compute_task_key", "identifier"),
    )

    key: Mapped[str] = key_column(primary_key=True)
    channel: Mapped[str] = channel_column()
    compute_task_key: Mapped[str] = mapped_column(ForeignKey("compute_tasks.key"), nullable=False)
    identifier: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH), nullable=False, default="")
    owner: Mapped[str] = organization_id()
    creation_date: Mapped[datetime] = timestamp()
    # Both null once the model is disabled (transient output removed).
    address: Mapped[str | None] = _address(nullable=True)
    checksum: Mapped[str | None] = _checksum(nullable=True)


class Performance(Base):
    __tablename__ = "performances"
    __table_args__ = (
        PrimaryKeyConstraint("compute_task_key", "identifier"),
        Index(None, "channel", "creation_date"),
    )

    compute_task_key: Mapped[str] = mapped_column(ForeignKey("compute_tasks.key", ondelete="CASCADE"))
    identifier: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))
    channel: Mapped[str] = channel_column()
    value: Mapped[float] = mapped_column(Float, nullable=False)
    creation_date: Mapped[datetime] = timestamp()


class FailureReport(Base):
    __tablename__ = "failure_reports"
    __table_args__ = (Index(None, "channel", "creation_date"),)

    asset_key: Mapped[str] = key_column(primary_key=True)
    channel: Mapped[str] = channel_column()
    asset_type: Mapped[str] = mapped_column(String(STATUS_LENGTH), nullable=False)
    error_type: Mapped[str] = mapped_column(String(STATUS_LENGTH), nullable=False)
    logs_address: Mapped[str | None] = _address(nullable=True)
    logs_checksum: Mapped[str | None] = _checksum(nullable=True)
    owner: Mapped[str] = organization_id()
    creation_date: Mapped[datetime] = timestamp()


class TaskProfile(Base):
    """Execution profiling of a task, written only by this organization's worker (local only)."""

    __tablename__ = "task_profiles"

    compute_task_key: Mapped[str] = mapped_column(
        ForeignKey("compute_tasks.key", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = channel_column()
    creation_date: Mapped[datetime] = timestamp()

    steps: Mapped[list[TaskProfilingStep]] = relationship(
        back_populates="profile", cascade="all, delete-orphan", order_by="TaskProfilingStep.position"
    )


class TaskProfilingStep(Base):
    __tablename__ = "task_profiling_steps"

    compute_task_key: Mapped[str] = mapped_column(
        ForeignKey("task_profiles.compute_task_key", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    duration_us: Mapped[int] = mapped_column(BigInteger, nullable=False)

    profile: Mapped[TaskProfile] = relationship(back_populates="steps")


class ReplicaCount(Base):
    """Rows per channel of the big replica tables, kept by database triggers (migration 0003).

    Unfiltered listings need `count` for their pagination envelope; counting 100,000 rows at
    each request would cost more than the page itself.
    """

    __tablename__ = "replica_counts"
    __table_args__ = (PrimaryKeyConstraint("channel", "kind"),)

    channel: Mapped[str] = channel_column()
    # The counted table's name, e.g. `compute_tasks`.
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


__all__ = [
    "ComputePlan",
    "ComputeTask",
    "ComputeTaskInput",
    "ComputeTaskOutput",
    "ComputeTaskOutputAsset",
    "DataManager",
    "DataSample",
    "DataSampleDataManager",
    "FailureReport",
    "Function",
    "FunctionInput",
    "FunctionOutput",
    "FunctionProfilingStep",
    "LastEvent",
    "Model",
    "Organization",
    "Performance",
    "PermissionsMixin",
    "ReplicaCount",
    "TaskProfile",
    "TaskProfilingStep",
]
