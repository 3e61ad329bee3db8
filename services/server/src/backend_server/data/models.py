"""Models produced by compute tasks."""

from __future__ import annotations

from collections.abc import Sequence

from backend_common.db.replica import Model
from sqlalchemy import ColumnElement, select
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
    ordering,
    permission_filter,
)

ORDERING: OrderingMap = {
    "creation_date": lambda: Model.creation_date,
    "key": lambda: Model.key,
}
DEFAULT_ORDERING = ("creation_date",)


def conditions(params: Params) -> list[ColumnElement[bool]]:
    return collect(
        in_filter(Model.key, params.keys("key")),
        in_filter(Model.owner, params.csv("owner")),
        in_filter(Model.compute_task_key, params.keys("compute_task_key")),
        in_filter(Model.compute_task_key, params.keys("compute_task")),
        date_range(Model.creation_date, params, "creation_date"),
        permission_filter(
            params, "can_process", Model.permissions_process_public, Model.permissions_process_authorized_ids
        ),
        permission_filter(
            params, "permissions", Model.permissions_process_public, Model.permissions_process_authorized_ids
        ),
    )


def render_all(rows: Sequence[Model], base_url: str) -> list[str]:
    return [render.dumps(render.model(row, base_url)) for row in rows]


def list_models(session: Session, channel: str, params: Params, page: PageRequest, base_url: str) -> Page:
    where = conditions(params)
    count = checked_count(session, Model, channel, where, page)
    rows = session.scalars(
        select(Model)
        .where(Model.channel == channel, *where)
        .order_by(*ordering(params, ORDERING, DEFAULT_ORDERING, Model.key))
        .offset(page.offset)
        .limit(page.size)
    ).all()
    return Page(count, render_all(rows, base_url))


def get_model(session: Session, channel: str, key: str) -> Model | None:
    return session.scalars(select(Model).where(Model.channel == channel, Model.key == key)).one_or_none()


def get_models(session: Session, channel: str, keys: Sequence[str]) -> Sequence[Model]:
    return session.scalars(select(Model).where(Model.channel == channel, Model.key.in_(list(keys)))).all()
