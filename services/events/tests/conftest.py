"""Fixtures of the events tests: a real orchestrator process, a migrated backend database, Redis.

Redis databases 6 (broker) and 7 (results) belong to these tests: they are flushed before and after
each test that uses them, and nothing else is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from backend_common.db import make_engine, make_session_factory
from backend_events.testing import (
    BROKER_DATABASE,
    ORG_NAME,
    RESULT_DATABASE,
    EventsProcess,
    Network,
    OrchestratorProcess,
    events_environment,
)
from backend_migrations import schema
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

BROKER_URL = f"redis://127.0.0.1:6379/{BROKER_DATABASE}"


@pytest.fixture
def redis_databases() -> Iterator[tuple[int, int]]:
    clients = [redis.Redis(host="127.0.0.1", port=6379, db=db) for db in (BROKER_DATABASE, RESULT_DATABASE)]
    for client in clients:
        client.flushdb()
    yield BROKER_DATABASE, RESULT_DATABASE
    for client in clients:
        client.flushdb()
        client.close()


@pytest.fixture
def backend_database(make_database: Callable[[], str]) -> str:
    url = make_database()
    schema.upgrade(url)
    return url


@pytest.fixture
def engine(backend_database: str) -> Iterator[Engine]:
    engine = make_engine(backend_database, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def orchestrator(make_database: Callable[[], str], tmp_path: Path) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(make_database(), tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def network(orchestrator: OrchestratorProcess, redis_databases: tuple[int, int]) -> Iterator[Network]:
    network = Network(orchestrator.port, BROKER_URL, ORG_NAME)
    network.register_peers()
    yield network
    network.close()


@pytest.fixture
def make_events(
    orchestrator: OrchestratorProcess, backend_database: str, redis_databases: tuple[int, int], tmp_path: Path
) -> Iterator[Callable[..., EventsProcess]]:
    """Creates `backend-events consume` processes (not started); all are stopped after the test."""
    made: list[EventsProcess] = []

    def make(metrics_port: int | None = None, **extra: str) -> EventsProcess:
        environment = events_environment(
            metrics_port=metrics_port,
            orchestrator_port=orchestrator.port,
            database_url=backend_database,
            org_name=ORG_NAME,
            broker_database=redis_databases[0],
            result_database=redis_databases[1],
            readiness_file=tmp_path / "ready",
            **extra,
        )
        process = EventsProcess(environment, tmp_path)
        made.append(process)
        return process

    yield make
    for process in made:
        process.kill()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        # The processes' logs, to tell what the orchestrator and the consumer were doing.
        tmp = getattr(item, "funcargs", {}).get("tmp_path")
        if isinstance(tmp, Path):
            for name in ("events.log", "orchestrator.log", "worker.out"):
                log = tmp / name
                if log.exists():
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
                    report.sections.append((f"{name} (last lines)", tail))
    return report
