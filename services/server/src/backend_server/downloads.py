"""Streamed downloads: files this organization holds, or relayed from their owner's backend (7.1).

Nothing is read whole into memory. A relayed file is verified against its registered checksum as it
passes; the last chunk is held back until the digest is known, so a corrupted file never reaches the
client complete (the connection is cut instead).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from backend_common.db.local import StoredFile
from backend_common.logging import get_logger
from backend_common.storage import ASSET_LOGS_BUCKET, ObjectNotFoundError, ObjectStream
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from backend_server.authentication import CHANNEL_HEADER, PROXY_HEADER, Caller
from backend_server.data import accounts, files
from backend_server.errors import ApiError
from backend_server.state import ServerState, blocking, in_transaction, server_state

logger = get_logger("backend_server.downloads")

# Response headers of the owner that must not be relayed as is.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-encoding",
        "content-length",
        "server",
        "date",
    }
)
ACCEPT = "application/json;version=0.0"


def gone() -> ApiError:
    return ApiError(410, "Asset not available anymore")


def isolated() -> ApiError:
    return ApiError(410, "Asset not available in isolated mode")


def disposition(filename: str) -> dict[str, str]:
    return {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
        "Access-Control-Expose-Headers": "Content-Disposition",
    }


@dataclass(frozen=True)
class LocalFile:
    bucket: str
    object_key: str
    filename: str


def _open(state: ServerState, file: LocalFile) -> ObjectStream:
    try:
        return state.storage.open(file.bucket, file.object_key)
    except ObjectNotFoundError:
        raise gone() from None


def _drain(stream: ObjectStream) -> Iterator[bytes]:
    with stream:
        yield from stream


async def stream_local(request: Request, file: LocalFile, media_type: str) -> Response:
    state = server_state(request)
    stream = await blocking(lambda: _open(state, file))
    headers = {**disposition(file.filename), "Content-Length": str(stream.size)}
    return StreamingResponse(
        _drain(stream), media_type=media_type, headers=headers, background=BackgroundTask(stream.close)
    )


async def relay(
    request: Request, *, url: str, owner: str, channel: str, checksum: str | None, salt: bytes = b""
) -> Response:
    """GET `url` on the owner's backend with this organization's outgoing credentials; stream it back."""
    state = server_state(request)
    if not url:
        raise gone()
    secret = await in_transaction(request, lambda session: accounts.outgoing_secret(session, owner))
    if secret is None:
        raise ApiError(500, f"No outgoing credentials for organization {owner}")
    upstream_request = state.http.build_request(
        "GET",
        url,
        headers={"Accept": ACCEPT, CHANNEL_HEADER: channel, PROXY_HEADER: "True"},
    )
    try:
        upstream = await state.http.send(
            upstream_request, auth=httpx.BasicAuth(state.settings.msp_id, secret), stream=True
        )
    except httpx.HTTPError as error:
        logger.warning("proxied download failed", url=url, error=str(error))
        raise ApiError(502, f"Could not reach the backend of {owner}") from None
    headers = {name: value for name, value in upstream.headers.items() if name.lower() not in _HOP_BY_HOP}
    if upstream.status_code != 200 or not checksum:
        return StreamingResponse(
            upstream.aiter_raw() if upstream.status_code != 200 else upstream.aiter_bytes(),
            status_code=upstream.status_code,
            headers=headers,
            background=BackgroundTask(upstream.aclose),
        )
    return StreamingResponse(
        _verified(upstream, checksum, salt, url),
        status_code=200,
        headers=headers,
        background=BackgroundTask(upstream.aclose),
    )


async def _verified(upstream: httpx.Response, checksum: str, salt: bytes, url: str) -> AsyncIterator[bytes]:
    digest = hashlib.sha256()
    held: bytes | None = None
    async for chunk in upstream.aiter_bytes():
        if held is not None:
            yield held
        digest.update(chunk)
        held = chunk
    digest.update(salt)
    if digest.hexdigest() != checksum.lower():
        logger.error("proxied download does not match its checksum", url=url, expected=checksum)
        raise ApiError(502, "checksum mismatch")
    if held is not None:
        yield held


def check_not_isolated(request: Request) -> None:
    if server_state(request).settings.organization.isolated:
        raise isolated()


LOGS_MEDIA_TYPE = "text/plain; charset=utf-8"


async def serve(
    request: Request,
    *,
    owner: str,
    local: LocalFile | None,
    address: str | None,
    channel: str,
    checksum: str | None,
    media_type: str,
    salt: bytes = b"",
) -> Response:
    """The file from this organization's storage when it owns it, else relayed from its owner."""
    state = server_state(request)
    if owner == state.settings.msp_id:
        if local is None:
            raise gone()
        return await stream_local(request, local, media_type)
    return await relay(request, url=address or "", owner=owner, channel=channel, checksum=checksum, salt=salt)


async def logs_response(
    request: Request,
    caller: Caller,
    *,
    asset_key: str,
    filename: str,
    address: str | None,
    checksum: str | None,
    owner: str | None,
) -> Response:
    """Failure-report logs of `asset_key` (a task, or a function for build failures)."""
    check_not_isolated(request)

    def load(session: Session) -> tuple[str | None, str | None, str | None, StoredFile | None]:
        found_address, found_checksum, found_owner = address, checksum, owner
        if not found_address or not found_owner:
            report = files.failure_report(session, caller.channel, asset_key)
            if report is not None:
                found_address, found_checksum, found_owner = (
                    report.logs_address,
                    report.logs_checksum,
                    report.owner,
                )
        return found_address, found_checksum, found_owner, files.get_file(session, asset_key, files.LOGS)

    found_address, found_checksum, found_owner, stored = await in_transaction(request, load)
    if not found_address or not found_owner:
        raise gone()
    local = LocalFile(ASSET_LOGS_BUCKET, stored.object_key if stored else asset_key, filename)
    return await serve(
        request,
        owner=found_owner,
        local=local,
        address=found_address,
        channel=caller.channel,
        checksum=found_checksum,
        media_type=LOGS_MEDIA_TYPE,
    )
