"""The event → replica mapping, fed real orchestrator `Event` messages, against a real Postgres."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from backend_common.db import make_engine, make_session_factory, session_scope
from backend_common.db.replica import (
    ComputePlan,
    ComputeTask,
    DataSampleDataManager,
    FailureReport,
    Function,
    FunctionProfilingStep,
    Model,
)
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
    organization_pb2,
    performance_pb2,
    profiling_pb2,
)
from backend_common.replica import (
    EXTERNAL_CREATOR,
    TaskStatistics,
    apply_event,
    apply_events,
    is_plan_running,
    load_cursor,
    plan_state,
    save_cursor,
    store_compute_plan,
    store_compute_task,
)
from backend_migrations import schema
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Engine, MetaData, select, text
from sqlalchemy.orm import Session, sessionmaker

CHANNEL = "mychannel"
ME = "MyOrg1MSP"
OTHER = "MyOrg2MSP"
START = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
CHECKSUM = "a" * 64

Status = computetask_pb2.ComputeTaskStatus


def key() -> str:
    return str(uuid.uuid4())


def stamp(at: datetime) -> Timestamp:
    timestamp = Timestamp()
    timestamp.FromDatetime(at)
    return timestamp


def permissions(*ids: str, public: bool = False) -> common_pb2.Permissions:
    permission = common_pb2.Permission(public=public, authorized_ids=list(ids))
    return common_pb2.Permissions(process=permission, download=permission)


def address(path: str) -> common_pb2.Addressable:
    return common_pb2.Addressable(checksum=CHECKSUM, storage_address=f"http://backend.example{path}")


class Channel:
    """Builds the events one channel of the orchestrator would send, one request per timestamp."""

    def __init__(self) -> None:
        self.clock = itertools.count(1)
        self.now = START

    def tick(self) -> datetime:
        self.now = START + timedelta(seconds=next(self.clock))
        return self.now

    def event(
        self,
        asset_kind: common_pb2.AssetKind.ValueType,
        event_kind: event_pb2.EventKind.ValueType,
        asset_key: str,
        *,
        at: datetime | None = None,
        **asset: Any,
    ) -> event_pb2.Event:
        return event_pb2.Event(
            id=key(),
            asset_key=asset_key,
            asset_kind=asset_kind,
            event_kind=event_kind,
            channel=CHANNEL,
            timestamp=stamp(at or self.now),
            **asset,
        )

    def organization(self, org_id: str) -> event_pb2.Event:
        organization = organization_pb2.Organization(
            id=org_id, address=f"http://{org_id}.example", creation_date=stamp(self.tick())
        )
        return self.event(
            common_pb2.ASSET_ORGANIZATION, event_pb2.EVENT_ASSET_CREATED, org_id, organization=organization
        )

    def function(
        self,
        owner: str = ME,
        status: function_pb2.FunctionStatus.ValueType = function_pb2.FUNCTION_STATUS_WAITING,
    ) -> function_pb2.Function:
        return function_pb2.Function(
            key=key(),
            name="train",
            description=address("/description/"),
            archive=address("/archive/"),
            permissions=permissions(owner, public=True),
            owner=owner,
            creation_date=stamp(self.tick()),
            metadata={"framework": "torch"},
            inputs={
                "opener": function_pb2.FunctionInput(kind=common_pb2.ASSET_DATA_MANAGER),
                "datasamples": function_pb2.FunctionInput(kind=common_pb2.ASSET_DATA_SAMPLE, multiple=True),
                "models": function_pb2.FunctionInput(
                    kind=common_pb2.ASSET_MODEL, multiple=True, optional=True
                ),
            },
            outputs={
                "model": function_pb2.FunctionOutput(kind=common_pb2.ASSET_MODEL),
                "score": function_pb2.FunctionOutput(kind=common_pb2.ASSET_PERFORMANCE),
            },
            status=status,
            image=common_pb2.Addressable(),
        )

    def function_event(
        self,
        function: function_pb2.Function,
        event_kind: event_pb2.EventKind.ValueType = event_pb2.EVENT_ASSET_CREATED,
    ) -> event_pb2.Event:
        return self.event(common_pb2.ASSET_FUNCTION, event_kind, function.key, function=function)

    def data_manager(self, owner: str = ME) -> datamanager_pb2.DataManager:
        return datamanager_pb2.DataManager(
            key=key(),
            name="dataset",
            owner=owner,
            permissions=permissions(owner),
            description=address("/dm/description/"),
            opener=address("/dm/opener/"),
            creation_date=stamp(self.tick()),
            metadata={"kind": "images"},
        )

    def data_manager_event(
        self,
        data_manager: datamanager_pb2.DataManager,
        event_kind: event_pb2.EventKind.ValueType = event_pb2.EVENT_ASSET_CREATED,
    ) -> event_pb2.Event:
        return self.event(
            common_pb2.ASSET_DATA_MANAGER, event_kind, data_manager.key, data_manager=data_manager
        )

    def data_sample_event(
        self,
        data_sample: datasample_pb2.DataSample,
        event_kind: event_pb2.EventKind.ValueType = event_pb2.EVENT_ASSET_CREATED,
    ) -> event_pb2.Event:
        return self.event(common_pb2.ASSET_DATA_SAMPLE, event_kind, data_sample.key, data_sample=data_sample)

    def plan(self, owner: str = ME) -> computeplan_pb2.ComputePlan:
        return computeplan_pb2.ComputePlan(
            key=key(),
            owner=owner,
            creation_date=stamp(self.tick()),
            tag="exp",
            name="plan",
            metadata={"a": "b"},
        )

    def plan_event(
        self,
        plan: computeplan_pb2.ComputePlan,
        event_kind: event_pb2.EventKind.ValueType = event_pb2.EVENT_ASSET_CREATED,
    ) -> event_pb2.Event:
        return self.event(common_pb2.ASSET_COMPUTE_PLAN, event_kind, plan.key, compute_plan=plan)

    def task(
        self,
        plan: computeplan_pb2.ComputePlan,
        function: function_pb2.Function,
        data_manager: datamanager_pb2.DataManager,
        samples: list[str],
        *,
        parent: computetask_pb2.ComputeTask | None = None,
        status: Status.ValueType = computetask_pb2.STATUS_WAITING_FOR_BUILDER_SLOT,
        worker: str = ME,
        transient: bool = False,
    ) -> computetask_pb2.ComputeTask:
        inputs = [computetask_pb2.ComputeTaskInput(identifier="opener", asset_key=data_manager.key)]
        inputs += [computetask_pb2.ComputeTaskInput(identifier="datasamples", asset_key=s) for s in samples]
        if parent is not None:
            inputs.append(
                computetask_pb2.ComputeTaskInput(
                    identifier="models",
                    parent_task_output=computetask_pb2.ParentTaskOutputRef(
                        parent_task_key=parent.key, output_identifier="model"
                    ),
                )
            )
        return computetask_pb2.ComputeTask(
            key=key(),
            owner=plan.owner,
            compute_plan_key=plan.key,
            rank=0 if parent is None else parent.rank + 1,
            status=status,
            worker=worker,
            creation_date=stamp(self.tick()),
            logs_permission=common_pb2.Permission(authorized_ids=[worker]),
            metadata={"__tag__": "round", "round_idx": "1"},
            inputs=inputs,
            outputs={
                "model": computetask_pb2.ComputeTaskOutput(
                    permissions=permissions(ME, OTHER), transient=transient
                ),
                "score": computetask_pb2.ComputeTaskOutput(permissions=permissions(ME, public=True)),
            },
            function_key=function.key,
        )

    def task_created(self, task: computetask_pb2.ComputeTask) -> event_pb2.Event:
        return self.event(
            common_pb2.ASSET_COMPUTE_TASK,
            event_pb2.EVENT_ASSET_CREATED,
            task.key,
            at=self.now,
            compute_task=task,
        )

    def task_status(
        self, task: computetask_pb2.ComputeTask, status: Status.ValueType, *, cascaded: bool = False
    ) -> event_pb2.Event:
        task.status = status
        snapshot = computetask_pb2.ComputeTask()
        snapshot.CopyFrom(task)
        if cascaded:
            # Tasks moved by a cascade travel without their inputs and outputs.
            del snapshot.inputs[:]
            snapshot.outputs.clear()
        event = self.event(
            common_pb2.ASSET_COMPUTE_TASK,
            event_pb2.EVENT_ASSET_UPDATED,
            task.key,
            at=self.tick(),
            compute_task=snapshot,
        )
        event.metadata["reason"] = "User action"
        return event

    def model(self, task: computetask_pb2.ComputeTask, identifier: str = "model") -> list[event_pb2.Event]:
        model = model_pb2.Model(
            key=key(),
            compute_task_key=task.key,
            address=address("/model/"),
            permissions=permissions(ME, OTHER),
            owner=task.worker,
            creation_date=stamp(self.tick()),
        )
        output = computetask_pb2.ComputeTaskOutputAsset(
            compute_task_key=task.key,
            compute_task_output_identifier=identifier,
            asset_kind=common_pb2.ASSET_MODEL,
            asset_key=model.key,
        )
        return [
            self.event(common_pb2.ASSET_MODEL, event_pb2.EVENT_ASSET_CREATED, model.key, model=model),
            self.event(
                common_pb2.ASSET_COMPUTE_TASK_OUTPUT_ASSET,
                event_pb2.EVENT_ASSET_CREATED,
                task.key,
                compute_task_output_asset=output,
            ),
        ]

    def performance(self, task: computetask_pb2.ComputeTask, value: float) -> list[event_pb2.Event]:
        performance = performance_pb2.Performance(
            compute_task_key=task.key,
            compute_task_output_identifier="score",
            performance_value=value,
            creation_date=stamp(self.tick()),
        )
        performance_key = f"{task.key}|score"
        output = computetask_pb2.ComputeTaskOutputAsset(
            compute_task_key=task.key,
            compute_task_output_identifier="score",
            asset_kind=common_pb2.ASSET_PERFORMANCE,
            asset_key=performance_key,
        )
        return [
            self.event(
                common_pb2.ASSET_PERFORMANCE,
                event_pb2.EVENT_ASSET_CREATED,
                performance_key,
                performance=performance,
            ),
            self.event(
                common_pb2.ASSET_COMPUTE_TASK_OUTPUT_ASSET,
                event_pb2.EVENT_ASSET_CREATED,
                task.key,
                compute_task_output_asset=output,
            ),
        ]

    def failure_report(
        self,
        asset_key: str,
        asset_type: failure_report_pb2.FailedAssetKind.ValueType,
        error_type: failure_report_pb2.ErrorType.ValueType,
        owner: str = ME,
    ) -> event_pb2.Event:
        report = failure_report_pb2.FailureReport(
            asset_key=asset_key,
            error_type=error_type,
            logs_address=address("/logs/") if error_type != failure_report_pb2.ERROR_TYPE_INTERNAL else None,
            creation_date=stamp(self.now),
            owner=owner,
            asset_type=asset_type,
        )
        return self.event(
            common_pb2.ASSET_FAILURE_REPORT, event_pb2.EVENT_ASSET_CREATED, asset_key, failure_report=report
        )


@pytest.fixture(scope="module")
def module_database(database_factory: Any) -> Iterator[str]:
    url: str = database_factory.create()
    schema.upgrade(url)
    yield url
    database_factory.drop(url)


@pytest.fixture
def engine(module_database: str) -> Iterator[Engine]:
    engine = make_engine(module_database, pool_size=1)
    yield engine
    # Each test starts from an empty replica.
    truncate(engine)
    engine.dispose()


def truncate(engine: Engine) -> None:
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.begin() as connection:
        tables = ", ".join(f'"{name}"' for name in metadata.tables if name != "alembic_version")
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def apply(sessions: sessionmaker[Session], *events: event_pb2.Event) -> None:
    with session_scope(sessions) as session:
        apply_events(session, events)


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    metadata = MetaData()
    metadata.reflect(engine)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for name, table in sorted(metadata.tables.items()):
            rows[name] = sorted((tuple(row) for row in connection.execute(select(table))), key=repr)
    return rows


class Scenario:
    """A plan of two chained tasks on this organization, run to completion, plus other assets."""

    def __init__(self) -> None:
        self.channel = Channel()
        c = self.channel
        self.function = c.function()
        self.data_manager = c.data_manager()
        self.samples = [
            datasample_pb2.DataSample(
                key=key(),
                data_manager_keys=[self.data_manager.key],
                owner=ME,
                checksum=CHECKSUM,
                creation_date=stamp(c.tick()),
            )
            for _ in range(2)
        ]
        self.plan = c.plan()
        self.events: list[event_pb2.Event] = [
            c.organization(ME),
            c.organization(OTHER),
            c.function_event(self.function),
            c.data_manager_event(self.data_manager),
            *(c.data_sample_event(sample) for sample in self.samples),
            c.plan_event(self.plan),
        ]
        c.tick()
        self.first = c.task(
            self.plan, self.function, self.data_manager, [self.samples[0].key], transient=True
        )
        self.second = c.task(
            self.plan, self.function, self.data_manager, [self.samples[1].key], parent=self.first
        )
        self.events += [c.task_created(self.first), c.task_created(self.second)]
        self.function.status = function_pb2.FUNCTION_STATUS_BUILDING
        self.events += [
            c.function_event(self.function, event_pb2.EVENT_ASSET_UPDATED),
            c.task_status(self.first, computetask_pb2.STATUS_BUILDING, cascaded=True),
        ]
        first_model = c.model(self.first)
        self.first_model = first_model[0].asset_key
        self.function.status = function_pb2.FUNCTION_STATUS_READY
        self.function.image.CopyFrom(address("/function/image/"))
        self.events += [
            c.function_event(self.function, event_pb2.EVENT_ASSET_UPDATED),
            c.event(
                common_pb2.ASSET_PROFILING_STEP,
                event_pb2.EVENT_ASSET_CREATED,
                self.function.key,
                profiling_step=profiling_pb2.ProfilingStep(
                    duration=1500, asset_key=self.function.key, step="build_image"
                ),
            ),
            c.task_status(self.first, computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT, cascaded=True),
            c.task_status(self.second, computetask_pb2.STATUS_WAITING_FOR_PARENT_TASKS, cascaded=True),
            c.task_status(self.first, computetask_pb2.STATUS_EXECUTING),
            *first_model,
            *c.performance(self.first, 0.5),
            c.task_status(self.first, computetask_pb2.STATUS_DONE),
        ]
        self.first_done = c.now
        self.events += [
            c.task_status(self.second, computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT, cascaded=True),
            c.task_status(self.second, computetask_pb2.STATUS_EXECUTING),
        ]
        self.second_started = c.now
        self.events += [*c.model(self.second), *c.performance(self.second, 0.75)]
        self.events.append(c.task_status(self.second, computetask_pb2.STATUS_DONE))
        self.second_done = c.now
        self.data_manager.name = "renamed dataset"
        self.samples[0].data_manager_keys.append(self.data_manager.key)
        self.events += [
            c.data_manager_event(self.data_manager, event_pb2.EVENT_ASSET_UPDATED),
            c.data_sample_event(self.samples[0], event_pb2.EVENT_ASSET_UPDATED),
        ]


def test_a_plan_run_to_completion_is_mirrored(engine: Engine, sessions: sessionmaker[Session]) -> None:
    scenario = Scenario()
    apply(sessions, *scenario.events)

    with sessions() as session:
        function = session.get_one(Function, scenario.function.key)
        assert function.status == "FUNCTION_STATUS_READY"
        assert function.image_checksum == CHECKSUM
        assert {i.identifier: (i.kind, i.multiple, i.optional) for i in function.inputs} == {
            "opener": ("ASSET_DATA_MANAGER", False, False),
            "datasamples": ("ASSET_DATA_SAMPLE", True, False),
            "models": ("ASSET_MODEL", True, True),
        }
        assert function.permissions_process_public is True
        steps = session.scalars(select(FunctionProfilingStep)).all()
        assert [(s.function_key, s.step, s.duration_us) for s in steps] == [
            (scenario.function.key, "build_image", 1500)
        ]

        second = session.get_one(ComputeTask, scenario.second.key)
        assert second.status == "STATUS_DONE"
        assert second.tag == "round"
        assert second.metadata_ == {"round_idx": "1"}
        assert second.rank == 1
        assert second.start_date == scenario.second_started
        assert second.end_date == scenario.second_done
        assert [(i.identifier, i.asset_key, i.parent_task_key) for i in second.inputs] == [
            ("opener", scenario.data_manager.key, None),
            ("datasamples", scenario.samples[1].key, None),
            ("models", None, scenario.first.key),
        ]
        first = session.get_one(ComputeTask, scenario.first.key)
        assert {o.identifier: o.transient for o in first.outputs} == {"model": True, "score": False}

        plan = session.get_one(ComputePlan, scenario.plan.key)
        assert plan.creator == EXTERNAL_CREATOR
        assert plan.status == "PLAN_STATUS_DONE"
        assert plan.start_date == first.start_date
        assert plan.end_date == scenario.second_done

        models = session.scalars(select(Model).order_by(Model.creation_date)).all()
        assert [(m.compute_task_key, m.identifier, m.checksum) for m in models] == [
            (scenario.first.key, "model", CHECKSUM),
            (scenario.second.key, "model", CHECKSUM),
        ]
        links = session.scalars(
            select(DataSampleDataManager.data_sample_key).where(
                DataSampleDataManager.data_manager_key == scenario.data_manager.key
            )
        ).all()
        assert sorted(links) == sorted(s.key for s in scenario.samples)
    rows = snapshot(engine)
    assert sorted(row[3] for row in rows["performances"]) == [0.5, 0.75]
    assert len(rows["compute_task_output_assets"]) == 4
    assert sorted(row[:2] for row in rows["organizations"]) == [(ME, CHANNEL), (OTHER, CHANNEL)]


def test_applying_every_event_twice_changes_nothing(engine: Engine, sessions: sessionmaker[Session]) -> None:
    scenario = Scenario()
    c = scenario.channel
    failed = c.task(scenario.plan, scenario.function, scenario.data_manager, [], worker=OTHER)
    extra = [
        c.task_created(failed),
        c.task_status(failed, computetask_pb2.STATUS_FAILED),
        c.failure_report(
            failed.key,
            failure_report_pb2.FAILED_ASSET_COMPUTE_TASK,
            failure_report_pb2.ERROR_TYPE_EXECUTION,
            OTHER,
        ),
        c.event(
            common_pb2.ASSET_MODEL,
            event_pb2.EVENT_ASSET_DISABLED,
            scenario.first_model,
            model=model_pb2.Model(key=scenario.first_model, compute_task_key=scenario.first.key, owner=ME),
        ),
    ]
    with session_scope(sessions) as session:
        for event in [*scenario.events, *extra]:
            apply_event(session, event)
    once = snapshot(engine)
    with session_scope(sessions) as session:
        for event in [*scenario.events, *extra]:
            apply_event(session, event)
            apply_event(session, event)
    assert snapshot(engine) == once


def test_a_failed_task_fails_the_plan_at_the_event_time(sessions: sessionmaker[Session]) -> None:
    scenario = Scenario()
    c = scenario.channel
    plan = c.plan()
    task = c.task(plan, scenario.function, scenario.data_manager, [], worker=OTHER)
    child = c.task(plan, scenario.function, scenario.data_manager, [], parent=task)
    apply(sessions, *scenario.events, c.plan_event(plan), c.task_created(task), c.task_created(child))
    apply(sessions, c.task_status(task, computetask_pb2.STATUS_EXECUTING))
    failing = c.task_status(task, computetask_pb2.STATUS_FAILED)
    apply(
        sessions,
        failing,
        c.failure_report(
            task.key,
            failure_report_pb2.FAILED_ASSET_COMPUTE_TASK,
            failure_report_pb2.ERROR_TYPE_EXECUTION,
            OTHER,
        ),
    )

    with sessions() as session:
        stored = session.get_one(ComputePlan, plan.key)
        assert stored.failure_date == failing.timestamp.ToDatetime(tzinfo=UTC)
        assert stored.status == "PLAN_STATUS_FAILED"
        assert stored.failed_task_key == task.key
        assert stored.end_date == stored.failure_date
        failed = session.get_one(ComputeTask, task.key)
        assert failed.error_type == "ERROR_TYPE_EXECUTION"
        assert failed.logs_owner == OTHER
        assert failed.logs_checksum == CHECKSUM
        report = session.get_one(FailureReport, task.key)
        assert report.asset_type == "FAILED_ASSET_COMPUTE_TASK"
        assert not is_plan_running(session, plan.key)


def test_a_function_build_failure_is_shown_on_its_failed_tasks(sessions: sessionmaker[Session]) -> None:
    c = Channel()
    function = c.function()
    data_manager = c.data_manager()
    plan = c.plan()
    task = c.task(plan, function, data_manager, [])
    apply(sessions, c.organization(ME), c.function_event(function), c.data_manager_event(data_manager))
    apply(sessions, c.plan_event(plan), c.task_created(task))
    function.status = function_pb2.FUNCTION_STATUS_BUILDING
    apply(
        sessions,
        c.function_event(function, event_pb2.EVENT_ASSET_UPDATED),
        c.task_status(task, Status.Value("STATUS_BUILDING"), cascaded=True),
    )
    function.status = function_pb2.FUNCTION_STATUS_FAILED
    apply(
        sessions,
        c.function_event(function, event_pb2.EVENT_ASSET_UPDATED),
        c.task_status(task, computetask_pb2.STATUS_FAILED, cascaded=True),
        c.failure_report(
            function.key, failure_report_pb2.FAILED_ASSET_FUNCTION, failure_report_pb2.ERROR_TYPE_BUILD
        ),
    )
    # Registered after the failure: created failed, and shows the build logs too.
    late = c.task(plan, function, data_manager, [], status=computetask_pb2.STATUS_FAILED)
    apply(sessions, c.task_created(late))

    with sessions() as session:
        for task_key in (task.key, late.key):
            stored = session.get_one(ComputeTask, task_key)
            assert (stored.status, stored.error_type, stored.logs_checksum) == (
                "STATUS_FAILED",
                "ERROR_TYPE_BUILD",
                CHECKSUM,
            )
        assert session.get_one(ComputeTask, late.key).end_date == late.creation_date.ToDatetime(tzinfo=UTC)
        assert session.get_one(Function, function.key).status == "FUNCTION_STATUS_FAILED"


def test_internal_errors_are_not_stored_as_reports(sessions: sessionmaker[Session]) -> None:
    scenario = Scenario()
    c = scenario.channel
    plan = c.plan()
    task = c.task(plan, scenario.function, scenario.data_manager, [])
    apply(sessions, *scenario.events, c.plan_event(plan), c.task_created(task))
    apply(
        sessions,
        c.task_status(task, computetask_pb2.STATUS_FAILED),
        c.failure_report(
            task.key, failure_report_pb2.FAILED_ASSET_COMPUTE_TASK, failure_report_pb2.ERROR_TYPE_INTERNAL
        ),
    )
    with sessions() as session:
        assert session.get(FailureReport, task.key) is None
        stored = session.get_one(ComputeTask, task.key)
        assert (stored.error_type, stored.logs_address) == ("ERROR_TYPE_INTERNAL", None)


def test_cancelation_ends_the_plan_at_its_date(sessions: sessionmaker[Session]) -> None:
    scenario = Scenario()
    c = scenario.channel
    plan = c.plan()
    task = c.task(
        plan,
        scenario.function,
        scenario.data_manager,
        [],
        status=computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT,
    )
    apply(sessions, *scenario.events, c.plan_event(plan), c.task_created(task))
    with sessions() as session:
        assert session.get_one(ComputePlan, plan.key).status == "PLAN_STATUS_DOING"
        assert is_plan_running(session, plan.key)
    plan.name = "renamed"
    plan.cancelation_date.CopyFrom(stamp(c.tick()))
    apply(sessions, c.plan_event(plan, event_pb2.EVENT_ASSET_UPDATED))
    with sessions() as session:
        stored = session.get_one(ComputePlan, plan.key)
        assert (stored.name, stored.status) == ("renamed", "PLAN_STATUS_CANCELED")
        assert stored.end_date == stored.cancelation_date == c.now
        assert stored.start_date is None
        assert not is_plan_running(session, plan.key)


def test_the_rest_creator_of_a_plan_wins_over_external_in_any_order(sessions: sessionmaker[Session]) -> None:
    c = Channel()
    event_first, rest_first = c.plan(), c.plan()
    with session_scope(sessions) as session:
        apply_event(session, c.plan_event(event_first))
        assert store_compute_plan(session, CHANNEL, event_first, creator="alice") is False
        assert store_compute_plan(session, CHANNEL, rest_first, creator="bob") is True
        apply_event(session, c.plan_event(rest_first))
    with sessions() as session:
        assert session.get_one(ComputePlan, event_first.key).creator == "alice"
        assert session.get_one(ComputePlan, rest_first.key).creator == "bob"


def test_a_stored_task_is_not_rolled_back_by_a_late_registration_answer(
    sessions: sessionmaker[Session],
) -> None:
    scenario = Scenario()
    c = scenario.channel
    plan = c.plan()
    task = c.task(
        plan,
        scenario.function,
        scenario.data_manager,
        [],
        status=computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT,
    )
    registered = computetask_pb2.ComputeTask()
    registered.CopyFrom(task)
    apply(
        sessions,
        *scenario.events,
        c.plan_event(plan),
        c.task_created(task),
        c.task_status(task, computetask_pb2.STATUS_EXECUTING),
    )
    with session_scope(sessions) as session:
        assert store_compute_task(session, CHANNEL, registered) is False
    with sessions() as session:
        assert session.get_one(ComputeTask, task.key).status == "STATUS_EXECUTING"


def test_unknown_event_kinds_are_skipped(sessions: sessionmaker[Session]) -> None:
    event = Channel().event(common_pb2.ASSET_UNKNOWN, event_pb2.EVENT_ASSET_CREATED, key())
    with session_scope(sessions) as session:
        change = apply_event(session, event)
    assert not change.mirrored
    assert (change.asset_kind, change.event_kind) == ("ASSET_UNKNOWN", "EVENT_ASSET_CREATED")


def test_profiling_steps_of_unknown_functions_are_skipped(sessions: sessionmaker[Session]) -> None:
    c = Channel()
    asset_key = key()
    event = c.event(
        common_pb2.ASSET_PROFILING_STEP,
        event_pb2.EVENT_ASSET_CREATED,
        asset_key,
        profiling_step=profiling_pb2.ProfilingStep(duration=10, asset_key=asset_key, step="prepare_inputs"),
    )
    apply(sessions, event)
    with sessions() as session:
        assert session.scalars(select(FunctionProfilingStep)).all() == []


def test_the_cursor_is_per_channel(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        assert load_cursor(session, CHANNEL) == ""
        save_cursor(session, CHANNEL, "one", START)
        save_cursor(session, CHANNEL, "two", START)
        save_cursor(session, "other", "three", None)
    with sessions() as session:
        assert (load_cursor(session, CHANNEL), load_cursor(session, "other")) == ("two", "three")


def at(seconds: int) -> datetime:
    return START + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("counts", "started", "canceled_at", "expected"),
    [
        ({}, None, None, ("PLAN_STATUS_CREATED", None, None)),
        ({"STATUS_WAITING_FOR_BUILDER_SLOT": 2}, None, None, ("PLAN_STATUS_CREATED", None, None)),
        (
            {"STATUS_WAITING_FOR_BUILDER_SLOT": 1, "STATUS_BUILDING": 1},
            None,
            None,
            ("PLAN_STATUS_DOING", None, None),
        ),
        ({"STATUS_EXECUTING": 1, "STATUS_DONE": 1}, at(1), None, ("PLAN_STATUS_DOING", at(1), None)),
        ({"STATUS_DONE": 2}, at(1), None, ("PLAN_STATUS_DONE", at(1), at(9))),
        (
            {"STATUS_DONE": 1, "STATUS_FAILED": 1, "STATUS_EXECUTING": 1},
            at(1),
            None,
            ("PLAN_STATUS_FAILED", at(1), at(9)),
        ),
        ({"STATUS_FAILED": 1, "STATUS_CANCELED": 1}, at(1), None, ("PLAN_STATUS_CANCELED", at(1), at(9))),
        ({"STATUS_EXECUTING": 1}, at(1), at(5), ("PLAN_STATUS_CANCELED", at(1), at(5))),
        ({}, None, at(5), ("PLAN_STATUS_CANCELED", None, at(5))),
    ],
)
def test_plan_status_rules(
    counts: dict[str, int],
    started: datetime | None,
    canceled_at: datetime | None,
    expected: tuple[str, datetime | None, datetime | None],
) -> None:
    statistics = TaskStatistics(counts=counts, earliest_start=started, latest_end=at(9) if started else None)
    state = plan_state(statistics, canceled_at)
    assert (state.status, state.start_date, state.end_date) == expected


def test_runs_of_events_apply_as_one_by_one(engine: Engine, sessions: sessionmaker[Session]) -> None:
    """Batch application (runs of task creations, status cascades, sample changes) changes nothing."""
    scenario = Scenario()
    c = scenario.channel
    plan = c.plan()
    tasks = [
        c.task(plan, scenario.function, scenario.data_manager, [s.key for s in scenario.samples])
        for _ in range(3)
    ]
    child = c.task(plan, scenario.function, scenario.data_manager, [], parent=tasks[0])
    events = [*scenario.events, c.plan_event(plan), *(c.task_created(t) for t in [*tasks, child])]
    # A cascade touching a task twice, a failure in the middle of a run, a replayed creation.
    events += [
        c.task_status(tasks[0], computetask_pb2.STATUS_EXECUTING),
        c.task_status(tasks[1], computetask_pb2.STATUS_EXECUTING),
        c.task_status(tasks[0], computetask_pb2.STATUS_DONE),
        c.task_status(tasks[1], computetask_pb2.STATUS_FAILED),
        c.task_status(tasks[2], computetask_pb2.STATUS_CANCELED),
        c.task_status(child, computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT, cascaded=True),
        c.task_created(child),
    ]
    extra_manager = c.data_manager()
    events.append(c.data_manager_event(extra_manager))
    for sample in scenario.samples:
        sample.data_manager_keys.append(extra_manager.key)
    events += [c.data_sample_event(sample, event_pb2.EVENT_ASSET_UPDATED) for sample in scenario.samples]
    new_samples = [
        datasample_pb2.DataSample(
            key=key(),
            data_manager_keys=[extra_manager.key],
            owner=ME,
            checksum=CHECKSUM,
            creation_date=stamp(c.tick()),
        )
        for _ in range(3)
    ]
    events += [c.data_sample_event(sample) for sample in new_samples]

    with session_scope(sessions) as session:
        for event in events:
            apply_event(session, event)
    one_by_one = snapshot(engine)
    truncate(engine)
    with session_scope(sessions) as session:
        changes = apply_events(session, events)
    assert snapshot(engine) == one_by_one
    assert all(change.mirrored for change in changes)
    updates = [
        change.plan_keys
        for change in changes
        if (change.asset_kind, change.event_kind) == ("ASSET_COMPUTE_TASK", "EVENT_ASSET_UPDATED")
    ]
    assert updates[-6:] == [frozenset({plan.key})] * 6
