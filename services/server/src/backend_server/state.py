"""What request handlers share in one server process, built once by the application's lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from backend_common.orchestrator import OrchestratorClient, OrchestratorClients, OrchestratorError
from backend_common.storage import ObjectStorage
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from backend_server.settings import ServerSettings
from backend_server.throttling import RateLimiter

T = TypeVar("T")

# The orchestrator version rarely changes; /info/ should not cost a gRPC call every time.
_VERSION_TTL_SECONDS = 60.0
_FAILURE_TTL_SECONDS = 5.0


@dataclass
class ServerState:
    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: ObjectStorage
    http: httpx.AsyncClient
    throttle: RateLimiter
    orchestrators: OrchestratorClients
    _version: tuple[float, str] | None = None

    def orchestrator(self, channel: str) -> OrchestratorClient:
        return self.orchestrators.get(channel)

    def orchestrator_version(self, channel: str) -> str:
        """Never None: the SDK rejects a null `orchestrator_version` (reference bug 3)."""
        if self.settings.organization.isolated:
            return "isolated"
        cached = self._version
        if cached is not None and time.monotonic() - cached[0] < _VERSION_TTL_SECONDS:
            return cached[1]
        try:
            version = self.orchestrator(channel).query_version()
        except OrchestratorError:
            # Remembered too (for a shorter while): each call would wait for the client's retries.
            self._version = (time.monotonic() - _VERSION_TTL_SECONDS + _FAILURE_TTL_SECONDS, "unknown")
            return "unknown"
        self._version = (time.monotonic(), version)
        return version

    def close(self) -> None:
        self.orchestrators.close()
        self.engine.dispose()


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


def _in_transaction(sessions: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    with sessions() as session, session.begin():
        return work(session)


async def in_transaction(request: Request, work: Callable[[Session], T]) -> T:
    """Run `work(session)` in one transaction on a worker thread (the database driver blocks)."""
    return await run_in_threadpool(_in_transaction, server_state(request).sessions, work)


async def blocking(work: Callable[[], T]) -> T:
    """Run blocking work (orchestrator calls, storage, hashing) on a worker thread."""
    return await run_in_threadpool(work)
