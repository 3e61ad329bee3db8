"""The Celery application shared by the worker, builder, scheduler and event consumers.

Configuration of `compute-engine.md`, section 3.1: Redis broker and result backend, JSON only,
late acknowledgement, one message prefetched at a time, task events, the organization's queues
(section 3.2) and the static routes of the reference task names (section 3.3).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from celery.app.amqp import AMQP
from celery.app.routes import Router
from celery.utils import uuid
from kombu.common import Broadcast
from kombu.entity import Queue

from backend_common import queues
from backend_common.logging import configure_logging, logging_configured
from backend_common.settings import CelerySettings, LoggingSettings

# Result-backend state of a task that was sent and not yet started (PENDING means "unknown id").
WAITING_STATE = "WAITING"

# Redis redelivers an unacknowledged message once it is older than this. With late acks a message
# stays unacknowledged for the whole run of its task (image builds take up to IMAGE_BUILD_TIMEOUT,
# compute tasks longer) and for the whole countdown of a retry (up to CELERY_TASK_RETRY_BACKOFF_MAX),
# so Redis' default hour would run long tasks twice. The cost: a task whose worker died without a
# warm shutdown waits this long before another worker picks it up.
VISIBILITY_TIMEOUT_SECONDS = 12 * 3600


class RetryableTaskError(Exception):
    """Raised by a task for a transient failure: retried with the policy of `retry_options`."""


class _BroadcastDeclaringRouter(Router):  # type: ignore[misc]  # celery is untyped
    def route(
        self, options: dict[str, Any], name: str, args: Any = (), kwargs: Any = None, task_type: Any = None
    ) -> dict[str, Any]:
        route: dict[str, Any] = super().route(options, name, args, kwargs, task_type)
        queue = route.get("queue")
        if isinstance(queue, Broadcast) and not route.get("declare"):
            # Celery does not declare broadcast queues when publishing, and kombu's Redis transport
            # treats an exchange it has not seen declared on the connection as a direct one: the
            # message would go to lists nobody reads instead of the subscribers. Declaring the
            # fanout exchange (not the queue) fixes it without creating a queue per publisher.
            route["declare"] = [queue.exchange]
        return route


class _BackendAMQP(AMQP):  # type: ignore[misc]
    def Router(self, queues: Any = None, create_missing: bool | None = None) -> Router:  # noqa: N802
        return _BroadcastDeclaringRouter(
            self.routes,
            queues or self.queues,
            self.app.either("task_create_missing_queues", create_missing),
            app=self.app,
        )


class _BackendCelery(Celery):  # type: ignore[misc]
    amqp_cls = _BackendAMQP

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        # The reference marks every sent task WAITING after publishing; doing it before publishing
        # keeps a fast worker's STARTED or SUCCESS from being overwritten by the late WAITING.
        task_id = options.pop("task_id", None) or uuid()
        self.backend.store_result(task_id, None, WAITING_STATE)
        try:
            return super().send_task(name, args, kwargs, task_id=task_id, **options)
        except BaseException:
            # Not sent (e.g. arguments that are not JSON): leave no WAITING state behind.
            self.backend.forget(task_id)
            raise


def _task_queues(org_name: str) -> list[Queue]:
    # Replica queues (`<org>.worker-<i>`, `<org>.builder-<i>`) are not listed: the replica count is
    # not known here, and Celery creates a missing queue when a worker consumes it or a task is
    # routed to it (`task_create_missing_queues`, on by default).
    names = [
        queues.DEFAULT_QUEUE,
        queues.worker_queue(org_name),
        queues.builder_queue(org_name),
        queues.SCHEDULER_QUEUE,
        queues.organization_queue(org_name),
    ]
    declared: list[Queue] = [Queue(name) for name in names]  # type: ignore[no-untyped-call]
    # Fanout exchange named `<org>.broadcast`; each consumer gets its own `bcast.<uuid>` queue.
    declared.append(Broadcast(queues.broadcast_queue(org_name)))  # type: ignore[no-untyped-call]
    return declared


def _keep_backend_logging(service: str) -> None:
    """Stop Celery's worker from installing its plain-text handlers over our JSON logging."""

    def on_setup_logging(**_: Any) -> None:
        if not logging_configured():
            configure_logging(LoggingSettings(), service=service)

    # Any receiver of `setup_logging` makes Celery leave logging alone (and not redirect stdout).
    signals.setup_logging.connect(on_setup_logging, weak=False, dispatch_uid="backend_common.logging")


def create_celery_app(main: str, celery_settings: CelerySettings, org_name: str) -> Celery:
    app = _BackendCelery(main)
    routes: dict[str, dict[str, str]] = {
        name: {"queue": queue} for name, queue in queues.static_task_routes(org_name).items()
    }
    app.conf.update(
        broker_url=celery_settings.broker_url,
        result_backend=celery_settings.result_backend_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_track_started=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=celery_settings.worker_concurrency,
        # `-E` and task-sent events, for monitoring (operations.md 4.3).
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_default_queue=queues.DEFAULT_QUEUE,
        task_queues=_task_queues(org_name),
        task_routes=routes,
    )
    _keep_backend_logging(main)
    return app


def retry_options(
    celery_settings: CelerySettings,
    retry_for: tuple[type[BaseException], ...] = (RetryableTaskError,),
) -> dict[str, Any]:
    """Keyword arguments of `@app.task` for the reference retry policy.

    Exponential back-off from `CELERY_TASK_RETRY_BACKOFF` seconds, capped at
    `CELERY_TASK_RETRY_BACKOFF_MAX`, with jitter (the delay is drawn between 0 and that value),
    at most `CELERY_TASK_MAX_RETRIES` retries.
    """
    return {
        "autoretry_for": retry_for,
        "max_retries": celery_settings.task_max_retries,
        "retry_backoff": celery_settings.task_retry_backoff,
        "retry_backoff_max": celery_settings.task_retry_backoff_max,
        "retry_jitter": True,
    }


def worker_queues(kind: queues.ProcessKind, org_name: str, replica_index: int = 0) -> list[str]:
    """The `-Q` list of a Celery process of the given kind."""
    if kind == "worker":
        return queues.worker_consumed_queues(org_name, replica_index)
    if kind == "builder":
        return queues.builder_consumed_queues(org_name, replica_index)
    if kind == "scheduler-worker":
        return queues.scheduler_worker_consumed_queues(org_name)
    raise ValueError(f"unknown Celery process kind {kind!r}")
