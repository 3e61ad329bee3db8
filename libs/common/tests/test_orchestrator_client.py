"""OrchestratorClient against a real gRPC server started in the test (127.0.0.1, ephemeral port).

The servicers below implement a few services with just enough behaviour (offset page tokens, an
event log, scripted failures) to observe what the client sends and how it reacts.
"""

from __future__ import annotations

import datetime
import ipaddress
import pickle
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from backend_common.orchestrator import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OrchestratorClient,
    OrchestratorError,
    PermissionDeniedError,
    UnavailableError,
    UnknownError,
    backoff_delay,
    from_rpc_error,
    paginate,
)
from backend_common.protos import (
    common_pb2,
    computetask_pb2,
    computetask_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    function_pb2,
    function_pb2_grpc,
    info_pb2,
    info_pb2_grpc,
    organization_pb2,
    organization_pb2_grpc,
)
from backend_common.settings import OrchestratorSettings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MSP_ID = "MyOrg1MSP"
CHANNEL = "mychannel"
VERSION = "1.0.0-test"


# --- a small orchestrator ---------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    metadata: dict[str, str]
    request: Any


@dataclass
class State:
    """What the servicers saw, and the failures they must answer with next."""

    calls: list[Call] = field(default_factory=list)
    failures: dict[str, list[tuple[grpc.StatusCode, str]]] = field(default_factory=dict)
    tasks: list[computetask_pb2.ComputeTask] = field(default_factory=list)
    functions: list[function_pb2.Function] = field(default_factory=list)
    events: list[event_pb2.Event] = field(default_factory=list)
    # Set by the test teardown: handlers blocking on it return.
    release: threading.Event = field(default_factory=threading.Event)
    stream_cancelled: threading.Event = field(default_factory=threading.Event)

    def enter(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        metadata = {
            key: value if isinstance(value, str) else value.decode()
            for key, value in context.invocation_metadata()
        }
        self.calls.append(Call(method, metadata, request))
        queued = self.failures.get(method)
        if queued:
            code, details = queued.pop(0)
            context.abort(code, details)

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def fail(self, method: str, code: grpc.StatusCode, details: str, times: int = 1) -> None:
        self.failures.setdefault(method, []).extend([(code, details)] * times)


def page(items: list[Any], token: str, size: int) -> tuple[list[Any], str]:
    # The orchestrator's pagination: the token is the decimal offset, size 0 means 50.
    offset = int(token or "0")
    size = size or 50
    chunk = items[offset : offset + size]
    more = offset + size < len(items)
    return chunk, str(offset + len(chunk)) if more else ""


class Info(info_pb2_grpc.InfoServiceServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def QueryVersion(
        self, request: info_pb2.QueryVersionParam, context: grpc.ServicerContext
    ) -> info_pb2.QueryVersionResponse:
        self.state.enter("QueryVersion", request, context)
        return info_pb2.QueryVersionResponse(orchestrator=VERSION)


class Organizations(organization_pb2_grpc.OrganizationServiceServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def RegisterOrganization(
        self, request: organization_pb2.RegisterOrganizationParam, context: grpc.ServicerContext
    ) -> organization_pb2.Organization:
        self.state.enter("RegisterOrganization", request, context)
        return organization_pb2.Organization(
            id=self.state.calls[-1].metadata["mspid"], address=request.address
        )


class Functions(function_pb2_grpc.FunctionServiceServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def QueryFunctions(
        self, request: function_pb2.QueryFunctionsParam, context: grpc.ServicerContext
    ) -> function_pb2.QueryFunctionsResponse:
        self.state.enter("QueryFunctions", request, context)
        items, token = page(self.state.functions, request.page_token, request.page_size)
        return function_pb2.QueryFunctionsResponse(Functions=items, next_page_token=token)


class Tasks(computetask_pb2_grpc.ComputeTaskServiceServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def QueryTasks(
        self, request: computetask_pb2.QueryTasksParam, context: grpc.ServicerContext
    ) -> computetask_pb2.QueryTasksResponse:
        self.state.enter("QueryTasks", request, context)
        matching = [
            task
            for task in self.state.tasks
            if not request.filter.compute_plan_key or task.compute_plan_key == request.filter.compute_plan_key
        ]
        items, token = page(matching, request.page_token, request.page_size)
        return computetask_pb2.QueryTasksResponse(tasks=items, next_page_token=token)

    def GetTask(
        self, request: computetask_pb2.GetTaskParam, context: grpc.ServicerContext
    ) -> computetask_pb2.ComputeTask:
        self.state.enter("GetTask", request, context)
        for task in self.state.tasks:
            if task.key == request.key:
                return task
        context.abort(grpc.StatusCode.NOT_FOUND, f"OE0002: compute task {request.key} not found")

    def ApplyTaskAction(
        self, request: computetask_pb2.ApplyTaskActionParam, context: grpc.ServicerContext
    ) -> computetask_pb2.ApplyTaskActionResponse:
        self.state.enter("ApplyTaskAction", request, context)
        if self.state.release.wait(timeout=float(request.log or "0")):
            context.abort(grpc.StatusCode.CANCELLED, "test over")
        return computetask_pb2.ApplyTaskActionResponse()


class Events(event_pb2_grpc.EventServiceServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def SubscribeToEvents(
        self, request: event_pb2.SubscribeToEventsParam, context: grpc.ServicerContext
    ) -> Iterator[event_pb2.Event]:
        self.state.enter("SubscribeToEvents", request, context)
        ids = [event.id for event in self.state.events]
        if request.start_event_id and request.start_event_id not in ids:
            context.abort(grpc.StatusCode.UNKNOWN, f"event {request.start_event_id} not found")
        start = ids.index(request.start_event_id) + 1 if request.start_event_id else 0
        live = request.start_event_id == "live"
        if live:
            # Runs when the RPC ends; before teardown only the client can end a live stream. (The
            # handler may never resume after a yield once the client cancels, so no check after it.)
            context.add_callback(self.state.stream_cancelled.set)
        yield from self.state.events[start:]
        if live:
            # Like the real stream, never complete: wait for the client to go away.
            while context.is_active() and not self.state.release.wait(timeout=0.05):
                pass


def start_server(state: State, credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    # The servicers implement only the RPCs under test (mypy-protobuf marks every RPC abstract); the
    # generated base class answers UNIMPLEMENTED for the others.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    info_pb2_grpc.add_InfoServiceServicer_to_server(Info(state), server)
    organization_pb2_grpc.add_OrganizationServiceServicer_to_server(Organizations(state), server)  # type: ignore[abstract]
    function_pb2_grpc.add_FunctionServiceServicer_to_server(Functions(state), server)  # type: ignore[abstract]
    computetask_pb2_grpc.add_ComputeTaskServiceServicer_to_server(Tasks(state), server)  # type: ignore[abstract]
    event_pb2_grpc.add_EventServiceServicer_to_server(Events(state), server)  # type: ignore[abstract]
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def settings_for(port: int, **overrides: Any) -> OrchestratorSettings:
    # Every field explicit, so ORCHESTRATOR_* variables of the environment cannot change the test.
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "tls_enabled": False,
        "mtls_enabled": False,
        "tls_server_cacert_path": None,
        "tls_client_cert_path": None,
        "tls_client_key_path": None,
        "max_attempts": 3,
        "retry_initial_delay_seconds": 0.01,
        "retry_max_delay_seconds": 0.05,
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return OrchestratorSettings(**values)


@dataclass
class Harness:
    state: State
    port: int
    sleeps: list[float]

    def client(self, **overrides: Any) -> OrchestratorClient:
        return OrchestratorClient(
            settings_for(self.port, **overrides), msp_id=MSP_ID, channel=CHANNEL, sleep=self.sleeps.append
        )


@pytest.fixture
def harness() -> Iterator[Harness]:
    state = State()
    server, port = start_server(state)
    yield Harness(state, port, [])
    state.release.set()
    server.stop(None)


@pytest.fixture
def client(harness: Harness) -> Iterator[OrchestratorClient]:
    with harness.client() as client:
        yield client


# --- metadata ---------------------------------------------------------------------------------------


def test_every_call_sends_mspid_channel_and_a_request_id(
    harness: Harness, client: OrchestratorClient
) -> None:
    assert client.query_version() == VERSION
    assert client.query_version() == VERSION
    first, second = harness.state.calls_to("QueryVersion")
    assert first.metadata["mspid"] == MSP_ID
    assert first.metadata["channel"] == CHANNEL
    assert len(first.metadata["reqid"]) == 8
    assert first.metadata["reqid"] != second.metadata["reqid"]


def test_the_server_identifies_the_caller_by_mspid(harness: Harness) -> None:
    with OrchestratorClient(settings_for(harness.port), msp_id="MyOrg2MSP", channel="yourchannel") as client:
        organization = client.register_organization("http://backend-org-2")
    assert organization.id == "MyOrg2MSP"
    assert organization.address == "http://backend-org-2"
    (call,) = harness.state.calls_to("RegisterOrganization")
    assert call.metadata["channel"] == "yourchannel"


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "details", "expected", "oe_code"),
    [
        (grpc.StatusCode.NOT_FOUND, "OE0002: compute task 42 not found", NotFoundError, "OE0002"),
        (grpc.StatusCode.ALREADY_EXISTS, "OE0006: organization already exists", AlreadyExistsError, "OE0006"),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "OE0101: invalid asset: name: cannot be blank",
            InvalidArgumentError,
            "OE0101",
        ),
        (grpc.StatusCode.FAILED_PRECONDITION, "OE0003: missing mspid", FailedPreconditionError, "OE0003"),
        (grpc.StatusCode.PERMISSION_DENIED, "OE0102: not authorized", PermissionDeniedError, "OE0102"),
        (grpc.StatusCode.INTERNAL, "OE0007: internal error", InternalError, "OE0007"),
        (grpc.StatusCode.UNKNOWN, "OE0109: compute plan already terminated", UnknownError, "OE0109"),
        (
            grpc.StatusCode.UNKNOWN,
            "event transitionDone inappropriate in current state STATUS_WAITING_FOR_PARENT_TASKS",
            UnknownError,
            None,
        ),
    ],
)
def test_errors_map_to_typed_exceptions_and_are_not_retried(
    harness: Harness,
    client: OrchestratorClient,
    status: grpc.StatusCode,
    details: str,
    expected: type[OrchestratorError],
    oe_code: str | None,
) -> None:
    harness.state.fail("ApplyTaskAction", status, details)
    with pytest.raises(expected) as raised:
        client.apply_task_action("42", computetask_pb2.TASK_ACTION_DONE)
    error = raised.value
    assert error.status == status
    assert error.details == details
    assert error.oe_code == oe_code
    assert error.method == "ApplyTaskAction"
    assert details in str(error)
    assert len(harness.state.calls_to("ApplyTaskAction")) == 1
    assert harness.sleeps == []


def test_not_found_from_a_real_handler(harness: Harness, client: OrchestratorClient) -> None:
    with pytest.raises(NotFoundError) as raised:
        client.get_task("missing")
    assert raised.value.oe_code == "OE0002"


def test_errors_survive_pickling() -> None:
    # Celery ships exceptions between processes.
    error = AlreadyExistsError(
        "OE0006: exists", status=grpc.StatusCode.ALREADY_EXISTS, method="RegisterTasks"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is AlreadyExistsError
    assert (copy.status, copy.details, copy.oe_code, copy.method) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "OE0006: exists",
        "OE0006",
        "RegisterTasks",
    )


def test_a_bare_rpc_error_maps_to_unknown() -> None:
    error = from_rpc_error(grpc.RpcError("boom"))
    assert isinstance(error, UnknownError)
    assert error.details == "boom"


# --- retries ----------------------------------------------------------------------------------------


def test_unavailable_is_retried_with_backoff_then_succeeds(
    harness: Harness, client: OrchestratorClient
) -> None:
    harness.state.fail(
        "RegisterOrganization", grpc.StatusCode.UNAVAILABLE, "orchestrator restarting", times=2
    )
    organization = client.register_organization("http://backend")
    assert organization.id == MSP_ID
    calls = harness.state.calls_to("RegisterOrganization")
    assert len(calls) == 3
    # One request id for the whole logical call, so the attempts can be correlated.
    assert len({call.metadata["reqid"] for call in calls}) == 1
    assert len(harness.sleeps) == 2
    assert 0.005 <= harness.sleeps[0] <= 0.01
    assert 0.01 <= harness.sleeps[1] <= 0.02


def test_unavailable_gives_up_after_max_attempts(harness: Harness, client: OrchestratorClient) -> None:
    harness.state.fail("RegisterOrganization", grpc.StatusCode.UNAVAILABLE, "still down", times=10)
    with pytest.raises(UnavailableError) as raised:
        client.register_organization("http://backend")
    assert raised.value.details == "still down"
    assert len(harness.state.calls_to("RegisterOrganization")) == 3
    assert len(harness.sleeps) == 2


def test_an_unreachable_orchestrator_is_unavailable() -> None:
    # A port nobody listens on: the connection is refused, gRPC reports UNAVAILABLE.
    server, port = start_server(State())
    server.stop(None)
    sleeps: list[float] = []
    with (
        OrchestratorClient(
            settings_for(port, max_attempts=2), msp_id=MSP_ID, channel=CHANNEL, sleep=sleeps.append
        ) as client,
        pytest.raises(UnavailableError),
    ):
        client.query_version()
    assert len(sleeps) == 1


def test_each_call_has_a_deadline_and_a_timeout_is_not_retried(harness: Harness) -> None:
    with harness.client(timeout_seconds=0.2) as client, pytest.raises(DeadlineExceededError):
        # The test servicer blocks for `log` seconds.
        client.apply_task_action("42", computetask_pb2.TASK_ACTION_DONE, log="5")
    assert len(harness.state.calls_to("ApplyTaskAction")) == 1
    assert harness.sleeps == []


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    def highest(low: float, high: float) -> float:
        return high

    def lowest(low: float, high: float) -> float:
        return low

    assert [backoff_delay(attempt, 0.2, 1.0, highest) for attempt in (1, 2, 3, 4, 5)] == [
        0.2,
        0.4,
        0.8,
        1.0,
        1.0,
    ]
    assert [backoff_delay(attempt, 0.2, 1.0, lowest) for attempt in (1, 2, 3)] == [0.1, 0.2, 0.4]
    delays = {backoff_delay(3, 0.2, 1.0) for _ in range(20)}
    assert all(0.4 <= delay <= 0.8 for delay in delays)
    assert len(delays) > 1


# --- pagination -------------------------------------------------------------------------------------


def test_iter_tasks_follows_page_tokens(harness: Harness, client: OrchestratorClient) -> None:
    harness.state.tasks = [
        computetask_pb2.ComputeTask(key=f"task-{index}", compute_plan_key="plan-a" if index % 2 else "plan-b")
        for index in range(15)
    ]
    task_filter = computetask_pb2.TaskQueryFilter(compute_plan_key="plan-a")
    keys = [task.key for task in client.iter_tasks(task_filter, page_size=3)]
    assert keys == [f"task-{index}" for index in range(1, 15, 2)]
    calls = harness.state.calls_to("QueryTasks")
    assert [call.request.page_token for call in calls] == ["", "3", "6"]
    assert {call.request.page_size for call in calls} == {3}
    assert {call.request.filter.compute_plan_key for call in calls} == {"plan-a"}


def test_query_tasks_returns_one_page_and_its_token(harness: Harness, client: OrchestratorClient) -> None:
    harness.state.tasks = [computetask_pb2.ComputeTask(key=f"task-{index}") for index in range(5)]
    response = client.query_tasks(page_size=2, page_token="2")
    assert [task.key for task in response.tasks] == ["task-2", "task-3"]
    assert response.next_page_token == "4"


def test_iter_functions_reads_the_capitalised_field(harness: Harness, client: OrchestratorClient) -> None:
    harness.state.functions = [function_pb2.Function(key=f"function-{index}") for index in range(4)]
    assert [function.key for function in client.iter_functions(page_size=2)] == [
        "function-0",
        "function-1",
        "function-2",
        "function-3",
    ]
    assert len(harness.state.calls_to("QueryFunctions")) == 2


def test_an_error_on_a_later_page_is_raised(harness: Harness, client: OrchestratorClient) -> None:
    harness.state.tasks = [computetask_pb2.ComputeTask(key=f"task-{index}") for index in range(4)]
    tasks = client.iter_tasks(page_size=2)
    assert next(tasks).key == "task-0"
    assert next(tasks).key == "task-1"
    harness.state.fail("QueryTasks", grpc.StatusCode.UNKNOWN, "invalid page token")
    with pytest.raises(UnknownError):
        next(tasks)


def test_paginate_stops_on_a_repeated_token() -> None:
    pages = {"": (["a"], "1"), "1": (["b"], "1")}
    items = paginate(lambda token: pages[token])
    assert next(items) == "a"
    assert next(items) == "b"
    with pytest.raises(InternalError, match="returned again"):
        next(items)


# --- event stream -----------------------------------------------------------------------------------


def _events(*ids: str) -> list[event_pb2.Event]:
    return [
        event_pb2.Event(
            id=event_id,
            asset_key=f"asset-{event_id}",
            asset_kind=common_pb2.ASSET_ORGANIZATION,
            event_kind=event_pb2.EVENT_ASSET_CREATED,
            channel=CHANNEL,
            organization=organization_pb2.Organization(id=MSP_ID),
        )
        for event_id in ids
    ]


def test_subscribe_to_events_consumes_the_stream(harness: Harness, client: OrchestratorClient) -> None:
    harness.state.events = _events("e1", "e2", "e3")
    events = list(client.subscribe_to_events())
    assert [event.id for event in events] == ["e1", "e2", "e3"]
    assert events[0].WhichOneof("asset") == "organization"
    assert [event.id for event in client.subscribe_to_events("e1")] == ["e2", "e3"]
    first, _ = harness.state.calls_to("SubscribeToEvents")
    assert first.metadata["mspid"] == MSP_ID
    assert first.metadata["channel"] == CHANNEL
    assert first.request.start_event_id == ""


def test_a_stream_error_is_typed(harness: Harness, client: OrchestratorClient) -> None:
    harness.state.events = _events("e1")
    with pytest.raises(UnknownError) as raised:
        list(client.subscribe_to_events("nope"))
    assert "nope" in raised.value.details
    assert raised.value.method == "SubscribeToEvents"


def test_closing_the_event_iterator_cancels_the_stream(harness: Harness, client: OrchestratorClient) -> None:
    harness.state.events = [*_events("e1", "live"), *_events("e2", "e3")]
    stream = client.subscribe_to_events("live")
    assert next(stream).id == "e2"
    assert next(stream).id == "e3"
    stream.close()
    assert harness.state.stream_cancelled.wait(timeout=5)


# --- lifecycle --------------------------------------------------------------------------------------


def test_close_releases_the_channel(harness: Harness) -> None:
    with harness.client() as client:
        assert client.query_version() == VERSION
    # grpc refuses calls on a closed channel.
    with pytest.raises(ValueError, match="closed channel"):
        client.query_version()


# --- TLS --------------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: bytes
    server_key: bytes
    client_cert: Path
    client_key: Path


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("test orchestrator CA")
    ca_cert = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(
        _name("orchestrator"),
        server_key,
        ca_name,
        ca_key,
        san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue(_name("backend", MSP_ID), client_key, ca_name, ca_key)
    paths = {
        "ca.pem": ca_cert.public_bytes(serialization.Encoding.PEM),
        "client.pem": client_cert.public_bytes(serialization.Encoding.PEM),
        "client.key": _pem_key(client_key),
    }
    for name, content in paths.items():
        (directory / name).write_bytes(content)
    return Pki(
        ca=directory / "ca.pem",
        server_cert=server_cert.public_bytes(serialization.Encoding.PEM),
        server_key=_pem_key(server_key),
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[tuple[State, int]]:
    state = State()
    credentials = grpc.ssl_server_credentials([(pki.server_key, pki.server_cert)])
    server, port = start_server(state, credentials)
    yield state, port
    server.stop(None)


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[tuple[State, int]]:
    state = State()
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key, pki.server_cert)], root_certificates=pki.ca.read_bytes(), require_client_auth=True
    )
    server, port = start_server(state, credentials)
    yield state, port
    server.stop(None)


def _quick_client(port: int, **overrides: Any) -> OrchestratorClient:
    return OrchestratorClient(
        settings_for(port, max_attempts=1, timeout_seconds=5.0, **overrides),
        msp_id=MSP_ID,
        channel=CHANNEL,
        sleep=lambda _: None,
    )


def test_tls_with_the_server_ca(pki: Pki, tls_server: tuple[State, int]) -> None:
    state, port = tls_server
    with _quick_client(port, tls_enabled=True, tls_server_cacert_path=str(pki.ca)) as client:
        assert client.query_version() == VERSION
    assert state.calls_to("QueryVersion")[0].metadata["mspid"] == MSP_ID


def test_an_insecure_client_cannot_talk_to_a_tls_server(tls_server: tuple[State, int]) -> None:
    state, port = tls_server
    with _quick_client(port) as client, pytest.raises(UnavailableError):
        client.query_version()
    assert state.calls == []


def test_mutual_tls_with_a_client_certificate(pki: Pki, mtls_server: tuple[State, int]) -> None:
    state, port = mtls_server
    with _quick_client(
        port,
        tls_enabled=True,
        mtls_enabled=True,
        tls_server_cacert_path=str(pki.ca),
        tls_client_cert_path=str(pki.client_cert),
        tls_client_key_path=str(pki.client_key),
    ) as client:
        assert client.query_version() == VERSION
    assert len(state.calls_to("QueryVersion")) == 1


def test_a_server_requiring_client_certificates_refuses_a_client_without_one(
    pki: Pki, mtls_server: tuple[State, int]
) -> None:
    state, port = mtls_server
    with (
        _quick_client(port, tls_enabled=True, tls_server_cacert_path=str(pki.ca)) as client,
        pytest.raises(UnavailableError),
    ):
        client.query_version()
    assert state.calls == []


def test_mutual_tls_needs_the_client_key_and_certificate(pki: Pki) -> None:
    with pytest.raises(ValueError, match="ORCHESTRATOR_TLS_CLIENT_KEY_PATH"):
        _quick_client(1, tls_enabled=True, mtls_enabled=True, tls_server_cacert_path=str(pki.ca))


def test_mutual_tls_alone_implies_tls(pki: Pki, mtls_server: tuple[State, int]) -> None:
    _, port = mtls_server
    with _quick_client(
        port,
        mtls_enabled=True,
        tls_server_cacert_path=str(pki.ca),
        tls_client_cert_path=str(pki.client_cert),
        tls_client_key_path=str(pki.client_key),
    ) as client:
        assert client.query_version() == VERSION
