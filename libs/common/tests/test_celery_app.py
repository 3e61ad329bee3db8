"""The shared Celery configuration, against the real Redis and real worker processes.

Workers run as `celery -A test_celery_app:app worker --pool=solo` subprocesses importing this very
module, so they and the test process build the same app. Every Redis key of the run carries a
prefix unique to the run (database 9), and is deleted at the end.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from backend_common import queues
from backend_common.celery_app import (
    WAITING_STATE,
    RetryableTaskError,
    create_celery_app,
    retry_options,
    worker_queues,
)
from backend_common.settings import CelerySettings
from kombu.exceptions import EncodeError

TESTS_DIR = Path(__file__).resolve().parent
REDIS_DB = 9
START_TIMEOUT = 30.0
# Inherited by the worker subprocesses, so they consume the queues of the same test organization.
ORG = os.environ.setdefault("BACKEND_COMMON_TEST_CELERY_ORG", f"celerytest{uuid.uuid4().hex[:8]}")
KEY_PREFIX = f"{ORG}:"
VISIBILITY_ENV = "BACKEND_COMMON_TEST_VISIBILITY_TIMEOUT"

SETTINGS = CelerySettings(
    broker_host="127.0.0.1",
    broker_port=6379,
    broker_database=REDIS_DB,
    result_database=REDIS_DB,
    task_max_retries=3,
    task_retry_backoff=1,
    task_retry_backoff_max=1,
)

app = create_celery_app("backend-common-tests", SETTINGS, ORG)
# Keys prefixed per run: the run's unacked messages, queues and results stay apart from any other
# user of the database (Redis' unacked-message index is shared by the whole database otherwise).
_transport_options: dict[str, Any] = {**app.conf.broker_transport_options, "global_keyprefix": KEY_PREFIX}
if os.environ.get(VISIBILITY_ENV):
    # The redelivery test: redeliver unacknowledged messages after a second, checked every second.
    _transport_options.update(
        visibility_timeout=int(os.environ[VISIBILITY_ENV]),
        unacked_restore_interval=1,
        unacked_restore_throttle=1,
    )
app.conf.broker_transport_options = _transport_options
app.conf.result_backend_transport_options = {"global_keyprefix": KEY_PREFIX}
app.conf.result_expires = 600


@app.task(name="backend_common_tests.echo", bind=True)
def echo(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
    return {"payload": payload, "hostname": self.request.hostname}


@app.task(name=queues.REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK, bind=True)
def record_broadcast(self: Any, directory: str) -> None:
    # Registered under the reference name to check its static route to the broadcast queue.
    with Path(directory, self.request.hostname).open("a") as copies:
        copies.write("received\n")


@app.task(name="backend_common_tests.fail_once", bind=True, **retry_options(SETTINGS))
def fail_once(self: Any, marker: str) -> dict[str, Any]:
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise RetryableTaskError("first attempt fails")
    return {"retries": self.request.retries}


@app.task(name="backend_common_tests.hang_first_time", bind=True)
def hang_first_time(self: Any, marker: str) -> dict[str, Any]:
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        time.sleep(300)  # the test kills this worker meanwhile
    return {"redelivered": bool(self.request.delivery_info.get("redelivered")), "pid": os.getpid()}


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    nodename: str
    stdout_path: Path
    stderr_path: Path

    def diagnostics(self) -> str:
        return f"stdout:\n{self.stdout_path.read_text()}\nstderr:\n{self.stderr_path.read_text()}"


def start_worker(
    kind: queues.ProcessKind, replica_index: int, log_dir: Path, env: dict[str, str] | None = None
) -> WorkerProcess:
    hostname = queues.worker_hostname(kind, ORG, replica_index)
    stdout_path = log_dir / f"{hostname}.{uuid.uuid4().hex[:6]}.out"
    stderr_path = stdout_path.with_suffix(".err")
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "test_celery_app:app",
        "--quiet",  # no banner: stdout only carries JSON log lines
        "worker",
        "--pool=solo",
        "-E",
        "--without-mingle",
        "--without-gossip",
        "--loglevel=INFO",
        "-Q",
        ",".join(worker_queues(kind, ORG, replica_index)),
        "--hostname",
        hostname,
    ]
    python_path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=TESTS_DIR,
            env={**os.environ, "PYTHONPATH": python_path, "LOG_LEVEL": "INFO", **(env or {})},
            stdout=stdout,
            stderr=stderr,
        )
    return WorkerProcess(process, f"celery@{hostname}", stdout_path, stderr_path)


def wait_ready(workers: list[WorkerProcess]) -> None:
    """Wait until every worker answers a ping: its consumers, fanout ones included, are set up."""
    pending = {worker.nodename: worker for worker in workers}
    deadline = time.monotonic() + START_TIMEOUT
    while pending:
        for worker in pending.values():
            if worker.process.poll() is not None:
                pytest.fail(f"worker {worker.nodename} exited early\n{worker.diagnostics()}")
        if time.monotonic() > deadline:
            pytest.fail(f"workers not ready: {sorted(pending)}")
        for reply in app.control.ping(destination=list(pending), timeout=0.5):
            for nodename in reply:
                pending.pop(nodename, None)


def stop_worker(worker: WorkerProcess) -> None:
    """Warm shutdown (SIGTERM), killed if it does not exit in time."""
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis(host=SETTINGS.broker_host, port=SETTINGS.broker_port, db=REDIS_DB)
    yield client
    # Only the keys of this run.
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_configuration() -> None:
    conf = app.conf
    assert conf.broker_url == f"redis://127.0.0.1:6379/{REDIS_DB}"
    assert conf.result_backend == f"redis://127.0.0.1:6379/{REDIS_DB}"
    assert (conf.task_serializer, conf.result_serializer) == ("json", "json")
    assert conf.accept_content == ["json"]
    assert conf.task_track_started and conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_send_task_events and conf.task_send_sent_event
    assert conf.task_default_queue == "celery"
    # The production app (without the test's overrides): result backend on database 1.
    production = create_celery_app("production", CelerySettings(broker_host="redis"), "org1")
    assert production.conf.broker_url == "redis://redis:6379/0"
    assert production.conf.result_backend == "redis://redis:6379/1"
    assert production.conf.broker_transport_options["visibility_timeout"] >= 3840


def test_retry_options_follow_the_settings() -> None:
    options = retry_options(CelerySettings())
    assert options == {
        "autoretry_for": (RetryableTaskError,),
        "max_retries": 7,
        "retry_backoff": 60,
        "retry_backoff_max": 3840,
        "retry_jitter": True,
    }


def test_queues_of_each_process_kind() -> None:
    # The `-Q` lists of the reference worker, builder and scheduler-worker commands.
    assert worker_queues("worker", "org1", 2) == ["org1.worker", "org1.worker-2", "org1.broadcast", "celery"]
    assert worker_queues("builder", "org1", 0) == ["org1.builder", "org1.builder-0", "org1.broadcast"]
    assert worker_queues("scheduler-worker", "org1") == ["org1", "scheduler", "celery"]
    assert queues.worker_hostname("worker", "org1", 2) == "org1.worker-2"
    assert queues.worker_hostname("scheduler-worker", "org1", 0) == "org1.scheduler"


def test_static_routes_of_reference_task_names() -> None:
    router = app.amqp.router
    assert router.route({}, queues.BUILD_IMAGE_TASK)["queue"].name == f"{ORG}.builder"
    assert router.route({}, queues.SAVE_IMAGE_TASK)["queue"].name == f"{ORG}.worker"
    assert router.route({}, queues.FLUSH_EXPIRED_TOKENS_TASK)["queue"].name == "scheduler"
    # Unrouted tasks go to the default queue; compute tasks are sent to a replica queue explicitly.
    assert router.route({}, queues.COMPUTE_TASK_TASK)["queue"].name == "celery"
    broadcast = router.route({}, queues.REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK)["queue"]
    assert broadcast.exchange.type == "fanout"
    assert broadcast.exchange.name == f"{ORG}.broadcast"


def test_sent_task_is_waiting_and_json_encoded(redis_client: redis.Redis) -> None:
    queue = queues.builder_replica_queue(ORG, 99)  # nobody consumes it
    result = app.send_task("backend_common_tests.echo", args=[{"a": 1}], queue=queue)
    assert result.state == WAITING_STATE

    raw_messages = redis_client.lrange(f"{KEY_PREFIX}{queue}", 0, -1)
    assert len(raw_messages) == 1
    message = json.loads(raw_messages[0])
    assert message["content-type"] == "application/json"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([{"a": 1}], {})
    assert message["headers"]["id"] == result.id

    with pytest.raises(EncodeError):
        app.send_task("backend_common_tests.echo", args=[object()], queue=queue)
    assert redis_client.llen(f"{KEY_PREFIX}{queue}") == 1


@pytest.fixture(scope="class")
def workers(
    tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis
) -> Iterator[dict[str, WorkerProcess]]:
    """Two worker replicas and a builder of the test organization, for the tests of one class."""
    log_dir = tmp_path_factory.mktemp("workers")
    started = {
        "worker-0": start_worker("worker", 0, log_dir),
        "worker-1": start_worker("worker", 1, log_dir),
        "builder-0": start_worker("builder", 0, log_dir),
    }
    try:
        wait_ready(list(started.values()))
        yield started
    finally:
        for worker in started.values():
            stop_worker(worker)
    for worker in started.values():
        assert worker.process.returncode == 0, worker.diagnostics()


class TestWithRunningWorkers:
    """Runs with the `workers` fixture, stopped at the end of the class.

    So they are gone before the redelivery test, whose workers put back in the queues every message
    unacknowledged for more than a second, including those a running worker holds.
    """

    def test_task_routed_to_each_queue_runs_and_returns_json(self, workers: dict[str, WorkerProcess]) -> None:
        generic = echo.apply_async(args=[{"n": 1, "items": ["x"]}], queue=queues.worker_queue(ORG))
        value = generic.get(timeout=30)
        assert value["payload"] == {"n": 1, "items": ["x"]}
        assert value["hostname"] in {workers["worker-0"].nodename, workers["worker-1"].nodename}
        assert generic.state == "SUCCESS"

        pinned = echo.apply_async(args=[{"n": 2}], queue=queues.worker_replica_queue(ORG, 1))
        assert pinned.get(timeout=30)["hostname"] == workers["worker-1"].nodename

        build = echo.apply_async(args=[{"n": 3}], queue=queues.builder_queue(ORG))
        assert build.get(timeout=30)["hostname"] == workers["builder-0"].nodename

    def test_broadcast_reaches_every_worker_and_builder(
        self, workers: dict[str, WorkerProcess], tmp_path: Path
    ) -> None:
        # No explicit queue: the static route of the reference name sends it to `<org>.broadcast`.
        app.send_task(queues.REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK, args=[str(tmp_path)])
        expected = {worker.nodename for worker in workers.values()}
        wait_for(lambda: {path.name for path in tmp_path.iterdir()} == expected, what="broadcast copies")
        time.sleep(0.5)
        assert {path.name: path.read_text() for path in tmp_path.iterdir()} == dict.fromkeys(
            expected, "received\n"
        )  # one copy each, no more

    def test_retryable_error_is_retried(self, workers: dict[str, WorkerProcess], tmp_path: Path) -> None:
        result = fail_once.apply_async(args=[str(tmp_path / "marker")], queue=queues.worker_queue(ORG))
        assert result.get(timeout=30) == {"retries": 1}

    def test_worker_logs_are_json(self, workers: dict[str, WorkerProcess]) -> None:
        echo.apply_async(args=[{}], queue=queues.worker_replica_queue(ORG, 0)).get(timeout=30)
        worker = workers["worker-0"]
        lines = [line for line in worker.stdout_path.read_text().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]
        assert all(
            {"timestamp", "level", "logger", "event", "service"} <= record.keys() for record in records
        )
        assert all(record["service"] == "backend-common-tests" for record in records)
        assert any(record["event"].endswith("ready.") for record in records), worker.diagnostics()
        assert any(record["logger"] == "celery.app.trace" for record in records), worker.diagnostics()


def test_task_of_a_killed_worker_is_redelivered(tmp_path: Path, redis_client: redis.Redis) -> None:
    # Replica 7: a queue of its own. The workers redeliver messages unacknowledged for 1 s.
    env = {VISIBILITY_ENV: "1"}
    first = start_worker("worker", 7, tmp_path, env)
    second: WorkerProcess | None = None
    try:
        wait_ready([first])
        marker = tmp_path / "started"
        result = hang_first_time.apply_async(args=[str(marker)], queue=queues.worker_replica_queue(ORG, 7))
        wait_for(marker.exists, what="the task to start")
        assert result.state == "STARTED"
        assert marker.read_text() == str(first.process.pid)

        # Killed mid-run: no warm shutdown, the late-acknowledged message stays unacknowledged.
        first.process.kill()
        first.process.wait()

        second = start_worker("worker", 7, tmp_path, env)
        value = result.get(timeout=60)
        assert value == {"redelivered": True, "pid": second.process.pid}
    finally:
        stop_worker(first)
        if second is not None:
            stop_worker(second)
