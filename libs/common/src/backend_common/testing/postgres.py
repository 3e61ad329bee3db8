"""Pytest plugin: fresh databases on the machine's real PostgreSQL, dropped after use.

The server is the one the machine (and CI) runs on 127.0.0.1:5432 with trust authentication;
`TEST_POSTGRES_URL` points elsewhere. Every database made here is named `test_<random>` and
dropped at the end of the test (or of the session for session-scoped ones).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL

DEFAULT_SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def server_url() -> URL:
    return make_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_SERVER_URL))


class DatabaseFactory:
    """Creates uniquely named databases and drops every one it created."""

    def __init__(self, server: URL) -> None:
        self._server = server
        self._admin = create_engine(server, isolation_level="AUTOCOMMIT", pool_size=1)
        self._created: list[str] = []

    def create(self, prefix: str = "test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self._created.append(name)
        return self._server.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        if name not in self._created:
            raise ValueError(f"database {name!r} was not created by this factory")
        with self._admin.connect() as connection:
            # FORCE: a service under test may still hold connections.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._created.remove(name)

    def drop_all(self) -> None:
        for name in list(self._created):
            self.drop(self._server.set(database=name).render_as_string(hide_password=False))
        self._admin.dispose()


@pytest.fixture(scope="session")
def database_factory() -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(server_url())
    try:
        yield factory
    finally:
        factory.drop_all()


@pytest.fixture
def empty_database_url(database_factory: DatabaseFactory) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    url = database_factory.create()
    yield url
    database_factory.drop(url)


@pytest.fixture
def make_database(database_factory: DatabaseFactory) -> Iterator[Callable[[], str]]:
    """Creates as many empty databases as a test needs; all are dropped after it."""
    made: list[str] = []

    def make() -> str:
        url = database_factory.create()
        made.append(url)
        return url

    yield make
    for url in made:
        database_factory.drop(url)
