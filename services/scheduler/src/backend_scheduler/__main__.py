"""`backend-scheduler`: `beat` sends the periodic jobs, `worker` runs them (the scheduler-worker)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend_common import queues
from backend_common.celery_app import worker_queues
from backend_common.logging import configure_logging
from backend_common.metrics import start_metrics_server

from backend_scheduler.settings import SchedulerSettings
from backend_scheduler.tasks import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backend-scheduler", description=__doc__)
    parser.add_argument("role", choices=["beat", "worker"])
    arguments = parser.parse_args(argv)

    settings = SchedulerSettings()
    configure_logging(settings.logging, service=f"scheduler-{arguments.role}")
    app = create_app(settings)
    org_name = settings.organization.org_name
    if arguments.role == "beat":
        Path(settings.beat.schedule_file).parent.mkdir(parents=True, exist_ok=True)
        app.Beat(schedule=settings.beat.schedule_file, loglevel=settings.logging.level).run()
    else:
        # The jobs' metrics (substra_scheduler_job_*) on METRICS_HOST:METRICS_PORT.
        metrics_server = start_metrics_server(settings.metrics)
        try:
            app.Worker(
                queues=worker_queues("scheduler-worker", org_name),
                hostname=queues.worker_hostname("scheduler-worker", org_name, 0),
                pool="solo",
                loglevel=settings.logging.level,
                without_gossip=True,
                without_mingle=True,
            ).start()
        finally:
            if metrics_server is not None:
                metrics_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
