"""Error bodies and statuses of the API (`rest-api.md`, section 2).

Handlers raise `ApiError`; the application turns it into `{"detail": ...}` (or an explicit body).
Orchestrator errors reaching the top are mapped with the reference's gRPC→HTTP table, their message
passed through unchanged so clients still see `OE0xxx` codes and substrings they match on.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from backend_common.orchestrator import OrchestratorError

NOT_AUTHENTICATED = "Authentication credentials were not provided."
FORBIDDEN = "You do not have permission to perform this action."

_GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 408,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ApiError(Exception):
    """An answer other than success: `status` with `{"detail": detail, **extra}` or an explicit `body`."""

    def __init__(
        self,
        status: int,
        detail: str = "",
        *,
        extra: Mapping[str, object] | None = None,
        body: object | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.body: object = body if body is not None else {"detail": detail, **(extra or {})}
        self.headers = dict(headers or {})


def bad_request(detail: str, **extra: object) -> ApiError:
    return ApiError(400, detail, extra=extra)


def not_found(detail: str = "Not found.") -> ApiError:
    return ApiError(404, detail)


def forbidden(detail: str = FORBIDDEN) -> ApiError:
    return ApiError(403, detail)


def invalid_key(value: str) -> ApiError:
    return ApiError(400, f'key is not a valid UUID: "{value}"')


def orchestrator_http_status(error: OrchestratorError) -> int:
    if error.status == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger than max" in error.details:
        return 413
    return _GRPC_TO_HTTP.get(error.status, 500)


def from_orchestrator(error: OrchestratorError, **extra: object) -> ApiError:
    """The reference's answer to an orchestrator error: its status mapping and details unchanged."""
    return ApiError(orchestrator_http_status(error), error.details, extra=extra)
