"""The worker and builder processes on Celery: builds, compute tasks, and a worker killed mid-task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_common import queues
from backend_common.celery_app import create_celery_app
from backend_common.protos import computeplan_pb2, computetask_pb2, function_pb2
from backend_common.settings import CelerySettings
from backend_worker.asset_buffer import AssetKind
from backend_worker.settings import WorkerSettings
from backend_worker.testing import MODEL_IO, BackendOrganization, sdk_function_archive
from google.protobuf import json_format
from kombu.common import Broadcast

ORG1 = "MyOrg1MSP"
MakeOrganization = Callable[..., BackendOrganization]


class Processes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, role: str, environment: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{role}-{len(self.running)}.log").open("wb")
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "backend-worker"), role],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.kill(process)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.directory.glob("*.log")))


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def wait_for(condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.1)


def test_builder_and_worker_processes_survive_a_kill_mid_task(
    make_organization: MakeOrganization,
    celery_settings: CelerySettings,
    processes: Processes,
    tmp_path: Path,
    worker_environment: Callable[[WorkerSettings, CelerySettings], dict[str, str]],
) -> None:
    org = make_organization(ORG1)
    org_name = org.context.settings.organization.org_name
    client = org.orchestrator
    environment = worker_environment(org.context.settings, celery_settings)
    app = create_celery_app("test", celery_settings, org.context.settings.organization.org_name)
    processes.start("builder", environment)
    worker = processes.start("worker", environment)

    function = org.register_function(sdk_function_archive(tmp_path, "slow"), MODEL_IO)
    plan = client.register_plan(computeplan_pb2.NewComputePlan(key=str(uuid.uuid4()), name="plan"))
    new_task = computetask_pb2.NewComputeTask(
        key=str(uuid.uuid4()),
        function_key=function.key,
        compute_plan_key=plan.key,
        worker=ORG1,
        outputs={"model": computetask_pb2.NewComputeTaskOutput(permissions={"public": True})},
    )
    [task] = client.register_tasks([new_task])
    # The builder's queue, with the arguments the events service sends (reference names).
    app.send_task(
        queues.BUILD_IMAGE_TASK,
        kwargs={"channel_name": org.channel, "function_serialized": serialize(function)},
        queue=queues.builder_queue(org_name),
    )
    wait_for(
        lambda: client.get_function(function.key).status == function_pb2.FUNCTION_STATUS_READY,
        120,
        processes.logs,
    )
    assert client.get_task(task.key).status == computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT

    worker_queue = queues.worker_replica_queue(org_name, 0)
    app.send_task(queues.COMPUTE_TASK_TASK, args=[org.channel, serialize(task), plan.key], queue=worker_queue)
    runs = org.context.root / "runs"
    wait_for(
        lambda: any("working slowly" in log.read_text() for log in runs.glob("*/task.log")),
        60,
        processes.logs,
    )
    assert client.get_task(task.key).status == computetask_pb2.STATUS_EXECUTING
    # The worker dies with its function; nothing acknowledges the message.
    processes.kill(worker)
    time.sleep(0.5)
    assert client.get_task(task.key).status == computetask_pb2.STATUS_EXECUTING

    # Restarted, it runs the task again to its end.
    processes.start("worker", environment)
    wait_for(
        lambda: client.get_task(task.key).status == computetask_pb2.STATUS_DONE,
        60,
        processes.logs,
    )
    assert len(client.get_compute_task_output_models(task.key)) == 1
    assert "resubmitting a task interrupted by a worker restart" in processes.logs()
    # The run's marker goes right after the task is reported DONE.
    marker = org.context.root / "running" / "worker-0" / f"{task.key}.json"
    wait_for(lambda: not marker.exists(), 10, processes.logs)

    # The clean-up work of the events service, in its formats.
    [model] = client.get_compute_task_output_models(task.key)
    assert org.context.buffer.contains(AssetKind.MODEL, model.key)
    plan_dir = org.context.root / "compute_plans" / plan.key
    plan_dir.mkdir(parents=True, exist_ok=True)
    results = [
        app.send_task(
            queues.DELETE_CP_POD_AND_DIRS_TASK,
            kwargs={"channel_name": org.channel, "compute_plan_key": plan.key},
            queue=worker_queue,
        ),
        app.send_task(
            queues.REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK,
            kwargs={"model_key": model.key},
            queue=Broadcast(queues.broadcast_queue(org_name)),
        ),
        app.send_task(
            queues.REMOVE_INTERMEDIARY_MODEL_FROM_DB_TASK,
            kwargs={"channel_name": org.channel, "model_key": model.key},
            queue=queues.worker_queue(org_name),
        ),
        app.send_task(
            queues.REMOVE_TRANSIENT_OUTPUTS_TASK,
            kwargs={
                "channel_name": org.channel,
                "outputs": [{"compute_task_key": task.key, "identifier": "model"}],
            },
            queue=queues.worker_queue(org_name),
        ),
    ]
    # Torn down, model deleted, the output not transient so not disabled.
    assert [results[index].get(timeout=30) for index in (0, 2, 3)] == [True, True, 0]
    wait_for(lambda: not org.context.buffer.contains(AssetKind.MODEL, model.key), 30, processes.logs)
    assert not plan_dir.exists()
    wait_for(lambda: org.context.sources.stored_file(model.key, "model") is None, 30, processes.logs)


def serialize(message: Any) -> str:
    """As the events service sends orchestrator objects: proto field names, enum names."""
    return json.dumps(
        json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )
