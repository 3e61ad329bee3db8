"""Beat, two scheduler-workers and a worker host (a worker and a builder) as real processes.

Beat sends the flush of expired tokens and the missed-teardown reconciliation to the `scheduler`
queue, and the asset buffer eviction to `<org>.broadcast`. The two scheduler-workers share the
jobs without doing any twice; the real worker runs the teardown the scheduler dispatched; the
worker and the builder, sharing one host directory, evict the buffer once.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import redis
from backend_common.db import session_scope
from backend_common.db.local import ApiToken, ComputePlanWorkerMapping, RevokedToken
from backend_common.db.replica import ComputePlan
from backend_common.testing.processes import free_port
from backend_events.testing import OrchestratorProcess
from backend_scheduler.testing import (
    BROKER_DATABASE,
    CHANNEL,
    ORG,
    ORG_NAME,
    RESULT_DATABASE,
    Channel,
    add_tokens,
    now,
    start_process,
    stop_process,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

BIN = Path(sys.executable).parent
DAY = 86400


def tokens_left(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(session.scalars(select(ApiToken.id)).all()) + len(
            session.scalars(select(RevokedToken.jti)).all()
        )


def buffer_entry(root: Path, key: str, age: float) -> None:
    """A model in the asset buffer (`backend_worker.asset_buffer` layout), last used `age` seconds ago."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / key).write_bytes(b"weights")
    size_file = root / f".models-{key}.size"
    size_file.write_text("7")
    moment = time.time() - age
    os.utime(size_file, (moment, moment))


def job_items(logs: list[Path], job: str) -> int:
    """Items the runs of `job` logged in these processes' JSON logs."""
    total = 0
    for log in logs:
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == "job done" and record.get("job") == job:
                total += int(record["items"])
    return total


def metric(port: int, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return float(sample.value)
    return 0.0


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_beat_scheduler_workers_and_a_worker_host_keep_the_organization_clean(
    channel: Channel,
    sessions: sessionmaker[Session],
    backend_database: str,
    orchestrator: OrchestratorProcess,
    redis_databases: redis.Redis,
    tmp_path: Path,
) -> None:
    # Tokens: two expired API tokens and an expired revoked session go, the valid one stays.
    add_tokens(
        sessions, [timedelta(hours=-1), timedelta(minutes=-5), timedelta(hours=1)], [timedelta(hours=-2)]
    )
    # A canceled plan whose teardown was missed (its plan lock still on the worker), a running one.
    function_key = channel.function()
    missed, _ = channel.plan(function_key, 1)
    running, _ = channel.plan(function_key, 1)
    channel.cancel(missed)
    channel.mirror()
    with session_scope(sessions) as session:
        # Canceled an hour ago: the events service had all the time to tear it down.
        session.get_one(ComputePlan, missed).cancelation_date = now() - timedelta(hours=1)
        for plan_key in (missed, running):
            session.add(ComputePlanWorkerMapping(compute_plan_key=plan_key, worker_index=0))
    subtuple = tmp_path / "subtuple"
    plan_lock = subtuple / "compute_plans" / f"{missed}.lock"
    plan_lock.parent.mkdir(parents=True)
    plan_lock.touch()
    # The asset buffer: an entry unused for a month, a recent one, a crashed fetch.
    buffer = subtuple / "asset_buffer"
    buffer_entry(buffer, "old-model", 30 * DAY)
    buffer_entry(buffer, "recent-model", 60)
    (buffer / "tmp" / uuid.uuid4().hex).mkdir(parents=True)

    common = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("CELERY_", "DATABASE_"))},
        "ORG_NAME": ORG_NAME,
        "MSP_ID": ORG,
        "CHANNELS": json.dumps([{CHANNEL: {}}]),
        "DATABASE_URL": backend_database,
        "ORCHESTRATOR_HOST": "127.0.0.1",
        "ORCHESTRATOR_PORT": str(orchestrator.port),
        "CELERY_BROKER_HOST": "127.0.0.1",
        "CELERY_BROKER_DATABASE": str(BROKER_DATABASE),
        "CELERY_RESULT_DATABASE": str(RESULT_DATABASE),
        "LOG_JSON": "true",
    }
    scheduler = {
        **common,
        "CELERYBEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
        "CELERYBEAT_FLUSH_EXPIRED_TOKENS_TASK_PERIOD": "1",
        "SCHEDULER_TEAR_DOWN_FINISHED_PLANS_PERIOD": "1",
        "PLAN_TEARDOWN_GRACE": "600",
        "SCHEDULER_EVICT_ASSET_BUFFER_PERIOD": "1",
        **{
            f"SCHEDULER_{job}_PERIOD": "0"
            for job in (
                "REDISPATCH_STALE_TASKS",
                "DISPATCH_FORGOTTEN_TASKS",
                "CLEAN_TASK_DIRECTORIES",
                "COLLECT_FUNCTION_ENVIRONMENTS",
            )
        },
    }
    host = {
        **common,
        "HOSTNAME": "worker-0",
        "MEDIA_ROOT": str(tmp_path / "medias"),
        "SUBTUPLE_DIR": str(subtuple),
        "COMPUTE_SANDBOX": "none",
        "COMPUTE_ALLOW_UNSANDBOXED": "true",
        "ASSET_BUFFER_MAX_AGE": str(DAY),
        "ENABLE_METRICS": "false",
    }
    metrics_ports = [free_port(), free_port()]
    logs = {
        name: tmp_path / f"{name}.log" for name in ("beat", "scheduler-0", "scheduler-1", "worker", "builder")
    }
    processes = [
        *(
            start_process(
                [str(BIN / "backend-scheduler"), "worker"],
                {**scheduler, "METRICS_PORT": str(port)},
                logs[f"scheduler-{index}"],
            )
            for index, port in enumerate(metrics_ports)
        ),
        start_process([str(BIN / "backend-worker"), "worker"], host, logs["worker"]),
        start_process([str(BIN / "backend-worker"), "builder"], host, logs["builder"]),
        start_process([str(BIN / "backend-scheduler"), "beat"], scheduler, logs["beat"]),
    ]

    def mapping_released() -> bool:
        with sessions() as session:
            mapping = session.scalars(
                select(ComputePlanWorkerMapping).where(ComputePlanWorkerMapping.compute_plan_key == missed)
            ).one()
            return mapping.release_date is not None

    def clean() -> bool:
        return (
            tokens_left(sessions) == 1
            and mapping_released()
            and not (buffer / "models" / "old-model").exists()
            and not any((buffer / "tmp").iterdir())
        )

    try:
        done = wait_until(clean, 60)
        time.sleep(2.5)  # more runs of every job: they find nothing left
        flushed = sum(
            metric(port, "substra_scheduler_job_items_total", job="flush_expired_tokens")
            for port in metrics_ports
        )
    finally:
        for process in processes:
            stop_process(process)
    output = "\n".join(f"--- {name}\n{log.read_text()[-3000:]}" for name, log in logs.items())
    state = {
        "tokens left": tokens_left(sessions),
        "mapping released": mapping_released(),
        "old entry": (buffer / "models" / "old-model").exists(),
        "crashed fetches": list((buffer / "tmp").iterdir()),
    }
    assert done, f"{state}\n{output}"
    scheduler_logs = [logs["scheduler-0"], logs["scheduler-1"]]
    assert job_items(scheduler_logs, "flush_expired_tokens") == 3, output
    assert flushed == 3
    assert job_items(scheduler_logs, "tear_down_finished_plans") == 1, output
    assert job_items([logs["worker"], logs["builder"]], "evict_asset_buffer") == 2, output
    # The rest is untouched.
    assert not plan_lock.exists()
    with sessions() as session:
        still_open = session.scalars(
            select(ComputePlanWorkerMapping.compute_plan_key).where(
                ComputePlanWorkerMapping.release_date.is_(None)
            )
        ).all()
    assert [str(key) for key in still_open] == [running]
    assert (buffer / "models" / "recent-model").exists()
