"""Organization registration against a real gRPC server that behaves like the orchestrator."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from backend_common.orchestrator import OrchestratorClient, UnavailableError
from backend_common.protos import organization_pb2, organization_pb2_grpc
from backend_common.settings import OrchestratorSettings
from backend_events.registration import register_organization
from google.protobuf.timestamp_pb2 import Timestamp


class OrganizationRegistry(organization_pb2_grpc.OrganizationServiceServicer):
    """Registers (mspid, channel) pairs once, answering ALREADY_EXISTS afterwards, like the orchestrator."""

    def __init__(self, failures_before_success: int = 0) -> None:
        self.registered: dict[tuple[str, str], str] = {}
        self.failures_left = failures_before_success
        self.calls = 0
        self.lock = threading.Lock()

    def RegisterOrganization(
        self, request: organization_pb2.RegisterOrganizationParam, context: grpc.ServicerContext
    ) -> organization_pb2.Organization:
        metadata = dict(context.invocation_metadata())
        with self.lock:
            self.calls += 1
            if self.failures_left > 0:
                self.failures_left -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "starting up")
            key = (str(metadata["mspid"]), str(metadata["channel"]))
            if key in self.registered:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"OE0006: organization {key[0]} already exists")
            self.registered[key] = request.address
        created = Timestamp()
        created.GetCurrentTime()
        return organization_pb2.Organization(id=key[0], address=request.address, creation_date=created)


@pytest.fixture
def registry() -> Iterator[tuple[OrganizationRegistry, int]]:
    servicer = OrganizationRegistry(failures_before_success=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    organization_pb2_grpc.add_OrganizationServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None)


def client(port: int, channel: str) -> OrchestratorClient:
    # One attempt per call: the registration loop owns the retries.
    settings = OrchestratorSettings(ORCHESTRATOR_PORT=port, ORCHESTRATOR_MAX_ATTEMPTS=1)
    return OrchestratorClient(settings, msp_id="MyOrg1MSP", channel=channel)


def test_registration_retries_until_the_orchestrator_answers_and_is_idempotent(
    registry: tuple[OrganizationRegistry, int],
) -> None:
    servicer, port = registry
    delays: list[float] = []
    with client(port, "mychannel") as orchestrator:
        created = register_organization(orchestrator, "http://127.0.0.1:8000", sleep=delays.append)
        again = register_organization(orchestrator, "http://127.0.0.1:8000", sleep=delays.append)

    assert created is True
    assert again is False
    assert len(delays) == 2 and all(delay > 0 for delay in delays)
    assert servicer.registered == {("MyOrg1MSP", "mychannel"): "http://127.0.0.1:8000"}


def test_registration_gives_up_after_its_deadline() -> None:
    with client(port=1, channel="mychannel") as orchestrator, pytest.raises(UnavailableError):
        register_organization(orchestrator, "", deadline_seconds=0.0, sleep=lambda _: None)


def test_console_entry_point_registers_in_every_channel(registry: tuple[OrganizationRegistry, int]) -> None:
    servicer, port = registry
    servicer.failures_left = 0
    environment = {
        **os.environ,
        "ORCHESTRATOR_PORT": str(port),
        "MSP_ID": "MyOrg1MSP",
        "CHANNELS": '[{"mychannel": {}}, {"yourchannel": {}}]',
        "DEFAULT_DOMAIN": "http://backend.example:8000",
    }
    executable = os.path.join(os.path.dirname(sys.executable), "backend-events")
    for _ in range(2):
        result = subprocess.run(
            [executable, "register", "--timeout", "10"],
            check=False,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    assert servicer.registered == {
        ("MyOrg1MSP", "mychannel"): "http://backend.example:8000",
        ("MyOrg1MSP", "yourchannel"): "http://backend.example:8000",
    }
