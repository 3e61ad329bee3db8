"""Orchestration errors: `OE0xxx` codes and their gRPC statuses (`orchestrator-grpc.md` 8.1).

Messages read `"<code>: <message>"` because clients parse the code out of the text. Errors
without a code (state-machine errors, channel errors) come back as UNKNOWN, which the reference
backend retries: keep them code-less where the reference does.
"""

from __future__ import annotations

from enum import StrEnum

import grpc


class ErrorCode(StrEnum):
    BYTE_ARRAY = "OE0001"
    NOT_FOUND = "OE0002"
    BAD_REQUEST = "OE0003"
    CONFLICT = "OE0006"
    INTERNAL = "OE0007"
    UNIMPLEMENTED = "OE0010"
    INVALID_ASSET = "OE0101"
    PERMISSION_DENIED = "OE0102"
    INCOMPATIBLE_TASK_STATUS = "OE0104"
    CANNOT_DISABLE_MODEL = "OE0105"
    MISSING_TASK_OUTPUT = "OE0106"
    INCOMPATIBLE_KIND = "OE0107"
    CANNOT_DISABLE_OUTPUT = "OE0108"
    TERMINATED_COMPUTE_PLAN = "OE0109"
    TERMINATED_COMPUTE_TASK = "OE0110"


# OE0108, OE0109 and OE0110 are missing from the reference's mapping, hence UNKNOWN.
STATUS_BY_CODE: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.BYTE_ARRAY: grpc.StatusCode.UNKNOWN,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.BAD_REQUEST: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorCode.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.INVALID_ASSET: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.INCOMPATIBLE_TASK_STATUS: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.CANNOT_DISABLE_MODEL: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.MISSING_TASK_OUTPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INCOMPATIBLE_KIND: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.CANNOT_DISABLE_OUTPUT: grpc.StatusCode.UNKNOWN,
    ErrorCode.TERMINATED_COMPUTE_PLAN: grpc.StatusCode.UNKNOWN,
    ErrorCode.TERMINATED_COMPUTE_TASK: grpc.StatusCode.UNKNOWN,
}


class OrchestratorError(Exception):
    """A business error; `code` is None for the reference's code-less (UNKNOWN) errors."""

    def __init__(self, code: ErrorCode | None, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message

    @property
    def status(self) -> grpc.StatusCode:
        return STATUS_BY_CODE[self.code] if self.code else grpc.StatusCode.UNKNOWN


def not_found(kind: str, key: str) -> OrchestratorError:
    return OrchestratorError(ErrorCode.NOT_FOUND, f'{kind} with key "{key}" not found')


def conflict(kind: str, key: str, detail: str = "") -> OrchestratorError:
    suffix = f" {detail}" if detail else ""
    return OrchestratorError(ErrorCode.CONFLICT, f'{kind} with key "{key}" already exists{suffix}')


def bad_request(message: str) -> OrchestratorError:
    return OrchestratorError(ErrorCode.BAD_REQUEST, message)


def invalid_asset(message: str) -> OrchestratorError:
    return OrchestratorError(ErrorCode.INVALID_ASSET, message)


def validation_error(kind: str, detail: str) -> OrchestratorError:
    return OrchestratorError(ErrorCode.INVALID_ASSET, f"{kind} is not valid: {detail}")


def permission_denied(message: str) -> OrchestratorError:
    return OrchestratorError(ErrorCode.PERMISSION_DENIED, message)


def unimplemented(message: str) -> OrchestratorError:
    return OrchestratorError(ErrorCode.UNIMPLEMENTED, message)


def internal(message: str) -> OrchestratorError:
    return OrchestratorError(ErrorCode.INTERNAL, message)


def unknown(message: str) -> OrchestratorError:
    """A code-less error: UNKNOWN on the wire, retried by the reference backend."""
    return OrchestratorError(None, message)
