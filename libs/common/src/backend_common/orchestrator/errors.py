"""Typed exceptions for orchestrator errors (`orchestrator-grpc.md`, section 8).

The orchestrator answers with a gRPC status code and a message `"OE0xxx: <message>[: <cause>]"`;
each status code gets its own exception class and the `OE0xxx` code is parsed out of the message,
since callers branch on it (e.g. OE0006 "already exists").
"""

from __future__ import annotations

import re

import grpc

_OE_CODE = re.compile(r"\b(OE\d{4})\b")


def parse_oe_code(details: str) -> str | None:
    """The first `OE0xxx` code of an orchestrator message, or None (state-machine, database errors)."""
    match = _OE_CODE.search(details)
    return match.group(1) if match else None


class OrchestratorError(Exception):
    """An orchestrator call failed; `status` is the gRPC status code, `oe_code` the `OE0xxx` code."""

    status: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self, details: str, *, status: grpc.StatusCode | None = None, method: str | None = None
    ) -> None:
        self.details = details
        if status is not None:
            self.status = status
        self.method = method
        self.oe_code = parse_oe_code(details)
        super().__init__(details)

    def __str__(self) -> str:
        where = f"{self.method}: " if self.method else ""
        return f"{where}{self.status.name}: {self.details}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments would be lost by the default pickling (Celery ships exceptions).
        return (_rebuild, (type(self), self.details, self.status.name, self.method))


def _rebuild(
    cls: type[OrchestratorError], details: str, status_name: str, method: str | None
) -> OrchestratorError:
    return cls(details, status=grpc.StatusCode[status_name], method=method)


class CancelledError(OrchestratorError):
    status = grpc.StatusCode.CANCELLED


class UnknownError(OrchestratorError):
    """State-machine errors, database errors, channel errors and OE0108/OE0109/OE0110."""

    status = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(OrchestratorError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(OrchestratorError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(OrchestratorError):
    status = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(OrchestratorError):
    status = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(OrchestratorError):
    status = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(OrchestratorError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(OrchestratorError):
    """OE0003 "bad request", including a missing `mspid` header."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(OrchestratorError):
    status = grpc.StatusCode.ABORTED


class OutOfRangeError(OrchestratorError):
    status = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(OrchestratorError):
    status = grpc.StatusCode.UNIMPLEMENTED


class InternalError(OrchestratorError):
    status = grpc.StatusCode.INTERNAL


class UnavailableError(OrchestratorError):
    status = grpc.StatusCode.UNAVAILABLE


class DataLossError(OrchestratorError):
    status = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(OrchestratorError):
    status = grpc.StatusCode.UNAUTHENTICATED


ERROR_CLASSES: dict[grpc.StatusCode, type[OrchestratorError]] = {
    cls.status: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def error_from_status(status: grpc.StatusCode, details: str, method: str | None = None) -> OrchestratorError:
    cls = ERROR_CLASSES.get(status, OrchestratorError)
    return cls(details, status=status, method=method)


def from_rpc_error(error: grpc.RpcError, method: str | None = None) -> OrchestratorError:
    """Map a failed call (a `grpc.RpcError`, which is also a `grpc.Call`) to its typed exception."""
    # A bare RpcError (not raised by a call) carries no status: treat it as UNKNOWN.
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else None
    return error_from_status(code or grpc.StatusCode.UNKNOWN, details or str(error), method)
