"""The events service: one consumer thread per channel, sharing the database, Celery and readiness."""

from __future__ import annotations

import threading

from backend_common.celery_app import create_celery_app
from backend_common.db import make_engine, make_session_factory
from backend_common.dispatch.outbox import Publisher
from backend_common.logging import get_logger
from backend_common.orchestrator import OrchestratorClient

from backend_events import metrics
from backend_events.consumer import ChannelConsumer
from backend_events.policy import DispatchPolicy
from backend_events.readiness import Readiness
from backend_events.settings import EventsSettings

logger = get_logger("backend_events.service")


class EventsService:
    def __init__(self, settings: EventsSettings) -> None:
        self.settings = settings
        channels = settings.organization.channel_names
        # One connection per consumer thread, plus the publisher's.
        self._engine = make_engine(settings.database_url, pool_size=len(channels) + 1)
        sessions = make_session_factory(self._engine)
        self._celery = create_celery_app("backend-events", settings.celery, settings.organization.org_name)
        self._publisher = Publisher(
            self._celery,
            sessions,
            settings.organization.org_name,
            retry_seconds=settings.consumer.dispatch_retry_seconds,
            sent_counter=metrics.DISPATCHED,
        )
        self.readiness = Readiness(channels, settings.consumer.readiness_file)
        self._stop = threading.Event()
        self._clients: list[OrchestratorClient] = []
        self._consumers: list[ChannelConsumer] = []
        for channel in channels:
            client = OrchestratorClient(settings.orchestrator, settings.organization.msp_id, channel)
            self._clients.append(client)
            policy = DispatchPolicy(
                org_name=settings.organization.org_name,
                msp_id=settings.organization.msp_id,
                channel=channel,
                worker_replicas=settings.consumer.worker_replicas,
                orchestrator=client,
            )
            self._consumers.append(
                ChannelConsumer(
                    channel=channel,
                    msp_id=settings.organization.msp_id,
                    orchestrator_settings=settings.orchestrator,
                    settings=settings.consumer,
                    sessions=sessions,
                    policy=policy,
                    publisher=self._publisher,
                    readiness=self.readiness,
                    stop=self._stop,
                )
            )
        self._threads = [
            threading.Thread(target=consumer.run, name=f"events-{consumer.channel}", daemon=True)
            for consumer in self._consumers
        ]

    def start(self) -> None:
        self._publisher.start()
        for thread in self._threads:
            thread.start()
        logger.info("consuming events", channels=[consumer.channel for consumer in self._consumers])

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout=timeout)
        for client in self._clients:
            client.close()
        self._publisher.stop()
        self.readiness.remove()
        self._engine.dispose()
        logger.info("stopped consuming events")
