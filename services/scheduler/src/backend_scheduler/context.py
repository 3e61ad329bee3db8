"""What the scheduler-worker's jobs share inside one process: database, orchestrator, Celery, registry.

Built lazily in the process that runs the jobs, once per process (never across a fork).
"""

from __future__ import annotations

from dataclasses import dataclass

from backend_common.celery_app import create_celery_app
from backend_common.db import make_engine, make_session_factory
from backend_common.dispatch.outbox import Publisher
from backend_common.orchestrator import OrchestratorClient, OrchestratorClients
from backend_common.per_process import PerProcess
from backend_common.registry import RegistryClient
from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend_scheduler.settings import SchedulerSettings


@dataclass
class SchedulerContext:
    settings: SchedulerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    celery: Celery
    publisher: Publisher
    orchestrators: OrchestratorClients

    @classmethod
    def from_settings(cls, settings: SchedulerSettings, celery: Celery | None = None) -> SchedulerContext:
        # Two connections: a job's lock and its work.
        engine = make_engine(settings.database_url, pool_size=2)
        sessions = make_session_factory(engine)
        org_name = settings.organization.org_name
        celery = celery or create_celery_app("scheduler-jobs", settings.celery, org_name)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            celery=celery,
            publisher=Publisher(celery, sessions, org_name),
            orchestrators=OrchestratorClients(settings.orchestrator, settings.organization.msp_id),
        )

    @property
    def org_name(self) -> str:
        return self.settings.organization.org_name

    @property
    def msp_id(self) -> str:
        return self.settings.organization.msp_id

    @property
    def channels(self) -> list[str]:
        return self.settings.organization.channel_names

    def orchestrator(self, channel: str) -> OrchestratorClient:
        return self.orchestrators.get(channel)

    def registry(self) -> RegistryClient | None:
        """A client of the function image registry (`REGISTRY`), None when there is none; close it."""
        compute = self.settings.compute
        if not compute.registry:
            return None
        return RegistryClient(
            compute.registry,
            scheme=compute.registry_scheme,
            username=compute.registry_username,
            password=compute.registry_password,
            timeout=30.0,
        )

    def close(self) -> None:
        self.orchestrators.close()
        self.publisher.close()
        self.engine.dispose()


_context: PerProcess[SchedulerContext] = PerProcess()


def process_context(settings: SchedulerSettings, celery: Celery | None = None) -> SchedulerContext:
    """The context of the current process, created on first use."""
    return _context.get(lambda: SchedulerContext.from_settings(settings, celery))
