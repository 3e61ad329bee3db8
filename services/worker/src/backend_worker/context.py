"""What the worker's tasks share inside one process: clients, storage, executor, asset buffer.

Built lazily in the process that runs tasks (after Celery's prefork, so no connection crosses a
fork), once per process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from backend_common.db import make_engine, make_session_factory
from backend_common.orchestrator import OrchestratorClient, OrchestratorClients
from backend_common.per_process import PerProcess
from backend_common.protos import function_pb2
from backend_common.storage import ObjectStorage, make_storage
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from backend_worker.asset_buffer import AssetBuffer
from backend_worker.asset_sources import AssetSources, HttpPeerDownloader, PeerDownloader, outgoing_secrets
from backend_worker.executor import Executor, Limits, make_executor
from backend_worker.settings import WorkerSettings


@dataclass
class WorkerContext:
    settings: WorkerSettings
    executor: Executor
    storage: ObjectStorage
    engine: Engine
    sessions: sessionmaker[Session]
    buffer: AssetBuffer
    sources: AssetSources
    orchestrators: OrchestratorClients
    _functions: dict[str, function_pb2.Function] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(
        cls,
        settings: WorkerSettings,
        *,
        executor: Executor | None = None,
        storage: ObjectStorage | None = None,
        peers: PeerDownloader | None = None,
    ) -> WorkerContext:
        engine = make_engine(settings.database_url, pool_size=settings.database.pool_size)
        sessions = make_session_factory(engine)
        storage = storage or make_storage(settings.storage)
        organization_id = settings.organization.msp_id
        peers = peers or HttpPeerDownloader(
            organization_id,
            outgoing_secrets(sessions),
            timeout=settings.http.http_client_timeout_seconds,
        )
        root = settings.root_dir
        return cls(
            settings=settings,
            executor=executor or make_executor(settings),
            storage=storage,
            engine=engine,
            sessions=sessions,
            buffer=AssetBuffer(root / "asset_buffer", settings.execution.asset_buffer_max_bytes),
            sources=AssetSources(
                organization_id=organization_id, storage=storage, sessions=sessions, peers=peers
            ),
            orchestrators=OrchestratorClients(settings.orchestrator, organization_id),
        )

    @property
    def organization_id(self) -> str:
        return self.settings.organization.msp_id

    @property
    def root(self) -> Path:
        return self.settings.root_dir

    @property
    def default_domain(self) -> str:
        return self.settings.http.default_domain

    @property
    def limits(self) -> Limits:
        execution = self.settings.execution
        return Limits(
            timeout_seconds=execution.task_timeout_seconds or None,
            memory_bytes=execution.task_memory_bytes or None,
            cpu_seconds=execution.task_cpu_seconds or None,
            max_open_files=execution.task_max_open_files or None,
        )

    def orchestrator(self, channel: str) -> OrchestratorClient:
        return self.orchestrators.get(channel)

    def function(self, client: OrchestratorClient, key: str) -> function_pb2.Function:
        """A function's immutable description (archive, inputs, outputs, owner), cached."""
        with self._lock:
            cached = self._functions.get(f"{client.channel}/{key}")
        if cached is not None:
            return cached
        function = client.get_function(key)
        with self._lock:
            self._functions[f"{client.channel}/{key}"] = function
        return function

    def close(self) -> None:
        self.orchestrators.close()
        self.executor.close()
        self.engine.dispose()


_context: PerProcess[WorkerContext] = PerProcess()


def process_context(settings: WorkerSettings) -> WorkerContext:
    """The context of the current process, created on first use."""
    return _context.get(lambda: WorkerContext.from_settings(settings))
