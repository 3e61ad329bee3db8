"""`backend-worker`: a Celery worker of this organization, as `worker` (compute tasks) or `builder`.

`backend-worker check` verifies that compute tasks can be isolated as configured;
`backend-worker prepare` builds the base environment of functions ahead of the first build.
"""

from __future__ import annotations

import argparse
import sys
from typing import Literal, cast

from backend_worker.errors import SandboxUnavailableError
from backend_worker.executor import make_executor
from backend_worker.local_executor import LocalExecutor
from backend_worker.settings import WorkerSettings


def _check(settings: WorkerSettings) -> int:
    try:
        make_executor(settings).check()
    except SandboxUnavailableError as error:
        print(f"backend-worker: refusing to run compute tasks: {error}", file=sys.stderr)
        return 1
    return 0


def _prepare(settings: WorkerSettings) -> int:
    from backend_worker.function_environment import ensure_base_environment  # noqa: PLC0415

    executor = make_executor(settings)
    if not isinstance(executor, LocalExecutor):
        return 0
    base = ensure_base_environment(
        executor.base_environment,
        python=executor.python,
        requirements=executor.base_requirements,
        pip_cache=executor.pip_cache_dir,
        timeout=executor.build_timeout,
    )
    print(base.path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backend-worker", description=__doc__)
    parser.add_argument(
        "role", choices=["worker", "builder", "check", "prepare"], nargs="?", default="worker"
    )
    arguments = parser.parse_args(argv)
    settings = WorkerSettings()
    if arguments.role == "check":
        return _check(settings)
    if arguments.role == "prepare":
        return _prepare(settings)
    return _serve(settings, cast(Literal["worker", "builder"], arguments.role))


def _serve(settings: WorkerSettings, role: Literal["worker", "builder"]) -> int:
    # Imported here: `check` and `prepare` need none of Celery.
    from backend_common import queues  # noqa: PLC0415
    from backend_common.celery_app import worker_queues  # noqa: PLC0415
    from backend_common.logging import configure_logging, get_logger  # noqa: PLC0415
    from backend_common.metrics import start_metrics_server  # noqa: PLC0415

    from backend_worker.app import create_app  # noqa: PLC0415
    from backend_worker.recovery import resubmit_interrupted_tasks  # noqa: PLC0415

    logger = get_logger("backend_worker")
    configure_logging(settings.logging, service=role)
    if role == "worker" and (status := _check(settings)) != 0:
        return status
    metrics_server = start_metrics_server(settings.metrics)
    org_name = settings.organization.org_name
    index = settings.compute.replica_index
    app = create_app(settings)
    try:
        if role == "worker":
            resubmitted = resubmit_interrupted_tasks(settings, app)
            if resubmitted:
                logger.warning("resubmitted interrupted tasks", tasks=[task.task_key for task in resubmitted])
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
