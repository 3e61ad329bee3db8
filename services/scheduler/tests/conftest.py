"""Fixtures of the scheduler tests: a migrated backend database, Redis, a real orchestrator.

Redis databases 12 (broker) and 13 (results) belong to these tests: flushed before and after each
test that uses them. The orchestrator (`orchestrator serve`, its own database) is shared by the
session's tests, which use fresh keys; the backend replica is filled by applying the orchestrator's
events, as the events service does, but without its dispatch decisions: the tests decide which
tasks were dispatched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from backend_common.db import make_engine, make_session_factory
from backend_common.orchestrator import OrchestratorClient
from backend_common.testing.postgres import DatabaseFactory
from backend_events.testing import OrchestratorProcess
from backend_migrations import schema
from backend_scheduler.context import SchedulerContext
from backend_scheduler.testing import (
    BROKER_DATABASE,
    CHANNEL,
    ORG,
    PEER,
    RESULT_DATABASE,
    Channel,
    orchestrator_settings,
    scheduler_settings,
)
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker


@pytest.fixture
def redis_databases() -> Iterator[redis.Redis]:
    clients = [redis.Redis(host="127.0.0.1", port=6379, db=db) for db in (BROKER_DATABASE, RESULT_DATABASE)]
    for client in clients:
        client.flushdb()
    yield clients[0]
    for client in clients:
        client.flushdb()
        client.close()


@pytest.fixture
def backend_database(empty_database_url: str) -> str:
    schema.upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def engine(backend_database: str) -> Iterator[Engine]:
    engine = make_engine(backend_database, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture(scope="session")
def orchestrator(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    database_url = database_factory.create("orchestrator")
    process = OrchestratorProcess(database_url, tmp_path_factory.mktemp("orchestrator"))
    process.start()
    for organization in (ORG, PEER):
        with OrchestratorClient(orchestrator_settings(process.port), organization, CHANNEL) as client:
            client.register_organization(f"http://{organization.lower()}.example")
    yield process
    process.stop()
    database_factory.drop(database_url)


@pytest.fixture
def make_context(
    backend_database: str, orchestrator: OrchestratorProcess
) -> Iterator[Callable[..., SchedulerContext]]:
    made: list[SchedulerContext] = []

    def make(**jobs: object) -> SchedulerContext:
        context = SchedulerContext.from_settings(
            scheduler_settings(backend_database, orchestrator.port, **jobs)
        )
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


@pytest.fixture
def channel(orchestrator: OrchestratorProcess, sessions: sessionmaker[Session]) -> Iterator[Channel]:
    client = OrchestratorClient(orchestrator_settings(orchestrator.port), ORG, CHANNEL)
    peer = OrchestratorClient(orchestrator_settings(orchestrator.port), PEER, CHANNEL)
    yield Channel(orchestrator=client, peer=peer, sessions=sessions)
    client.close()
    peer.close()
