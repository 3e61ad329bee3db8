"""Orchestrator errors as the SDK expects them (rest-api 2.2, 2.3)."""

from __future__ import annotations

import grpc
import pytest
from backend_common.orchestrator import error_from_status
from backend_server.errors import orchestrator_http_status
from backend_server.orchestration import creation_error


@pytest.mark.parametrize(
    ("status", "http"),
    [
        (grpc.StatusCode.CANCELLED, 408),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
    ],
)
def test_grpc_statuses_map_to_the_reference_http_statuses(status: grpc.StatusCode, http: int) -> None:
    assert (
        orchestrator_http_status(error_from_status(status, "OE0003: invalid permission input values")) == http
    )


def test_message_too_large_is_413() -> None:
    error = error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "grpc: received message larger than max")
    assert orchestrator_http_status(error) == 413


def test_conflicts_and_timeouts_carry_the_keys() -> None:
    exists = error_from_status(grpc.StatusCode.ALREADY_EXISTS, "OE0006: already exists")
    plan = creation_error(exists, "k1")
    assert plan.status == 409 and plan.body == {"detail": "OE0006: already exists", "key": "k1"}
    samples = creation_error(exists, ["k1", "k2"], as_list=True)
    assert samples.status == 409 and samples.body == [{"key": "k1"}, {"key": "k2"}]
    timeout = creation_error(error_from_status(grpc.StatusCode.CANCELLED, "cancelled"), "k3")
    assert timeout.status == 408 and timeout.body == {"detail": "cancelled", "key": "k3"}
    passed = creation_error(error_from_status(grpc.StatusCode.FAILED_PRECONDITION, "OE0003: bad"), "k4")
    assert passed.status == 400 and passed.body == {"detail": "OE0003: bad"}
