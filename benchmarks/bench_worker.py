"""Benchmark of the worker (issue 6): overhead per compute task, and a rebuild of a known archive.

Everything is real: PostgreSQL (throwaway databases), Redis (databases 4 and 5, flushed), the
standalone orchestrator (`orchestrator serve`), a `backend-worker worker` and a `backend-worker
builder` process with the bubblewrap sandbox, object storage on disk. A small dispatcher stands in
for the events service: it follows the orchestrator's event stream and sends `compute_task` when a
task of this organization becomes ready, as worker-events does.

1. A chain of 100 trivial tasks on one organization (each consumes its parent's model). For each
   task, the time from its WAITING_FOR_EXECUTOR_SLOT event to its DONE event (orchestrator clock)
   minus the function's own run time (measured inside the function) is the worker's overhead.
   Target: median <= 150 ms.
2. `build_image` for a function whose archive checksum is already built: from sending the Celery
   task to the function being READY. Target: <= 0.5 s.

`python benchmarks/bench_worker.py [--tasks N]`; exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

import redis
import yaml
from backend_common import queues
from backend_common.celery_app import create_celery_app
from backend_common.db.replica import TaskProfile, TaskProfilingStep
from backend_common.orchestrator import OrchestratorClient, OrchestratorError
from backend_common.protos import common_pb2, computeplan_pb2, computetask_pb2, function_pb2
from backend_common.settings import (
    CelerySettings,
    DatabaseSettings,
    HttpSettings,
    MetricsSettings,
    OrchestratorSettings,
    OrganizationSettings,
    StorageSettings,
)
from backend_common.testing.postgres import DatabaseFactory, server_url
from backend_common.testing.processes import free_port
from backend_migrations.schema import upgrade
from backend_worker.context import WorkerContext
from backend_worker.function_environment import base_environment_path, ensure_base_environment
from backend_worker.settings import ExecutionSettings, WorkerSettings, default_python
from backend_worker.testing import FUNCTION_SCRIPT, MODEL_IO, BackendOrganization, sdk_function_archive
from google.protobuf import json_format
from sqlalchemy import select

REPOSITORY = Path(__file__).resolve().parents[1]
ENVIRONMENTS = REPOSITORY / ".local" / "worker-test"
BASE_REQUIREMENTS = ["substratools==1.0.0", "substrafl==1.0.0"]
CHANNEL = "mychannel"
ORG = "MyOrg1MSP"
ORG_NAME = "benchorg"
BROKER_DATABASE, RESULT_DATABASE = 4, 5
OVERHEAD_TARGET_MS = 150.0
REBUILD_TARGET_S = 0.5

# The chain's function: trivial, and it reports its own run time for the overhead computation.
TIMED_SCRIPT = (
    FUNCTION_SCRIPT
    + """

@tools.register
def timed(inputs, outputs, task_properties):
    started = time.perf_counter()
    if inputs.get("model"):
        _load(inputs["model"])
    result = {"rank": task_properties["rank"]}
    result["seconds"] = time.perf_counter() - started
    _save(result, outputs["model"])
"""
)


class Services:
    """The processes this benchmark starts, stopped by PID at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: list[str], environment: dict[str, str] | None = None) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


class Dispatcher(threading.Thread):
    """worker-events in miniature: ready tasks of this organization go to its worker's queue."""

    def __init__(self, client: OrchestratorClient, celery: CelerySettings) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.app = create_celery_app("bench-dispatcher", celery, ORG_NAME)
        self.ready_at: dict[str, float] = {}
        self.done_at: dict[str, float] = {}
        self.sent: set[str] = set()
        self.failed: list[str] = []
        self.stream = client.subscribe_to_events()

    def run(self) -> None:
        queue = queues.worker_replica_queue(ORG_NAME, 0)
        try:
            for event in self.stream:
                if event.asset_kind != common_pb2.ASSET_COMPUTE_TASK:
                    continue
                task = event.compute_task
                moment = event.timestamp.ToDatetime(tzinfo=UTC).timestamp()
                if task.status == computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT and task.worker == ORG:
                    if task.key not in self.sent:
                        self.sent.add(task.key)
                        self.ready_at[task.key] = moment
                        self.app.send_task(
                            queues.COMPUTE_TASK_TASK,
                            args=(CHANNEL, json_format.MessageToJson(task), task.compute_plan_key),
                            queue=queue,
                        )
                elif task.status == computetask_pb2.STATUS_DONE:
                    self.done_at[task.key] = moment
                elif task.status in (computetask_pb2.STATUS_FAILED, computetask_pb2.STATUS_CANCELED):
                    self.failed.append(task.key)
        except (OrchestratorError, ValueError):
            return

    def close(self) -> None:
        # Closing the channel cancels the stream; the thread ends on the error.
        self.client.close()
        self.join(5)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100)
    arguments = parser.parse_args()

    python = default_python()
    base = ensure_base_environment(
        base_environment_path(ENVIRONMENTS, python, BASE_REQUIREMENTS),
        python=python,
        requirements=BASE_REQUIREMENTS,
        pip_cache=ENVIRONMENTS / "pip-cache",
        timeout=900,
    )
    # Outside /tmp: the sandbox replaces /tmp, the worker's directories get their production view.
    work = Path("/var/tmp") / f"substra-bench-worker-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    databases = DatabaseFactory(server_url())
    services = Services(work)
    for database in (BROKER_DATABASE, RESULT_DATABASE):
        redis.Redis(host="127.0.0.1", port=6379, db=database).flushdb()
    context: WorkerContext | None = None
    dispatcher: Dispatcher | None = None
    try:
        orchestrator_url = databases.create("bench_orchestrator")
        backend_url = databases.create("bench_backend")
        upgrade(backend_url)
        port = free_port()
        config = work / "orchestrator.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{port}",
                    "database_url": orchestrator_url,
                    "channels": {CHANNEL: [ORG]},
                }
            )
        )
        bin_dir = Path(sys.executable).parent
        services.start(
            "orchestrator", [str(bin_dir / "orchestrator"), "serve", "--config", str(config), "--grace", "0"]
        )
        orchestrator = OrchestratorSettings(host="127.0.0.1", port=port, max_attempts=3)
        client = OrchestratorClient(orchestrator, ORG, CHANNEL)

        def orchestrator_up() -> bool:
            try:
                with OrchestratorClient(
                    OrchestratorSettings(host="127.0.0.1", port=port, max_attempts=1), ORG, CHANNEL
                ) as probe:
                    probe.query_version()
            except OrchestratorError:
                return False
            return True

        wait_until(orchestrator_up, 60, "the orchestrator did not start")
        client.register_organization("http://bench.test")

        celery = CelerySettings(
            broker_host="127.0.0.1", broker_database=BROKER_DATABASE, result_database=RESULT_DATABASE
        )
        settings = WorkerSettings(
            organization=OrganizationSettings(org_name=ORG_NAME, msp_id=ORG, channels=[{"name": CHANNEL}]),
            orchestrator=orchestrator,
            database=DatabaseSettings(url_override=backend_url),
            celery=celery,
            storage=StorageSettings(media_root=str(work / "medias")),
            execution=ExecutionSettings(
                root_dir=str(work / "subtuple"),
                base_environment=str(base.path),
                base_requirements=BASE_REQUIREMENTS,
                pip_cache_dir=str(ENVIRONMENTS / "pip-cache"),
                python=python,
            ),
            http=HttpSettings(default_domain_override="http://bench.test"),
            metrics=MetricsSettings(enabled=False),
        )
        context = WorkerContext.from_settings(settings)
        organization = BackendOrganization(context=context, channel=CHANNEL)
        environment = {
            **os.environ,
            "ORG_NAME": ORG_NAME,
            "MSP_ID": ORG,
            "CHANNELS": json.dumps([{CHANNEL: {}}]),
            "HOSTNAME": "worker-0",
            "ORCHESTRATOR_HOST": "127.0.0.1",
            "ORCHESTRATOR_PORT": str(port),
            "DATABASE_URL": backend_url,
            "CELERY_BROKER_HOST": "127.0.0.1",
            "CELERY_BROKER_DATABASE": str(BROKER_DATABASE),
            "CELERY_RESULT_DATABASE": str(RESULT_DATABASE),
            "MEDIA_ROOT": str(work / "medias"),
            "SUBTUPLE_DIR": str(work / "subtuple"),
            "FUNCTION_PYTHON": python,
            "FUNCTION_BASE_ENVIRONMENT": str(base.path),
            "FUNCTION_BASE_REQUIREMENTS": " ".join(BASE_REQUIREMENTS),
            "FUNCTION_PIP_CACHE_DIR": str(ENVIRONMENTS / "pip-cache"),
            "DEFAULT_DOMAIN": "http://bench.test",
            "ENABLE_METRICS": "false",
            "LOG_LEVEL": "WARNING",
        }
        services.start("builder", [str(bin_dir / "backend-worker"), "builder"], environment)
        services.start("worker", [str(bin_dir / "backend-worker"), "worker"], environment)
        app = create_celery_app("bench", celery, ORG_NAME)

        def build(function: function_pb2.Function) -> float:
            started = time.monotonic()
            app.send_task(
                queues.BUILD_IMAGE_TASK,
                kwargs={"channel_name": CHANNEL, "function_serialized": json_format.MessageToJson(function)},
            )
            wait_until(
                lambda: client.get_function(function.key).status == function_pb2.FUNCTION_STATUS_READY,
                300,
                "the function was not built",
            )
            return time.monotonic() - started

        archive = sdk_function_archive(work, "timed", script=TIMED_SCRIPT)
        first_build = build(organization.register_function(archive, MODEL_IO))
        rebuilds = [build(organization.register_function(archive, MODEL_IO)) for _ in range(5)]
        function = client.get_function(organization.register_function(archive, MODEL_IO).key)
        build(function)

        dispatcher = Dispatcher(OrchestratorClient(orchestrator, ORG, CHANNEL), celery)
        dispatcher.start()
        plan = client.register_plan(computeplan_pb2.NewComputePlan(key=str(uuid.uuid4()), name="bench"))
        new_tasks = []
        parent = None
        for _ in range(arguments.tasks):
            key = str(uuid.uuid4())
            inputs = []
            if parent is not None:
                inputs.append(
                    computetask_pb2.ComputeTaskInput(
                        identifier="model",
                        parent_task_output=computetask_pb2.ParentTaskOutputRef(
                            parent_task_key=parent, output_identifier="model"
                        ),
                    )
                )
            new_tasks.append(
                computetask_pb2.NewComputeTask(
                    key=key,
                    function_key=function.key,
                    compute_plan_key=plan.key,
                    worker=ORG,
                    inputs=inputs,
                    outputs={
                        "model": computetask_pb2.NewComputeTaskOutput(
                            permissions=common_pb2.NewPermissions(public=True)
                        )
                    },
                )
            )
            parent = key
        started = time.monotonic()
        tasks = client.register_tasks(new_tasks)
        # As api-events would: the worker's task profiles refer to the replica's rows.
        organization.mirror(*tasks)
        keys = [task.key for task in new_tasks]
        wait_until(
            lambda: len(dispatcher.done_at) == len(keys) or bool(dispatcher.failed),
            max(120, arguments.tasks * 5),
            "the chain did not finish",
        )
        wall = time.monotonic() - started
        if dispatcher.failed:
            print(f"failed tasks: {dispatcher.failed}", file=sys.stderr)
            return 1
        del tasks
        overheads = []
        for key in keys:
            [model] = client.get_compute_task_output_models(key)
            own = json.loads(context.storage.read_bytes("substra-model", f"models/{model.key}/model"))[
                "seconds"
            ]
            overheads.append((dispatcher.done_at[key] - dispatcher.ready_at[key] - own) * 1000)
        starts = {}
        with context.sessions() as session:
            for profile in session.scalars(select(TaskProfile).where(TaskProfile.compute_task_key.in_(keys))):
                starts[profile.compute_task_key] = profile.creation_date.timestamp()
            steps: dict[str, list[int]] = {}
            for step in session.scalars(
                select(TaskProfilingStep).where(TaskProfilingStep.compute_task_key.in_(keys))
            ):
                steps.setdefault(step.step, []).append(step.duration_us)
        # The orchestrator's timestamps are naive UTC: compare in UTC.
        dispatch = [(starts[key] - dispatcher.ready_at[key]) * 1000 for key in keys if key in starts]
        median = statistics.median(overheads)
        p90 = statistics.quantiles(overheads, n=10)[-1]
        rebuild = statistics.median(rebuilds)
        per_task = wall / len(keys) * 1000
        print(f"chain of {len(keys)} trivial tasks: {wall:.2f} s wall, {per_task:.0f} ms per task")
        print(
            f"overhead per task (ready -> done, minus the function's own time): median {median:.1f} ms, "
            f"p90 {p90:.1f} ms, min {min(overheads):.1f} ms, max {max(overheads):.1f} ms "
            f"(target <= {OVERHEAD_TARGET_MS:.0f} ms)"
        )
        print(
            f"  of which: ready event -> the worker takes the task (events stream, Celery): "
            f"median {statistics.median(dispatch):.1f} ms; steps (median): "
            + ", ".join(f"{name} {statistics.median(values) / 1000:.1f} ms" for name, values in steps.items())
        )
        print(f"first build of the function (builder process just started): {first_build:.2f} s")
        print(
            f"build of an already built checksum (send -> READY): median {rebuild * 1000:.0f} ms, "
            f"max {max(rebuilds) * 1000:.0f} ms (target <= {REBUILD_TARGET_S * 1000:.0f} ms)"
        )
        ok = median <= OVERHEAD_TARGET_MS and rebuild <= REBUILD_TARGET_S
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        # Every step runs even if an earlier one fails: nothing started here may outlive the run.
        cleanups: list[Callable[[], object]] = []
        if dispatcher is not None:
            cleanups.append(dispatcher.close)
        if context is not None:
            cleanups.append(context.close)
        cleanups += [services.stop, databases.drop_all]
        cleanups += [
            redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb
            for db in (BROKER_DATABASE, RESULT_DATABASE)
        ]
        if not os.environ.get("BENCH_KEEP"):
            cleanups.append(lambda: shutil.rmtree(work, ignore_errors=True))
        for cleanup in cleanups:
            try:
                cleanup()
            except Exception as error:
                print(f"cleanup failed: {error!r}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
