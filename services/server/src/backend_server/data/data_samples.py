"""Data samples and their links to data managers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from backend_common.db.replica import ComputeTask, ComputeTaskInput, DataSample, DataSampleDataManager
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from backend_server import render
from backend_server.data.common import Page, checked_count
from backend_server.listing import OrderingMap, PageRequest, Params, collect, date_range, in_filter, ordering

ORDERING: OrderingMap = {
    "creation_date": lambda: DataSample.creation_date,
    "key": lambda: DataSample.key,
    "owner": lambda: DataSample.owner,
}
DEFAULT_ORDERING = ("creation_date",)


def conditions(params: Params) -> list[ColumnElement[bool]]:
    dataset_keys = params.keys("dataset_key")
    plan_keys = params.keys("compute_plan_key")
    function_keys = params.keys("function_key")
    used_by_tasks = []
    if plan_keys is not None:
        used_by_tasks.append(ComputeTask.compute_plan_key.in_(plan_keys))
    if function_keys is not None:
        used_by_tasks.append(ComputeTask.function_key.in_(function_keys))
    return collect(
        in_filter(DataSample.key, params.keys("key")),
        in_filter(DataSample.owner, params.csv("owner")),
        None
        if dataset_keys is None
        else DataSample.key.in_(
            select(DataSampleDataManager.data_sample_key).where(
                DataSampleDataManager.data_manager_key.in_(dataset_keys)
            )
        ),
        None
        if not used_by_tasks
        else DataSample.key.in_(
            select(ComputeTaskInput.asset_key)
            .join(ComputeTask, ComputeTask.key == ComputeTaskInput.task_key)
            .where(*used_by_tasks)
        ),
        date_range(DataSample.creation_date, params, "creation_date"),
    )


def data_manager_keys(session: Session, sample_keys: Sequence[str]) -> dict[str, list[str]]:
    linked: dict[str, list[str]] = defaultdict(list)
    if not sample_keys:
        return linked
    rows = session.execute(
        select(DataSampleDataManager.data_sample_key, DataSampleDataManager.data_manager_key)
        .where(DataSampleDataManager.data_sample_key.in_(list(sample_keys)))
        .order_by(DataSampleDataManager.data_sample_key, DataSampleDataManager.data_manager_key)
    )
    for sample_key, data_manager_key in rows:
        linked[sample_key].append(data_manager_key)
    return linked


def render_all(session: Session, rows: Sequence[DataSample]) -> list[str]:
    linked = data_manager_keys(session, [row.key for row in rows])
    return [render.dumps(render.data_sample(row, linked.get(row.key, []))) for row in rows]


def list_data_samples(session: Session, channel: str, params: Params, page: PageRequest) -> Page:
    where = conditions(params)
    count = checked_count(session, DataSample, channel, where, page)
    rows = session.scalars(
        select(DataSample)
        .where(DataSample.channel == channel, *where)
        .order_by(*ordering(params, ORDERING, DEFAULT_ORDERING, DataSample.key))
        .offset(page.offset)
        .limit(page.size)
    ).all()
    return Page(count, render_all(session, rows))


def get_samples(session: Session, channel: str, keys: Sequence[str]) -> Sequence[DataSample]:
    return session.scalars(
        select(DataSample).where(DataSample.channel == channel, DataSample.key.in_(list(keys)))
    ).all()


def get_document(session: Session, channel: str, key: str) -> str | None:
    rows = get_samples(session, channel, [key])
    return render_all(session, rows)[0] if rows else None
