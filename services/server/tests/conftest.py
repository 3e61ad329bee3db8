"""Fixtures of the server tests: migrated databases, a real orchestrator, servers on loopback.

* Server databases are cloned from a template migrated once per session (fast, isolated).
* The orchestrator is the standalone one, in-process, shared by the session (tests use fresh keys).
* The replica is filled through the events code path (`backend_common.replica.apply_events`) from
  the orchestrator's event log, as the events service does (`backend_server.testing.sync_replica`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_common.db.local import UserRole
from backend_common.testing.postgres import DatabaseFactory, server_url
from backend_common.testing.processes import free_port
from backend_migrations import schema
from backend_server.app import create_app
from backend_server.testing import (
    ORG1,
    ORG2,
    ORG_SECRETS,
    Backend,
    LiveServer,
    server_settings,
)
from sqlalchemy import NullPool, create_engine, text
from standalone_orchestrator.testing import Network, register_organizations, start_server
from starlette.testclient import TestClient

# --- databases ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_database(database_factory: DatabaseFactory) -> Iterator[str]:
    url = database_factory.create("server_template")
    schema.upgrade(url)
    yield url


class DatabasePool:
    """Migrated databases cloned from the template once, emptied (TRUNCATE) and reused between tests.

    Creating and dropping a database per test costs seconds on a busy machine; emptying one costs
    milliseconds.
    """

    def __init__(self, template_url: str) -> None:
        self._admin = create_engine(server_url(), isolation_level="AUTOCOMMIT", pool_size=1)
        self._template = template_url.rsplit("/", 1)[1]
        self._free: list[str] = []
        self._made: list[str] = []
        self._tables: str | None = None

    def take(self) -> str:
        if self._free:
            return self._free.pop()
        name = f"test_server_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"'))
        self._made.append(name)
        return server_url().set(database=name).render_as_string(hide_password=False)

    def give_back(self, url: str) -> None:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                if self._tables is None:
                    names = connection.scalars(
                        text(
                            "SELECT tablename FROM pg_tables "
                            "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                        )
                    )
                    self._tables = ", ".join(f'"{name}"' for name in names)
                connection.execute(text(f"TRUNCATE {self._tables} RESTART IDENTITY CASCADE"))
        finally:
            engine.dispose()
        self._free.append(url)

    def close(self) -> None:
        with self._admin.connect() as connection:
            for name in self._made:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture(scope="session")
def database_pool(template_database: str) -> Iterator[DatabasePool]:
    pool = DatabasePool(template_database)
    yield pool
    pool.close()


@pytest.fixture
def clone_database(database_pool: DatabasePool) -> Iterator[Callable[[], str]]:
    """Empty migrated databases for one test."""
    taken: list[str] = []

    def take() -> str:
        taken.append(database_pool.take())
        return taken[-1]

    yield take
    for url in taken:
        database_pool.give_back(url)


@pytest.fixture
def database_url(clone_database: Callable[[], str]) -> str:
    return clone_database()


# --- orchestrator ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def network(database_factory: DatabaseFactory) -> Iterator[Network]:
    url = database_factory.create("server_orchestrator")
    server = start_server(url)
    net = Network(server)
    try:
        register_organizations(net)
        yield net
    finally:
        net.close()
        server.stop(grace=0)
        database_factory.drop(url)


# --- servers ---


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    (tmp_path / "servermedias").mkdir()
    return tmp_path


def _backend(database_url: str, media_root: Path, orchestrator_port: int) -> Iterator[Backend]:
    settings = server_settings(database_url, orchestrator_port=orchestrator_port, media_root=media_root)
    backend = Backend(settings=settings, database_url=database_url)
    backend.add_user("admin", role=UserRole.ADMIN)
    backend.add_organizations({ORG1: ORG_SECRETS[ORG1], ORG2: ORG_SECRETS[ORG2]})
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        backend.client = client
        yield backend


@pytest.fixture
def backend(database_url: str, media_root: Path) -> Iterator[Backend]:
    """ORG1's server as an in-process ASGI app (no orchestrator: reads only), with an admin user."""
    yield from _backend(database_url, media_root, orchestrator_port=free_port())


@pytest.fixture
def orchestrated(database_url: str, media_root: Path, network: Network) -> Iterator[Backend]:
    """ORG1's server as an in-process ASGI app, writing through the standalone orchestrator."""
    yield from _backend(database_url, media_root, orchestrator_port=network.server.port)


@pytest.fixture
def live_backends(
    clone_database: Callable[[], str], tmp_path: Path, network: Network
) -> Iterator[Callable[..., Backend]]:
    """Start organizations' servers on loopback, each with its own database and storage."""
    servers: list[LiveServer] = []

    def start(msp_id: str = ORG1, **api: Any) -> Backend:
        port = free_port()
        root = tmp_path / msp_id
        (root / "servermedias").mkdir(parents=True, exist_ok=True)
        database = clone_database()
        settings = server_settings(
            database, orchestrator_port=network.server.port, msp_id=msp_id, media_root=root, port=port, **api
        )
        backend = Backend(settings=settings, database_url=database)
        backend.add_user("admin", role=UserRole.ADMIN)
        backend.add_organizations(dict(ORG_SECRETS))
        server = LiveServer(settings, port).start()
        servers.append(server)
        backend.url = server.url
        return backend

    yield start
    for server in servers:
        server.stop()
