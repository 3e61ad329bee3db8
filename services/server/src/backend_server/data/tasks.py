"""Compute tasks: listing filters and JSON documents (rendered by PostgreSQL, functions spliced in)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backend_common.db.replica import ComputeTask, Function
from sqlalchemy import ColumnElement, Integer, String, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import UnaryExpression

from backend_server import prepared, render
from backend_server.data import functions
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


def duration_seconds() -> ColumnElement[int]:
    return func.coalesce(
        cast(
            func.extract("epoch", func.coalesce(ComputeTask.end_date, func.now()) - ComputeTask.start_date),
            Integer,
        ),
        0,
    )


ORDERING: OrderingMap = {
    "creation_date": lambda: ComputeTask.creation_date,
    "start_date": lambda: ComputeTask.start_date,
    "end_date": lambda: ComputeTask.end_date,
    "key": lambda: ComputeTask.key,
    "owner": lambda: ComputeTask.owner,
    "rank": lambda: ComputeTask.rank,
    "status": lambda: ComputeTask.status,
    "worker": lambda: ComputeTask.worker,
    "tag": lambda: ComputeTask.tag,
    "compute_plan_key": lambda: ComputeTask.compute_plan_key,
    "duration": duration_seconds,
    "function__name": lambda: (
        select(Function.name).where(Function.key == ComputeTask.function_key).scalar_subquery()
    ),
}
DEFAULT_ORDERING = ("creation_date",)


def conditions(params: Params) -> list[ColumnElement[bool]]:
    minimum, maximum = params.number("duration_min"), params.number("duration_max")
    return collect(
        in_filter(ComputeTask.key, params.keys("key")),
        in_filter(ComputeTask.owner, params.csv("owner")),
        in_filter(ComputeTask.worker, params.csv("worker")),
        in_filter(ComputeTask.rank, params.integers("rank")),
        in_filter(ComputeTask.tag, params.csv("tag")),
        in_filter(ComputeTask.status, params.csv("status")),
        in_filter(ComputeTask.compute_plan_key, params.keys("compute_plan_key")),
        in_filter(ComputeTask.function_key, params.keys("function_key")),
        date_range(ComputeTask.creation_date, params, "creation_date"),
        date_range(ComputeTask.start_date, params, "start_date"),
        date_range(ComputeTask.end_date, params, "end_date"),
        None if minimum is None else duration_seconds() >= minimum,
        None if maximum is None else duration_seconds() <= maximum,
        match_filter(params, [ComputeTask.key]),
        metadata_filter(params, ComputeTask.metadata_),
    )


def documents(session: Session, keys: Sequence[str], base_url: str) -> list[str]:
    """Task documents in the order of `keys`, each embedding its function."""
    if not keys:
        return []
    rows = prepared.execute(session, "task_documents", render.TASK_DOCUMENTS, [list(keys)])
    function_documents = functions.documents_by_key(
        session, (function_key for function_key, _ in rows), base_url
    )
    return [render.splice_function(task, function_documents[function_key]) for function_key, task in rows]


def page_keys(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[UnaryExpression[Any]],
    page: PageRequest,
) -> list[str]:
    return list(
        session.scalars(
            select(cast(ComputeTask.key, String))
            .where(*where)
            .order_by(*order_by)
            .offset(page.offset)
            .limit(page.size)
        )
    )


def list_tasks(
    session: Session,
    channel: str,
    params: Params,
    page: PageRequest,
    base_url: str,
    *,
    extra: Sequence[ColumnElement[bool]] = (),
) -> Page:
    where = [*conditions(params), *extra]
    count = checked_count(session, ComputeTask, channel, where, page)
    order_by = ordering(params, ORDERING, DEFAULT_ORDERING, ComputeTask.key)
    keys = page_keys(session, [ComputeTask.channel == channel, *where], order_by, page)
    return Page(count, documents(session, keys, base_url))


def get_document(session: Session, channel: str, key: str, base_url: str) -> str | None:
    if get_task(session, channel, key) is None:
        return None
    found = documents(session, [key], base_url)
    return found[0] if found else None


def get_task(session: Session, channel: str, key: str) -> ComputeTask | None:
    return session.scalars(
        select(ComputeTask).where(ComputeTask.channel == channel, ComputeTask.key == key)
    ).one_or_none()
