"""Performance rows across the channel's compute plans (`GET /performance/` and its CSV export)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from backend_common.db.replica import ComputePlan, ComputeTask, Performance
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import cast

from backend_server import render
from backend_server.data import compute_plans
from backend_server.data.common import Page
from backend_server.listing import (
    OrderingMap,
    PageRequest,
    Params,
    check_page,
    collect,
    date_range,
    in_filter,
    match_filter,
    metadata_filter,
    ordering,
)

EXPORT_BATCH = 1000


def _round() -> ColumnElement[Any]:
    return cast(ComputeTask.metadata_, JSONB).op("->>")("round_idx")


ORDERING: OrderingMap = {
    "task_rank": lambda: ComputeTask.rank,
    "task_round": _round,
    "worker": lambda: ComputeTask.worker,
}
DEFAULT_ORDERING = ("task_rank", "task_round", "worker")


def conditions(params: Params) -> list[ColumnElement[bool]]:
    return collect(
        in_filter(ComputePlan.key, params.keys("key")),
        in_filter(ComputePlan.owner, params.csv("owner")),
        in_filter(ComputePlan.status, params.csv("status")),
        in_filter(Performance.identifier, params.csv("identifier")),
        date_range(ComputePlan.creation_date, params, "creation_date"),
        date_range(ComputePlan.start_date, params, "start_date"),
        date_range(ComputePlan.end_date, params, "end_date"),
        match_filter(params, [ComputePlan.key, ComputePlan.name]),
        metadata_filter(params, ComputePlan.metadata_),
    )


def _query(channel: str, params: Params) -> Select[Any]:
    return (
        select(
            ComputePlan,
            ComputeTask.worker,
            ComputeTask.rank,
            _round(),
            Performance.identifier,
            Performance.value,
        )
        .join(ComputeTask, ComputeTask.key == Performance.compute_task_key)
        .join(ComputePlan, ComputePlan.key == ComputeTask.compute_plan_key)
        .where(Performance.channel == channel, *conditions(params))
        .order_by(*ordering(params, ORDERING, DEFAULT_ORDERING, Performance.compute_task_key))
        .order_by(Performance.identifier)
    )


def _items(session: Session, rows: Sequence[Any]) -> Iterator[dict[str, Any]]:
    plans = {row[0].key: row[0] for row in rows}
    documents = dict(zip(plans, compute_plans.plan_documents(session, list(plans.values())), strict=True))
    for plan, worker, rank, round_idx, identifier, value in rows:
        document = documents[plan.key]
        yield {
            "compute_plan_key": plan.key,
            "compute_plan_name": plan.name,
            "compute_plan_tag": plan.tag,
            "compute_plan_status": document["status"],
            "compute_plan_start_date": document["start_date"],
            "compute_plan_end_date": document["end_date"],
            "compute_plan_metadata": plan.metadata_,
            "worker": worker,
            "task_rank": rank,
            "task_round": int(round_idx) if round_idx is not None and round_idx.isdigit() else round_idx,
            "identifier": identifier,
            "performance": value,
        }


def list_performances(session: Session, channel: str, params: Params, page: PageRequest) -> Page:
    query = _query(channel, params)
    count = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    check_page(page, count)
    rows = session.execute(query.offset(page.offset).limit(page.size)).all()
    return Page(count, [render.dumps(item) for item in _items(session, rows)])


def export_rows(session: Session, channel: str, params: Params) -> Iterator[dict[str, Any]]:
    """Every matching row, fetched in batches."""
    query = _query(channel, params)
    offset = 0
    while True:
        rows = session.execute(query.offset(offset).limit(EXPORT_BATCH)).all()
        yield from _items(session, rows)
        if len(rows) < EXPORT_BATCH:
            return
        offset += EXPORT_BATCH
