"""`backend-server`: serve the REST API with uvicorn (`SERVER_WORKERS` processes)."""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn
from backend_common.logging import configure_logging

from backend_server.settings import ServerSettings

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_directory(settings: ServerSettings) -> None:
    """Several workers must share their metrics through files, set up before they start."""
    directory = settings.metrics.multiproc_dir or os.environ.get(MULTIPROC_DIR_ENV)
    if directory is None:
        if settings.process.workers == 1:
            return
        directory = tempfile.mkdtemp(prefix="backend-server-metrics-")
    # Files of a previous run would be added to this one's counters.
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)
    os.environ[MULTIPROC_DIR_ENV] = directory


def main() -> None:
    settings = ServerSettings()
    configure_logging(settings.logging, service="server")
    _metrics_directory(settings)
    uvicorn.run(
        "backend_server.app:create_app",
        factory=True,
        host=settings.process.bind_host,
        port=settings.process.bind_port,
        workers=settings.process.workers,
        log_config=None,  # keep the JSON logging configured above (and by each worker's app)
        access_log=settings.process.access_log,
        proxy_headers=True,
        timeout_worker_healthcheck=settings.process.worker_healthcheck_timeout,
    )


if __name__ == "__main__":
    main()
