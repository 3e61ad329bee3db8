"""`/model/`: models, their file, and their local registration by this organization's worker."""

from __future__ import annotations

import json
from typing import Any

from backend_common import replica
from backend_common.db.local import StoredFile
from backend_common.db.replica import Model
from backend_common.protos import model_pb2
from backend_common.storage import MODEL_BUCKET
from google.protobuf import json_format
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server import permissions, render
from backend_server.authentication import Caller, authenticated, authenticated_read, require_self_organization
from backend_server.data import files, models
from backend_server.downloads import LocalFile, check_not_isolated, gone, serve
from backend_server.errors import bad_request, not_found
from backend_server.http import (
    base_url,
    body_fields,
    json_response,
    page_of,
    paginated,
    params,
    path_key,
    raw_json_response,
)
from backend_server.listing import DEFAULT_PAGE_SIZE
from backend_server.render import dumps, model
from backend_server.state import in_transaction, server_state


def list_models(session: Session, request: Request, caller: Caller) -> Response:
    page = page_of(request, DEFAULT_PAGE_SIZE)
    return paginated(
        request, page, models.list_models(session, caller.channel, params(request), page, base_url(request))
    )


def get_model(session: Session, request: Request, caller: Caller) -> Response:
    row = models.get_model(session, caller.channel, path_key(request))
    if row is None:
        raise not_found()
    return raw_json_response(dumps(model(row, base_url(request))))


async def model_file(request: Request, caller: Caller) -> Response:
    check_not_isolated(request)
    key = path_key(request)
    settings = server_state(request).settings

    def load(session: Session) -> tuple[Model, StoredFile | None]:
        row = models.get_model(session, caller.channel, key)
        if row is None:
            raise not_found()
        permissions.check_model_download(row, caller, settings)
        return row, files.get_file(session, key, files.MODEL)

    row, stored = await in_transaction(request, load)
    if not row.address:
        raise gone()
    local = (
        LocalFile(stored.bucket, stored.object_key, f"model_{key}")
        if stored
        else LocalFile(MODEL_BUCKET, f"models/{key}/model", f"model_{key}")
    )
    return await serve(
        request,
        owner=row.owner,
        local=local,
        address=row.address,
        channel=caller.channel,
        checksum=row.checksum,
        media_type="application/octet-stream",
        salt=row.compute_task_key.encode(),
    )


async def register_local_models(request: Request, caller: Caller) -> Response:
    """The worker stores the models it registered on the orchestrator: form field `metadata`, a JSON list."""
    state = server_state(request)
    require_self_organization(caller, state.settings.msp_id)
    fields = await body_fields(request)
    raw = fields.get("metadata")
    try:
        items = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise bad_request("metadata: not valid JSON") from None
    if not isinstance(items, list):
        raise bad_request("metadata: expected a JSON list of models")
    try:
        registered = [
            json_format.ParseDict(item, model_pb2.Model(), ignore_unknown_fields=True) for item in items
        ]
    except (json_format.ParseError, TypeError, AttributeError) as error:
        raise bad_request(f"metadata: invalid model: {error}") from None
    base = base_url(request)

    def store_locally(session: Session) -> list[dict[str, Any]]:
        for registered_model in registered:
            replica.store_model(session, caller.channel, registered_model)
        return [
            render.model(row, base)
            for row in models.get_models(session, caller.channel, [m.key for m in registered])
        ]

    return json_response(await in_transaction(request, store_locally), status=201)


routes = [
    Route("/model/", authenticated_read(list_models, basic=True), methods=["GET"]),
    Route("/model/", authenticated(register_local_models, basic=True), methods=["POST"]),
    Route("/model/{key}/", authenticated_read(get_model, basic=True), methods=["GET"]),
    Route("/model/{key}/file/", authenticated(model_file, basic=True), methods=["GET"]),
]
