"""Calls to the orchestrator from write endpoints, and how their errors reach the client."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from backend_common.orchestrator import (
    AlreadyExistsError,
    CancelledError,
    OrchestratorClient,
    OrchestratorError,
)
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from backend_server import validation
from backend_server.authentication import Caller
from backend_server.errors import ApiError, forbidden, from_orchestrator, not_found
from backend_server.http import body_fields, json_response, path_key
from backend_server.state import ServerState, blocking, in_transaction, server_state

T = TypeVar("T")


async def orchestrate(request: Request, caller: Caller, call: Callable[[OrchestratorClient], T]) -> T:
    state = server_state(request)
    if state.settings.organization.isolated:
        raise ApiError(400, "This backend runs in isolated mode: it cannot register assets")
    return await blocking(lambda: call(state.orchestrator(caller.channel)))


def registered_url(state: ServerState, path: str) -> str:
    """This organization's public URL of a route: what the orchestrator stores as `storage_address`."""
    subpath = f"/{state.settings.subpath}" if state.settings.subpath else ""
    return f"{state.settings.http.default_domain}{subpath}{path}"


def creation_error(error: OrchestratorError, key: str | list[str], *, as_list: bool = False) -> ApiError:
    """409 and 408 bodies carry the key(s) so that the SDK can recover (rest-api 2.3)."""
    keyed: object = [{"key": item} for item in key] if isinstance(key, list) else {"key": key}
    if isinstance(error, AlreadyExistsError):
        if as_list or isinstance(key, list):
            return ApiError(409, error.details, body=keyed if isinstance(keyed, list) else [keyed])
        return ApiError(409, error.details, extra={"key": key})
    if isinstance(error, CancelledError):
        return ApiError(408, error.details, extra={"key": key if isinstance(key, str) else key[0]})
    return from_orchestrator(error)


async def rename_asset(
    request: Request,
    caller: Caller,
    find_owner: Callable[[Session, str, str], str | None],
    call: Callable[[OrchestratorClient, str, str], None],
    rename_locally: Callable[[Session, str, str], None],
) -> Response:
    """PUT `{"name"}` on an asset: only its owner may rename it (403 otherwise)."""
    key = path_key(request)
    fields = await body_fields(request)
    name = validation.name(fields.get("name"))
    state = server_state(request)
    owner = await in_transaction(request, lambda session: find_owner(session, caller.channel, key))
    if owner is None:
        raise not_found()
    if owner != state.settings.msp_id:
        raise forbidden(f"Only the owner organization {owner} may rename this asset")
    try:
        await orchestrate(request, caller, lambda client: call(client, key, name))
    except OrchestratorError as error:
        raise from_orchestrator(error) from None
    await in_transaction(request, lambda session: rename_locally(session, key, name))
    return json_response({})
