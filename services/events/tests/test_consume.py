"""`backend-events consume` against the real orchestrator, Postgres and Redis."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from backend_common import queues
from backend_common.db.local import CeleryDispatch
from backend_common.db.replica import ComputeTask, LastEvent
from backend_common.protos import common_pb2, computeplan_pb2, computetask_pb2, function_pb2
from backend_common.replica import load_cursor
from backend_common.testing.processes import free_port
from backend_events.testing import (
    CHANNEL,
    ORG,
    ORG_NAME,
    PEER,
    EventsProcess,
    Network,
    OrchestratorProcess,
    ever_waiting_for_executor,
    replica_differences,
    task_dates,
    wait_for,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker


def caught_up(sessions: sessionmaker[Session], network: Network) -> None:
    """Wait until the replica's cursor is the channel's last event."""
    last, _ = network.last_event_id()

    def at_last() -> bool:
        with sessions() as session:
            return load_cursor(session, CHANNEL) == last

    wait_for(at_last, 60, what="the replica to catch up")


def test_a_mixed_workload_leaves_a_replica_equal_to_the_orchestrator(
    network: Network, make_events: Callable[..., EventsProcess], sessions: sessionmaker[Session]
) -> None:
    events = make_events()
    events.start()
    events.wait_ready()
    assets = network.setup()
    finished = network.federated_plan(assets, rounds=2)
    failing = network.federated_plan(assets, rounds=2, failing_round=0)
    canceled = network.federated_plan(assets, rounds=3)
    network.run(until=lambda: network.settled() or _first_round_done(network, canceled), timeout=120)
    network.cancel(canceled)
    network.run(until=network.settled, timeout=120)
    caught_up(sessions, network)

    with sessions() as session:
        assert replica_differences(session, network.client(ORG)) == []
        dates = task_dates(network.client(ORG))
        stored = {t.key: (t.start_date, t.end_date) for t in session.scalars(select(ComputeTask))}
        assert stored == {key: dates.get(key, (None, None)) for key in stored}
        pending = session.scalars(select(CeleryDispatch).where(CeleryDispatch.published_at.is_(None))).all()
        assert pending == []
        assert session.get_one(LastEvent, CHANNEL).event_timestamp is not None
    statuses = Counter(t.status for t in network.tasks(compute_plan_key=finished))
    assert statuses == {4: 8}  # STATUS_DONE: every task of the plan ran
    assert 6 in {t.status for t in network.tasks(compute_plan_key=failing)}  # STATUS_FAILED
    keys = network.dispatched_compute_tasks()
    assert len(keys) == len(set(keys))
    with sessions() as session:
        sent = Counter(session.scalars(select(CeleryDispatch.task_name)))
    # Builds of ORG's two functions; ORG's tasks: 2 per round of the finished plan, its first
    # training in the failing one, at least a round in the canceled one; transient trainings
    # disabled once aggregated; a teardown per plan; disabled models removed everywhere.
    assert sent[queues.BUILD_IMAGE_TASK] == 2
    assert sent[queues.COMPUTE_TASK_TASK] == len(keys) >= 4 + 1 + 2
    assert sent[queues.REMOVE_TRANSIENT_OUTPUTS_TASK] >= 3
    # Each plan that ran tasks here is torn down once it stopped (no worker releases the mapping).
    assert sorted(network.dispatched_plan_teardowns()) == sorted(set(network.dispatched_compute_task_plans()))
    assert (
        sent[queues.REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK]
        == sent[queues.REMOVE_INTERMEDIARY_MODEL_FROM_DB_TASK]
        >= 3
    )
    assert events.stop() == 0


def _first_round_done(network: Network, plan_key: str) -> bool:
    return sum(1 for t in network.tasks(compute_plan_key=plan_key) if t.status == 4) >= 4


def test_sigkill_at_random_points_neither_loses_nor_repeats_anything(
    network: Network, make_events: Callable[..., EventsProcess], sessions: sessionmaker[Session]
) -> None:
    rng = random.Random(int(os.environ.get("EVENTS_TEST_SEED", "20")))
    events = make_events()
    events.start()
    events.wait_ready()
    assets = network.setup()
    plans = [
        network.federated_plan(assets, rounds=4),
        network.federated_plan(assets, rounds=4, failing_round=2),
        network.federated_plan(assets, rounds=4),
    ]
    failures: list[str] = []

    def workload() -> None:
        try:
            network.run(
                until=lambda: network.settled() or _first_round_done(network, plans[2]),
                timeout=300,
                pace=0.01,
            )
            network.cancel(plans[2])
            network.run(until=network.settled, timeout=300, pace=0.01)
        except BaseException:
            failures.append(traceback.format_exc())

    worker = threading.Thread(target=workload)
    worker.start()
    for _ in range(20):
        if rng.random() < 0.25:
            # Sometimes before it is even ready: while registering or subscribing.
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            events.wait_ready()
            time.sleep(rng.uniform(0.0, 0.8))
        events.kill(signal.SIGKILL)
        events.start()
    events.wait_ready()
    worker.join()
    assert failures == []
    caught_up(sessions, network)
    events.stop()

    _, event_count = network.last_event_id()
    assert event_count >= 200
    assert events.starts == 21
    client = network.client(ORG)
    with sessions() as session:
        assert replica_differences(session, client) == []
        dates = task_dates(client)
        stored = {t.key: (t.start_date, t.end_date) for t in session.scalars(select(ComputeTask))}
        assert stored == {key: dates.get(key, (None, None)) for key in stored}
        assert (
            session.scalars(select(CeleryDispatch).where(CeleryDispatch.published_at.is_(None))).all() == []
        )
    dispatched = Counter(network.dispatched_compute_tasks())
    assert [key for key, count in dispatched.items() if count > 1] == []
    builds = [m["headers"]["id"] for m in network.dispatched(queues.BUILD_IMAGE_TASK)]
    assert len(builds) == 2
    # Every task of this organization that became runnable was dispatched, unless its plan was
    # terminated first, in which case the consumer canceled it.
    statuses = {task.key: task.status for task in network.tasks(worker=ORG)}
    for task_key in ever_waiting_for_executor(client, ORG):
        assert task_key in dispatched or statuses[task_key] == 5, task_key  # STATUS_CANCELED
    assert len(dispatched) >= 10


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text exposition."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric == name and found == wanted:
            return float(value)
    raise KeyError(f"{name}{labels} not in the metrics")


def test_the_stream_comes_back_after_the_orchestrator_restarts(
    orchestrator: OrchestratorProcess,
    network: Network,
    make_events: Callable[..., EventsProcess],
    sessions: sessionmaker[Session],
) -> None:
    metrics_port = free_port()
    events = make_events(metrics_port=metrics_port)
    events.start()
    events.wait_ready()
    assert json.loads(events.readiness_file.read_text())[CHANNEL]["state"] == "streaming"
    assets = network.setup()

    orchestrator.stop()
    wait_for(lambda: not events.readiness_file.exists(), 20, what="readiness to drop")
    orchestrator.start()
    events.wait_ready()
    network.federated_plan(assets, rounds=1)
    network.run(until=network.settled, timeout=60)
    caught_up(sessions, network)

    with sessions() as session:
        assert replica_differences(session, network.client(ORG)) == []
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    assert _metric(metrics, "substra_events_reconnects_total", channel=CHANNEL) >= 1
    assert _metric(metrics, "substra_events_stream_up", channel=CHANNEL) == 1
    consumed = _metric(
        metrics,
        "substra_events_consumed_total",
        channel=CHANNEL,
        asset_kind="ASSET_COMPUTE_TASK",
        event_kind="EVENT_ASSET_UPDATED",
    )
    assert consumed > 4
    assert _metric(metrics, "substra_events_lag_seconds_count", channel=CHANNEL) > consumed
    assert _metric(metrics, "substra_events_dispatched_total", task_name=queues.COMPUTE_TASK_TASK) == 2
    state = json.loads(events.readiness_file.read_text())[CHANNEL]
    assert state["state"] == "streaming" and state["reconnects"] >= 1
    assert events.stop() == 0
    assert not events.readiness_file.exists()


def _runnable_function(network: Network) -> str:
    """A function of PEER without inputs, built: tasks using it are runnable when registered."""
    function = network.function(PEER, {}, {"model": function_pb2.FunctionOutput(kind=common_pb2.ASSET_MODEL)})
    network.build(PEER, function.key)
    return function.key


def _plan_of_runnable_tasks(network: Network, function_key: str, count: int) -> tuple[str, list[str]]:
    client = network.client(ORG)
    plan = client.register_plan(computeplan_pb2.NewComputePlan(key=str(uuid.uuid4()), name="runnable"))
    tasks = client.register_tasks(
        [
            computetask_pb2.NewComputeTask(
                key=str(uuid.uuid4()),
                function_key=function_key,
                compute_plan_key=plan.key,
                worker=ORG,
                outputs={
                    "model": computetask_pb2.NewComputeTaskOutput(
                        permissions=common_pb2.NewPermissions(public=True)
                    )
                },
            )
            for _ in range(count)
        ]
    )
    network.plans.append(plan.key)
    return plan.key, [task.key for task in tasks]


def test_a_task_of_a_terminated_plan_is_canceled_instead_of_dispatched(
    network: Network, make_events: Callable[..., EventsProcess], sessions: sessionmaker[Session]
) -> None:
    network.client(ORG).register_organization("http://org1.example")
    function_key = _runnable_function(network)
    plan_key, task_keys = _plan_of_runnable_tasks(network, function_key, 2)
    network.cancel(plan_key)
    # The consumer learns of the runnable tasks after the cancelation: catching up.
    events = make_events()
    events.start()
    events.wait_ready()
    wait_for(
        lambda: all(
            t.status == computetask_pb2.STATUS_CANCELED for t in network.tasks(compute_plan_key=plan_key)
        ),
        30,
        what="the tasks to be canceled",
    )
    caught_up(sessions, network)
    assert network.dispatched_compute_tasks() == []
    with sessions() as session:
        assert replica_differences(session, network.client(ORG)) == []
        assert {
            t.status for t in session.scalars(select(ComputeTask).where(ComputeTask.key.in_(task_keys)))
        } == {"STATUS_CANCELED"}


def test_plans_are_spread_over_the_worker_replicas(
    network: Network, make_events: Callable[..., EventsProcess], sessions: sessionmaker[Session]
) -> None:
    events = make_events(WORKER_REPLICAS="2")
    events.start()
    events.wait_ready()
    function_key = _runnable_function(network)
    plans = [_plan_of_runnable_tasks(network, function_key, 2) for _ in range(3)]
    wait_for(lambda: len(network.dispatched_compute_tasks()) == 6, 30, what="6 dispatched tasks")
    queue_of = {
        key: name
        for name in (queues.worker_replica_queue(ORG_NAME, index) for index in (0, 1))
        for key in (json.loads(_body(m)[0][1])["key"] for m in network.messages(name))
    }
    assert [{queue_of[key] for key in task_keys} for _, task_keys in plans] == [
        {f"{ORG_NAME}.worker-0"},
        {f"{ORG_NAME}.worker-1"},
        {f"{ORG_NAME}.worker-0"},
    ]


def _body(message: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(message["body"]))
