"""Benchmark of the events service: live lag and catch-up throughput (issue 5).

A real standalone orchestrator and `backend-events consume` run as processes on fresh PostgreSQL
databases, with Redis databases 6 and 7 (flushed before and after; nothing else is touched).

* Live lag: with the consumer caught up, single-event writes of several kinds are made one at a
  time; for each, the time from the orchestrator's answer (its transaction committed) to the
  replica's cursor reaching the event is measured by polling the replica (0.5 ms). Target: median
  ≤ 30 ms. The lag from the event timestamp (the orchestrator's transaction start) is reported too.
* Catch-up: the consumer is stopped, 50,000+ events of a realistic mix are written (data samples
  and their updates, task registrations, build status cascades, task runs with models and
  performances, tasks of this organization to dispatch), then the consumer is started again; the
  rate is the number of missed events over the time from its subscription to the replica's cursor
  reaching the last one. Target: ≥ 2,000 events/s.

Prints a JSON summary and exits 1 when a target is missed.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from backend_common.db import make_engine
from backend_common.protos import (
    common_pb2,
    computeplan_pb2,
    computetask_pb2,
    datasample_pb2,
    function_pb2,
    model_pb2,
)
from backend_common.testing.postgres import DatabaseFactory, server_url
from backend_events.testing import (
    BROKER_DATABASE,
    CHANNEL,
    ORG,
    ORG_NAME,
    PEER,
    RESULT_DATABASE,
    EventsProcess,
    Network,
    OrchestratorProcess,
    events_environment,
    wait_for,
)
from backend_migrations import schema
from sqlalchemy import Engine, text

LAG_SAMPLES = 200
LAG_TARGET_SECONDS = 0.030
CATCH_UP_EVENTS = 50_000
CATCH_UP_TARGET = 2_000.0

MODEL = common_pb2.ASSET_MODEL


def key() -> str:
    return str(uuid.uuid4())


def public() -> common_pb2.NewPermissions:
    return common_pb2.NewPermissions(public=True)


def model_output() -> dict[str, computetask_pb2.NewComputeTaskOutput]:
    return {"model": computetask_pb2.NewComputeTaskOutput(permissions=public())}


def model_function(network: Network, owner: str) -> function_pb2.Function:
    return network.function(
        owner,
        {"models": function_pb2.FunctionInput(kind=MODEL, multiple=True, optional=True)},
        {"model": function_pb2.FunctionOutput(kind=MODEL)},
    )


def cursor_timestamp(engine: Engine) -> Callable[[], datetime | None]:
    connection = engine.connect()
    query = text("SELECT event_timestamp FROM last_events WHERE channel = :channel")

    def read() -> datetime | None:
        value: datetime | None = connection.execute(query, {"channel": CHANNEL}).scalar()
        connection.rollback()
        return value

    return read


def measure_lag(network: Network, engine: Engine) -> dict[str, Any]:
    """Single-event writes, one at a time: answer → replica cursor at the event."""
    read_cursor = cursor_timestamp(engine)
    manager, _ = network.dataset(PEER, samples=1)
    function = model_function(network, PEER)
    network.build(PEER, function.key)
    plan = network.client(ORG).register_plan(computeplan_pb2.NewComputePlan(key=key(), name="lag"))
    peer_tasks: list[str] = []

    def register_task(worker: str) -> None:
        task = computetask_pb2.NewComputeTask(
            key=key(),
            function_key=function.key,
            compute_plan_key=plan.key,
            worker=worker,
            outputs=model_output(),
        )
        network.client(ORG).register_tasks([task])
        if worker == PEER:
            peer_tasks.append(task.key)

    def sample() -> None:
        network.client(PEER).register_data_samples(
            [datasample_pb2.NewDataSample(key=key(), data_manager_keys=[manager], checksum="d" * 64)]
        )

    def start_task() -> None:
        network.client(PEER).apply_task_action(peer_tasks.pop(0), computetask_pb2.TASK_ACTION_EXECUTING)

    writes: list[tuple[str, Callable[[], None]]] = [
        ("data sample registered", sample),
        ("task registered (another worker)", lambda: register_task(PEER)),
        ("task registered (runnable here: checked and dispatched)", lambda: register_task(ORG)),
        ("task started", start_task),
        (
            "data manager renamed",
            lambda: network.client(PEER).update_data_manager(manager, f"dm {time.time()}"),
        ),
        ("plan renamed", lambda: network.client(ORG).update_plan(plan.key, f"plan {time.time()}")),
    ]
    lags: list[float] = []
    from_timestamp: list[float] = []
    by_kind: dict[str, list[float]] = {name: [] for name, _ in writes}
    for index in range(LAG_SAMPLES):
        name, write = writes[index % len(writes)]
        if name == "task started" and not peer_tasks:
            name, write = writes[1]
        sent = datetime.now(UTC)
        write()
        answered = time.perf_counter()
        while True:
            at = read_cursor()
            if at is not None and at >= sent:
                break
            time.sleep(0.0005)
        seen = time.perf_counter()
        lag = seen - answered
        lags.append(lag)
        by_kind[name].append(lag)
        from_timestamp.append((datetime.now(UTC) - at).total_seconds())
        time.sleep(0.02)
    return {
        "samples": len(lags),
        "median_ms": round(statistics.median(lags) * 1000, 2),
        "p90_ms": round(statistics.quantiles(lags, n=10)[-1] * 1000, 2),
        "max_ms": round(max(lags) * 1000, 2),
        "median_from_event_timestamp_ms": round(statistics.median(from_timestamp) * 1000, 2),
        "median_ms_by_write": {
            name: round(statistics.median(values) * 1000, 2) for name, values in by_kind.items() if values
        },
    }


def write_backlog(network: Network, minimum: int) -> dict[str, int]:
    """A realistic mix of at least `minimum` events, written while the consumer is down."""
    counts: dict[str, int] = {}

    def count(what: str, events: int) -> None:
        counts[what] = counts.get(what, 0) + events

    peer_client, org_client = network.client(PEER), network.client(ORG)
    manager, _ = network.dataset(PEER, samples=1)
    other_manager, _ = network.dataset(PEER, samples=1)
    samples: list[str] = []
    for _ in range(20):
        batch = [
            datasample_pb2.NewDataSample(key=key(), data_manager_keys=[manager], checksum="e" * 64)
            for _ in range(500)
        ]
        peer_client.register_data_samples(batch)
        samples += [sample.key for sample in batch]
        count("data sample created", len(batch))
    for start in range(0, 5000, 500):
        peer_client.update_data_samples(samples[start : start + 500], [other_manager])
        count("data sample updated", 500)

    function = model_function(network, PEER)
    count("function created", 1)
    plans: list[str] = []
    tasks_by_plan: dict[str, list[str]] = {}
    for plan_index in range(20):
        plan = org_client.register_plan(computeplan_pb2.NewComputePlan(key=key(), name=f"plan {plan_index}"))
        plans.append(plan.key)
        count("compute plan created", 1)
        # Chains of two: every other task reads the model of the one before. One plan runs here.
        worker = ORG if plan_index == 0 else PEER
        batch: list[computetask_pb2.NewComputeTask] = []
        for index in range(500):
            inputs = []
            if index % 2:
                inputs = [
                    computetask_pb2.ComputeTaskInput(
                        identifier="models",
                        parent_task_output=computetask_pb2.ParentTaskOutputRef(
                            parent_task_key=batch[-1].key, output_identifier="model"
                        ),
                    )
                ]
            batch.append(
                computetask_pb2.NewComputeTask(
                    key=key(),
                    function_key=function.key,
                    compute_plan_key=plan.key,
                    worker=worker,
                    metadata={"__tag__": "bench", "index": str(index)},
                    inputs=inputs,
                    outputs=model_output(),
                )
            )
        org_client.register_tasks(batch)
        tasks_by_plan[plan.key] = [task.key for task in batch]
        count("compute task created", len(batch))
    # Building the function moves every task twice (BUILDING, then waiting for its slot or parent).
    peer_client.apply_function_action(function.key, function_pb2.FUNCTION_ACTION_BUILDING)
    peer_client.update_function(
        function.key,
        "bench function",
        common_pb2.Addressable(checksum="f" * 64, storage_address="http://storage.example/image"),
    )
    peer_client.apply_function_action(function.key, function_pb2.FUNCTION_ACTION_READY)
    count("function updated", 3)
    count("compute task updated (build cascade)", 2 * 500 * 20)

    total = sum(counts.values())
    runnable = [task for plan in plans[1:] for task in tasks_by_plan[plan][::2]]
    for task_key in runnable:
        if total >= minimum:
            break
        peer_client.apply_task_action(task_key, computetask_pb2.TASK_ACTION_EXECUTING)
        peer_client.register_models(
            [
                model_pb2.NewModel(
                    key=key(),
                    compute_task_key=task_key,
                    compute_task_output_identifier="model",
                    address=common_pb2.Addressable(
                        checksum="a" * 64, storage_address=f"http://storage.example/{key()}"
                    ),
                )
            ]
        )
        peer_client.apply_task_action(task_key, computetask_pb2.TASK_ACTION_DONE)
        # EXECUTING, MODEL, output asset, DONE, and the child now waiting for its slot.
        count("task run (5 events)", 5)
        total += 5
    for plan_key in plans[1:5]:
        org_client.update_plan(plan_key, "renamed")
        count("compute plan updated", 1)
    return counts


def main() -> int:
    databases = DatabaseFactory(server_url())
    brokers = [redis.Redis(host="127.0.0.1", port=6379, db=db) for db in (BROKER_DATABASE, RESULT_DATABASE)]
    for client in brokers:
        client.flushdb()
    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    orchestrator: OrchestratorProcess | None = None
    events: EventsProcess | None = None
    network: Network | None = None
    engine: Engine | None = None
    try:
        backend_url = databases.create("bench")
        schema.upgrade(backend_url)
        engine = make_engine(backend_url, pool_size=2)
        orchestrator = OrchestratorProcess(databases.create("bench"), workdir)
        orchestrator.start()
        network = Network(orchestrator.port, f"redis://127.0.0.1:6379/{BROKER_DATABASE}", ORG_NAME)
        network.register_peers()
        environment = events_environment(
            orchestrator_port=orchestrator.port,
            database_url=backend_url,
            org_name=ORG_NAME,
            broker_database=BROKER_DATABASE,
            result_database=RESULT_DATABASE,
            readiness_file=workdir / "ready",
            LOG_LEVEL="WARNING",
        )
        events = EventsProcess(environment, workdir)
        events.start()
        events.wait_ready()
        lag = measure_lag(network, engine)

        # Caught up: every lag write was applied before the next one.
        events.stop()
        _, before = network.last_event_id()
        started = time.perf_counter()
        mix = write_backlog(network, CATCH_UP_EVENTS)
        written_in = time.perf_counter() - started
        last_id, after = network.last_event_id(idle_seconds=1.0)
        missed = after - before

        started = time.perf_counter()
        events.start()
        events.wait_ready()
        subscribed = time.perf_counter()

        def caught_up() -> bool:
            assert engine is not None
            with engine.connect() as connection:
                cursor = connection.execute(
                    text("SELECT event_id FROM last_events WHERE channel = :channel"), {"channel": CHANNEL}
                ).scalar()
            return cursor == last_id

        wait_for(caught_up, 600, interval=0.05, what="the catch-up")
        done = time.perf_counter()
        rate = missed / (done - subscribed)
        result = {
            "lag": {**lag, "target_median_ms": LAG_TARGET_SECONDS * 1000},
            "catch_up": {
                "missed_events": missed,
                "mix": mix,
                "written_in_seconds": round(written_in, 1),
                "seconds_from_subscription": round(done - subscribed, 2),
                "seconds_from_process_start": round(done - started, 2),
                "events_per_second": round(rate),
                "events_per_second_from_process_start": round(missed / (done - started)),
                "target_events_per_second": CATCH_UP_TARGET,
            },
        }
        print(json.dumps(result, indent=2))
        ok = (
            lag["median_ms"] <= LAG_TARGET_SECONDS * 1000
            and missed >= CATCH_UP_EVENTS
            and rate >= CATCH_UP_TARGET
        )
        print("targets met" if ok else "TARGET MISSED", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if events is not None:
            events.stop()
        if network is not None:
            network.close()
        if orchestrator is not None:
            orchestrator.stop()
        if engine is not None:
            engine.dispose()
        databases.drop_all()
        for client in brokers:
            client.flushdb()
            client.close()


if __name__ == "__main__":
    sys.exit(main())
