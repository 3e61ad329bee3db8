"""Functions: listing filters, JSON documents (rendered by PostgreSQL) and local rows."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable, Sequence

from backend_common.db.replica import ComputeTask, ComputeTaskInput, Function, FunctionProfilingStep
from sqlalchemy import ColumnElement, String, cast, select
from sqlalchemy.orm import Session

from backend_server import prepared, render
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
    "creation_date": lambda: Function.creation_date,
    "key": lambda: Function.key,
    "name": lambda: Function.name,
    "owner": lambda: Function.owner,
}
DEFAULT_ORDERING = ("creation_date",)


def conditions(params: Params) -> list[ColumnElement[bool]]:
    plan_keys = params.keys("compute_plan_key")
    dataset_key = params.keys("dataset_key")
    sample_keys = params.keys("data_sample_key")
    used_with_inputs = [keys for keys in (dataset_key, sample_keys) if keys is not None]
    return collect(
        in_filter(Function.key, params.keys("key")),
        in_filter(Function.name, params.csv("name")),
        in_filter(Function.owner, params.csv("owner")),
        None
        if plan_keys is None
        else Function.key.in_(
            select(ComputeTask.function_key).where(ComputeTask.compute_plan_key.in_(plan_keys))
        ),
        [
            Function.key.in_(
                select(ComputeTask.function_key)
                .join(ComputeTaskInput, ComputeTaskInput.task_key == ComputeTask.key)
                .where(ComputeTaskInput.asset_key.in_(keys))
            )
            for keys in used_with_inputs
        ],
        date_range(Function.creation_date, params, "creation_date"),
        match_filter(params, [Function.key, Function.name]),
        permission_filter(
            params,
            "can_process",
            Function.permissions_process_public,
            Function.permissions_process_authorized_ids,
        ),
        # The SDK sends its `permissions` filter under that name (reference bug 4): same meaning.
        permission_filter(
            params,
            "permissions",
            Function.permissions_process_public,
            Function.permissions_process_authorized_ids,
        ),
    )


class _DocumentCache:
    """Function documents by key, rendered once per (name, status).

    A page of tasks embeds up to 100 functions, and all but their name and status never change.
    The documents are kept with a placeholder for the API's base URL (it depends on the request),
    chosen at random so that no stored name or metadata can contain it.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.placeholder = f"base-url-{secrets.token_hex(16)}"
        self._entries: dict[str, tuple[str, str, str]] = {}
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def fresh(self, key: str, name: str, status: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != name or entry[1] != status:
            return None
        return entry[2]

    def store(self, key: str, name: str, status: str, document: str) -> None:
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = (name, status, document)


_cache = _DocumentCache()


def documents_by_key(session: Session, keys: Iterable[str], base_url: str) -> dict[str, str]:
    """The documents of the functions `keys` (unknown keys are skipped)."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    found: dict[str, str] = {}
    stale: list[str] = []
    for key, name, status in prepared.execute(
        session, "function_versions", render.FUNCTION_VERSIONS, [wanted]
    ):
        document = _cache.fresh(key, name, status)
        if document is None:
            stale.append(key)
        else:
            found[key] = document
    if stale:
        rows = prepared.execute(
            session, "function_documents", render.FUNCTION_DOCUMENTS, [stale, _cache.placeholder]
        )
        for key, name, status, document in rows:
            _cache.store(key, name, status, document)
            found[key] = document
    # The base URL comes from the request's Host: escaped as a JSON string's content.
    escaped = json.dumps(base_url)[1:-1]
    return {key: document.replace(_cache.placeholder, escaped) for key, document in found.items()}


def documents(session: Session, keys: Sequence[str], base_url: str) -> list[str]:
    """The documents of the functions `keys`, in that order (unknown keys are skipped)."""
    by_key = documents_by_key(session, keys, base_url)
    return [by_key[key] for key in keys if key in by_key]


def list_functions(
    session: Session,
    channel: str,
    params: Params,
    page: PageRequest,
    base_url: str,
    *,
    extra: Sequence[ColumnElement[bool]] = (),
) -> Page:
    where = [*conditions(params), *extra]
    count = checked_count(session, Function, channel, where, page)
    keys = session.scalars(
        select(cast(Function.key, String))
        .where(Function.channel == channel, *where)
        .order_by(*ordering(params, ORDERING, DEFAULT_ORDERING, Function.key))
        .offset(page.offset)
        .limit(page.size)
    ).all()
    return Page(count, documents(session, keys, base_url))


def get_document(session: Session, channel: str, key: str, base_url: str) -> str | None:
    if get_function(session, channel, key) is None:
        return None
    found = documents(session, [key], base_url)
    return found[0] if found else None


def get_function(session: Session, channel: str, key: str) -> Function | None:
    return session.scalars(
        select(Function).where(Function.channel == channel, Function.key == key)
    ).one_or_none()


def profiling(session: Session, function_key: str) -> dict[str, object]:
    steps = session.execute(
        select(FunctionProfilingStep.step, FunctionProfilingStep.duration_us)
        .where(FunctionProfilingStep.function_key == function_key)
        .order_by(FunctionProfilingStep.step)
    ).all()
    rundown = [{"step": step, "duration": duration} for step, duration in steps]
    durations = {step: duration for step, duration in steps}
    total = None
    if "build_image" in durations and "save_function" in durations:
        total = durations["build_image"] + durations["save_function"]
    return {"function_key": function_key, "execution_rundown": rundown, "duration": total}
