"""SubscribeToEvents: replay the channel's log after the start event, then follow it live.

One background thread LISTENs on the database (`EventHub`); PostgreSQL delivers a notification
when a transaction that emitted events commits, and the hub wakes the subscribers of that
channel. A subscriber registers with the hub *before* reading the log and, on every wake-up,
reads everything after the last position it sent: nothing committed is missed (the wake-up
flag is cleared before each read) and nothing is sent twice (positions only grow). The stored
events are sent as their serialized bytes, never parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from functools import partial
from typing import Any

import grpc
from backend_common.logging import get_logger
from backend_common.protos import event_pb2
from sqlalchemy import Engine

from standalone_orchestrator.api import metrics
from standalone_orchestrator.api.identity import Identity
from standalone_orchestrator.db.engine import Database
from standalone_orchestrator.errors import OrchestratorError
from standalone_orchestrator.store import events as store

logger = get_logger("standalone_orchestrator.events")

_RECONNECT_DELAY = 1.0


class Subscription:
    """One stream's wake-up flag, lives on the server's event loop; woken from any thread."""

    def __init__(self, channel: str, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = channel
        self.closed = False
        self._loop = loop
        self._wake = asyncio.Event()

    def clear(self) -> None:
        self._wake.clear()

    def wake(self) -> None:
        # RuntimeError: the loop is closed, the server has stopped.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)

    async def wait(self) -> None:
        await self._wake.wait()

    def close(self) -> None:
        self.closed = True
        self.wake()


class EventHub:
    """Relays the database's commit notifications to the subscribers of each channel."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._stopped = threading.Event()
        self._ready = threading.Event()
        # Written to interrupt the listener's select() when stopping.
        self._wakeup_read, self._wakeup_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="orchestrator-event-hub", daemon=True)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the event listener could not connect to the database")

    def stop(self) -> None:
        self._stopped.set()
        os.write(self._wakeup_write, b"x")
        self._thread.join(timeout=5)
        with self._lock:
            subscriptions = [s for channel in self._subscriptions.values() for s in channel]
        for subscription in subscriptions:
            subscription.close()
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)

    def subscribe(self, channel: str, loop: asyncio.AbstractEventLoop) -> Subscription:
        subscription = Subscription(channel, loop)
        with self._lock:
            self._subscriptions.setdefault(channel, set()).add(subscription)
        if self.stopped:
            subscription.close()
        metrics.SUBSCRIBERS.labels(channel).inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.get(subscription.channel, set()).discard(subscription)
        metrics.SUBSCRIBERS.labels(subscription.channel).dec()

    def _wake(self, channel: str | None) -> None:
        with self._lock:
            if channel is None:
                targets = [s for subscriptions in self._subscriptions.values() for s in subscriptions]
            else:
                targets = list(self._subscriptions.get(channel, ()))
        for subscription in targets:
            subscription.wake()

    def _connect(self) -> Any:
        dialect = self._engine.dialect
        args, kwargs = dialect.create_connect_args(self._engine.url)
        connection = dialect.loaded_dbapi.connect(*args, **kwargs)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
        return connection

    def _run(self) -> None:
        while not self.stopped:
            connection = None
            try:
                connection = self._connect()
                self._ready.set()
                # Anything committed while (re)connecting was not notified: have everyone re-read.
                self._wake(None)
                self._listen(connection)
            except Exception:
                if not self.stopped:
                    logger.exception("event listener failed, reconnecting")
                    self._stopped.wait(_RECONNECT_DELAY)
            finally:
                if connection is not None:
                    connection.close()

    def _listen(self, connection: Any) -> None:
        while not self.stopped:
            readable, _, _ = select.select([connection, self._wakeup_read], [], [], 30.0)
            if self._wakeup_read in readable:
                return
            connection.poll()
            channels: set[str] = set()
            while connection.notifies:
                notification = connection.notifies.pop(0)
                try:
                    channels.add(json.loads(notification.payload)["channel"])
                except (ValueError, KeyError, TypeError):
                    logger.warning("unexpected notification", payload=notification.payload)
            for channel in channels:
                self._wake(channel)


class EventStream:
    """The SubscribeToEvents handler: a coroutine per stream, database reads on the pool."""

    def __init__(
        self, database: Database, identity: Identity, hub: EventHub, executor: Executor, batch_size: int
    ) -> None:
        self.database = database
        self.identity = identity
        self.hub = hub
        self.executor = executor
        self.batch_size = batch_size

    def _read(self, channel: str, position: int) -> list[tuple[int, bytes]]:
        return self.database.read(
            partial(store.payloads_after, channel=channel, position=position, limit=self.batch_size)
        )

    async def subscribe(
        self, param: event_pb2.SubscribeToEventsParam, context: grpc.aio.ServicerContext[Any, bytes]
    ) -> AsyncIterator[bytes]:
        metrics.RPC_STARTED.labels("server_stream", "orchestrator.EventService", "SubscribeToEvents").inc()
        try:
            caller = self.identity.identify(context)
        except OrchestratorError as error:
            # No error mapping on streams in the reference: every interceptor error is UNKNOWN.
            self._handled(grpc.StatusCode.UNKNOWN)
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        channel = caller.channel
        loop = asyncio.get_running_loop()
        # Registered before reading the log, so no commit from now on goes unnoticed.
        subscription = self.hub.subscribe(channel, loop)
        sent = metrics.EVENTS_SENT.labels(channel)
        status = grpc.StatusCode.CANCELLED
        try:
            position = 0
            if param.start_event_id:
                lookup = partial(
                    self.database.read,
                    partial(store.position_of, channel=channel, event_id=param.start_event_id),
                )
                found = await loop.run_in_executor(self.executor, lookup)
                if found is None:
                    status = grpc.StatusCode.UNKNOWN
                    await context.abort(grpc.StatusCode.UNKNOWN, "no rows in result set")
                position = found
            logger.debug("subscribed", channel=channel, mspid=caller.mspid, position=position)
            ahead: asyncio.Future[list[tuple[int, bytes]]] | None = None
            while not subscription.closed:
                if ahead is None:
                    # Cleared before reading: a commit from now on wakes the wait below.
                    subscription.clear()
                    batch = await loop.run_in_executor(self.executor, self._read, channel, position)
                else:
                    batch = await ahead
                    ahead = None
                if len(batch) == self.batch_size:
                    # Replaying: fetch the next batch while this one is being sent.
                    subscription.clear()
                    ahead = loop.run_in_executor(self.executor, self._read, channel, batch[-1][0])
                for _, payload in batch:
                    yield payload
                if batch:
                    position = batch[-1][0]
                    sent.inc(len(batch))
                if ahead is None and len(batch) < self.batch_size:
                    await subscription.wait()
            if self.hub.stopped:
                status = grpc.StatusCode.UNAVAILABLE
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the orchestrator is shutting down")
        finally:
            self.hub.unsubscribe(subscription)
            self._handled(status)

    @staticmethod
    def _handled(code: grpc.StatusCode) -> None:
        metrics.RPC_HANDLED.labels(
            "server_stream", "orchestrator.EventService", "SubscribeToEvents", code.name
        ).inc()

    def method_handler(self) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_stream_rpc_method_handler(
            self.subscribe,
            request_deserializer=event_pb2.SubscribeToEventsParam.FromString,
            # The payloads are serialized Events already.
            response_serializer=_as_is,
        )


def _as_is(payload: bytes) -> bytes:
    return payload
