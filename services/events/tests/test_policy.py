"""The dispatch policy, fed the real events of the real orchestrator, on a real replica.

The consumer's steps run here in-process (apply a batch, decide, record in the outbox), so each
test can look at the decisions after each step of a workload it drives itself.
"""

from __future__ import annotations

import uuid

import pytest
from backend_common import queues
from backend_common.db import session_scope
from backend_common.dispatch import outbox
from backend_common.dispatch.routing import least_loaded_worker
from backend_common.dispatch.work import Work
from backend_common.protos import common_pb2, computeplan_pb2, computetask_pb2, function_pb2
from backend_common.replica import apply_events
from backend_events.policy import DispatchPolicy
from backend_events.testing import CHANNEL, ORG, ORG_NAME, PEER, Network
from sqlalchemy.orm import Session, sessionmaker

MODEL = common_pb2.ASSET_MODEL


class InProcessConsumer:
    """The consumer's transaction, one catch-up at a time."""

    def __init__(self, network: Network, sessions: sessionmaker[Session], worker_replicas: int = 1) -> None:
        self.network = network
        self.sessions = sessions
        self.cursor = ""
        self.policy = DispatchPolicy(
            org_name=ORG_NAME,
            msp_id=ORG,
            channel=CHANNEL,
            worker_replicas=worker_replicas,
            orchestrator=network.client(ORG),
        )

    def catch_up(self, *, replay: bool = False) -> list[Work]:
        """Apply the events since the cursor (or all of them again) and record the work decided."""
        events = self.network.events(after="" if replay else self.cursor)
        with session_scope(self.sessions) as session:
            changes = apply_events(session, events)
            decisions = self.policy.decide(session, events, changes)
            recorded = [
                decision.work
                for decision in decisions
                if outbox.record(session, CHANNEL, decision.event_id, decision.work) is not None
            ]
        if events:
            self.cursor = events[-1].id
        return recorded


@pytest.fixture
def consumer(network: Network, sessions: sessionmaker[Session]) -> InProcessConsumer:
    network.client(ORG).register_organization("http://org1.example")
    return InProcessConsumer(network, sessions)


def built_function(network: Network, inputs: dict[str, function_pb2.FunctionInput]) -> str:
    function = network.function(PEER, inputs, {"model": function_pb2.FunctionOutput(kind=MODEL)})
    network.build(PEER, function.key)
    return function.key


def new_task(
    function_key: str, plan_key: str, worker: str, *, parent: str | None = None, transient: bool = False
) -> computetask_pb2.NewComputeTask:
    inputs = []
    if parent is not None:
        inputs.append(
            computetask_pb2.ComputeTaskInput(
                identifier="models",
                parent_task_output=computetask_pb2.ParentTaskOutputRef(
                    parent_task_key=parent, output_identifier="model"
                ),
            )
        )
    return computetask_pb2.NewComputeTask(
        key=str(uuid.uuid4()),
        function_key=function_key,
        compute_plan_key=plan_key,
        worker=worker,
        inputs=inputs,
        outputs={
            "model": computetask_pb2.NewComputeTaskOutput(
                permissions=common_pb2.NewPermissions(public=True), transient=transient
            )
        },
    )


def new_plan(network: Network) -> str:
    return (
        network.client(ORG).register_plan(computeplan_pb2.NewComputePlan(key=str(uuid.uuid4()), name="p")).key
    )


def names(works: list[Work]) -> list[str]:
    return [decided.task_name for decided in works]


def test_transient_outputs_are_disabled_once_every_consumer_is_final(
    network: Network, consumer: InProcessConsumer
) -> None:
    source = built_function(network, {})
    combine = built_function(network, {"models": function_pb2.FunctionInput(kind=MODEL, multiple=True)})
    plan = new_plan(network)
    producer = new_task(source, plan, ORG, transient=True)
    readers = [new_task(combine, plan, PEER, parent=producer.key) for _ in range(2)]
    network.client(ORG).register_tasks([producer, *readers])

    first = consumer.catch_up()
    assert names(first) == [queues.COMPUTE_TASK_TASK]
    assert first[0].compute_task_key == producer.key
    assert first[0].queue == f"{ORG_NAME}.worker-0"

    network.run_task(ORG, producer.key)
    network.run_task(PEER, readers[0].key)
    # One reader is still to run: DisableOutput would be refused.
    assert consumer.catch_up() == []

    network.run_task(PEER, readers[1].key)
    last = consumer.catch_up()
    removal = [decided for decided in last if decided.task_name == queues.REMOVE_TRANSIENT_OUTPUTS_TASK]
    assert [decided.kwargs["outputs"] for decided in removal] == [
        [{"compute_task_key": producer.key, "identifier": "model"}]
    ]
    # The plan is done: its resources on the worker go too.
    assert queues.DELETE_CP_POD_AND_DIRS_TASK in names(last)

    network.client(ORG).disable_output(producer.key, "model")
    disabled = consumer.catch_up()
    assert sorted(names(disabled)) == sorted(
        [queues.REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK, queues.REMOVE_INTERMEDIARY_MODEL_FROM_DB_TASK]
    )
    # Everything again (a replay after a crash, at-least-once delivery): nothing new to send.
    assert consumer.catch_up(replay=True) == []


def test_a_plan_is_torn_down_when_it_stops_running_and_again_if_it_runs_again(
    network: Network, consumer: InProcessConsumer
) -> None:
    source = built_function(network, {})
    plan = new_plan(network)
    tasks = [new_task(source, plan, ORG) for _ in range(2)]
    network.client(ORG).register_tasks(tasks)
    assert names(consumer.catch_up()) == [queues.COMPUTE_TASK_TASK] * 2

    network.run_task(ORG, tasks[0].key)
    assert consumer.catch_up() == []  # the other task still runs
    network.run_task(ORG, tasks[1].key)
    (teardown,) = consumer.catch_up()
    assert teardown.task_name == queues.DELETE_CP_POD_AND_DIRS_TASK
    assert teardown.kwargs == {"channel_name": CHANNEL, "compute_plan_key": plan}

    # The worker has not released the plan yet when a task is added to it and runs.
    late = new_task(source, plan, ORG)
    network.client(ORG).register_tasks([late])
    assert names(consumer.catch_up()) == [queues.COMPUTE_TASK_TASK]
    network.run_task(ORG, late.key)
    assert names(consumer.catch_up()) == [queues.DELETE_CP_POD_AND_DIRS_TASK]


def test_a_canceled_plan_is_torn_down_without_any_task_event(
    network: Network, consumer: InProcessConsumer
) -> None:
    source = built_function(network, {})
    plan = new_plan(network)
    first, second = new_task(source, plan, ORG), new_task(source, plan, ORG)
    network.client(ORG).register_tasks([first])
    consumer.catch_up()
    network.run_task(ORG, first.key)
    network.client(ORG).register_tasks([second])
    consumer.catch_up()  # the second is dispatched, not started yet
    network.cancel(plan)
    assert names(consumer.catch_up()) == [queues.DELETE_CP_POD_AND_DIRS_TASK]


def test_only_functions_of_this_organization_are_built(network: Network, consumer: InProcessConsumer) -> None:
    outputs = {"model": function_pb2.FunctionOutput(kind=MODEL)}
    mine = network.function(ORG, {}, outputs)
    network.function(PEER, {}, outputs)
    (build,) = consumer.catch_up()
    assert build.task_name == queues.BUILD_IMAGE_TASK
    assert build.queue == f"{ORG_NAME}.builder"
    assert build.then is not None and build.then.task_name == queues.SAVE_IMAGE_TASK
    assert f'"key":"{mine.key}"' in build.kwargs["function_serialized"]


def test_plans_go_to_the_least_loaded_worker_replica() -> None:
    assert least_loaded_worker({}, 3) == 0
    assert least_loaded_worker({0: 1}, 3) == 1
    assert least_loaded_worker({0: 1, 1: 1, 2: 1}, 3) == 0
    assert least_loaded_worker({0: 2, 1: 1, 2: 1}, 3) == 1
    # A replica scaled away keeps its plans but gets no new one.
    assert least_loaded_worker({5: 0}, 2) == 0
