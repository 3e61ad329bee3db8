"""The event log: events per action, QueryEvents, and the SubscribeToEvents stream guarantees."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from backend_common.orchestrator import NotFoundError
from backend_common.protos import (
    common_pb2,
    computetask_pb2,
    event_pb2,
    event_pb2_grpc,
    function_pb2,
    model_pb2,
)
from google.protobuf.timestamp_pb2 import Timestamp
from standalone_orchestrator.testing import (
    CHANNEL,
    ORG1,
    ORG2,
    OTHER_CHANNEL,
    Network,
    addressable,
    new_key,
    parent_input,
)

Fresh = Callable[..., Network]
A = computetask_pb2.ComputeTaskAction
CREATED, UPDATED, DISABLED = (
    event_pb2.EVENT_ASSET_CREATED,
    event_pb2.EVENT_ASSET_UPDATED,
    event_pb2.EVENT_ASSET_DISABLED,
)


class Subscriber:
    """A SubscribeToEvents call read by a background thread."""

    def __init__(self, net: Network, start: str = "", mspid: str = ORG1, channel: str = CHANNEL) -> None:
        self.grpc_channel = net.grpc_channel()
        stub = event_pb2_grpc.EventServiceStub(self.grpc_channel)
        self.call = stub.SubscribeToEvents(
            event_pb2.SubscribeToEventsParam(start_event_id=start), metadata=net.stub_metadata(mspid, channel)
        )
        self.received: queue.Queue[event_pb2.Event | BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.received.put(event)
        except BaseException as error:
            self.received.put(error)

    def take(self, count: int, timeout: float = 10) -> list[event_pb2.Event]:
        events: list[event_pb2.Event] = []
        deadline = time.monotonic() + timeout
        while len(events) < count:
            item = self.received.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(item, BaseException):
                raise item
            events.append(item)
        return events

    def nothing_more(self, wait: float = 0.3) -> bool:
        try:
            item = self.received.get(timeout=wait)
        except queue.Empty:
            return True
        return isinstance(item, grpc.RpcError) and item.code() == grpc.StatusCode.CANCELLED

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=5)
        self.grpc_channel.close()


@contextmanager
def subscribed(net: Network, start: str = "", **kwargs: Any) -> Iterator[Subscriber]:
    subscriber = Subscriber(net, start, **kwargs)
    try:
        yield subscriber
    finally:
        subscriber.close()


def _summary(events: list[event_pb2.Event]) -> list[tuple[str, str, str]]:
    return [
        (common_pb2.AssetKind.Name(e.asset_kind), event_pb2.EventKind.Name(e.event_kind), e.asset_key)
        for e in events
    ]


def _model(task_key: str) -> model_pb2.NewModel:
    return model_pb2.NewModel(
        key=new_key(),
        compute_task_key=task_key,
        compute_task_output_identifier="model",
        address=addressable(),
    )


def test_events_per_action_in_emission_order(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    function = net.function()
    plan = net.plan()
    client, worker = net.client(), net.client(ORG2)
    first, second = new_key(), new_key()
    client.register_tasks(
        [
            net.new_task(function, plan, key=second, worker=ORG2, inputs=[parent_input("model", first)]),
            net.new_task(function, plan, key=first, worker=ORG2),
        ]
    )
    client.apply_function_action(function.key, function_pb2.FUNCTION_ACTION_BUILDING)
    client.update_function(function.key, "function", addressable())
    client.apply_function_action(function.key, function_pb2.FUNCTION_ACTION_READY)
    worker.apply_task_action(first, A.TASK_ACTION_EXECUTING)
    [model] = worker.register_models([_model(first)])
    worker.apply_task_action(first, A.TASK_ACTION_DONE)

    expected = [
        ("ASSET_ORGANIZATION", "EVENT_ASSET_CREATED", "MyOrg1MSP"),
        ("ASSET_ORGANIZATION", "EVENT_ASSET_CREATED", "MyOrg2MSP"),
        ("ASSET_ORGANIZATION", "EVENT_ASSET_CREATED", "MyOrg3MSP"),
        ("ASSET_FUNCTION", "EVENT_ASSET_CREATED", function.key),
        ("ASSET_COMPUTE_PLAN", "EVENT_ASSET_CREATED", plan.key),
        # Topological order, not request order.
        ("ASSET_COMPUTE_TASK", "EVENT_ASSET_CREATED", first),
        ("ASSET_COMPUTE_TASK", "EVENT_ASSET_CREATED", second),
        ("ASSET_FUNCTION", "EVENT_ASSET_UPDATED", function.key),  # building
        ("ASSET_COMPUTE_TASK", "EVENT_ASSET_UPDATED", first),
        ("ASSET_COMPUTE_TASK", "EVENT_ASSET_UPDATED", second),
        ("ASSET_FUNCTION", "EVENT_ASSET_UPDATED", function.key),  # image
        ("ASSET_FUNCTION", "EVENT_ASSET_UPDATED", function.key),  # ready
        ("ASSET_COMPUTE_TASK", "EVENT_ASSET_UPDATED", first),
        ("ASSET_COMPUTE_TASK", "EVENT_ASSET_UPDATED", second),
        ("ASSET_COMPUTE_TASK", "EVENT_ASSET_UPDATED", first),  # executing
        ("ASSET_MODEL", "EVENT_ASSET_CREATED", model.key),
        ("ASSET_COMPUTE_TASK_OUTPUT_ASSET", "EVENT_ASSET_CREATED", first),
        ("ASSET_COMPUTE_TASK", "EVENT_ASSET_UPDATED", first),  # done
        ("ASSET_COMPUTE_TASK", "EVENT_ASSET_UPDATED", second),  # its child starts
    ]
    with subscribed(net) as subscriber:
        events = subscriber.take(len(expected))
        assert subscriber.nothing_more()
    assert _summary(events) == expected
    statuses = [e.compute_task.status for e in events if e.asset_kind == common_pb2.ASSET_COMPUTE_TASK]
    assert statuses[-2:] == [computetask_pb2.STATUS_DONE, computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT]
    assert dict(events[-1].metadata) == {"reason": f"Last parent task {first} done"}
    assert dict(events[7].metadata) == {"reason": "User action"}
    assert dict(events[10].metadata) == {}  # UpdateFunction: no reason
    assert all(e.channel == CHANNEL for e in events)
    assert all(uuid.UUID(e.id).version == 4 for e in events)
    # One request, one timestamp.
    assert events[5].timestamp == events[6].timestamp
    assert events[-2].timestamp == events[-1].timestamp
    assert events[-3].timestamp != events[-2].timestamp


def test_failed_requests_emit_nothing(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    function = net.function(ready=True)
    plan = net.plan()
    before = len(list(net.client().iter_events()))
    good = net.new_task(function, plan, worker=ORG1)
    bad = net.new_task(function, plan, worker="Unregistered")
    with pytest.raises(NotFoundError):
        net.client().register_tasks([good, bad])
    assert len(list(net.client().iter_events())) == before
    with pytest.raises(NotFoundError):
        net.client().get_task(good.key)


def test_replay_and_resume_exactly_once(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    for _ in range(5):
        net.plan()
    total = 3 + 5
    with subscribed(net) as subscriber:
        head = subscriber.take(4)
    last_id = head[-1].id
    # Written while nobody listens.
    for _ in range(4):
        net.plan()
    total += 4
    with subscribed(net, last_id) as subscriber:
        tail = subscriber.take(total - 4)
        # Live events after the replay.
        net.plan()
        live = subscriber.take(1)
        assert subscriber.nothing_more()
    ids = [e.id for e in head + tail + live]
    assert len(ids) == len(set(ids)) == total + 1
    # One event per request here, so QueryEvents' time order is the stream's order too.
    assert ids == [e.id for e in net.client().iter_events()]
    # Starting after the last event gives only new ones.
    with subscribed(net, live[0].id) as subscriber:
        assert subscriber.nothing_more()
        plan = net.plan()
        assert subscriber.take(1)[0].asset_key == plan.key


def test_start_id_must_exist_in_the_channel(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    other = next(iter(net.client(ORG1, OTHER_CHANNEL).iter_events()))
    for start in (str(uuid.uuid4()), other.id):
        with subscribed(net, start) as subscriber, pytest.raises(grpc.RpcError) as error:
            subscriber.take(1)
        assert error.value.code() == grpc.StatusCode.UNKNOWN
        assert error.value.details() == "no rows in result set"


def test_stream_headers_errors_are_unknown(net: Network) -> None:
    with net.grpc_channel() as channel:
        stub = event_pb2_grpc.EventServiceStub(channel)
        call = stub.SubscribeToEvents(event_pb2.SubscribeToEventsParam(), metadata=(("channel", CHANNEL),))
        with pytest.raises(grpc.RpcError) as error:
            next(iter(call))
    assert error.value.code() == grpc.StatusCode.UNKNOWN
    assert "mspid" in (error.value.details() or "")


def test_live_events_under_concurrent_writers(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    writers, plans_each = 4, 10
    with subscribed(net) as subscriber:
        subscriber.take(3)  # organizations
        errors: list[BaseException] = []

        def write(organization: str) -> None:
            try:
                for _ in range(plans_each):
                    net.plan(organization)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=write, args=(ORG1 if i % 2 else ORG2,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        events = subscriber.take(writers * plans_each, timeout=30)
        for thread in threads:
            thread.join()
        assert not errors
        assert subscriber.nothing_more()
    assert len({e.id for e in events}) == writers * plans_each
    # The stream order is the commit order: QueryEvents by time agrees.
    timestamps = [e.timestamp.ToNanoseconds() for e in events]
    assert timestamps == sorted(timestamps)


def test_batches_stay_contiguous_in_the_stream(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    function = net.function(ready=True)
    plan = net.plan()
    with subscribed(net) as subscriber:
        subscriber.take(5)
        stop = threading.Event()

        def noise() -> None:
            while not stop.is_set():
                net.plan(ORG2)

        thread = threading.Thread(target=noise)
        thread.start()
        batch = [net.new_task(function, plan, worker=ORG1) for _ in range(50)]
        net.client().register_tasks(batch)
        stop.set()
        thread.join()
        events: list[event_pb2.Event] = []
        while sum(e.asset_kind == common_pb2.ASSET_COMPUTE_TASK for e in events) < 50:
            events += subscriber.take(1)
    kinds = [e.asset_kind for e in events]
    start = kinds.index(common_pb2.ASSET_COMPUTE_TASK)
    assert kinds[start : start + 50] == [common_pb2.ASSET_COMPUTE_TASK] * 50
    assert [e.asset_key for e in events[start : start + 50]] == [t.key for t in batch]


def test_channels_are_isolated(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    mine = net.function()
    theirs = net.function(channel=OTHER_CHANNEL)
    with pytest.raises(NotFoundError):
        net.client(ORG1, OTHER_CHANNEL).get_function(mine.key)
    with pytest.raises(NotFoundError):
        net.client(ORG1).get_function(theirs.key)
    assert [f.key for f in net.client(ORG2, OTHER_CHANNEL).iter_functions()] == [theirs.key]
    keys_here = {e.asset_key for e in net.client().iter_events()}
    keys_there = {e.asset_key for e in net.client(ORG2, OTHER_CHANNEL).iter_events()}
    assert mine.key in keys_here and theirs.key not in keys_here
    assert theirs.key in keys_there and mine.key not in keys_there
    with subscribed(net, channel=OTHER_CHANNEL, mspid=ORG2) as subscriber:
        assert _summary(subscriber.take(3))[-1] == ("ASSET_FUNCTION", "EVENT_ASSET_CREATED", theirs.key)
        net.plan()  # other channel: not delivered here
        assert subscriber.nothing_more()
        plan = net.plan(channel=OTHER_CHANNEL)
        assert subscriber.take(1)[0].asset_key == plan.key
    assert {e.channel for e in net.client(ORG1, OTHER_CHANNEL).iter_events()} == {OTHER_CHANNEL}


def test_query_events_filters_sort_and_pages(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    function = net.function(ready=True)
    plan = net.plan()
    task = net.task(function, plan)
    net.client().apply_task_action(task.key, A.TASK_ACTION_EXECUTING, "go")
    client = net.client(ORG2)
    every = list(client.iter_events(page_size=3))
    assert len(every) == 3 + 4 + 1 + 2
    keys = [(e.timestamp.ToNanoseconds(), e.id) for e in every]
    assert keys == sorted(keys)
    descending = list(client.iter_events(sort=common_pb2.DESCENDING))
    assert [e.id for e in descending] == [e.id for e in reversed(every)]
    first = client.query_events(page_size=4)
    assert len(first.events) == 4 and first.next_page_token == "4"
    assert [e.id for e in client.query_events(page_token="8", page_size=4).events] == [
        e.id for e in every[8:]
    ]
    assert client.query_events(page_token="8", page_size=4).next_page_token == ""

    def query(**fields: Any) -> list[event_pb2.Event]:
        return list(client.iter_events(event_pb2.EventQueryFilter(**fields)))

    assert [e.asset_key for e in query(asset_kind=common_pb2.ASSET_COMPUTE_PLAN)] == [plan.key]
    assert len(query(event_kind=UPDATED)) == 4  # 3 for the function build, 1 for the task
    assert [e.asset_key for e in query(metadata={"reason": "go"})] == [task.key]
    assert query(asset_key=task.key, event_kind=CREATED)[0].compute_task == task
    middle = every[4].timestamp
    after = query(start=middle)
    assert all(e.timestamp.ToNanoseconds() >= middle.ToNanoseconds() for e in after)
    before = query(end=middle)
    assert len(after) + len(before) - len(query(start=middle, end=middle)) == len(every)
    future = datetime.now(UTC) + timedelta(days=1)
    stamp = Timestamp()
    stamp.FromDatetime(future)
    assert query(start=stamp) == []


def test_streams_do_not_hold_threads(fresh_orchestrator: Fresh) -> None:
    # More open streams than database threads: calls still go through, every stream gets the event.
    net = fresh_orchestrator(max_workers=2)
    subscribers = [Subscriber(net) for _ in range(8)]
    try:
        for subscriber in subscribers:
            subscriber.take(3)
        plan = net.plan()
        for subscriber in subscribers:
            assert subscriber.take(1)[0].asset_key == plan.key
    finally:
        for subscriber in subscribers:
            subscriber.close()


def test_server_stop_ends_streams_with_unavailable(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    subscriber = Subscriber(net)
    try:
        subscriber.take(3)
        net.server.stop(grace=1)
        with pytest.raises(grpc.RpcError) as error:
            subscriber.take(1)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        subscriber.close()
