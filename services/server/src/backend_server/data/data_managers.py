"""Data managers ("datasets" in the SDK) and their linked data samples."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from backend_common.db.replica import (
    ComputeTask,
    ComputeTaskInput,
    DataManager,
    DataSample,
    DataSampleDataManager,
)
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
    match_filter,
    ordering,
    permission_filter,
)

ORDERING: OrderingMap = {
    "creation_date": lambda: DataManager.creation_date,
    "key": lambda: DataManager.key,
    "name": lambda: DataManager.name,
    "owner": lambda: DataManager.owner,
}
DEFAULT_ORDERING = ("creation_date",)


def conditions(params: Params) -> list[ColumnElement[bool]]:
    sample_keys = params.keys("data_sample_key")
    plan_keys = params.keys("compute_plan_key")
    function_keys = params.keys("function_key")
    used_by_tasks = []
    if plan_keys is not None:
        used_by_tasks.append(ComputeTask.compute_plan_key.in_(plan_keys))
    if function_keys is not None:
        used_by_tasks.append(ComputeTask.function_key.in_(function_keys))
    return collect(
        in_filter(DataManager.key, params.keys("key")),
        in_filter(DataManager.name, params.csv("name")),
        in_filter(DataManager.owner, params.csv("owner")),
        None
        if sample_keys is None
        else DataManager.key.in_(
            select(DataSampleDataManager.data_manager_key).where(
                DataSampleDataManager.data_sample_key.in_(sample_keys)
            )
        ),
        None
        if not used_by_tasks
        else DataManager.key.in_(
            select(ComputeTaskInput.asset_key)
            .join(ComputeTask, ComputeTask.key == ComputeTaskInput.task_key)
            .where(*used_by_tasks)
        ),
        date_range(DataManager.creation_date, params, "creation_date"),
        match_filter(params, [DataManager.key, DataManager.name]),
        permission_filter(
            params,
            "can_process",
            DataManager.permissions_process_public,
            DataManager.permissions_process_authorized_ids,
        ),
        permission_filter(
            params,
            "permissions",
            DataManager.permissions_process_public,
            DataManager.permissions_process_authorized_ids,
        ),
        permission_filter(
            params,
            "can_access_logs",
            DataManager.logs_permission_public,
            DataManager.logs_permission_authorized_ids,
        ),
    )


def sample_keys(session: Session, data_manager_keys: Sequence[str]) -> dict[str, list[str]]:
    """Linked sample keys per data manager, in sample creation order (as GetDataset)."""
    linked: dict[str, list[str]] = defaultdict(list)
    if not data_manager_keys:
        return linked
    rows = session.execute(
        select(DataSampleDataManager.data_manager_key, DataSample.key)
        .join(DataSample, DataSample.key == DataSampleDataManager.data_sample_key)
        .where(DataSampleDataManager.data_manager_key.in_(list(data_manager_keys)))
        .order_by(DataSample.creation_date, DataSample.key)
    )
    for data_manager_key, sample_key in rows:
        linked[data_manager_key].append(sample_key)
    return linked


def render_all(session: Session, rows: Sequence[DataManager], base_url: str) -> list[str]:
    linked = sample_keys(session, [row.key for row in rows])
    return [render.dumps(render.data_manager(row, linked.get(row.key, []), base_url)) for row in rows]


def list_data_managers(
    session: Session, channel: str, params: Params, page: PageRequest, base_url: str
) -> Page:
    where = conditions(params)
    count = checked_count(session, DataManager, channel, where, page)
    rows = session.scalars(
        select(DataManager)
        .where(DataManager.channel == channel, *where)
        .order_by(*ordering(params, ORDERING, DEFAULT_ORDERING, DataManager.key))
        .offset(page.offset)
        .limit(page.size)
    ).all()
    return Page(count, render_all(session, rows, base_url))


def get_data_manager(session: Session, channel: str, key: str) -> DataManager | None:
    return session.scalars(
        select(DataManager).where(DataManager.channel == channel, DataManager.key == key)
    ).one_or_none()


def get_document(session: Session, channel: str, key: str, base_url: str) -> str | None:
    row = get_data_manager(session, channel, key)
    return None if row is None else render_all(session, [row], base_url)[0]
