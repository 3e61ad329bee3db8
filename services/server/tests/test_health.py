"""Health and metrics endpoints of the server, against a real database and a real gRPC server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime

import grpc
import pytest
from backend_common.db import make_engine, make_session_factory, session_scope
from backend_common.db.replica import Organization
from backend_common.protos import info_pb2, info_pb2_grpc
from backend_common.settings import DatabaseSettings, OrchestratorSettings, OrganizationSettings
from backend_migrations import schema
from backend_server.app import create_app
from backend_server.settings import ServerSettings
from starlette.testclient import TestClient


class InfoServicer(info_pb2_grpc.InfoServiceServicer):
    def QueryVersion(
        self, request: info_pb2.QueryVersionParam, context: grpc.ServicerContext
    ) -> info_pb2.QueryVersionResponse:
        return info_pb2.QueryVersionResponse(orchestrator="1.0.0")


@pytest.fixture
def orchestrator_port() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    info_pb2_grpc.add_InfoServiceServicer_to_server(InfoServicer(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None)


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    schema.upgrade(empty_database_url)
    return empty_database_url


def settings(
    database_url: str, orchestrator_port: int, *, isolated: bool = False, channels: str = ""
) -> ServerSettings:
    return ServerSettings(
        organization=OrganizationSettings(
            MSP_ID="MyOrg1MSP", ISOLATED=isolated, CHANNELS=channels or '[{"mychannel": {}}]'
        ),
        orchestrator=OrchestratorSettings(ORCHESTRATOR_PORT=orchestrator_port, ORCHESTRATOR_MAX_ATTEMPTS=1),
        database=DatabaseSettings(DATABASE_URL=database_url),
    )


def register(database_url: str, *organizations: tuple[str, str]) -> None:
    engine = make_engine(database_url, pool_size=1)
    with session_scope(make_session_factory(engine)) as session:
        for msp_id, channel in organizations:
            session.add(Organization(id=msp_id, channel=channel, address="", creation_date=datetime.now(UTC)))
    engine.dispose()


def test_liveness_answers_ok(database_url: str, orchestrator_port: int) -> None:
    with TestClient(create_app(settings(database_url, orchestrator_port))) as client:
        response = client.get("/liveness")
    assert response.status_code == 200
    assert response.text == "OK"


def test_readiness_needs_the_organization_registered(database_url: str, orchestrator_port: int) -> None:
    with TestClient(create_app(settings(database_url, orchestrator_port))) as client:
        not_ready = client.get("/readiness")
        register(database_url, ("MyOrg1MSP", "mychannel"))
        ready = client.get("/readiness")
    assert not_ready.status_code == 503
    assert "not registered in channel mychannel" in not_ready.text
    assert ready.status_code == 200
    assert ready.text == "OK"


def test_readiness_fails_when_the_orchestrator_is_unreachable(database_url: str) -> None:
    register(database_url, ("MyOrg1MSP", "mychannel"))
    with TestClient(create_app(settings(database_url, orchestrator_port=1))) as client:
        response = client.get("/readiness")
    assert response.status_code == 503
    assert "orchestrator unreachable on channel mychannel" in response.text


def test_isolated_mode_skips_the_orchestrator(database_url: str) -> None:
    register(database_url, ("MyOrg1MSP", "mychannel"))
    with TestClient(create_app(settings(database_url, orchestrator_port=1, isolated=True))) as client:
        assert client.get("/readiness").status_code == 200


def test_restricted_channel_with_two_organizations_is_not_ready(
    database_url: str, orchestrator_port: int
) -> None:
    register(database_url, ("MyOrg1MSP", "solo-a"), ("MyOrg2MSP", "solo-a"))
    with TestClient(
        create_app(settings(database_url, orchestrator_port, channels='[{"solo-a": {}}]'))
    ) as client:
        response = client.get("/readiness")
    assert response.status_code == 503
    assert "restricted to one organization" in response.text


def test_readiness_fails_without_database(orchestrator_port: int) -> None:
    unreachable = "postgresql+psycopg2://postgres@127.0.0.1:1/none"
    with TestClient(create_app(settings(unreachable, orchestrator_port))) as client:
        response = client.get("/readiness")
    assert response.status_code == 503
    assert "database unreachable" in response.text


def test_metrics_count_requests_by_route_and_status(database_url: str, orchestrator_port: int) -> None:
    with TestClient(create_app(settings(database_url, orchestrator_port))) as client:
        client.get("/liveness")
        client.get("/no-such-route")
        body = client.get("/metrics").text
    assert 'substra_http_requests_total{method="GET",route="/liveness",status="200"}' in body
    assert 'route="<unmatched>",status="404"' in body
    assert "substra_http_request_duration_seconds_bucket" in body
