"""Fixtures: orchestrators served in-process on 127.0.0.1 against real PostgreSQL databases.

`orchestrator` is shared by the whole session (tests use fresh UUID keys, so they do not see each
other's assets); `fresh_orchestrator` gets its own empty database, for tests that need to see
the whole event log. Both register the organizations in their channels up front.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from backend_common.testing.postgres import DatabaseFactory
from standalone_orchestrator.testing import Network, register_organizations, start_server


@pytest.fixture(scope="session")
def orchestrator(database_factory: DatabaseFactory) -> Iterator[Network]:
    url = database_factory.create("orchestrator")
    server = start_server(url)
    network = Network(server)
    try:
        register_organizations(network)
        yield network
    finally:
        network.close()
        server.stop(grace=0)
        database_factory.drop(url)


@pytest.fixture
def fresh_orchestrator(database_factory: DatabaseFactory) -> Iterator[Callable[..., Network]]:
    """Start orchestrators with their own empty database (organizations registered if asked)."""
    started: list[tuple[Network, str]] = []

    def start(register: bool = True, **overrides: Any) -> Network:
        url = database_factory.create("orchestrator")
        network = Network(start_server(url, **overrides))
        started.append((network, url))
        if register:
            register_organizations(network)
        return network

    yield start
    for network, url in started:
        network.close()
        network.server.stop(grace=0)
        database_factory.drop(url)


@pytest.fixture
def net(orchestrator: Network) -> Network:
    return orchestrator
