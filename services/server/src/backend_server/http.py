"""Request and response helpers shared by the route modules."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from backend_server.data.common import Page
from backend_server.errors import ApiError, invalid_key
from backend_server.listing import PageRequest, Params, envelope, page_request
from backend_server.state import server_state

JSON_MEDIA_TYPE = "application/json"


def json_response(document: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(document, status_code=status, headers=headers)


def raw_json_response(body: str, status: int = 200) -> Response:
    """A response whose JSON body is already serialized (documents rendered by the data layer)."""
    return Response(body.encode(), status_code=status, media_type=JSON_MEDIA_TYPE)


def base_url(request: Request) -> str:
    """The absolute URL of the API root as the client reached it (scheme, host, port and prefix)."""
    root = str(request.base_url).rstrip("/")
    subpath = server_state(request).settings.subpath
    return f"{root}/{subpath}" if subpath else root


def path_key(request: Request, name: str = "key") -> str:
    """A key from the path, as 32 hex digits or hyphenated, normalised to the canonical form."""
    value = str(request.path_params[name])
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise invalid_key(value) from None


def params(request: Request) -> Params:
    return Params(request.query_params)


def page_of(request: Request, default_size: int) -> PageRequest:
    settings = server_state(request).settings
    return page_request(params(request), default_size, settings.http.pagination_max_page_size)


def paginated(request: Request, page: PageRequest, result: Page) -> Response:
    url = str(request.url.replace(query=""))
    return raw_json_response(envelope(result.count, page, url, request.query_params, result.results_json))


def one_or_404(document: str | None, what: str = "Not found.") -> Response:
    if document is None:
        raise ApiError(404, what)
    return raw_json_response(document)


# JSON bodies are held in memory to be parsed: plan creations carry the whole task list, which stays
# far below this even for plans of tens of thousands of tasks.
JSON_BODY_MAX_SIZE = 128 * 1024 * 1024


async def json_body(request: Request) -> Any:
    """The JSON body; an empty body is an empty object."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > JSON_BODY_MAX_SIZE:
        raise ApiError(413, f"Request body exceeds {JSON_BODY_MAX_SIZE} bytes")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > JSON_BODY_MAX_SIZE:
            raise ApiError(413, f"Request body exceeds {JSON_BODY_MAX_SIZE} bytes")
    body = bytes(chunks)
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError:
        raise ApiError(400, "JSON parse error: the request body is not valid JSON") from None


async def body_fields(request: Request) -> dict[str, Any]:
    """JSON, form-encoded or multipart (fields only) bodies as one mapping.

    Repeated form fields become lists, as the SDK sends `data_manager_keys` and `data_sample_keys`
    once per value when linking samples.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded") or content_type.startswith("multipart/"):
        form = await request.form()
        try:
            return form_fields(form)
        finally:
            await form.close()
    document = await json_body(request)
    if not isinstance(document, dict):
        raise ApiError(400, "Invalid data. Expected a dictionary.")
    return document


def form_fields(form: FormData) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in form:
        values = [value for value in form.getlist(name) if not isinstance(value, UploadFile)]
        if not values:
            continue
        fields[name] = values[0] if len(values) == 1 else values
    if "json" in fields and isinstance(fields["json"], str):
        # Multipart creates carry their document in a field named `json`.
        try:
            document = json.loads(fields.pop("json"))
        except ValueError:
            raise ApiError(400, "the `json` field is not valid JSON") from None
        if isinstance(document, dict):
            fields = {**document, **fields}
    return fields


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
