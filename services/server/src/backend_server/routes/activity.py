"""`/performance/` (and its CSV export), `/news_feed/` and `/logs/<asset key>/file/`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from backend_common.db import session_scope
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from backend_server import permissions
from backend_server.authentication import Caller, authenticated
from backend_server.data import files, functions, news_feed, performances, tasks
from backend_server.downloads import logs_response
from backend_server.errors import not_found
from backend_server.http import page_of, paginated, params, path_key
from backend_server.listing import DEFAULT_PAGE_SIZE, LARGE_PAGE_SIZE, Params
from backend_server.state import in_transaction, server_state


async def list_performances(request: Request, caller: Caller) -> Response:
    query, page = params(request), page_of(request, LARGE_PAGE_SIZE)
    result = await in_transaction(
        request, lambda session: performances.list_performances(session, caller.channel, query, page)
    )
    return paginated(request, page, result)


EXPORT_COLUMNS_BEFORE = (
    "compute_plan_key",
    "compute_plan_name",
    "compute_plan_tag",
    "compute_plan_status",
    "compute_plan_start_date",
    "compute_plan_end_date",
)
EXPORT_COLUMNS_AFTER = ("identifier", "worker", "task_rank", "task_round", "performance")


def _csv_lines(rows: Iterator[dict[str, Any]], metadata_columns: list[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line([*EXPORT_COLUMNS_BEFORE, *metadata_columns, *EXPORT_COLUMNS_AFTER])
    for row in rows:
        metadata = row["compute_plan_metadata"] or {}
        yield line(
            [
                *(row[column] for column in EXPORT_COLUMNS_BEFORE),
                *(metadata.get(column, "") for column in metadata_columns),
                *(row[column] for column in EXPORT_COLUMNS_AFTER),
            ]
        )


async def export_performances(request: Request, caller: Caller) -> Response:
    """Streams every matching row as CSV, reading the database in batches on a worker thread."""
    query = params(request)
    metadata_columns = query.csv("metadata_columns") or []
    sessions = server_state(request).sessions

    def generate(filter_query: Params) -> Iterator[str]:
        with session_scope(sessions) as session:
            yield from _csv_lines(
                performances.export_rows(session, caller.channel, filter_query), metadata_columns
            )

    return StreamingResponse(
        generate(query),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="compute_plans.csv"'},
    )


async def list_news(request: Request, caller: Caller) -> Response:
    query, page = params(request), page_of(request, DEFAULT_PAGE_SIZE)
    result = await in_transaction(
        request, lambda session: news_feed.news_feed(session, caller.channel, query, page)
    )
    return paginated(request, page, result)


async def logs_file(request: Request, caller: Caller) -> Response:
    """The raw failure-report logs: the `logs_address` registered on the orchestrator."""
    key = path_key(request, "asset_key")
    settings = server_state(request).settings

    def check(session: Session) -> None:
        report = files.failure_report(session, caller.channel, key)
        if report is None:
            raise not_found()
        task = tasks.get_task(session, caller.channel, key)
        function = functions.get_function(session, caller.channel, key)
        if task is not None:
            permissions.check_task_logs(task, None, caller, settings)
        elif function is not None:
            permissions.check_process(function, caller, settings)

    await in_transaction(request, check)
    return await logs_response(
        request, caller, asset_key=key, filename=f"{key}.txt", address=None, checksum=None, owner=None
    )


routes = [
    Route("/performance/", authenticated(list_performances), methods=["GET"]),
    Route("/performance/export/", authenticated(export_performances), methods=["GET"]),
    Route("/news_feed/", authenticated(list_news), methods=["GET"]),
    Route("/logs/{asset_key}/file/", authenticated(logs_file, basic=True), methods=["GET"]),
]
