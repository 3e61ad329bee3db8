"""`/task_profiling/`: execution profiles that this organization's worker records for its tasks."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server.authentication import Caller, authenticated, require_self_organization
from backend_server.data import profiling, tasks
from backend_server.errors import ApiError, bad_request, not_found
from backend_server.http import body_fields, json_response, page_of, paginated, path_key
from backend_server.listing import LARGE_PAGE_SIZE, parse_uuid
from backend_server.state import in_transaction, server_state

# Django's duration format: `[D ]HH:MM:SS[.ffffff]` (also `[-]D days, HH:MM:SS`).
_DURATION = re.compile(
    r"^(?:(?P<days>-?\d+) (?:days?, )?)?"
    r"(?P<hours>\d+):(?P<minutes>\d{1,2}):(?P<seconds>\d{1,2})(?:\.(?P<fraction>\d{1,6}))?$"
)


def parse_duration_us(value: Any) -> int:
    """Microseconds from a Django duration string, or from a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 1_000_000)
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match:
            fraction = (match["fraction"] or "").ljust(6, "0")
            seconds = int(match["days"] or 0) * 86400 + int(match["hours"]) * 3600
            seconds += int(match["minutes"]) * 60 + int(match["seconds"])
            return seconds * 1_000_000 + int(fraction or 0)
        try:
            return int(float(value) * 1_000_000)
        except ValueError:
            pass
    raise bad_request("duration: Enter a valid duration.", duration=["Enter a valid duration."])


async def list_profiles(request: Request, caller: Caller) -> Response:
    page = page_of(request, LARGE_PAGE_SIZE)
    result = await in_transaction(
        request, lambda session: profiling.list_profiles(session, caller.channel, page)
    )
    return paginated(request, page, result)


def _document(session: Session, channel: str, task_key: str) -> dict[str, Any]:
    found = profiling.get_profile(session, channel, task_key)
    if found is None:
        raise not_found()
    return profiling.document(*found)


async def get_profile(request: Request, caller: Caller) -> Response:
    key = path_key(request, "task_key")
    return json_response(
        await in_transaction(request, lambda session: _document(session, caller.channel, key))
    )


async def create_profile(request: Request, caller: Caller) -> Response:
    require_self_organization(caller, server_state(request).settings.msp_id)
    fields = await body_fields(request)
    key = parse_uuid(str(fields.get("compute_task_key", "")), "compute_task_key")

    def create(session: Session) -> dict[str, Any]:
        if tasks.get_task(session, caller.channel, key) is None:
            raise bad_request(f"compute_task_key: task {key} not found")
        if profiling.get_profile(session, caller.channel, key) is not None:
            raise ApiError(409, f"TaskProfiling with key {key} already exists", extra={"key": key})
        profiling.create_profile(session, caller.channel, key, datetime.now(UTC))
        return _document(session, caller.channel, key)

    return json_response(await in_transaction(request, create), status=201)


async def reset_profile(request: Request, caller: Caller) -> Response:
    """PUT: the worker runs the task again; the profile restarts now, without steps."""
    require_self_organization(caller, server_state(request).settings.msp_id)
    key = path_key(request, "task_key")

    def reset(session: Session) -> dict[str, Any]:
        found = profiling.get_profile(session, caller.channel, key)
        if found is None:
            if tasks.get_task(session, caller.channel, key) is None:
                raise not_found()
            profiling.create_profile(session, caller.channel, key, datetime.now(UTC))
        else:
            profiling.reset_profile(session, found[0], datetime.now(UTC))
        session.flush()
        session.expire_all()
        return _document(session, caller.channel, key)

    return json_response(await in_transaction(request, reset))


async def add_step(request: Request, caller: Caller) -> Response:
    require_self_organization(caller, server_state(request).settings.msp_id)
    key = path_key(request, "task_key")
    fields = await body_fields(request)
    step = str(fields.get("step", "")).strip()
    if not step or len(step) > 100:
        raise bad_request("step: This field is required (at most 100 characters).")
    duration = parse_duration_us(fields.get("duration"))

    def add(session: Session) -> dict[str, Any]:
        found = profiling.get_profile(session, caller.channel, key)
        if found is None:
            raise not_found()
        if profiling.find_step(found[0], step) is not None:
            raise ApiError(409, f"ProfilingStep {step} already exists for task {key}")
        profiling.add_step(session, found[0], step, duration)
        return {"step": step, "duration": duration}

    return json_response(await in_transaction(request, add), status=201)


async def update_step(request: Request, caller: Caller) -> Response:
    require_self_organization(caller, server_state(request).settings.msp_id)
    key = path_key(request, "task_key")
    step = str(request.path_params["step"])
    fields = await body_fields(request)
    duration = parse_duration_us(fields.get("duration"))

    def update(session: Session) -> dict[str, Any]:
        found = profiling.get_profile(session, caller.channel, key)
        if found is None:
            raise not_found()
        existing = profiling.find_step(found[0], step)
        if existing is None:
            profiling.add_step(session, found[0], step, duration)
        else:
            existing.duration_us = duration
        return {"step": step, "duration": duration}

    return json_response(await in_transaction(request, update))


routes = [
    Route("/task_profiling/", authenticated(list_profiles, basic=True), methods=["GET"]),
    Route("/task_profiling/", authenticated(create_profile, basic=True), methods=["POST"]),
    Route("/task_profiling/{task_key}/", authenticated(get_profile, basic=True), methods=["GET"]),
    Route("/task_profiling/{task_key}/", authenticated(reset_profile, basic=True), methods=["PUT", "PATCH"]),
    Route("/task_profiling/{task_key}/step/", authenticated(add_step, basic=True), methods=["POST"]),
    Route(
        "/task_profiling/{task_key}/step/{step}/",
        authenticated(update_step, basic=True),
        methods=["PUT", "PATCH"],
    ),
]
