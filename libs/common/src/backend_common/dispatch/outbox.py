"""Sending each decided piece of work exactly once, across crashes (a transactional outbox).

1. `record` writes the work in the transaction that decided it (the events service: the one that
   applies its event and moves the event cursor; the scheduler: the one of its reconciliation): the
   decision is committed with what caused it, or not at all. Its dedupe key (and, for a compute
   task, its `task_dispatches` row) is inserted once: a repeated decision records nothing new.
   `record_redispatch` sends a compute task once more, counting the attempts.
2. After the commit, a `Publisher` sends the pending rows with Celery and marks them published.
   Event application never waits for Redis, and a Redis outage only delays dispatch: the rows
   wait, retried every few seconds.

Publishers lock the rows they send (`FOR UPDATE SKIP LOCKED`) until they are marked: several
publishers (the events service's, the scheduler's) never send one row twice.

A crash between sending and marking leaves a row pending whose message may already be in Redis.
Such a row is never sent blindly again: the publisher first looks for its Celery task id in the
queue, in the broker's unacknowledged messages and in the result backend (a worker that started
the task replaced its WAITING state). Rows this process recorded itself and never tried to send
skip that check. Broadcast messages leave no trace to look for; they are idempotent removals and
are sent again.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from prometheus_client import Counter
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from backend_common import queues
from backend_common.celery_app import WAITING_STATE
from backend_common.db.local import CeleryDispatch, TaskDispatch
from backend_common.dispatch.work import Work
from backend_common.logging import get_logger

logger = get_logger("backend_common.dispatch.outbox")

# Result-backend states that do not prove a worker received the message.
_NOT_RECEIVED_STATES = frozenset({"PENDING", WAITING_STATE})


def record(
    session: Session, channel: str, event_id: str, decided: Work, *, now: datetime | None = None
) -> int | None:
    """Record work to send in the caller's transaction; its row id, None if it was already decided.

    `now` dates the decision (default: the current time).
    """
    celery_task_id = str(uuid.uuid4())
    now = now or datetime.now(UTC)
    if decided.compute_task_key is not None:
        first = session.execute(
            insert(TaskDispatch)
            .values(
                compute_task_key=decided.compute_task_key,
                channel=channel,
                queue=decided.queue,
                celery_task_id=celery_task_id,
                dispatched_at=now,
            )
            .on_conflict_do_nothing(index_elements=[TaskDispatch.compute_task_key])
            .returning(TaskDispatch.compute_task_key)
        ).scalar_one_or_none()
        if first is None:
            return None
    return _insert_dispatch(
        session,
        channel,
        event_id,
        decided,
        dedupe_key=decided.dedupe_key,
        celery_task_id=celery_task_id,
        now=now,
    )


def _insert_dispatch(
    session: Session,
    channel: str,
    event_id: str,
    decided: Work,
    *,
    dedupe_key: str,
    celery_task_id: str,
    now: datetime,
) -> int | None:
    """The outbox row of `decided`; its id, None when `dedupe_key` was already recorded."""
    return session.execute(
        insert(CeleryDispatch)
        .values(
            dedupe_key=dedupe_key,
            celery_task_id=celery_task_id,
            channel=channel,
            event_id=event_id,
            task_name=decided.task_name,
            queue=decided.queue,
            message=decided.message(),
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=[CeleryDispatch.dedupe_key])
        .returning(CeleryDispatch.id)
    ).scalar_one_or_none()


def record_redispatch(
    session: Session,
    channel: str,
    event_id: str,
    decided: Work,
    *,
    attempts: int,
    now: datetime | None = None,
) -> int | None:
    """Record a compute task sent once more, if its dispatch still counts `attempts`; its row id.

    The task's `task_dispatches` row moves to `attempts + 1` with the new message's id and date,
    in the caller's transaction; None (nothing recorded) when someone else re-dispatched it first.
    """
    if decided.compute_task_key is None:
        raise ValueError("only compute tasks are re-dispatched")
    celery_task_id = str(uuid.uuid4())
    now = now or datetime.now(UTC)
    moved = session.execute(
        update(TaskDispatch)
        .where(
            TaskDispatch.compute_task_key == decided.compute_task_key,
            TaskDispatch.attempts == attempts,
        )
        .values(
            attempts=attempts + 1,
            queue=decided.queue,
            celery_task_id=celery_task_id,
            dispatched_at=now,
        )
        .returning(TaskDispatch.compute_task_key)
    ).scalar_one_or_none()
    if moved is None:
        return None
    dedupe_key = f"{decided.dedupe_key}:attempt-{attempts + 1}"
    return _insert_dispatch(
        session, channel, event_id, decided, dedupe_key=dedupe_key, celery_task_id=celery_task_id, now=now
    )


class Publisher:
    """Publishes the pending rows of the outbox; shared by the channel consumers of a process.

    `sent_counter`, if given, counts the messages sent by task name (label `task_name`).
    """

    def __init__(
        self,
        app: Celery,
        sessions: sessionmaker[Session],
        org_name: str,
        *,
        retry_seconds: float = 2.0,
        sent_counter: Counter | None = None,
    ) -> None:
        self._app = app
        self._sent_counter = sent_counter
        self._sessions = sessions
        self._statically_routed = set(queues.static_task_routes(org_name))
        self._broadcast_queue = queues.broadcast_queue(org_name)
        options: dict[str, Any] = dict(app.conf.broker_transport_options or {})
        self._key_prefix = str(options.get("global_keyprefix", ""))
        self._unacked_key = self._key_prefix + str(options.get("unacked_key", "unacked"))
        self._broker = redis.Redis.from_url(app.conf.broker_url)
        self._lock = threading.Lock()
        # Rows recorded by this process and never handed to Celery: no message can exist for them.
        self._unsent: set[int] = set()
        self._retry_seconds = retry_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the publishing thread ---------------------------------------------------------------------

    def start(self) -> None:
        """Publish in a thread: now (work a previous run left), on `notify`, and every few seconds."""
        self._thread = threading.Thread(target=self._run, name="events-dispatch", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.publish_pending()
            except Exception as error:  # retried on the next notification or tick
                logger.warning("pending work not dispatched yet", error=f"{type(error).__name__}: {error}")
            self._wake.wait(self._retry_seconds)

    def close(self) -> None:
        self._broker.close()

    def recorded(self, row_ids: Iterable[int]) -> None:
        """Rows this process is committing and has not sent: no message can exist for them.

        Called before the commit, so that this thread cannot have read and sent them already; ids
        of a transaction that then fails are never used again.
        """
        with self._lock:
            self._unsent.update(row_ids)

    def publish_pending(self, channel: str | None = None, row_ids: Iterable[int] | None = None) -> int:
        """Send the pending rows (of one channel, or these rows, or all) in order; the number sent.

        Rows another publisher is sending are left to it. Errors are left to the caller; the rows
        handled before one are marked published.
        """
        query = (
            select(CeleryDispatch)
            .where(CeleryDispatch.published_at.is_(None))
            .order_by(CeleryDispatch.id)
            .with_for_update(skip_locked=True)
        )
        if channel is not None:
            query = query.where(CeleryDispatch.channel == channel)
        if row_ids is not None:
            query = query.where(CeleryDispatch.id.in_(list(row_ids)))
        failure: Exception | None = None
        sent = 0
        with self._sessions() as session, session.begin():
            # Locked until marked: another publisher skips them meanwhile.
            rows = list(session.scalars(query))
            if not rows:
                return 0
            handled: list[int] = []
            try:
                sent = self._publish(rows, handled)
            except Exception as error:
                failure = error
            if handled:
                # A crash before this commit leaves the rows pending: the next run finds their messages.
                session.execute(
                    update(CeleryDispatch)
                    .where(CeleryDispatch.id.in_(handled))
                    .values(published_at=datetime.now(UTC))
                )
        if failure is not None:
            raise failure
        return sent

    def _publish(self, rows: list[CeleryDispatch], handled: list[int]) -> int:
        with self._lock:
            uncertain = [row for row in rows if row.id not in self._unsent]
        already_sent = self._already_enqueued(uncertain) if uncertain else set()
        sent = 0
        for row in rows:
            if row.celery_task_id in already_sent:
                logger.info(
                    "dispatch found already enqueued", task_name=row.task_name, dedupe_key=row.dedupe_key
                )
            else:
                with self._lock:
                    # From here on the message may exist, even if sending raises.
                    self._unsent.discard(row.id)
                self._send(row)
                sent += 1
                if self._sent_counter is not None:
                    self._sent_counter.labels(task_name=row.task_name).inc()
            handled.append(row.id)
        return sent

    def _send(self, row: CeleryDispatch) -> None:
        message: dict[str, Any] = row.message
        options: dict[str, Any] = {"task_id": row.celery_task_id}
        if row.task_name not in self._statically_routed:
            options["queue"] = row.queue
        then = message.get("then")
        if then is not None:
            link_options = {} if then["task_name"] in self._statically_routed else {"queue": then["queue"]}
            options["link"] = self._app.signature(
                then["task_name"], args=then["args"], kwargs=then["kwargs"], immutable=True, **link_options
            )
        self._app.send_task(row.task_name, args=message["args"], kwargs=message["kwargs"], **options)
        logger.info(
            "work dispatched",
            task_name=row.task_name,
            queue=row.queue,
            celery_task_id=row.celery_task_id,
            dedupe_key=row.dedupe_key,
        )

    def _already_enqueued(self, rows: list[CeleryDispatch]) -> set[str]:
        """Celery task ids of `rows` that reached Redis: queued, being worked on, or finished."""
        wanted = {row.celery_task_id for row in rows if row.queue != self._broadcast_queue}
        if not wanted:
            return set()
        seen: set[str | None] = set()
        for queue in sorted({row.queue for row in rows}):
            seen |= {_message_id(payload) for payload in self._broker.lrange(self._key_prefix + queue, 0, -1)}
        seen |= {_unacked_message_id(payload) for payload in self._broker.hvals(self._unacked_key)}
        found = {task_id for task_id in wanted if task_id in seen}
        for task_id in wanted - found:
            if self._app.backend.get_task_meta(task_id).get("status") not in _NOT_RECEIVED_STATES:
                found.add(task_id)
        return found


def _message_id(payload: bytes | str) -> str | None:
    """The Celery task id of a queued kombu message (its `id` header)."""
    try:
        return _header_id(json.loads(payload))
    except ValueError:
        return None


def _unacked_message_id(payload: bytes | str) -> str | None:
    # kombu keeps [message, exchange, routing_key] for each unacknowledged delivery.
    try:
        entry = json.loads(payload)
    except ValueError:
        return None
    return _header_id(entry[0]) if isinstance(entry, list) and entry else None


def _header_id(message: object) -> str | None:
    headers = message.get("headers") if isinstance(message, dict) else None
    task_id = headers.get("id") if isinstance(headers, dict) else None
    return task_id if isinstance(task_id, str) else None
