"""The starlette application: health, metrics, and (with later milestones) the SDK routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import perf_counter

from backend_common.db import make_engine, make_session_factory
from backend_common.logging import get_logger
from backend_common.metrics import counter, histogram, metrics_registry
from backend_common.orchestrator import OrchestratorClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend_server import health
from backend_server.settings import ServerSettings

logger = get_logger("backend_server")

REQUESTS = counter(
    "http_requests_total", "HTTP requests handled by the server", ["method", "route", "status"]
)
LATENCY = histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass
class ServerState:
    """What request handlers share: built once per process by the lifespan."""

    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    _orchestrators: dict[str, OrchestratorClient] = field(default_factory=dict)

    def orchestrator(self, channel: str) -> OrchestratorClient:
        client = self._orchestrators.get(channel)
        if client is None:
            client = OrchestratorClient(
                self.settings.orchestrator, msp_id=self.settings.organization.msp_id, channel=channel
            )
            self._orchestrators[channel] = client
        return client

    def close(self) -> None:
        for client in self._orchestrators.values():
            client.close()
        self.engine.dispose()


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


async def liveness(request: Request) -> Response:
    return PlainTextResponse("OK")


async def readiness(request: Request) -> Response:
    state = server_state(request)

    def check() -> None:
        health.check_database(state.sessions)
        health.check_orchestrator(state.settings.organization, state.orchestrator)
        health.check_channel_rules(state.settings.organization, state.sessions)

    try:
        await run_in_threadpool(check)
    except health.NotReadyError as error:
        logger.warning("not ready", reason=str(error))
        return PlainTextResponse(f"not ready: {error}", status_code=503)
    return PlainTextResponse("OK")


async def metrics(request: Request) -> Response:
    return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)


class RequestMetricsMiddleware:
    """Counts requests and observes their latency by route template (not raw path) and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            REQUESTS.labels(method=method, route=template, status=str(status)).inc()
            LATENCY.labels(method=method, route=template).observe(perf_counter() - start)


def create_app(settings: ServerSettings | None = None) -> Starlette:
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, pool_size=settings.database.pool_size)
        app.state.server = ServerState(
            settings=settings, engine=engine, sessions=make_session_factory(engine)
        )
        try:
            yield
        finally:
            app.state.server.close()

    routes = [
        Route("/liveness", liveness, methods=["GET"]),
        Route("/readiness", readiness, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(RequestMetricsMiddleware)
    return app
