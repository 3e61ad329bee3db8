"""Sending each decided piece of work exactly once, across crashes (a transactional outbox).

1. `record` writes the work in the transaction that applies its event and moves the event cursor:
   the decision is committed with the replica change, or not at all. Its dedupe key (and, for a
   compute task, its `task_dispatches` row) is inserted once: a repeated event decides nothing new.
2. After the commit, the publisher's thread sends the pending rows with Celery and marks them
   published. Event application never waits for Redis, and a Redis outage only delays dispatch:
   the rows wait, retried every few seconds.

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
from backend_common import queues
from backend_common.celery_app import WAITING_STATE
from backend_common.db import session_scope
from backend_common.db.local import CeleryDispatch, TaskDispatch
from backend_common.logging import get_logger
from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from backend_events import metrics
from backend_events.work import Work

logger = get_logger("backend_events.outbox")

# Result-backend states that do not prove a worker received the message.
_NOT_RECEIVED_STATES = frozenset({"PENDING", WAITING_STATE})


def record(session: Session, channel: str, event_id: str, decided: Work) -> int | None:
    """Record work to send in the caller's transaction; its row id, None if it was already decided."""
    celery_task_id = str(uuid.uuid4())
    now = datetime.now(UTC)
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
    return session.execute(
        insert(CeleryDispatch)
        .values(
            dedupe_key=decided.dedupe_key,
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


class Publisher:
    """Publishes the pending rows of the outbox; shared by the channel consumers."""

    def __init__(
        self, app: Celery, sessions: sessionmaker[Session], org_name: str, *, retry_seconds: float = 2.0
    ) -> None:
        self._app = app
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

    def publish_pending(self, channel: str | None = None) -> int:
        """Send the pending rows (of one channel, or all) in order; the number sent.

        Errors are left to the caller; the rows handled before one are marked published.
        """
        query = (
            select(CeleryDispatch).where(CeleryDispatch.published_at.is_(None)).order_by(CeleryDispatch.id)
        )
        if channel is not None:
            query = query.where(CeleryDispatch.channel == channel)
        with self._sessions() as session:
            rows = list(session.scalars(query))
        if not rows:
            return 0
        with self._lock:
            uncertain = [row for row in rows if row.id not in self._unsent]
        already_sent = self._already_enqueued(uncertain) if uncertain else set()
        handled: list[int] = []
        sent = 0
        try:
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
                    metrics.DISPATCHED.labels(task_name=row.task_name).inc()
                handled.append(row.id)
        finally:
            if handled:
                self._mark_published(handled)
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

    def _mark_published(self, row_ids: list[int]) -> None:
        # A crash before this commit leaves the rows pending: the next run finds their messages.
        with session_scope(self._sessions) as session:
            session.execute(
                update(CeleryDispatch)
                .where(CeleryDispatch.id.in_(row_ids))
                .values(published_at=datetime.now(UTC))
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
