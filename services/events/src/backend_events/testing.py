"""Test helpers: real orchestrator and events processes, and the organizations working around them.

Used by this package's tests and by `benchmarks/bench_events.py`; nothing here runs in production.

`Network` plays every organization except the events service's own one where that organization's
backend would: it registers assets and plans, and runs the work its workers would run, on the real
orchestrator. For the organization under test it only acts on what the events service dispatched
(it reads the messages in Redis without consuming them), so a workload completes only if the
events service dispatches correctly.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
import yaml
from backend_common import queues
from backend_common.db.replica import (
    ComputePlan,
    ComputeTask,
    ComputeTaskOutputAsset,
    DataManager,
    DataSample,
    DataSampleDataManager,
    FailureReport,
    Function,
    Model,
    Organization,
    Performance,
)
from backend_common.orchestrator import OrchestratorClient, OrchestratorError
from backend_common.protos import (
    common_pb2,
    computeplan_pb2,
    computetask_pb2,
    datamanager_pb2,
    datasample_pb2,
    event_pb2,
    failure_report_pb2,
    function_pb2,
    model_pb2,
    performance_pb2,
    profiling_pb2,
)
from backend_common.replica import TaskStatistics, plan_state
from backend_common.replica.conversions import optional_datetime, split_tag, to_datetime
from backend_common.settings import OrchestratorSettings
from backend_common.testing.processes import stop_process
from sqlalchemy import select
from sqlalchemy.orm import Session

ORG = "MyOrg1MSP"  # the organization whose events service is under test
ORG_NAME = "eventsorg"  # its queue prefix
# The Redis databases of the events tests: flushed by them, used by nothing else.
BROKER_DATABASE = 6
RESULT_DATABASE = 7
PEER = "MyOrg2MSP"
CHANNEL = "mychannel"
BIN = Path(sys.executable).parent

WAITING_FOR_EXECUTOR_SLOT = computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT
LIVE_STATUSES = frozenset(
    {
        computetask_pb2.STATUS_WAITING_FOR_BUILDER_SLOT,
        computetask_pb2.STATUS_BUILDING,
        computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT,
        computetask_pb2.STATUS_EXECUTING,
    }
)


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def client_settings(port: int) -> OrchestratorSettings:
    return OrchestratorSettings(
        ORCHESTRATOR_HOST="127.0.0.1", ORCHESTRATOR_PORT=port, ORCHESTRATOR_RETRY_MAX_DELAY=1.0
    )


# --- processes -------------------------------------------------------------------------------------


class OrchestratorProcess:
    """`orchestrator serve --config FILE`, restartable on the same port and database.

    The first start listens on port 0 and reads the port the orchestrator chose from its log: gRPC
    servers bind with SO_REUSEPORT, so a port picked beforehand could end up shared with another
    server started meanwhile, each answering part of the calls.
    """

    def __init__(self, database_url: str, workdir: Path, organizations: Sequence[str] = (ORG, PEER)) -> None:
        self.port = 0
        self.database_url = database_url
        self.organizations = list(organizations)
        self.config = workdir / "orchestrator.yaml"
        self.log = workdir / "orchestrator.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        self.config.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{self.port}",
                    "database_url": self.database_url,
                    "channels": {CHANNEL: self.organizations},
                }
            )
        )
        logged_before = self.log.read_text().count("\n") if self.log.exists() else 0
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(BIN / "orchestrator"), "serve", "--config", str(self.config), "--grace", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def started() -> bool:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"orchestrator exited: {self.log.read_text()[-2000:]}")
            for line in self.log.read_text().splitlines()[logged_before:]:
                record = _json_line(line)
                if record.get("event") == "orchestrator started":
                    self.port = int(record["port"])
                    return True
            return False

        wait_for(started, timeout, interval=0.05, what="the orchestrator to listen")
        probe = OrchestratorClient(
            client_settings(self.port).model_copy(update={"max_attempts": 1, "timeout_seconds": 2.0}),
            ORG,
            CHANNEL,
        )
        try:

            def answers() -> bool:
                try:
                    probe.query_version()
                except OrchestratorError:
                    return False
                return True

            wait_for(answers, timeout, interval=0.1, what="the orchestrator")
        finally:
            probe.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self._process is None:
            return
        stop_process(self._process, sig=sig)
        self._process = None


def _json_line(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def events_environment(
    *,
    orchestrator_port: int,
    database_url: str,
    org_name: str,
    broker_database: int,
    result_database: int,
    readiness_file: Path,
    metrics_port: int | None = None,
    **extra: str,
) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("ORCHESTRATOR_", "CELERY_"))
    }
    environment.update(
        ORG_NAME=org_name,
        MSP_ID=ORG,
        CHANNELS=json.dumps([{CHANNEL: {}}]),
        ORCHESTRATOR_HOST="127.0.0.1",
        ORCHESTRATOR_PORT=str(orchestrator_port),
        DATABASE_URL=database_url,
        CELERY_BROKER_HOST="127.0.0.1",
        CELERY_BROKER_PORT="6379",
        CELERY_BROKER_DATABASE=str(broker_database),
        CELERY_RESULT_DATABASE=str(result_database),
        EVENTS_READINESS_FILE=str(readiness_file),
        ENABLE_METRICS="true" if metrics_port else "false",
        METRICS_PORT=str(metrics_port or 0),
        DEFAULT_DOMAIN="http://org1.example",
        EVENTS_RECONNECT_INITIAL_DELAY="0.2",
        EVENTS_RECONNECT_MAX_DELAY="2",
        LOG_LEVEL="INFO",
    )
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    environment.update(extra)
    return environment


class EventsProcess:
    """`backend-events consume` as a separate process."""

    def __init__(self, environment: dict[str, str], workdir: Path) -> None:
        self.environment = environment
        self.readiness_file = Path(environment["EVENTS_READINESS_FILE"])
        self.log = workdir / "events.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.readiness_file.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [str(BIN / "backend-events"), "consume"],
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"backend-events exited: {self.log.read_text()[-3000:]}")
            return self.readiness_file.exists()

        wait_for(ready, timeout, what="events readiness")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(sig)
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def stop(self) -> int | None:
        process = self._process
        self.kill(signal.SIGTERM)
        return None if process is None else process.returncode


# --- the organizations around the events service ---------------------------------------------------


def _key() -> str:
    return str(uuid.uuid4())


def _addressable(kind: str) -> common_pb2.Addressable:
    key = _key()
    return common_pb2.Addressable(
        checksum=uuid.uuid4().hex * 2, storage_address=f"http://storage.example/{kind}/{key}/"
    )


def _public() -> common_pb2.NewPermissions:
    return common_pb2.NewPermissions(public=True)


def _input(identifier: str, asset_key: str) -> computetask_pb2.ComputeTaskInput:
    return computetask_pb2.ComputeTaskInput(identifier=identifier, asset_key=asset_key)


def _parent(identifier: str, parent_key: str, output: str = "model") -> computetask_pb2.ComputeTaskInput:
    return computetask_pb2.ComputeTaskInput(
        identifier=identifier,
        parent_task_output=computetask_pb2.ParentTaskOutputRef(
            parent_task_key=parent_key, output_identifier=output
        ),
    )


def _output(*, transient: bool = False) -> computetask_pb2.NewComputeTaskOutput:
    return computetask_pb2.NewComputeTaskOutput(permissions=_public(), transient=transient)


MODEL = common_pb2.ASSET_MODEL


@dataclass
class Assets:
    """The functions and datasets the plans use."""

    train: function_pb2.Function  # owned by ORG: built through the events service
    aggregate: function_pb2.Function  # owned by PEER
    test: function_pb2.Function  # owned by ORG
    datasets: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # org → (manager, samples)


class Network:
    """The organizations of the channel, acting on the real orchestrator (see the module docstring)."""

    def __init__(self, orchestrator_port: int, broker_url: str, org_name: str, *, seed: int = 0) -> None:
        self.port = orchestrator_port
        self.org_name = org_name
        self.broker = redis.Redis.from_url(broker_url)
        self.random = random.Random(seed)  # noqa: S311  # reproducible test values
        self._clients: dict[str, OrchestratorClient] = {}
        self._functions: dict[str, function_pb2.Function] = {}
        self._handled: set[str] = set()
        self.plans: list[str] = []
        self.actions = 0

    def client(self, organization: str) -> OrchestratorClient:
        if organization not in self._clients:
            self._clients[organization] = OrchestratorClient(
                client_settings(self.port), organization, CHANNEL
            )
        return self._clients[organization]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self.broker.close()

    # --- assets ------------------------------------------------------------------------------------

    def register_peers(self) -> None:
        """Every organization but ORG, which the events service registers itself."""
        self.client(PEER).register_organization(f"http://{PEER.lower()}.example")

    def function(
        self,
        owner: str,
        inputs: dict[str, function_pb2.FunctionInput],
        outputs: dict[str, function_pb2.FunctionOutput],
    ) -> function_pb2.Function:
        function = self.client(owner).register_function(
            function_pb2.NewFunction(
                key=_key(),
                name=f"function of {owner}",
                description=_addressable("description"),
                archive=_addressable("archive"),
                new_permissions=_public(),
                metadata={"owner": owner},
                inputs=inputs,
                outputs=outputs,
            )
        )
        self._functions[function.key] = function
        return function

    def dataset(self, owner: str, samples: int = 2) -> tuple[str, list[str]]:
        manager = self.client(owner).register_data_manager(
            datamanager_pb2.NewDataManager(
                key=_key(),
                name=f"dataset of {owner}",
                new_permissions=_public(),
                description=_addressable("description"),
                opener=_addressable("opener"),
                logs_permission=common_pb2.NewPermissions(public=False),
                metadata={"rows": "100"},
            )
        )
        registered = self.client(owner).register_data_samples(
            [
                datasample_pb2.NewDataSample(key=_key(), data_manager_keys=[manager.key], checksum="c" * 64)
                for _ in range(samples)
            ]
        )
        return manager.key, [sample.key for sample in registered]

    def setup(self) -> Assets:
        """Functions and one dataset per organization, with a few updates of each kind."""
        data_inputs = {
            "opener": function_pb2.FunctionInput(kind=common_pb2.ASSET_DATA_MANAGER),
            "datasamples": function_pb2.FunctionInput(kind=common_pb2.ASSET_DATA_SAMPLE, multiple=True),
        }
        assets = Assets(
            train=self.function(
                ORG,
                {
                    **data_inputs,
                    "models": function_pb2.FunctionInput(kind=MODEL, multiple=True, optional=True),
                },
                {"model": function_pb2.FunctionOutput(kind=MODEL)},
            ),
            aggregate=self.function(
                PEER,
                {"models": function_pb2.FunctionInput(kind=MODEL, multiple=True)},
                {"model": function_pb2.FunctionOutput(kind=MODEL)},
            ),
            test=self.function(
                ORG,
                {**data_inputs, "models": function_pb2.FunctionInput(kind=MODEL, optional=True)},
                {"score": function_pb2.FunctionOutput(kind=common_pb2.ASSET_PERFORMANCE)},
            ),
        )
        for organization in (ORG, PEER):
            assets.datasets[organization] = self.dataset(organization)
        manager, samples = assets.datasets[ORG]
        self.client(ORG).update_data_manager(manager, "renamed dataset")
        extra_manager, _ = self.dataset(ORG, samples=1)
        self.client(ORG).update_data_samples(samples[:1], [extra_manager])
        self.client(PEER).update_function(assets.aggregate.key, "aggregation")
        self.build(PEER, assets.aggregate.key)
        return assets

    def build(self, owner: str, function_key: str) -> None:
        """What a builder does: BUILDING, build, publish the image, READY."""
        client = self.client(owner)
        client.apply_function_action(function_key, function_pb2.FUNCTION_ACTION_BUILDING)
        client.register_profiling_step(
            profiling_pb2.ProfilingStep(asset_key=function_key, step="build_image", duration=1234)
        )
        client.update_function(function_key, f"function of {owner}", _addressable("image"))
        client.apply_function_action(function_key, function_pb2.FUNCTION_ACTION_READY)
        self.actions += 1

    # --- plans -------------------------------------------------------------------------------------

    def federated_plan(self, assets: Assets, rounds: int, *, failing_round: int | None = None) -> str:
        """Rounds of training on both organizations, aggregated on PEER, tested on ORG.

        Training outputs are transient: the events service asks ORG's worker to disable them once
        the aggregation read them. With `failing_round`, PEER's training of that round fails.
        """
        plan = self.client(ORG).register_plan(
            computeplan_pb2.NewComputePlan(
                key=_key(), name="federated", tag="bench", metadata={"rounds": str(rounds)}
            )
        )
        tasks: list[computetask_pb2.NewComputeTask] = []
        previous: str | None = None
        for round_index in range(rounds):
            trained = []
            for organization in (ORG, PEER):
                manager, samples = assets.datasets[organization]
                inputs = [_input("opener", manager), *(_input("datasamples", sample) for sample in samples)]
                if previous is not None:
                    inputs.append(_parent("models", previous))
                metadata = {"__tag__": f"round {round_index}", "round_idx": str(round_index)}
                if organization == PEER and round_index == failing_round:
                    metadata["fail"] = "yes"
                task = computetask_pb2.NewComputeTask(
                    key=_key(),
                    function_key=assets.train.key,
                    compute_plan_key=plan.key,
                    metadata=metadata,
                    inputs=inputs,
                    outputs={"model": _output(transient=True)},
                )
                tasks.append(task)
                trained.append(task.key)
            aggregate = computetask_pb2.NewComputeTask(
                key=_key(),
                function_key=assets.aggregate.key,
                compute_plan_key=plan.key,
                worker=PEER,
                metadata={"round_idx": str(round_index)},
                inputs=[_parent("models", key) for key in trained],
                outputs={"model": _output()},
            )
            tasks.append(aggregate)
            manager, samples = assets.datasets[ORG]
            tasks.append(
                computetask_pb2.NewComputeTask(
                    key=_key(),
                    function_key=assets.test.key,
                    compute_plan_key=plan.key,
                    metadata={"round_idx": str(round_index)},
                    inputs=[
                        _input("opener", manager),
                        *(_input("datasamples", sample) for sample in samples),
                        _parent("models", aggregate.key),
                    ],
                    outputs={"score": _output()},
                )
            )
            previous = aggregate.key
        self.client(ORG).register_tasks(tasks)
        self.plans.append(plan.key)
        return plan.key

    def cancel(self, plan_key: str) -> None:
        self.client(ORG).apply_plan_action(plan_key, computeplan_pb2.PLAN_ACTION_CANCELED)

    def tasks(self, **filters: Any) -> list[computetask_pb2.ComputeTask]:
        return list(self.client(ORG).iter_tasks(computetask_pb2.TaskQueryFilter(**filters), page_size=500))

    def settled(self) -> bool:
        """Nothing left to run: every task final, or stuck behind a failed or canceled parent."""
        for plan_key in self.plans:
            for task in self.tasks(compute_plan_key=plan_key):
                if task.status in LIVE_STATUSES:
                    return False
        return True

    # --- the workers -------------------------------------------------------------------------------

    def messages(self, queue: str) -> list[dict[str, Any]]:
        """The Celery messages in a queue, oldest first, left in place."""
        return [json.loads(payload) for payload in reversed(self.broker.lrange(queue, 0, -1))]

    def dispatched(self, task_name: str) -> list[dict[str, Any]]:
        """Every message of `task_name` in the organization's queues."""
        names = [queues.builder_queue(self.org_name), queues.worker_queue(self.org_name)]
        names += [_text(key) for key in self.broker.keys(f"{self.org_name}.worker-*")]
        return [
            message
            for name in names
            for message in self.messages(name)
            if message["headers"]["task"] == task_name
        ]

    def dispatched_compute_tasks(self) -> list[str]:
        """Keys of the compute tasks in the queues, once per message."""
        return [
            json.loads(_arguments(message)[0][1])["key"]
            for message in self.dispatched(queues.COMPUTE_TASK_TASK)
        ]

    def dispatched_compute_task_plans(self) -> list[str]:
        return [str(_arguments(message)[0][2]) for message in self.dispatched(queues.COMPUTE_TASK_TASK)]

    def dispatched_plan_teardowns(self) -> list[str]:
        """Plan keys of the teardowns in the queues, once per message."""
        return [
            str(_arguments(message)[1]["compute_plan_key"])
            for message in self.dispatched(queues.DELETE_CP_POD_AND_DIRS_TASK)
        ]

    def step(self) -> int:
        """Run what the workers have to run now; the number of actions taken."""
        done = 0
        for message in self._new(queues.BUILD_IMAGE_TASK):
            function = json.loads(_arguments(message)[1]["function_serialized"])
            self.build(ORG, function["key"])
            done += 1
        for message in self._new(queues.COMPUTE_TASK_TASK):
            task = json.loads(_arguments(message)[0][1])
            done += self.run_task(ORG, task["key"])
        for message in self._new(queues.REMOVE_TRANSIENT_OUTPUTS_TASK):
            for output in _arguments(message)[1]["outputs"]:
                # Refused until every consumer is final, as for the real worker.
                with contextlib.suppress(OrchestratorError):
                    self.client(ORG).disable_output(output["compute_task_key"], output["identifier"])
                done += 1
        for task in self.tasks(worker=PEER, status=WAITING_FOR_EXECUTOR_SLOT):
            done += self.run_task(PEER, task.key)
        self.actions += done
        return done

    def _new(self, task_name: str) -> Iterator[dict[str, Any]]:
        for message in self.dispatched(task_name):
            task_id = message["headers"]["id"]
            if task_id not in self._handled:
                self._handled.add(task_id)
                yield message

    def run_task(self, worker: str, task_key: str) -> int:
        """A worker's run: refuse a terminated plan, EXECUTING, outputs, DONE (or a failure report)."""
        client = self.client(worker)
        task = client.get_task(task_key)
        if task.status != WAITING_FOR_EXECUTOR_SLOT:
            return 0
        plan = client.get_plan(task.compute_plan_key)
        if plan.HasField("cancelation_date") or plan.HasField("failure_date"):
            _ignore(
                lambda: client.apply_task_action(
                    task.key, computetask_pb2.TASK_ACTION_CANCELED, "plan terminated"
                )
            )
            return 1
        client.apply_task_action(task.key, computetask_pb2.TASK_ACTION_EXECUTING)
        if task.metadata.get("fail"):
            client.register_failure_report(
                failure_report_pb2.NewFailureReport(
                    asset_key=task.key,
                    error_type=failure_report_pb2.ERROR_TYPE_EXECUTION,
                    logs_address=_addressable("logs"),
                    asset_type=failure_report_pb2.FAILED_ASSET_COMPUTE_TASK,
                )
            )
            return 2
        function = self._functions.get(task.function_key) or client.get_function(task.function_key)
        for identifier in task.outputs:
            if function.outputs[identifier].kind == MODEL:
                client.register_models(
                    [
                        model_pb2.NewModel(
                            key=_key(),
                            compute_task_key=task.key,
                            compute_task_output_identifier=identifier,
                            address=_addressable("model"),
                        )
                    ]
                )
            else:
                client.register_performance(
                    performance_pb2.NewPerformance(
                        compute_task_key=task.key,
                        compute_task_output_identifier=identifier,
                        performance_value=round(self.random.random(), 3),
                    )
                )
        client.apply_task_action(task.key, computetask_pb2.TASK_ACTION_DONE)
        return 3

    def run(self, until: Callable[[], bool], timeout: float, pace: float = 0.0) -> None:
        """Step until `until()`; `pace` seconds between steps."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise TimeoutError(f"workload not finished after {timeout}s")
            if not self.step():
                time.sleep(0.05)
            elif pace:
                time.sleep(pace)

    def events(self, after: str = "", idle_seconds: float = 0.5) -> list[event_pb2.Event]:
        """The channel's events after `after`, read from a stream of our own until it stays idle."""
        stream_client = OrchestratorClient(client_settings(self.port), ORG, CHANNEL)
        received: list[event_pb2.Event] = []

        def read() -> None:
            with contextlib.suppress(OrchestratorError):  # cancelled by close()
                received.extend(stream_client.subscribe_to_events(after))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            seen = -1
            while seen != len(received):
                seen = len(received)
                time.sleep(idle_seconds)
            return list(received)
        finally:
            stream_client.close()
            reader.join(timeout=5)

    def last_event_id(self, idle_seconds: float = 0.5) -> tuple[str, int]:
        """The id of the channel's last event and the number of events."""
        events = self.events(idle_seconds=idle_seconds)
        return (events[-1].id if events else ""), len(events)


def _arguments(message: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """(args, kwargs) of a Celery protocol-2 message (JSON body, base64 on Redis)."""
    body = json.loads(base64.b64decode(message["body"]))
    return body[0], body[1]


def _ignore(call: Callable[[], object]) -> None:
    with contextlib.suppress(OrchestratorError):
        call()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the replica compared with the orchestrator ----------------------------------------------------


def _permissions(permissions: common_pb2.Permissions) -> tuple[Any, ...]:
    return (
        permissions.process.public,
        sorted(permissions.process.authorized_ids),
        permissions.download.public,
        sorted(permissions.download.authorized_ids),
    )


def _row_permissions(row: Any) -> tuple[Any, ...]:
    return (
        row.permissions_process_public,
        sorted(row.permissions_process_authorized_ids),
        row.permissions_download_public,
        sorted(row.permissions_download_authorized_ids),
    )


def _compare(kind: str, expected: dict[Any, Any], actual: dict[Any, Any]) -> list[str]:
    differences = []
    for key in sorted(expected.keys() | actual.keys()):
        if expected.get(key) != actual.get(key):
            differences.append(
                f"{kind} {key}: orchestrator {expected.get(key)!r} != replica {actual.get(key)!r}"
            )
    return differences


def replica_differences(session: Session, client: OrchestratorClient) -> list[str]:
    """Every way the replica differs from the orchestrator's state of the channel (empty: equal)."""
    channel = client.channel
    differences: list[str] = []

    differences += _compare(
        "organization",
        {o.id: (o.address, to_datetime(o.creation_date)) for o in client.get_all_organizations()},
        {
            o.id: (o.address, o.creation_date)
            for o in session.scalars(select(Organization).where(Organization.channel == channel))
        },
    )

    functions = list(client.iter_functions(page_size=500))
    differences += _compare(
        "function",
        {
            f.key: (
                f.name,
                f.owner,
                to_datetime(f.creation_date),
                dict(f.metadata),
                function_pb2.FunctionStatus.Name(f.status),
                (f.description.storage_address, f.description.checksum),
                (f.archive.storage_address, f.archive.checksum),
                (f.image.storage_address or None, f.image.checksum or None),
                _permissions(f.permissions),
                sorted(
                    (i, common_pb2.AssetKind.Name(s.kind), s.optional, s.multiple)
                    for i, s in f.inputs.items()
                ),
                sorted((i, common_pb2.AssetKind.Name(s.kind), s.multiple) for i, s in f.outputs.items()),
            )
            for f in functions
        },
        {
            f.key: (
                f.name,
                f.owner,
                f.creation_date,
                f.metadata_,
                f.status,
                (f.description_address, f.description_checksum),
                (f.archive_address, f.archive_checksum),
                (f.image_address, f.image_checksum),
                _row_permissions(f),
                sorted((i.identifier, i.kind, i.optional, i.multiple) for i in f.inputs),
                sorted((o.identifier, o.kind, o.multiple) for o in f.outputs),
            )
            for f in session.scalars(select(Function).where(Function.channel == channel))
        },
    )

    differences += _compare(
        "data manager",
        {
            d.key: (
                d.name,
                d.owner,
                to_datetime(d.creation_date),
                dict(d.metadata),
                (d.opener.storage_address, d.opener.checksum),
                (d.description.storage_address, d.description.checksum),
                _permissions(d.permissions),
                (d.logs_permission.public, sorted(d.logs_permission.authorized_ids)),
            )
            for d in client.iter_data_managers(page_size=500)
        },
        {
            d.key: (
                d.name,
                d.owner,
                d.creation_date,
                d.metadata_,
                (d.opener_address, d.opener_checksum),
                (d.description_address, d.description_checksum),
                _row_permissions(d),
                (d.logs_permission_public, sorted(d.logs_permission_authorized_ids)),
            )
            for d in session.scalars(select(DataManager).where(DataManager.channel == channel))
        },
    )

    links: dict[str, list[str]] = {}
    for sample_key, manager_key in session.execute(
        select(DataSampleDataManager.data_sample_key, DataSampleDataManager.data_manager_key)
    ):
        links.setdefault(str(sample_key), []).append(str(manager_key))
    differences += _compare(
        "data sample",
        {
            s.key: (s.owner, s.checksum, to_datetime(s.creation_date), sorted(s.data_manager_keys))
            for s in client.iter_data_samples(page_size=500)
        },
        {
            s.key: (s.owner, s.checksum, s.creation_date, sorted(links.get(s.key, [])))
            for s in session.scalars(select(DataSample).where(DataSample.channel == channel))
        },
    )

    tasks = list(client.iter_tasks(page_size=500))
    by_plan: dict[str, Counter[str]] = {}
    for task in tasks:
        by_plan.setdefault(task.compute_plan_key, Counter())[
            computetask_pb2.ComputeTaskStatus.Name(task.status)
        ] += 1
    plans = list(client.iter_plans(page_size=500))
    stored_plans = {
        p.key: p for p in session.scalars(select(ComputePlan).where(ComputePlan.channel == channel))
    }
    differences += _compare(
        "compute plan",
        {
            p.key: (
                p.owner,
                p.name,
                p.tag,
                dict(p.metadata),
                to_datetime(p.creation_date),
                optional_datetime(p, "cancelation_date"),
                optional_datetime(p, "failure_date"),
            )
            for p in plans
        },
        {
            p.key: (p.owner, p.name, p.tag, p.metadata_, p.creation_date, p.cancelation_date, p.failure_date)
            for p in stored_plans.values()
        },
    )
    # The derived status follows from the orchestrator's task statuses by the REST rules.
    for plan in plans:
        stored = stored_plans.get(plan.key)
        if stored is None:
            continue
        expected_status = plan_state(
            TaskStatistics(counts=by_plan.get(plan.key, Counter()), earliest_start=None, latest_end=None),
            optional_datetime(plan, "cancelation_date"),
        ).status
        if stored.status != expected_status:
            differences.append(
                f"compute plan {plan.key}: status {stored.status} instead of {expected_status}"
            )

    differences += _compare(
        "compute task",
        {t.key: _task_fields(t) for t in tasks},
        {
            t.key: _row_task_fields(t)
            for t in session.scalars(select(ComputeTask).where(ComputeTask.channel == channel))
        },
    )

    models: dict[str, Any] = {}
    for task in tasks:
        if task.status in (
            computetask_pb2.STATUS_EXECUTING,
            computetask_pb2.STATUS_DONE,
            computetask_pb2.STATUS_FAILED,
        ):
            for model in client.get_compute_task_output_models(task.key):
                address = (
                    (model.address.storage_address, model.address.checksum)
                    if model.address.checksum
                    else (None, None)
                )
                models[model.key] = (
                    model.compute_task_key,
                    model.owner,
                    to_datetime(model.creation_date),
                    address,
                    _permissions(model.permissions),
                )
    differences += _compare(
        "model",
        models,
        {
            m.key: (
                m.compute_task_key,
                m.owner,
                m.creation_date,
                (m.address, m.checksum),
                _row_permissions(m),
            )
            for m in session.scalars(select(Model).where(Model.channel == channel))
        },
    )
    output_assets = {
        (str(a.task_key), a.asset_key): (a.identifier, a.asset_kind)
        for a in session.scalars(
            select(ComputeTaskOutputAsset).where(ComputeTaskOutputAsset.channel == channel)
        )
    }
    model_assets = {key: value for key, value in output_assets.items() if value[1] == "ASSET_MODEL"}
    differences += _compare(
        "model output asset",
        {(task_key, key): True for key, (task_key, *_rest) in models.items()},
        dict.fromkeys(model_assets, True),
    )

    performances = {
        (p.compute_task_key, p.compute_task_output_identifier): (
            p.performance_value,
            to_datetime(p.creation_date),
        )
        for p in client.iter_performances(page_size=500)
    }
    differences += _compare(
        "performance",
        performances,
        {
            (p.compute_task_key, p.identifier): (p.value, p.creation_date)
            for p in session.scalars(select(Performance).where(Performance.channel == channel))
        },
    )
    differences += _compare(
        "performance output asset",
        {(task_key, f"{task_key}|{identifier}"): True for task_key, identifier in performances},
        {key: True for key, value in output_assets.items() if value[1] == "ASSET_PERFORMANCE"},
    )

    reports = {}
    for task in tasks:
        if task.status == computetask_pb2.STATUS_FAILED:
            try:
                report = client.get_failure_report(task.key)
            except OrchestratorError:
                continue
            reports[report.asset_key] = (
                failure_report_pb2.ErrorType.Name(report.error_type),
                report.owner,
                report.logs_address.storage_address or None,
                to_datetime(report.creation_date),
            )
    differences += _compare(
        "failure report",
        reports,
        {
            r.asset_key: (r.error_type, r.owner, r.logs_address, r.creation_date)
            for r in session.scalars(
                select(FailureReport).where(
                    FailureReport.channel == channel, FailureReport.asset_type == "FAILED_ASSET_COMPUTE_TASK"
                )
            )
        },
    )
    return differences


def _task_fields(task: computetask_pb2.ComputeTask) -> tuple[Any, ...]:
    tag, metadata = split_tag(dict(task.metadata))
    inputs = []
    reference: tuple[str | None, str | None, str | None]
    for task_input in task.inputs:
        if task_input.WhichOneof("ref") == "parent_task_output":
            reference = (
                None,
                task_input.parent_task_output.parent_task_key,
                task_input.parent_task_output.output_identifier,
            )
        else:
            reference = (task_input.asset_key, None, None)
        inputs.append((task_input.identifier, *reference))
    return (
        task.owner,
        task.worker,
        task.compute_plan_key,
        task.function_key,
        task.rank,
        computetask_pb2.ComputeTaskStatus.Name(task.status),
        tag,
        metadata,
        to_datetime(task.creation_date),
        (task.logs_permission.public, sorted(task.logs_permission.authorized_ids)),
        inputs,
        sorted(
            (identifier, output.transient, _permissions(output.permissions))
            for identifier, output in task.outputs.items()
        ),
    )


def _row_task_fields(task: ComputeTask) -> tuple[Any, ...]:
    return (
        task.owner,
        task.worker,
        str(task.compute_plan_key),
        str(task.function_key),
        task.rank,
        task.status,
        task.tag,
        task.metadata_,
        task.creation_date,
        (task.logs_permission_public, sorted(task.logs_permission_authorized_ids)),
        [
            (
                i.identifier,
                i.asset_key,
                None if i.parent_task_key is None else str(i.parent_task_key),
                i.parent_task_output_identifier,
            )
            for i in task.inputs
        ],
        sorted((o.identifier, o.transient, _row_permissions(o)) for o in task.outputs),
    )


def event_history(
    client: OrchestratorClient, asset_kind: common_pb2.AssetKind.ValueType
) -> Iterable[event_pb2.Event]:
    return client.iter_events(event_pb2.EventQueryFilter(asset_kind=asset_kind), page_size=500)


def task_dates(client: OrchestratorClient) -> dict[str, tuple[datetime | None, datetime | None]]:
    """(start, end) of every task from the event history: first EXECUTING, first final status."""
    dates: dict[str, tuple[datetime | None, datetime | None]] = {}
    final = {computetask_pb2.STATUS_DONE, computetask_pb2.STATUS_CANCELED, computetask_pb2.STATUS_FAILED}
    for event in event_history(client, common_pb2.ASSET_COMPUTE_TASK):
        start, end = dates.get(event.asset_key, (None, None))
        at = to_datetime(event.timestamp)
        if event.compute_task.status == computetask_pb2.STATUS_EXECUTING and start is None:
            start = at
        if event.compute_task.status in final and end is None:
            end = at
        dates[event.asset_key] = (start, end)
    return dates


def ever_waiting_for_executor(client: OrchestratorClient, worker: str) -> set[str]:
    """Tasks of `worker` that reached WAITING_FOR_EXECUTOR_SLOT at some point."""
    return {
        event.asset_key
        for event in event_history(client, common_pb2.ASSET_COMPUTE_TASK)
        if event.compute_task.status == WAITING_FOR_EXECUTOR_SLOT and event.compute_task.worker == worker
    }
