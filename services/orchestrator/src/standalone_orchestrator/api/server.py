"""The gRPC server: every service of the contract, health, metrics over HTTP.

gRPC runs on asyncio (`grpc.aio`) in a thread of its own, so that the server can be driven from
synchronous code (the command line, tests, other services' fixtures): `start()`, `port`,
`stop(grace)`, `wait()`. Database work runs on a thread pool of `max_workers` threads; event
streams are coroutines and hold no thread while they wait.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIServer

import grpc
from backend_common.logging import get_logger
from prometheus_client import start_http_server

from standalone_orchestrator.api.events import EventHub, EventStream
from standalone_orchestrator.api.health import HealthService
from standalone_orchestrator.api.identity import Identity, MspIdVerifier
from standalone_orchestrator.api.rpc import PACKAGE, Application, method_handler
from standalone_orchestrator.api.services import unary_rpcs
from standalone_orchestrator.config import Config, TLSConfig, split_host_port
from standalone_orchestrator.db.engine import Database, make_engine

logger = get_logger("standalone_orchestrator.server")

T = TypeVar("T")

OPTIONS = [
    # The reference accepts keepalive pings every 30 s (its default policy); the gRPC default
    # (5 min) would make the backend's 60 s pings end its connections.
    ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),
]


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    client_cas = b""
    if tls.mtls:
        if tls.client_ca is not None:
            client_cas += tls.client_ca.read_bytes() + b"\n"
        if tls.client_ca_dir is not None:
            # Every CA of every organization directory, as the reference's TLS_CLIENT_CA_CERT_DIR.
            for path in sorted(tls.client_ca_dir.glob("*/*")):
                if path.is_file():
                    client_cas += path.read_bytes() + b"\n"
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=client_cas or None,
        require_client_auth=tls.mtls,
    )


class OrchestratorServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.database = Database(
            # Every pool thread may hold a connection at once.
            make_engine(config.database_url, config.database_pool_size, max_overflow=config.max_workers),
            config.tx_retry_budget_seconds,
        )
        verifier = None
        if (
            config.tls is not None
            and config.tls.verify_client_msp_id
            and config.tls.client_ca_dir is not None
        ):
            verifier = MspIdVerifier(Path(config.tls.client_ca_dir))
        self.identity = Identity(config.organization_channels(), verifier)
        self.hub = EventHub(self.database.engine)
        self.executor = ThreadPoolExecutor(
            max_workers=config.max_workers, thread_name_prefix="orchestrator-db"
        )
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="orchestrator-grpc", daemon=True
        )
        self._server: grpc.aio.Server | None = None
        self._health: HealthService | None = None
        self._metrics_server: WSGIServer | None = None
        self._stopped = threading.Event()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _serve(self) -> int:
        """Build and start the gRPC server on the loop; returns the bound port."""
        loop = asyncio.get_running_loop()
        server = grpc.aio.server(options=OPTIONS)
        application = Application(self.database, self.identity, self.executor)
        handlers: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = defaultdict(dict)
        for rpc in unary_rpcs(self.config.version):
            handlers[rpc.service][rpc.method] = method_handler(application, rpc)
        events = EventStream(
            self.database, self.identity, self.hub, self.executor, self.config.replay_batch_size
        )
        handlers["EventService"]["SubscribeToEvents"] = events.method_handler()
        services = [f"{PACKAGE}.{service}" for service in handlers]
        self._health = HealthService(services, self.identity, self.database.ping, self.executor, loop)
        server.add_generic_rpc_handlers(
            [
                *(
                    grpc.method_handlers_generic_handler(f"{PACKAGE}.{service}", methods)
                    for service, methods in handlers.items()
                ),
                self._health.generic_handler(),
            ]
        )
        if self.config.tls is None:
            port = server.add_insecure_port(self.config.listen)
        else:
            port = server.add_secure_port(self.config.listen, server_credentials(self.config.tls))
        await server.start()
        self._server = server
        return port

    def start(self) -> None:
        self.hub.start()
        self._loop_thread.start()
        try:
            self.port = self._run(self._serve())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self.hub.stop()
            raise
        if not self.port:
            raise RuntimeError(f"cannot listen on {self.config.listen}")
        if self.config.metrics_listen:
            host, port = split_host_port(self.config.metrics_listen)
            self._metrics_server, _ = start_http_server(port, addr=host)
        logger.info(
            "orchestrator started",
            listen=self.config.listen,
            port=self.port,
            tls=self.config.tls is not None,
            mtls=bool(self.config.tls and self.config.tls.mtls),
            channels=sorted(self.config.channels),
        )

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.server_port if self._metrics_server else None

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting calls, end the event streams, let unary calls finish within `grace`."""
        if self._stopped.is_set():
            return
        if self._health is not None:
            self._health.stop()
        self.hub.stop()
        if self._server is not None:
            self._run(self._server.stop(grace))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=10)
        self._loop.close()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.database.dispose()
        self._stopped.set()
        logger.info("orchestrator stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped (True) or until `timeout` (False)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> OrchestratorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
