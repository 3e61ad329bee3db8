"""Tasks interrupted by the death of their worker: never left EXECUTING.

While a compute task runs, a marker file records it under `<root>/running/<worker hostname>/`.
Normal ends (done, failed, canceled) remove it; a task waiting for a retry keeps it; only a killed
process leaves a "running" one. When the
worker starts again it finds the markers: a task still EXECUTING is sent again to this worker
(Celery would only redeliver its unacknowledged message hours later), unless its worker already
died too many times while running it, in which case it is failed with an INTERNAL report. A message
redelivered later finds the task final and is dropped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backend_common import queues
from backend_common.logging import get_logger
from backend_common.orchestrator import OrchestratorClient, OrchestratorError
from backend_common.protos import computetask_pb2
from celery import Celery

from backend_worker.settings import WorkerSettings

logger = get_logger("backend_worker.recovery")


@dataclass(frozen=True)
class RunningTask:
    channel: str
    task_key: str
    task_json: str
    # Runs of the task whose worker died ("running" markers found again).
    attempts: int
    # "running", or "retrying" while a retry waits in the broker.
    state: str


def markers_directory(root: Path, hostname: str) -> Path:
    return root / "running" / hostname


def _read(path: Path) -> RunningTask | None:
    try:
        data = json.loads(path.read_text())
        return RunningTask(
            channel=data["channel"],
            task_key=data["task_key"],
            task_json=data["task_json"],
            attempts=int(data["attempts"]),
            state=data.get("state", "running"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(directory: Path, task: RunningTask) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{task.task_key}.json"
    temporary = path.with_suffix(".tmp")
    data = {
        "channel": task.channel,
        "task_key": task.task_key,
        "task_json": task.task_json,
        "attempts": task.attempts,
        "state": task.state,
        "pid": os.getpid(),
        "time": time.time(),
    }
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


def begin_run(directory: Path, *, channel: str, task_key: str, task_json: str) -> int:
    """Mark the task as running; returns the attempt number (1 + the runs whose worker died)."""
    previous = _read(directory / f"{task_key}.json")
    attempt = 1
    if previous is not None:
        attempt = previous.attempts + 1 if previous.state == "running" else previous.attempts
    _write(
        directory,
        RunningTask(
            channel=channel, task_key=task_key, task_json=task_json, attempts=attempt, state="running"
        ),
    )
    return attempt


def end_run(directory: Path, task_key: str, *, retrying: bool) -> None:
    """The run is over. A task waiting for its retry stays marked: Celery keeps retries (messages
    with a countdown) in the worker's memory, and they would be lost with it."""
    path = directory / f"{task_key}.json"
    if not retrying:
        path.unlink(missing_ok=True)
        return
    previous = _read(path)
    if previous is not None:
        _write(
            directory,
            RunningTask(
                channel=previous.channel,
                task_key=task_key,
                task_json=previous.task_json,
                attempts=previous.attempts,
                state="retrying",
            ),
        )


def interrupted_tasks(directory: Path) -> list[RunningTask]:
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.json")):
        task = _read(path)
        if task is None:
            path.unlink(missing_ok=True)
        else:
            found.append(task)
    return found


def forget(directory: Path, task_key: str) -> None:
    (directory / f"{task_key}.json").unlink(missing_ok=True)


def recover_interrupted_tasks(
    directory: Path,
    *,
    get_status: Callable[[RunningTask], computetask_pb2.ComputeTaskStatus.ValueType],
    resubmit: Callable[[RunningTask], None],
) -> list[RunningTask]:
    """Send again the tasks a dead process left running; forget those already over.

    The markers of resubmitted tasks stay: their count of interrupted attempts goes on. Returns the
    resubmitted tasks.
    """
    resubmitted = []
    for task in interrupted_tasks(directory):
        try:
            status = get_status(task)
        except OrchestratorError as error:
            logger.warning("cannot check an interrupted task", task_key=task.task_key, error=str(error))
            continue
        if status in (computetask_pb2.STATUS_EXECUTING, computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT):
            logger.warning("resubmitting a task interrupted by a worker restart", task_key=task.task_key)
            resubmit(task)
            resubmitted.append(task)
        else:
            forget(directory, task.task_key)
    return resubmitted


def _plan_key(task_json: str) -> str:
    try:
        data = json.loads(task_json)
    except ValueError:
        return ""
    key = data.get("compute_plan_key") or data.get("computePlanKey") if isinstance(data, dict) else None
    return key if isinstance(key, str) else ""


def resubmit_interrupted_tasks(settings: WorkerSettings, app: Celery) -> list[RunningTask]:
    """At worker start: send again to this replica the tasks its previous life left running."""
    directory = markers_directory(settings.root_dir, settings.compute.hostname)
    if not interrupted_tasks(directory):
        return []
    clients: dict[str, OrchestratorClient] = {}

    def client(channel: str) -> OrchestratorClient:
        if channel not in clients:
            clients[channel] = OrchestratorClient(
                settings.orchestrator, settings.organization.msp_id, channel
            )
        return clients[channel]

    queue = queues.worker_replica_queue(settings.organization.org_name, settings.compute.replica_index)

    def resubmit(task: RunningTask) -> None:
        app.send_task(
            queues.COMPUTE_TASK_TASK,
            args=(task.channel, task.task_json, _plan_key(task.task_json)),
            queue=queue,
        )

    try:
        return recover_interrupted_tasks(
            directory,
            get_status=lambda task: client(task.channel).get_task(task.task_key).status,
            resubmit=resubmit,
        )
    finally:
        for opened in clients.values():
            opened.close()
