"""The worker and builder processes consume their organization's queues on the real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from backend_common import queues
from backend_common.celery_app import create_celery_app
from backend_common.settings import CelerySettings
from backend_common.testing.processes import free_port

BROKER_DATABASE = 14
RESULT_DATABASE = 15


@pytest.fixture
def redis_databases() -> Iterator[CelerySettings]:
    for database in (BROKER_DATABASE, RESULT_DATABASE):
        redis.Redis(host="127.0.0.1", port=6379, db=database).flushdb()
    yield CelerySettings(
        CELERY_BROKER_HOST="127.0.0.1",
        CELERY_BROKER_DATABASE=BROKER_DATABASE,
        CELERY_RESULT_DATABASE=RESULT_DATABASE,
    )
    for database in (BROKER_DATABASE, RESULT_DATABASE):
        redis.Redis(host="127.0.0.1", port=6379, db=database).flushdb()


@pytest.mark.parametrize("role", ["worker", "builder"])
def test_process_answers_on_its_hostname_and_serves_metrics(
    role: str, redis_databases: CelerySettings, tmp_path: Path
) -> None:
    metrics_port = free_port()
    environment = {
        **os.environ,
        "ORG_NAME": "workertest",
        "HOSTNAME": "worker-3",
        "CELERY_BROKER_HOST": "127.0.0.1",
        "CELERY_BROKER_DATABASE": str(BROKER_DATABASE),
        "CELERY_RESULT_DATABASE": str(RESULT_DATABASE),
        "METRICS_PORT": str(metrics_port),
    }
    executable = os.path.join(os.path.dirname(sys.executable), "backend-worker")
    log = tmp_path / "worker.log"
    process = subprocess.Popen(
        [executable, role],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    app = create_celery_app("probe", redis_databases, "workertest")
    # Celery names the node `celery@<hostname>`, as the reference workers are.
    hostname = "celery@" + queues.worker_hostname(role, "workertest", 3)  # type: ignore[arg-type]
    try:
        replies: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while not replies and time.monotonic() < deadline and process.poll() is None:
            replies = app.control.ping(destination=[hostname], timeout=0.5)
        active = app.control.inspect(destination=[hostname], timeout=2).active_queues() or {}
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
    output = log.read_text()
    assert replies == [{hostname: {"ok": "pong"}}], output
    consumed = {queue["name"] for queue in active[hostname]}
    expected = set(
        queues.worker_consumed_queues("workertest", 3)
        if role == "worker"
        else queues.builder_consumed_queues("workertest", 3)
    )
    # The broadcast queue is consumed through a per-worker `bcast.<uuid>` queue.
    assert expected - {queues.broadcast_queue("workertest")} <= consumed
    assert any(name.startswith("bcast.") for name in consumed)
    assert metrics.status_code == 200
    assert process.returncode == 0, output
