"""Models, transient outputs, performances, failure reports and profiling steps."""

from __future__ import annotations

import pytest
from backend_common.orchestrator import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnknownError,
)
from backend_common.protos import (
    common_pb2,
    computetask_pb2,
    event_pb2,
    failure_report_pb2,
    function_pb2,
    model_pb2,
    performance_pb2,
    profiling_pb2,
)
from standalone_orchestrator.testing import (
    MODEL,
    ORG1,
    ORG2,
    PERFORMANCE,
    Network,
    addressable,
    new_key,
    output,
    parent_input,
)

S = computetask_pb2.ComputeTaskStatus
A = computetask_pb2.ComputeTaskAction


def _model(task_key: str, identifier: str = "model", key: str | None = None) -> model_pb2.NewModel:
    return model_pb2.NewModel(
        key=key or new_key(),
        compute_task_key=task_key,
        compute_task_output_identifier=identifier,
        address=addressable(),
    )


def _executing(net: Network, **kwargs: object) -> computetask_pb2.ComputeTask:
    function = kwargs.pop("function", None) or net.function(ready=True)
    task = net.task(function, kwargs.pop("plan", None) or net.plan(), worker=ORG2, **kwargs)  # type: ignore[arg-type]
    net.client(ORG2).apply_task_action(task.key, A.TASK_ACTION_EXECUTING)
    return net.client().get_task(task.key)


def test_register_models(net: Network) -> None:
    task = _executing(net, outputs={"model": output(False, [ORG2])})
    worker = net.client(ORG2)
    [model] = worker.register_models([_model(task.key)])
    assert model.owner == ORG2 and model.compute_task_key == task.key
    assert model.permissions == task.outputs["model"].permissions
    assert net.client().get_model(model.key) == model
    assert net.client().get_compute_task_output_models(task.key) == [model]
    events = list(net.client().iter_events(event_pb2.EventQueryFilter(asset_key=task.key)))
    assert [(e.asset_kind, e.event_kind) for e in events] == [
        (common_pb2.ASSET_COMPUTE_TASK, event_pb2.EVENT_ASSET_CREATED),
        (common_pb2.ASSET_COMPUTE_TASK, event_pb2.EVENT_ASSET_UPDATED),
        (common_pb2.ASSET_COMPUTE_TASK_OUTPUT_ASSET, event_pb2.EVENT_ASSET_CREATED),
    ]
    assert events[2].compute_task_output_asset == computetask_pb2.ComputeTaskOutputAsset(
        compute_task_key=task.key,
        compute_task_output_identifier="model",
        asset_kind=common_pb2.ASSET_MODEL,
        asset_key=model.key,
    )
    # Registering models does not finish the task.
    assert worker.get_task(task.key).status == S.STATUS_EXECUTING
    # A single output takes one model only.
    with pytest.raises(AlreadyExistsError) as error:
        worker.register_models([_model(task.key)])
    assert "already has its unique output" in error.value.details


def test_register_model_checks(net: Network) -> None:
    task = _executing(net)
    worker = net.client(ORG2)
    with pytest.raises(FailedPreconditionError):
        worker.register_models([])
    with pytest.raises(NotFoundError):
        worker.register_models([_model(new_key())])
    with pytest.raises(FailedPreconditionError) as error:
        worker.register_models([_model(task.key), _model(_executing(net).key)])
    assert "same task" in error.value.details
    with pytest.raises(InvalidArgumentError):
        worker.register_models(
            [
                model_pb2.NewModel(
                    key=new_key(), compute_task_key=task.key, compute_task_output_identifier="model"
                )
            ]
        )
    with pytest.raises(PermissionDeniedError):
        net.client(ORG1).register_models([_model(task.key)])
    with pytest.raises(InvalidArgumentError) as error:
        worker.register_models([_model(task.key, "nope")])
    assert error.value.oe_code == "OE0106"
    waiting = net.task(net.function(ready=True), net.plan(), worker=ORG2)
    with pytest.raises(FailedPreconditionError):
        worker.register_models([_model(waiting.key)])
    # The deprecated single-model call.
    model = worker.register_model(_model(task.key))
    assert model.compute_task_key == task.key


def test_multiple_outputs_and_wrong_kind(net: Network) -> None:
    function = net.function(
        outputs={
            "models": function_pb2.FunctionOutput(kind=MODEL, multiple=True),
            "performance": function_pb2.FunctionOutput(kind=PERFORMANCE),
        },
        ready=True,
    )
    task = _executing(net, function=function, outputs={"models": output(), "performance": output()})
    worker = net.client(ORG2)
    models = worker.register_models([_model(task.key, "models") for _ in range(3)])
    assert len(net.client().get_compute_task_output_models(task.key)) == 3
    with pytest.raises(InvalidArgumentError) as error:
        worker.register_models([_model(task.key, "performance")])
    assert error.value.oe_code == "OE0107"
    duplicate = models[0].key
    with pytest.raises(AlreadyExistsError):
        worker.register_models([_model(task.key, "models", key=duplicate)])


def test_performances(net: Network) -> None:
    function = net.function(
        outputs={"performance": function_pb2.FunctionOutput(kind=PERFORMANCE)},
        ready=True,
    )
    long_identifier = "p" * 100
    function_long = net.function(
        outputs={long_identifier: function_pb2.FunctionOutput(kind=PERFORMANCE)},
        ready=True,
    )
    task = _executing(net, function=function, outputs={"performance": output()})
    worker = net.client(ORG2)
    new = performance_pb2.NewPerformance(
        compute_task_key=task.key, compute_task_output_identifier="performance", performance_value=0.1
    )
    with pytest.raises(PermissionDeniedError):
        net.client(ORG1).register_performance(new)
    performance = worker.register_performance(new)
    assert performance.performance_value == pytest.approx(0.1)
    assert performance.compute_task_key == task.key
    with pytest.raises(AlreadyExistsError) as error:
        worker.register_performance(new)
    assert f"{task.key}|performance" in error.value.details
    with pytest.raises(InvalidArgumentError):
        worker.register_performance(
            performance_pb2.NewPerformance(compute_task_key=task.key, compute_task_output_identifier="nope")
        )
    events = list(net.client().iter_events(event_pb2.EventQueryFilter(asset_key=f"{task.key}|performance")))
    assert [e.asset_kind for e in events] == [common_pb2.ASSET_PERFORMANCE]
    listed = net.client().query_performances(
        performance_pb2.PerformanceQueryFilter(compute_task_key=task.key)
    )
    assert list(listed.Performances) == [performance]
    # Long identifiers make long performance keys; the event log stores them.
    long_task = _executing(net, function=function_long, outputs={long_identifier: output()})
    worker.register_performance(
        performance_pb2.NewPerformance(
            compute_task_key=long_task.key,
            compute_task_output_identifier=long_identifier,
            performance_value=1,
        )
    )
    key = f"{long_task.key}|{long_identifier}"
    assert [e.asset_key for e in net.client().iter_events(event_pb2.EventQueryFilter(asset_key=key))] == [key]


def test_task_failure_report(net: Network) -> None:
    task = _executing(net)
    report = failure_report_pb2.NewFailureReport(
        asset_key=task.key,
        error_type=failure_report_pb2.ERROR_TYPE_EXECUTION,
        logs_address=addressable(),
        asset_type=failure_report_pb2.FAILED_ASSET_COMPUTE_TASK,
    )
    with pytest.raises(PermissionDeniedError):
        net.client(ORG1).register_failure_report(report)
    stored = net.client(ORG2).register_failure_report(report)
    assert stored.owner == ORG2 and stored.logs_address == report.logs_address
    assert net.client().get_failure_report(task.key) == stored
    assert net.client().get_task(task.key).status == S.STATUS_FAILED
    assert net.client().get_plan(task.compute_plan_key).HasField("failure_date")
    events = list(net.client().iter_events(event_pb2.EventQueryFilter(asset_key=task.key)))
    # Same request, same timestamp: QueryEvents does not order them (the stream does).
    last_two = {(e.asset_kind, e.event_kind): e for e in events[-2:]}
    assert set(last_two) == {
        (common_pb2.ASSET_COMPUTE_TASK, event_pb2.EVENT_ASSET_UPDATED),
        (common_pb2.ASSET_FAILURE_REPORT, event_pb2.EVENT_ASSET_CREATED),
    }
    updated = last_two[(common_pb2.ASSET_COMPUTE_TASK, event_pb2.EVENT_ASSET_UPDATED)]
    assert dict(updated.metadata) == {"reason": "failure report registered"}
    # The task is not executing any more.
    with pytest.raises(FailedPreconditionError):
        net.client(ORG2).register_failure_report(report)
    with pytest.raises(NotFoundError):
        net.client().get_failure_report(new_key())


@pytest.mark.parametrize(
    "report",
    [
        # UNSPECIFIED is refused up front (the reference fails late on a foreign key).
        failure_report_pb2.NewFailureReport(error_type=failure_report_pb2.ERROR_TYPE_UNSPECIFIED),
        # Logs are required for execution errors and refused for internal ones.
        failure_report_pb2.NewFailureReport(error_type=failure_report_pb2.ERROR_TYPE_EXECUTION),
        failure_report_pb2.NewFailureReport(
            error_type=failure_report_pb2.ERROR_TYPE_INTERNAL, logs_address=addressable()
        ),
    ],
)
def test_invalid_failure_reports(net: Network, report: failure_report_pb2.NewFailureReport) -> None:
    task = _executing(net)
    report.asset_key = task.key
    report.asset_type = failure_report_pb2.FAILED_ASSET_COMPUTE_TASK
    with pytest.raises(InvalidArgumentError):
        net.client(ORG2).register_failure_report(report)
    assert net.client().get_task(task.key).status == S.STATUS_EXECUTING


def test_internal_failure_without_logs_and_unknown_asset_type(net: Network) -> None:
    task = _executing(net)
    report = failure_report_pb2.NewFailureReport(
        asset_key=task.key, error_type=failure_report_pb2.ERROR_TYPE_INTERNAL
    )
    with pytest.raises(FailedPreconditionError):  # asset type left unknown
        net.client(ORG2).register_failure_report(report)
    report.asset_type = failure_report_pb2.FAILED_ASSET_COMPUTE_TASK
    assert not net.client(ORG2).register_failure_report(report).HasField("logs_address")


def test_function_failure_report(net: Network) -> None:
    function = net.function()
    plan = net.plan()
    task = net.task(function, plan)
    report = failure_report_pb2.NewFailureReport(
        asset_key=function.key,
        error_type=failure_report_pb2.ERROR_TYPE_BUILD,
        logs_address=addressable(),
        asset_type=failure_report_pb2.FAILED_ASSET_FUNCTION,
    )
    # Only a building function can fail (UNKNOWN state-machine error otherwise).
    with pytest.raises(UnknownError):
        net.client().register_failure_report(report)
    net.client().apply_function_action(function.key, function_pb2.FUNCTION_ACTION_BUILDING)
    with pytest.raises(PermissionDeniedError):
        net.client(ORG2).register_failure_report(report)
    net.client().register_failure_report(report)
    assert net.client().get_function(function.key).status == function_pb2.FUNCTION_STATUS_FAILED
    assert net.client().get_task(task.key).status == S.STATUS_FAILED
    assert net.client().get_plan(plan.key).HasField("failure_date")


def test_profiling_step(net: Network) -> None:
    key = new_key()
    net.client(ORG2).register_profiling_step(
        profiling_pb2.ProfilingStep(asset_key=key, step="build_image", duration=42)
    )
    [event] = net.client().iter_events(event_pb2.EventQueryFilter(asset_key=key))
    assert event.asset_kind == common_pb2.ASSET_PROFILING_STEP
    assert event.profiling_step == profiling_pb2.ProfilingStep(asset_key=key, step="build_image", duration=42)
    for invalid in (
        profiling_pb2.ProfilingStep(asset_key="bad", step="s", duration=1),
        profiling_pb2.ProfilingStep(asset_key=key, step="", duration=1),
        profiling_pb2.ProfilingStep(asset_key=key, step="s", duration=0),
    ):
        with pytest.raises(InvalidArgumentError):
            net.client().register_profiling_step(invalid)


def _done_with_transient_model(net: Network) -> tuple[computetask_pb2.ComputeTask, model_pb2.Model, object]:
    function = net.function(ready=True)
    plan = net.plan()
    parent = _executing(net, function=function, plan=plan, outputs={"model": output(transient=True)})
    [model] = net.client(ORG2).register_models([_model(parent.key)])
    net.client(ORG2).apply_task_action(parent.key, A.TASK_ACTION_DONE)
    return parent, model, (function, plan)


def test_disable_transient_output(net: Network) -> None:
    parent, model, (function, plan) = _done_with_transient_model(net)
    worker = net.client(ORG2)
    with pytest.raises(UnknownError) as error:  # OE0108 maps to UNKNOWN
        worker.disable_output(parent.key, "model")
    assert error.value.oe_code == "OE0108" and "no children" in error.value.details
    child = net.task(function, plan, worker=ORG2, inputs=[parent_input("model", parent.key)])  # type: ignore[arg-type]
    with pytest.raises(UnknownError) as error:
        worker.disable_output(parent.key, "model")
    assert "child not in final state" in error.value.details
    with pytest.raises(PermissionDeniedError):
        net.client(ORG1).disable_output(parent.key, "model")
    with pytest.raises(UnknownError) as error:
        worker.disable_output(parent.key, "other")
    assert "no output identifier" in error.value.details
    worker.apply_task_action(child.key, A.TASK_ACTION_EXECUTING)
    worker.apply_task_action(child.key, A.TASK_ACTION_DONE)
    worker.disable_output(parent.key, "model")
    disabled = net.client().get_model(model.key)
    assert not disabled.HasField("address")
    [event] = net.client().iter_events(
        event_pb2.EventQueryFilter(asset_key=model.key, event_kind=event_pb2.EVENT_ASSET_DISABLED)
    )
    assert event.model == disabled
    # A new consumer of the disabled model is refused.
    with pytest.raises(InvalidArgumentError) as error:
        net.task(function, plan, worker=ORG2, inputs=[parent_input("model", parent.key)])  # type: ignore[arg-type]
    assert "has been disabled" in error.value.details


def test_disable_needs_a_final_transient_output(net: Network) -> None:
    task = _executing(net)
    worker = net.client(ORG2)
    with pytest.raises(UnknownError) as error:
        worker.disable_output(task.key, "model")
    assert "task not in final state" in error.value.details
    worker.register_models([_model(task.key)])
    worker.apply_task_action(task.key, A.TASK_ACTION_DONE)
    with pytest.raises(UnknownError) as error:
        worker.disable_output(task.key, "model")
    assert "not transient" in error.value.details
    with pytest.raises(NotFoundError):
        worker.disable_output(new_key(), "model")
