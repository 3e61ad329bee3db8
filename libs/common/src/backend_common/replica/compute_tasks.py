"""Compute tasks: registration snapshots and status changes (dates from event timestamps).

The statements are built once: tasks are the bulk of a channel's events, and building a statement
costs more than running it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from backend_common.db.replica import ComputeTask, ComputeTaskInput, ComputeTaskOutput, FailureReport
from backend_common.protos import computetask_pb2
from backend_common.replica.compute_plans import FINAL_TASK_STATUSES, STATUS_FAILED
from backend_common.replica.conversions import (
    permission_columns,
    permissions_columns,
    split_tag,
    table,
    to_datetime,
)

STATUS_EXECUTING = "STATUS_EXECUTING"

_tasks = table(ComputeTask)
_INSERT_TASK = insert(_tasks).on_conflict_do_nothing(index_elements=[_tasks.c.key]).returning(_tasks.c.key)
_INSERT_INPUTS = insert(table(ComputeTaskInput)).on_conflict_do_nothing()
_INSERT_OUTPUTS = insert(table(ComputeTaskOutput)).on_conflict_do_nothing()
# The first EXECUTING and the first final status date the task: later events and replays keep them.
_UPDATE_STATUS = (
    update(_tasks)
    .where(_tasks.c.key == bindparam("task_key"))
    .values(
        status=bindparam("new_status"),
        start_date=func.coalesce(
            _tasks.c.start_date, bindparam("started_at", type_=_tasks.c.start_date.type)
        ),
        end_date=func.coalesce(_tasks.c.end_date, bindparam("ended_at", type_=_tasks.c.end_date.type)),
    )
    .returning(_tasks.c.compute_plan_key)
)


_SMALL_RUN = 4
_INSERT_TASKS = insert(_tasks).on_conflict_do_nothing(index_elements=[_tasks.c.key])
_UPDATE_STATUSES = text(
    """
    UPDATE compute_tasks AS task
    SET status = change.status,
        start_date = coalesce(task.start_date, change.started_at),
        end_date = coalesce(task.end_date, change.ended_at)
    FROM unnest(
        CAST(:keys AS uuid[]), CAST(:statuses AS varchar[]),
        CAST(:started AS timestamptz[]), CAST(:ended AS timestamptz[])
    ) AS change(key, status, started_at, ended_at)
    WHERE task.key = change.key
    RETURNING task.key, task.compute_plan_key
    """
)


def status_name(status: computetask_pb2.ComputeTaskStatus.ValueType) -> str:
    return computetask_pb2.ComputeTaskStatus.Name(status)


def store_compute_task(session: Session, channel: str, task: computetask_pb2.ComputeTask) -> bool:
    """Insert a task with its inputs (order kept) and outputs; True if it was new.

    A task already stored is left alone: its later changes arrive as UPDATED events, and a REST
    handler storing the registration answer after those events must not roll its status back.
    A task created directly in a final status (a parent failed, its function failed) ends at its
    creation, which is also the timestamp of its CREATED event.
    """
    row = _task_row(channel, task)
    if row["status"] == STATUS_FAILED:
        row.update(_function_failures(session, [task.function_key]).get(task.function_key, {}))
    if session.execute(_INSERT_TASK, row).scalar_one_or_none() is None:
        return False
    _store_inputs_and_outputs(session, [task])
    return True


def store_compute_tasks(session: Session, channel: str, tasks: Sequence[computetask_pb2.ComputeTask]) -> None:
    """`store_compute_task` for many tasks, in three statements (registrations come in batches)."""
    if not tasks:
        return
    rows = [_task_row(channel, task) for task in tasks]
    failed = [row for row in rows if row["status"] == STATUS_FAILED]
    if failed:
        failures = _function_failures(session, {str(row["function_key"]) for row in failed})
        for row in failed:
            row.update(failures.get(str(row["function_key"]), {}))
    session.execute(_INSERT_TASKS, rows)
    # Inputs and outputs of a task stored before conflict on their keys and are left as they are.
    _store_inputs_and_outputs(session, tasks)


def _task_row(channel: str, task: computetask_pb2.ComputeTask) -> dict[str, Any]:
    status = status_name(task.status)
    created = to_datetime(task.creation_date)
    tag, metadata = split_tag(dict(task.metadata))
    return {
        "key": task.key,
        "channel": channel,
        "function_key": task.function_key,
        "compute_plan_key": task.compute_plan_key,
        "owner": task.owner,
        "worker": task.worker,
        "rank": task.rank,
        "status": status,
        "tag": tag,
        "metadata": metadata,
        "creation_date": created,
        "start_date": None,
        "end_date": created if status in FINAL_TASK_STATUSES else None,
        "error_type": None,
        "logs_address": None,
        "logs_checksum": None,
        "logs_owner": None,
        **permission_columns("logs_permission", task.logs_permission),
    }


def _store_inputs_and_outputs(session: Session, tasks: Sequence[computetask_pb2.ComputeTask]) -> None:
    inputs = [
        _input_row(task.key, position, task_input)
        for task in tasks
        for position, task_input in enumerate(task.inputs)
    ]
    if inputs:
        session.execute(_INSERT_INPUTS, inputs)
    outputs = [
        {
            "task_key": task.key,
            "identifier": identifier,
            "transient": output.transient,
            **permissions_columns(output.permissions),
        }
        for task in tasks
        for identifier, output in task.outputs.items()
    ]
    if outputs:
        session.execute(_INSERT_OUTPUTS, outputs)


def _input_row(
    task_key: str, position: int, task_input: computetask_pb2.ComputeTaskInput
) -> dict[str, object]:
    row: dict[str, object] = {
        "task_key": task_key,
        "position": position,
        "identifier": task_input.identifier,
        "asset_key": None,
        "parent_task_key": None,
        "parent_task_output_identifier": None,
    }
    if task_input.WhichOneof("ref") == "parent_task_output":
        row["parent_task_key"] = task_input.parent_task_output.parent_task_key
        row["parent_task_output_identifier"] = task_input.parent_task_output.output_identifier
    else:
        row["asset_key"] = task_input.asset_key
    return row


def _function_failures(session: Session, function_keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Error type and logs of the functions' build failures, for tasks created failed because of them."""
    reports = session.scalars(select(FailureReport).where(FailureReport.asset_key.in_(list(function_keys))))
    return {
        str(report.asset_key): {
            "error_type": report.error_type,
            "logs_address": report.logs_address,
            "logs_checksum": report.logs_checksum,
            "logs_owner": report.owner,
        }
        for report in reports
    }


def update_compute_task_status(session: Session, task_key: str, status: str, at: datetime) -> str | None:
    """Set the status changed at `at` (the event timestamp); the task's plan key, None if unknown.

    `start_date` is the first time the task became EXECUTING, `end_date` the first time it became
    final: replays and later events keep them.
    """
    plan_key: str | None = session.execute(
        _UPDATE_STATUS,
        {
            "task_key": task_key,
            "new_status": status,
            "started_at": at if status == STATUS_EXECUTING else None,
            "ended_at": at if status in FINAL_TASK_STATUSES else None,
        },
    ).scalar_one_or_none()
    return plan_key


@dataclass(frozen=True)
class StatusChange:
    task_key: str
    status: str
    at: datetime


def update_compute_task_statuses(session: Session, changes: Sequence[StatusChange]) -> dict[str, str]:
    """`update_compute_task_status` for many changes, in order, in one statement; task key → plan key.

    A task changed several times ends with its last status, and its dates are the first of the
    changes, as when the changes are applied one by one.
    """
    merged: dict[str, tuple[str, datetime | None, datetime | None]] = {}
    for change in changes:
        _, started, ended = merged.get(change.task_key, (change.status, None, None))
        if started is None and change.status == STATUS_EXECUTING:
            started = change.at
        if ended is None and change.status in FINAL_TASK_STATUSES:
            ended = change.at
        merged[change.task_key] = (change.status, started, ended)
    if len(merged) <= _SMALL_RUN:
        # A statement per task is cheaper than planning the array one for a couple of rows.
        plans = {}
        for task_key, (status, started, ended) in merged.items():
            plan_key = session.execute(
                _UPDATE_STATUS,
                {"task_key": task_key, "new_status": status, "started_at": started, "ended_at": ended},
            ).scalar_one_or_none()
            if plan_key is not None:
                plans[task_key] = str(plan_key)
        return plans
    rows = session.execute(
        _UPDATE_STATUSES,
        {
            "keys": list(merged),
            "statuses": [status for status, _, _ in merged.values()],
            "started": [started for _, started, _ in merged.values()],
            "ended": [ended for _, _, ended in merged.values()],
        },
    ).all()
    return {str(task_key): str(plan_key) for task_key, plan_key in rows}


def task_plan_key(session: Session, task_key: str) -> str | None:
    return session.scalar(select(ComputeTask.compute_plan_key).where(ComputeTask.key == task_key))
