"""Compute plans: storage and the status/date rules of the REST API (rest-api 5.4).

The orchestrator has no plan status; it records only `cancelation_date` and `failure_date`. The
status, start and end dates and the first failed task are derived here from the plan's tasks, whose
dates come from event timestamps, so every organization of the channel computes the same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, exists, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backend_common.db.replica import ComputePlan, ComputeTask
from backend_common.protos import computeplan_pb2
from backend_common.replica.conversions import optional_datetime, to_datetime

# Creator of plans registered through another organization's backend (rest-api 5.4).
EXTERNAL_CREATOR = "external"

PLAN_STATUS_CREATED = "PLAN_STATUS_CREATED"
PLAN_STATUS_DOING = "PLAN_STATUS_DOING"
PLAN_STATUS_DONE = "PLAN_STATUS_DONE"
PLAN_STATUS_FAILED = "PLAN_STATUS_FAILED"
PLAN_STATUS_CANCELED = "PLAN_STATUS_CANCELED"

STATUS_WAITING_FOR_BUILDER_SLOT = "STATUS_WAITING_FOR_BUILDER_SLOT"
STATUS_DONE = "STATUS_DONE"
STATUS_FAILED = "STATUS_FAILED"
STATUS_CANCELED = "STATUS_CANCELED"
STATUS_UNKNOWN = "STATUS_UNKNOWN"
FINAL_TASK_STATUSES = frozenset({STATUS_DONE, STATUS_FAILED, STATUS_CANCELED})


@dataclass(frozen=True)
class TaskStatistics:
    """What the plan rules need from a plan's tasks."""

    counts: Mapping[str, int]
    earliest_start: datetime | None
    latest_end: datetime | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)


@dataclass(frozen=True)
class PlanState:
    status: str
    start_date: datetime | None
    end_date: datetime | None


def plan_state(tasks: TaskStatistics, cancelation_date: datetime | None) -> PlanState:
    """Status and dates of a plan, by the rules of rest-api 5.4, evaluated in this order."""
    if cancelation_date is not None or tasks.count(STATUS_CANCELED):
        status = PLAN_STATUS_CANCELED
    elif tasks.total == 0 or tasks.count(STATUS_WAITING_FOR_BUILDER_SLOT) == tasks.total:
        status = PLAN_STATUS_CREATED
    elif tasks.count(STATUS_DONE) == tasks.total:
        status = PLAN_STATUS_DONE
    elif tasks.count(STATUS_FAILED):
        status = PLAN_STATUS_FAILED
    else:
        status = PLAN_STATUS_DOING

    if cancelation_date is not None:
        end_date: datetime | None = cancelation_date
    elif status in (PLAN_STATUS_DONE, PLAN_STATUS_FAILED, PLAN_STATUS_CANCELED):
        end_date = tasks.latest_end
    else:
        end_date = None
    # The earliest task start rather than the local clock: the same on every organization.
    return PlanState(status=status, start_date=tasks.earliest_start, end_date=end_date)


def task_statistics(session: Session, plan_key: str) -> TaskStatistics:
    rows = session.execute(
        select(
            ComputeTask.status,
            func.count(),
            func.min(ComputeTask.start_date),
            func.max(ComputeTask.end_date),
        )
        .where(ComputeTask.compute_plan_key == plan_key)
        .group_by(ComputeTask.status)
    ).all()
    starts = [row[2] for row in rows if row[2] is not None]
    ends = [row[3] for row in rows if row[3] is not None]
    return TaskStatistics(
        counts={row[0]: row[1] for row in rows},
        earliest_start=min(starts, default=None),
        latest_end=max(ends, default=None),
    )


def recompute_plan(session: Session, plan_key: str) -> PlanState | None:
    """Store the plan's status, dates and first failed task; None when the plan is not stored."""
    # Locked: the REST server and the events service may recompute the same plan concurrently.
    plan = session.execute(
        select(ComputePlan.cancelation_date).where(ComputePlan.key == plan_key).with_for_update()
    ).one_or_none()
    if plan is None:
        return None
    statistics = task_statistics(session, plan_key)
    state = plan_state(statistics, plan.cancelation_date)
    failed_task_key = None
    if statistics.count(STATUS_FAILED):
        failed_task_key = session.scalar(
            select(ComputeTask.key)
            .where(ComputeTask.compute_plan_key == plan_key, ComputeTask.status == STATUS_FAILED)
            .order_by(ComputeTask.end_date.asc().nulls_last(), ComputeTask.key)
            .limit(1)
        )
    session.execute(
        update(ComputePlan)
        .where(ComputePlan.key == plan_key)
        .values(
            status=state.status,
            start_date=state.start_date,
            end_date=state.end_date,
            failed_task_key=failed_task_key,
        )
    )
    return state


def is_plan_running(session: Session, plan_key: str) -> bool:
    """The orchestrator's IsPlanRunning rule (orchestrator-grpc 9.6) on the replica.

    Not running when terminated, or when any task failed or was canceled; otherwise running while
    at least one task is not final.
    """
    plan = session.execute(
        select(ComputePlan.cancelation_date, ComputePlan.failure_date).where(ComputePlan.key == plan_key)
    ).one_or_none()
    if plan is None or plan.cancelation_date is not None or plan.failure_date is not None:
        return False
    counts = task_statistics(session, plan_key).counts
    if counts.get(STATUS_FAILED) or counts.get(STATUS_CANCELED):
        return False
    return any(
        count for status, count in counts.items() if status not in FINAL_TASK_STATUSES | {STATUS_UNKNOWN}
    )


def running_plans() -> Select[str]:
    """The keys of the plans `is_plan_running` says are running, as one query over the replica."""
    task = ComputeTask.__table__.alias("task")
    broken = task.c.status.in_([STATUS_FAILED, STATUS_CANCELED])
    live = task.c.status.not_in([*sorted(FINAL_TASK_STATUSES), STATUS_UNKNOWN])
    of_plan = task.c.compute_plan_key == ComputePlan.key
    return select(ComputePlan.key).where(
        ComputePlan.cancelation_date.is_(None),
        ComputePlan.failure_date.is_(None),
        exists().where(of_plan, live),
        ~exists().where(of_plan, broken),
    )


def store_compute_plan(
    session: Session, channel: str, plan: computeplan_pb2.ComputePlan, *, creator: str | None = None
) -> bool:
    """Insert a plan; True if it was new.

    `creator` is the username when the plan was registered through this backend's REST API: it
    replaces the `external` creator an event may have stored first. Events pass None, which never
    overwrites anything.
    """
    statement = insert(ComputePlan).values(
        key=plan.key,
        channel=channel,
        owner=plan.owner,
        name=plan.name,
        tag=plan.tag,
        metadata_=dict(plan.metadata),
        creator=creator or EXTERNAL_CREATOR,
        creation_date=to_datetime(plan.creation_date),
        cancelation_date=optional_datetime(plan, "cancelation_date"),
        failure_date=optional_datetime(plan, "failure_date"),
        status=PLAN_STATUS_CREATED,
    )
    if creator is None:
        statement = statement.on_conflict_do_nothing(index_elements=[ComputePlan.key])
    else:
        statement = statement.on_conflict_do_update(
            index_elements=[ComputePlan.key], set_={"creator": statement.excluded.creator}
        )
    # xmax = 0 only for a row this statement inserted (an update sets it).
    xmax = session.execute(statement.returning(literal_column("xmax::text"))).scalar_one_or_none()
    return xmax == "0"


def update_compute_plan(session: Session, plan: computeplan_pb2.ComputePlan) -> None:
    """Name and terminal dates from an UPDATED snapshot (a date already known is kept)."""
    values: dict[str, object] = {"name": plan.name}
    cancelation_date = optional_datetime(plan, "cancelation_date")
    if cancelation_date is not None:
        values["cancelation_date"] = cancelation_date
    failure_date = optional_datetime(plan, "failure_date")
    if failure_date is not None:
        values["failure_date"] = failure_date
    session.execute(update(ComputePlan).where(ComputePlan.key == plan.key).values(values))


def mark_plan_failed(session: Session, plan_key: str, at: datetime) -> None:
    """A task of the plan failed at `at`: the orchestrator sets `failure_date` then, without an event.

    Its value is the transaction time of the task's FAILED transition, i.e. the event timestamp;
    a plan already canceled or failed is left alone, as the orchestrator does.
    """
    session.execute(
        update(ComputePlan)
        .where(
            ComputePlan.key == plan_key,
            ComputePlan.cancelation_date.is_(None),
            ComputePlan.failure_date.is_(None),
        )
        .values(failure_date=at)
    )
