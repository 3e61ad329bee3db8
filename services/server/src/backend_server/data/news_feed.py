"""The activity feed: plan creations, starts and ends, and data manager creations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backend_common.db.replica import ComputePlan, DataManager
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from backend_server import render
from backend_server.data.common import Page
from backend_server.listing import PageRequest, Params, check_page


def _plan_items(channel: str, important_only: bool) -> list[Select[*tuple[Any, ...]]]:
    common = (
        literal("ASSET_COMPUTE_PLAN", String).label("asset_kind"),
        ComputePlan.key.label("asset_key"),
        ComputePlan.name.label("name"),
    )
    ended = select(
        *common,
        func.replace(ComputePlan.status, literal_column("'PLAN_'"), literal_column("''")).label("status"),
        ComputePlan.end_date.label("timestamp"),
        cast(ComputePlan.failed_task_key, String).label("failed_task_key"),
    ).where(ComputePlan.channel == channel, ComputePlan.end_date.is_not(None))
    if important_only:
        return [ended]
    created = select(
        *common,
        literal("STATUS_CREATED", String).label("status"),
        ComputePlan.creation_date.label("timestamp"),
        cast(null(), String).label("failed_task_key"),
    ).where(ComputePlan.channel == channel)
    started = select(
        *common,
        literal("STATUS_DOING", String).label("status"),
        ComputePlan.start_date.label("timestamp"),
        cast(null(), String).label("failed_task_key"),
    ).where(ComputePlan.channel == channel, ComputePlan.start_date.is_not(None))
    return [created, started, ended]


def news_feed(session: Session, channel: str, params: Params, page: PageRequest) -> Page:
    important_only = params.flag("important_news_only")
    parts = _plan_items(channel, important_only)
    if not important_only:
        parts.append(
            select(
                literal("ASSET_DATA_MANAGER", String).label("asset_kind"),
                DataManager.key.label("asset_key"),
                DataManager.name.label("name"),
                literal("STATUS_CREATED", String).label("status"),
                DataManager.creation_date.label("timestamp"),
                cast(null(), String).label("failed_task_key"),
            ).where(DataManager.channel == channel)
        )
    items = union_all(*parts).subquery()
    where: list[ColumnElement[bool]] = []
    after: datetime | None = params.datetime("timestamp_after")
    before: datetime | None = params.datetime("timestamp_before")
    if after is not None:
        where.append(items.c.timestamp >= after)
    if before is not None:
        where.append(items.c.timestamp < before)
    count = session.scalar(select(func.count()).select_from(items).where(*where)) or 0
    check_page(page, count)
    rows = session.execute(
        select(items)
        .where(*where)
        .order_by(items.c.timestamp.desc(), items.c.asset_key)
        .offset(page.offset)
        .limit(page.size)
    ).all()
    documents = []
    for asset_kind, asset_key, name, status, timestamp, failed_task_key in rows:
        detail: dict[str, Any] = {}
        if status == "STATUS_FAILED" and failed_task_key:
            detail["first_failed_task_key"] = str(failed_task_key)
        documents.append(
            render.dumps(
                {
                    "asset_kind": asset_kind,
                    "asset_key": str(asset_key),
                    "name": name,
                    "status": status,
                    "timestamp": render.iso(timestamp),
                    "detail": detail,
                }
            )
        )
    return Page(count, documents)
