"""The starlette application: health, metrics, OpenAPI and every route of the SDK's API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

import httpx
from backend_common.db import make_engine, make_session_factory
from backend_common.logging import configure_logging, get_logger, logging_configured
from backend_common.metrics import counter, histogram, metrics_registry
from backend_common.orchestrator import OrchestratorClients, OrchestratorError
from backend_common.storage import make_storage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend_server import health, openapi
from backend_server.authentication import Caller, authenticated
from backend_server.errors import ApiError, from_orchestrator
from backend_server.routes import (
    activity,
    auth,
    compute_plans,
    data_managers,
    data_samples,
    functions,
    models,
    organizations,
    task_profiling,
    tasks,
    users,
)
from backend_server.settings import ServerSettings
from backend_server.state import ServerState, server_state
from backend_server.throttling import RateLimiter

logger = get_logger("backend_server")

REQUESTS = counter(
    "http_requests_total", "HTTP requests handled by the server", ["method", "route", "status"]
)
LATENCY = histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

API_ROUTES: list[BaseRoute] = [
    *auth.routes,
    *organizations.routes,
    *users.routes,
    *compute_plans.routes,
    *tasks.routes,
    *functions.routes,
    *data_managers.routes,
    *data_samples.routes,
    *models.routes,
    *activity.routes,
    *task_profiling.routes,
]


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
            LATENCY.labels(method=method, route=template, status=str(status)).observe(perf_counter() - start)


async def api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return JSONResponse(error.body, status_code=error.status, headers=error.headers or None)


async def orchestrator_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, OrchestratorError)
    logger.warning("orchestrator error", error=str(error))
    return await api_error(request, from_orchestrator(error))


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    detail = error.detail if error.status_code != 404 else "Not found."
    return JSONResponse({"detail": detail}, status_code=error.status_code, headers=error.headers)


async def server_error(request: Request, error: Exception) -> Response:
    logger.exception("unhandled error", path=request.url.path)
    return JSONResponse({"detail": "Internal server error"}, status_code=500)


def create_app(settings: ServerSettings | None = None) -> Starlette:
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not logging_configured():
            # uvicorn's worker processes start from scratch: configure their logging here.
            configure_logging(settings.logging, service="server")
        engine = make_engine(settings.database_url, pool_size=settings.database.pool_size)
        timeout = httpx.Timeout(settings.http.http_client_timeout_seconds)
        async with httpx.AsyncClient(timeout=timeout, verify=not settings.api.debug) as client:
            app.state.server = ServerState(
                settings=settings,
                engine=engine,
                sessions=make_session_factory(engine),
                storage=make_storage(settings.storage),
                http=client,
                throttle=RateLimiter(settings.api.throttle_rate),
                orchestrators=OrchestratorClients(settings.orchestrator, settings.organization.msp_id),
            )
            try:
                yield
            finally:
                app.state.server.close()

    api_routes = list(API_ROUTES)
    subpath = settings.subpath
    prefix = f"/{subpath}" if subpath else ""
    document: dict[str, Any] = {}

    async def openapi_json(request: Request, caller: Caller) -> Response:
        """The OpenAPI document of this API."""
        return JSONResponse(document)

    async def api_root(request: Request, caller: Caller) -> Response:
        """The API's routes, as the reference's browsable root."""
        base = str(request.base_url).rstrip("/") + prefix
        return JSONResponse(
            {path.strip("/") or "root": f"{base}{path}" for path in sorted(document["paths"])}
        )

    api_routes += [
        Route("/", authenticated(api_root), methods=["GET"]),
        Route("/schema/", authenticated(openapi_json, basic=True), methods=["GET"]),
    ]
    routes: list[BaseRoute] = [
        Route("/liveness", liveness, methods=["GET"]),
        Route("/readiness", readiness, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", authenticated(openapi_json, basic=True), methods=["GET"]),
    ]
    if subpath:
        routes += [
            Route(f"{prefix}/openapi.json", authenticated(openapi_json, basic=True), methods=["GET"]),
            Mount(prefix, routes=api_routes),
        ]
    else:
        routes += api_routes
    document.update(
        openapi.document(routes, title="Substra backend", version=settings.organization.backend_version)
    )
    middleware = [Middleware(RequestMetricsMiddleware)]
    if settings.api.cors_origin_whitelist:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.api.cors_origin_whitelist,
                allow_credentials=settings.api.cors_allow_credentials,
                allow_methods=["*"],
                allow_headers=[
                    "accept",
                    "accept-encoding",
                    "authorization",
                    "content-type",
                    "dnt",
                    "origin",
                    "user-agent",
                    "x-csrftoken",
                    "x-requested-with",
                    "token",
                ],
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error,
            OrchestratorError: orchestrator_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )
