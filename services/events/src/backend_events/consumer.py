"""The consumer of one channel's event stream (compute-engine 2.1).

It subscribes after the last event id stored for the channel and applies the events in batches:
one transaction applies a batch to the replica, records the work the policy decides and stores the
id of the batch's last event. A crash at any point therefore neither loses nor applies twice an
event, and the cursor never runs ahead of the work it caused. Live, a batch is the one event that
arrived; catching up, it is whatever the stream has buffered, up to `EVENTS_BATCH_SIZE`.

The stream is read by a pump thread into a bounded buffer, so reading and applying overlap. When
the stream fails (orchestrator gone, database error, ...) the consumer drops it and subscribes
again from the stored cursor, after an exponential, jittered delay that resets once events flow.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backend_common.db import session_scope
from backend_common.dispatch import outbox
from backend_common.dispatch.outbox import Publisher
from backend_common.logging import get_logger
from backend_common.orchestrator import OrchestratorClient, OrchestratorError, backoff_delay
from backend_common.protos import event_pb2
from backend_common.replica import apply_events, load_cursor, recompute_plans, save_cursor
from backend_common.replica.conversions import to_datetime
from backend_common.settings import OrchestratorSettings
from sqlalchemy.orm import Session, sessionmaker

from backend_events import metrics
from backend_events.policy import DispatchPolicy
from backend_events.readiness import Readiness
from backend_events.settings import ConsumerSettings

logger = get_logger("backend_events.consumer")

# How long the pump waits for room in a full buffer, and the consumer for an event, before checking
# whether they must stop.
_PUT_TIMEOUT_SECONDS = 0.2
_IDLE_SECONDS = 1.0


class StreamEndedError(Exception):
    """The orchestrator closed a stream that never ends on its own."""


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class _Pump(threading.Thread):
    """Reads the stream into the buffer; hands over the error that ends it."""

    def __init__(self, channel: str, events: Iterator[event_pb2.Event], buffer: queue.Queue[object]) -> None:
        super().__init__(name=f"events-stream-{channel}", daemon=True)
        self._events = events
        self._buffer = buffer
        self.closing = threading.Event()

    def run(self) -> None:
        try:
            for event in self._events:
                if not self._put(event):
                    return
            self._put(_Failure(StreamEndedError("the orchestrator ended the event stream")))
        except BaseException as error:  # handed to the consumer thread
            self._put(_Failure(error))

    def _put(self, item: object) -> bool:
        while not self.closing.is_set():
            try:
                self._buffer.put(item, timeout=_PUT_TIMEOUT_SECONDS)
            except queue.Full:
                continue
            return True
        return False


class ChannelConsumer:
    def __init__(
        self,
        *,
        channel: str,
        msp_id: str,
        orchestrator_settings: OrchestratorSettings,
        settings: ConsumerSettings,
        sessions: sessionmaker[Session],
        policy: DispatchPolicy,
        publisher: Publisher,
        readiness: Readiness,
        stop: threading.Event,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.channel = channel
        self._msp_id = msp_id
        self._orchestrator_settings = orchestrator_settings
        self._settings = settings
        self._sessions = sessions
        self._policy = policy
        self._publisher = publisher
        self._readiness = readiness
        self._stop = stop
        self._clock = clock
        self._failures = 0
        self._log = logger.bind(channel=channel)
        self._consumed_counters: dict[tuple[str, str], Any] = {}

    def run(self) -> None:
        """Consume until `stop` is set, resubscribing after every failure."""
        while not self._stop.is_set():
            try:
                self._consume()
            except Exception as error:  # any failure: resubscribe from the cursor
                if self._stop.is_set():
                    break
                self._failures += 1
                delay = backoff_delay(
                    self._failures,
                    self._settings.reconnect_initial_delay_seconds,
                    self._settings.reconnect_max_delay_seconds,
                )
                metrics.RECONNECTS.labels(channel=self.channel).inc()
                self._readiness.reconnecting(self.channel, f"{type(error).__name__}: {error}")
                self._log.warning(
                    "event stream lost, subscribing again",
                    error=f"{type(error).__name__}: {error}",
                    retry_in_seconds=round(delay, 2),
                    exc_info=not _is_expected(error),
                )
                self._stop.wait(delay)
        self._readiness.stopped(self.channel)
        self._log.info("consumer stopped")

    def _consume(self) -> None:
        with session_scope(self._sessions) as session:
            cursor = load_cursor(session, self.channel)
        stream_client = OrchestratorClient(self._orchestrator_settings, self._msp_id, self.channel)
        buffer: queue.Queue[object] = queue.Queue(maxsize=self._settings.buffer_size)
        pump = _Pump(self.channel, stream_client.subscribe_to_events(cursor), buffer)
        try:
            # A cheap call first, so that the stream shows live only when the orchestrator answers.
            stream_client.query_version()
            pump.start()
            self._readiness.streaming(self.channel, cursor)
            self._log.info("subscribed to the event stream", after_event_id=cursor or None)
            while not self._stop.is_set():
                events, failure = self._next_batch(buffer)
                if events:
                    self._apply(events)
                    self._failures = 0
                if failure is not None:
                    raise failure.error
        finally:
            pump.closing.set()
            # Closing the channel cancels the stream, which ends the pump.
            stream_client.close()
            if pump.ident is not None:
                pump.join(timeout=5)

    def _next_batch(self, buffer: queue.Queue[object]) -> tuple[list[event_pb2.Event], _Failure | None]:
        """The events available now (waiting a while for the first), and the failure that follows them."""
        try:
            item = buffer.get(timeout=_IDLE_SECONDS)
        except queue.Empty:
            return [], None
        events: list[event_pb2.Event] = []
        while True:
            if isinstance(item, _Failure):
                return events, item
            assert isinstance(item, event_pb2.Event)
            events.append(item)
            if len(events) >= self._settings.batch_size:
                return events, None
            try:
                item = buffer.get_nowait()
            except queue.Empty:
                return events, None

    def _apply(self, events: list[event_pb2.Event]) -> None:
        """One transaction: the replica changes, the work they trigger and the new cursor."""
        recorded: list[int] = []
        with session_scope(self._sessions) as session:
            changes = apply_events(session, events, recompute=False)
            # Decided on the replica as the whole batch left it (see the policy).
            for decision in self._policy.decide(session, events, changes):
                row_id = outbox.record(session, self.channel, decision.event_id, decision.work)
                if row_id is not None:
                    recorded.append(row_id)
            recompute_plans(session, (key for change in changes for key in change.plan_keys))
            last = events[-1]
            save_cursor(session, self.channel, last.id, to_datetime(last.timestamp))
            self._publisher.recorded(recorded)
        if recorded:
            self._publisher.notify()
        committed = self._clock()
        lag_histogram = metrics.LAG.labels(channel=self.channel)
        for event, change in zip(events, changes, strict=True):
            self._consumed(change.asset_kind, change.event_kind).inc()
            lag_histogram.observe(max(0.0, (committed - to_datetime(event.timestamp)).total_seconds()))
        lag = max(0.0, (committed - to_datetime(events[-1].timestamp)).total_seconds())
        metrics.LAST_LAG.labels(channel=self.channel).set(lag)
        metrics.BATCH_SIZE.labels(channel=self.channel).observe(len(events))
        self._readiness.progressed(self.channel, events[-1].id, lag)

    def _consumed(self, asset_kind: str, event_kind: str) -> Any:
        key = (asset_kind, event_kind)
        counter = self._consumed_counters.get(key)
        if counter is None:
            counter = metrics.CONSUMED.labels(
                channel=self.channel, asset_kind=asset_kind, event_kind=event_kind
            )
            self._consumed_counters[key] = counter
        return counter


def _is_expected(error: BaseException) -> bool:
    """Failures that need no traceback in the logs (the orchestrator went away, ...)."""
    return isinstance(error, OrchestratorError | StreamEndedError)
