"""`backend-worker`: a Celery worker of this organization, as `worker` (compute tasks) or `builder`."""

from __future__ import annotations

import argparse
import sys
from typing import Literal, cast

from backend_common import queues
from backend_common.celery_app import worker_queues
from backend_common.logging import configure_logging
from backend_common.metrics import start_metrics_server

from backend_worker.app import create_app
from backend_worker.settings import WorkerSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backend-worker", description=__doc__)
    parser.add_argument("role", choices=["worker", "builder"], nargs="?", default="worker")
    arguments = parser.parse_args(argv)
    role = cast(Literal["worker", "builder"], arguments.role)

    settings = WorkerSettings()
    configure_logging(settings.logging, service=role)
    metrics_server = start_metrics_server(settings.metrics)
    org_name = settings.organization.org_name
    index = settings.compute.replica_index
    app = create_app(settings)
    try:
        app.Worker(
            queues=worker_queues(role, org_name, index),
            hostname=queues.worker_hostname(role, org_name, index),
            concurrency=settings.celery.worker_concurrency,
            pool="prefork" if settings.celery.worker_concurrency > 1 else "solo",
            loglevel=settings.logging.level,
            quiet=True,
            without_gossip=True,
            without_mingle=True,
        ).start()
    finally:
        if metrics_server is not None:
            metrics_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
