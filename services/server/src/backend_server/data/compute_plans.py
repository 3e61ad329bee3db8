"""Compute plans: status, dates and counters computed from their tasks; perf, graph and metadata keys."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from backend_common.db.replica import (
    ComputePlan,
    ComputeTask,
    ComputeTaskInput,
    Function,
    FunctionInput,
    FunctionOutput,
    Performance,
)
from backend_common.replica import TaskStatistics, plan_state
from sqlalchemy import ColumnElement, Integer, cast, func, select
from sqlalchemy.dialects.postgresql import JSONB, distinct_on
from sqlalchemy.orm import Session

from backend_server import render
from backend_server.data.common import Page, checked_count
from backend_server.listing import (
    OrderingMap,
    PageRequest,
    Params,
    collect,
    date_range,
    in_filter,
    match_filter,
    metadata_filter,
    ordering,
)

WORKFLOW_GRAPH_MAX_TASKS = 5000


def duration_seconds() -> ColumnElement[int]:
    return func.coalesce(
        cast(
            func.extract("epoch", func.coalesce(ComputePlan.end_date, func.now()) - ComputePlan.start_date),
            Integer,
        ),
        0,
    )


ORDERING: OrderingMap = {
    "creation_date": lambda: ComputePlan.creation_date,
    "start_date": lambda: ComputePlan.start_date,
    "end_date": lambda: ComputePlan.end_date,
    "key": lambda: ComputePlan.key,
    "owner": lambda: ComputePlan.owner,
    "status": lambda: ComputePlan.status,
    "tag": lambda: ComputePlan.tag,
    "name": lambda: ComputePlan.name,
    "duration": duration_seconds,
    "creator": lambda: ComputePlan.creator,
    "metadata__": lambda: cast(ComputePlan.metadata_, JSONB),
}
DEFAULT_ORDERING = ("creation_date",)


def _plans_with_tasks(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    return ComputePlan.key.in_(select(ComputeTask.compute_plan_key).where(*conditions))


def conditions(params: Params) -> list[ColumnElement[bool]]:
    function_key = params.key("function_key")
    workers = params.csv("worker")
    input_keys = [
        keys for keys in (params.keys("dataset_key"), params.keys("data_sample_key")) if keys is not None
    ]
    minimum, maximum = params.number("duration_min"), params.number("duration_max")
    creator = params.get("creator")
    return collect(
        in_filter(ComputePlan.key, params.keys("key")),
        in_filter(ComputePlan.owner, params.csv("owner")),
        in_filter(ComputePlan.tag, params.csv("tag")),
        in_filter(ComputePlan.name, params.csv("name")),
        in_filter(ComputePlan.status, params.csv("status")),
        None if function_key is None else _plans_with_tasks(ComputeTask.function_key == function_key),
        None if workers is None else _plans_with_tasks(ComputeTask.worker.in_(workers)),
        [
            ComputePlan.key.in_(
                select(ComputeTask.compute_plan_key)
                .join(ComputeTaskInput, ComputeTaskInput.task_key == ComputeTask.key)
                .where(ComputeTaskInput.asset_key.in_(keys))
            )
            for keys in input_keys
        ],
        None if not creator else ComputePlan.creator == creator,
        date_range(ComputePlan.creation_date, params, "creation_date"),
        date_range(ComputePlan.start_date, params, "start_date"),
        date_range(ComputePlan.end_date, params, "end_date"),
        None if minimum is None else duration_seconds() >= minimum,
        None if maximum is None else duration_seconds() <= maximum,
        match_filter(params, [ComputePlan.key, ComputePlan.name]),
        metadata_filter(params, ComputePlan.metadata_),
    )


def render_all(session: Session, plans: Sequence[ComputePlan]) -> list[str]:
    return [render.dumps(document) for document in plan_documents(session, plans)]


def plan_documents(session: Session, plans: Sequence[ComputePlan]) -> list[dict[str, Any]]:
    """Plan documents with counters, dates and status from their tasks (one aggregate query)."""
    if not plans:
        return []
    keys = [plan.key for plan in plans]
    rows = session.execute(
        select(
            ComputeTask.compute_plan_key,
            ComputeTask.status,
            func.count(),
            func.min(ComputeTask.start_date),
            func.max(ComputeTask.end_date),
        )
        .where(ComputeTask.compute_plan_key.in_(keys))
        .group_by(ComputeTask.compute_plan_key, ComputeTask.status)
    ).all()
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row[0]].append(row)
    failed: dict[str, str] = {
        plan_key: task_key
        for plan_key, task_key in session.execute(
            select(ComputeTask.compute_plan_key, ComputeTask.key)
            .where(ComputeTask.compute_plan_key.in_(keys), ComputeTask.status == "STATUS_FAILED")
            .order_by(ComputeTask.compute_plan_key, ComputeTask.end_date.asc().nulls_last(), ComputeTask.key)
            .ext(distinct_on(ComputeTask.compute_plan_key))
        )
    }
    documents: list[dict[str, Any]] = []
    for plan in plans:
        plan_rows = grouped.get(plan.key, [])
        starts = [row[3] for row in plan_rows if row[3] is not None]
        ends = [row[4] for row in plan_rows if row[4] is not None]
        statistics = TaskStatistics(
            counts={row[1]: row[2] for row in plan_rows},
            earliest_start=min(starts, default=None),
            latest_end=max(ends, default=None),
        )
        state = plan_state(statistics, plan.cancelation_date)
        documents.append(render.compute_plan(plan, statistics, state, failed.get(plan.key)))
    return documents


def list_plans(session: Session, channel: str, params: Params, page: PageRequest) -> Page:
    where = conditions(params)
    count = checked_count(session, ComputePlan, channel, where, page)
    plans = session.scalars(
        select(ComputePlan)
        .where(ComputePlan.channel == channel, *where)
        .order_by(*ordering(params, ORDERING, DEFAULT_ORDERING, ComputePlan.key))
        .offset(page.offset)
        .limit(page.size)
    ).all()
    return Page(count, render_all(session, plans))


def get_plan(session: Session, channel: str, key: str) -> ComputePlan | None:
    return session.scalars(
        select(ComputePlan).where(ComputePlan.channel == channel, ComputePlan.key == key)
    ).one_or_none()


def get_document(session: Session, channel: str, key: str) -> str | None:
    plan = get_plan(session, channel, key)
    return None if plan is None else render_all(session, [plan])[0]


def metadata_keys(session: Session, channel: str) -> list[str]:
    keys = func.jsonb_object_keys(cast(ComputePlan.metadata_, JSONB))
    return sorted(session.scalars(select(keys).where(ComputePlan.channel == channel).distinct()))


PERF_ORDERING: OrderingMap = {
    "compute_task_output__task__rank": lambda: ComputeTask.rank,
    "compute_task_output__task__worker": lambda: ComputeTask.worker,
    "compute_task_output__task__metadata__round_idx": lambda: cast(ComputeTask.metadata_, JSONB).op("->>")(
        "round_idx"
    ),
}


def performances(session: Session, plan_key: str, params: Params) -> dict[str, Any]:
    """Every performance of the plan in one response (the SDK reads only this page)."""
    round_idx = cast(ComputeTask.metadata_, JSONB).op("->>")("round_idx")
    rows = session.execute(
        select(
            ComputeTask.key,
            ComputeTask.function_key,
            ComputeTask.rank,
            round_idx,
            ComputeTask.worker,
            Performance.identifier,
            Performance.value,
        )
        .join(ComputeTask, ComputeTask.key == Performance.compute_task_key)
        .where(ComputeTask.compute_plan_key == plan_key)
        .order_by(
            *ordering(
                params,
                PERF_ORDERING,
                ("compute_task_output__task__rank", "compute_task_output__task__worker"),
                Performance.identifier,
            )
        )
    ).all()
    results = [
        {
            "compute_task": {
                "key": key,
                "function_key": function_key,
                "rank": rank,
                "round_idx": round_value,
                "worker": worker,
            },
            "identifier": identifier,
            "perf": value,
        }
        for key, function_key, rank, round_value, worker, identifier, value in rows
    ]
    ranks = sorted({row[2] for row in rows})
    rounds = sorted({row[3] for row in rows if row[3] is not None}, key=_round_order)
    return {
        "results": results,
        "compute_plan_statistics": {
            "compute_tasks_distinct_ranks": ranks,
            "compute_tasks_distinct_rounds": rounds,
        },
    }


def _round_order(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


class TooManyTasksError(Exception):
    pass


def workflow_graph(session: Session, plan_key: str) -> dict[str, Any]:
    task_count = session.scalar(select(func.count()).where(ComputeTask.compute_plan_key == plan_key)) or 0
    if task_count > WORKFLOW_GRAPH_MAX_TASKS:
        raise TooManyTasksError
    tasks = session.execute(
        select(
            ComputeTask.key,
            ComputeTask.rank,
            Function.name,
            ComputeTask.worker,
            ComputeTask.status,
            Function.key,
        )
        .join(Function, Function.key == ComputeTask.function_key)
        .where(ComputeTask.compute_plan_key == plan_key)
        .order_by(ComputeTask.rank, ComputeTask.creation_date, ComputeTask.key)
    ).all()
    function_keys = {row[5] for row in tasks}
    inputs_specs: dict[str, list[dict[str, str]]] = {key: [] for key in function_keys}
    outputs_specs: dict[str, list[dict[str, str]]] = {key: [] for key in function_keys}
    if function_keys:
        for function_key, identifier, kind in session.execute(
            select(FunctionInput.function_key, FunctionInput.identifier, FunctionInput.kind)
            .where(FunctionInput.function_key.in_(function_keys))
            .order_by(FunctionInput.identifier)
        ):
            inputs_specs[function_key].append({"identifier": identifier, "kind": kind})
        for function_key, identifier, kind in session.execute(
            select(FunctionOutput.function_key, FunctionOutput.identifier, FunctionOutput.kind)
            .where(FunctionOutput.function_key.in_(function_keys))
            .order_by(FunctionOutput.identifier)
        ):
            outputs_specs[function_key].append({"identifier": identifier, "kind": kind})
    edges = session.execute(
        select(
            ComputeTaskInput.parent_task_key,
            ComputeTaskInput.parent_task_output_identifier,
            ComputeTaskInput.task_key,
            ComputeTaskInput.identifier,
        )
        .join(ComputeTask, ComputeTask.key == ComputeTaskInput.task_key)
        .where(ComputeTask.compute_plan_key == plan_key, ComputeTaskInput.parent_task_key.is_not(None))
        .order_by(ComputeTaskInput.task_key, ComputeTaskInput.position)
    ).all()
    return {
        "tasks": [
            {
                "key": key,
                "rank": rank,
                "function_name": function_name,
                "worker": worker,
                "status": status,
                "inputs_specs": inputs_specs[function_key],
                "outputs_specs": outputs_specs[function_key],
            }
            for key, rank, function_name, worker, status, function_key in tasks
        ],
        "edges": [
            {
                "source_task_key": source,
                "source_output_identifier": output,
                "target_task_key": target,
                "target_input_identifier": identifier,
            }
            for source, output, target, identifier in edges
        ],
    }
