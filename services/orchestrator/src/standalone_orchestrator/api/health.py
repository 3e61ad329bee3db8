"""The standard gRPC health service `grpc.health.v1.Health`, without grpcio-health-checking.

The two messages are built at import time from a hand-written descriptor of
`grpc/health/v1/health.proto` in a private descriptor pool (so the real package can coexist).
`Check` needs no metadata and answers SERVING while the database answers; `Watch`, a stream,
goes through the identity checks like every stream of the reference.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import Executor
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from standalone_orchestrator.api.identity import Identity
from standalone_orchestrator.errors import OrchestratorError

SERVICE = "grpc.health.v1.Health"

UNKNOWN = 0
SERVING = 1
NOT_SERVING = 2
SERVICE_UNKNOWN = 3


def _message_classes() -> tuple[Any, Any]:
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="grpc/health/v1/health.proto", package="grpc.health.v1", syntax="proto3"
    )
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    response = file.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for name, number in (("UNKNOWN", 0), ("SERVING", 1), ("NOT_SERVING", 2), ("SERVICE_UNKNOWN", 3)):
        status.value.add(name=name, number=number)
    response.field.add(
        name="status",
        number=1,
        type=field.TYPE_ENUM,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")),
    )


HealthCheckRequest, HealthCheckResponse = _message_classes()


class HealthService:
    def __init__(
        self,
        services: Collection[str],
        identity: Identity,
        probe: Callable[[], bool],
        executor: Executor,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.services = frozenset(services)
        self.identity = identity
        self.probe = probe
        self.executor = executor
        self._loop = loop
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Answer NOT_SERVING from now on; callable from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def _status(self) -> int:
        if self._stopping.is_set():
            return NOT_SERVING
        reachable = await asyncio.get_running_loop().run_in_executor(self.executor, self.probe)
        return SERVING if reachable else NOT_SERVING

    async def check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request.service and request.service not in self.services:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return HealthCheckResponse(status=await self._status())

    async def watch(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            self.identity.identify(context)
        except OrchestratorError as error:
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        if request.service and request.service not in self.services:
            yield HealthCheckResponse(status=SERVICE_UNKNOWN)
        else:
            yield HealthCheckResponse(status=await self._status())
        # Then hold the stream until the client leaves (the coroutine is cancelled) or we stop.
        await self._stopping.wait()
        yield HealthCheckResponse(status=NOT_SERVING)

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.check,
                    request_deserializer=HealthCheckRequest.FromString,
                    response_serializer=HealthCheckResponse.SerializeToString,
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    self.watch,
                    request_deserializer=HealthCheckRequest.FromString,
                    response_serializer=HealthCheckResponse.SerializeToString,
                ),
            },
        )
