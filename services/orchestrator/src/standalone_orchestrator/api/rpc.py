"""The unary call pipeline, the reference's interceptor chain in one function.

identity (mspid, then channel) -> transaction (write: channel lock and retries; read: read-only
snapshot) -> domain handler -> events flushed with the changes -> commit; any error is mapped to
its gRPC status with the `OE0xxx: ` message, and counted and timed by method and status.

The server runs on asyncio; the database work of a call runs on a thread of the application's
pool, so the event loop only ever does network work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

import grpc
from backend_common.logging import get_logger
from backend_common.protos import common_pb2, event_pb2
from google.protobuf.message import Message
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from standalone_orchestrator.api import metrics
from standalone_orchestrator.api.identity import Caller, Identity
from standalone_orchestrator.db.engine import Database
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.errors import ErrorCode, OrchestratorError

logger = get_logger("standalone_orchestrator.rpc")

Param = TypeVar("Param", bound=Message)
Result = TypeVar("Result", bound=Message)

PACKAGE = "orchestrator"


@dataclass(frozen=True)
class UnaryRpc(Generic[Param, Result]):
    service: str
    method: str
    request_type: type[Param]
    handler: Callable[[Request, Param], Result]
    write: bool


@dataclass(frozen=True)
class Application:
    """What every call needs."""

    database: Database
    identity: Identity
    executor: Executor


def error_for(exception: Exception) -> OrchestratorError | tuple[grpc.StatusCode, str]:
    if isinstance(exception, OrchestratorError):
        return exception
    if isinstance(exception, DBAPIError):
        if exception.connection_invalidated or getattr(exception.orig, "pgcode", None) is None:
            return grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exception.orig}"
        # Database errors come back as UNKNOWN in the reference as well.
        return grpc.StatusCode.UNKNOWN, str(exception.orig).strip()
    return grpc.StatusCode.INTERNAL, f"{ErrorCode.INTERNAL}: unexpected error: {exception}"


def execute(application: Application, rpc: UnaryRpc[Param, Result], caller: Caller, param: Param) -> Result:
    emitted: list[event_pb2.Event] = []

    def work(connection: Connection) -> Result:
        request = Request.start(connection, caller.channel, caller.mspid)
        result = rpc.handler(request, param)
        request.flush_events()
        emitted[:] = request.events
        return result

    if rpc.write:
        result = application.database.write(caller.channel, work)
        for event in emitted:
            metrics.EVENTS_EMITTED.labels(
                caller.channel,
                common_pb2.AssetKind.Name(event.asset_kind),
                event_pb2.EventKind.Name(event.event_kind),
            ).inc()
        return result
    return application.database.read(work)


def unary_behavior(
    application: Application, rpc: UnaryRpc[Param, Result]
) -> Callable[[Param, grpc.aio.ServicerContext[Param, Result]], Awaitable[Result]]:
    labels = ("unary", f"{PACKAGE}.{rpc.service}", rpc.method)
    started = metrics.RPC_STARTED.labels(*labels)

    async def behavior(param: Param, context: grpc.aio.ServicerContext[Param, Result]) -> Result:
        started.inc()
        start = time.perf_counter()
        caller: Caller | None = None
        try:
            caller = application.identity.identify(context)
            work = partial(execute, application, rpc, caller, param)
            result = await asyncio.get_running_loop().run_in_executor(application.executor, work)
        except Exception as exception:
            error = error_for(exception)
            status, message = (error.status, str(error)) if isinstance(error, OrchestratorError) else error
            _finish(labels, start, status, caller, exception)
            await context.abort(status, message)
        _finish(labels, start, grpc.StatusCode.OK, caller, None)
        return result

    return behavior


def _finish(
    labels: tuple[str, str, str],
    start: float,
    status: grpc.StatusCode,
    caller: Caller | None,
    exception: Exception | None,
) -> None:
    elapsed = time.perf_counter() - start
    metrics.RPC_HANDLED.labels(*labels, status.name).inc()
    metrics.RPC_SECONDS.labels(*labels, status.name).observe(elapsed)
    context: dict[str, Any] = {
        "method": f"/{labels[1]}/{labels[2]}",
        "code": status.name,
        "duration_ms": round(elapsed * 1000, 2),
    }
    if caller is not None:
        context.update(mspid=caller.mspid, channel=caller.channel, reqid=caller.request_id)
    if exception is None or isinstance(exception, OrchestratorError):
        if exception is not None:
            context["error"] = str(exception)
        logger.debug("rpc", **context)
    else:
        logger.error("rpc failed", exc_info=exception, **context)


def method_handler(application: Application, rpc: UnaryRpc[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        unary_behavior(application, rpc),
        request_deserializer=rpc.request_type.FromString,
        response_serializer=_serialize,
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
