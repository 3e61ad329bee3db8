"""ComputeTaskService: batch registration, reads and input assets."""

from __future__ import annotations

import pytest
from backend_common.orchestrator import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from backend_common.protos import computetask_pb2, function_pb2, model_pb2
from standalone_orchestrator.testing import (
    MODEL,
    ORG1,
    ORG2,
    ORG3,
    PERFORMANCE,
    Network,
    addressable,
    asset_input,
    new_key,
    output,
    parent_input,
)

S = computetask_pb2.ComputeTaskStatus
A = computetask_pb2.ComputeTaskAction


def test_batch_is_sorted_topologically_with_ranks(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    a, b, c, d = (new_key() for _ in range(4))
    # d <- b <- a, d <- c <- a, given children first.
    batch = [
        net.new_task(
            function, plan, key=d, worker=ORG1, inputs=[parent_input("model", b), parent_input("model", c)]
        ),
        net.new_task(function, plan, key=c, worker=ORG1, inputs=[parent_input("model", a)]),
        net.new_task(function, plan, key=b, worker=ORG1, inputs=[parent_input("model", a)]),
        net.new_task(function, plan, key=a, worker=ORG1),
    ]
    function_multi = net.function(
        inputs={"model": function_pb2.FunctionInput(kind=MODEL, multiple=True, optional=True)}, ready=True
    )
    batch[0].function_key = function_multi.key
    tasks = net.client().register_tasks(batch)
    assert [t.key for t in tasks] == [a, c, b, d]
    assert {t.key: t.rank for t in tasks} == {a: 0, b: 1, c: 1, d: 2}
    assert {t.key: t.status for t in tasks} == {
        a: S.STATUS_WAITING_FOR_EXECUTOR_SLOT,
        b: S.STATUS_WAITING_FOR_PARENT_TASKS,
        c: S.STATUS_WAITING_FOR_PARENT_TASKS,
        d: S.STATUS_WAITING_FOR_PARENT_TASKS,
    }
    stored = net.client().get_task(d)
    assert stored == tasks[3]
    assert [i.parent_task_output.parent_task_key for i in stored.inputs] == [b, c]
    # Parents already stored are resolved too.
    e = net.task(function, plan, inputs=[parent_input("model", d)])
    assert e.rank == 3


def test_cycle_or_unknown_parent(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    a, b = new_key(), new_key()
    cycle = [
        net.new_task(function, plan, key=a, worker=ORG1, inputs=[parent_input("model", b)]),
        net.new_task(function, plan, key=b, worker=ORG1, inputs=[parent_input("model", a)]),
    ]
    with pytest.raises(InvalidArgumentError) as error:
        net.client().register_tasks(cycle)
    assert "cyclic dependency" in error.value.details
    with pytest.raises(InvalidArgumentError):
        net.task(function, plan, inputs=[parent_input("model", new_key())])


def test_empty_batch_and_conflicts(net: Network) -> None:
    with pytest.raises(FailedPreconditionError) as error:
        net.client().register_tasks([])
    assert error.value.details == "OE0003: no task to register"
    function = net.function(ready=True)
    plan = net.plan()
    task = net.task(function, plan)
    with pytest.raises(AlreadyExistsError):
        net.task(function, plan, key=task.key)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: setattr(t, "key", "bad"),
        lambda t: setattr(t, "function_key", ""),
        lambda t: setattr(t, "compute_plan_key", "bad"),
        lambda t: t.inputs.append(computetask_pb2.ComputeTaskInput(identifier="model")),
        lambda t: t.inputs.append(computetask_pb2.ComputeTaskInput(identifier="", asset_key=new_key())),
        lambda t: t.inputs.append(computetask_pb2.ComputeTaskInput(identifier="model", asset_key="bad")),
        lambda t: t.outputs["model"].ClearField("permissions"),
        lambda t: t.metadata.update({"k" * 101: "v"}),
    ],
)
def test_invalid_task(net: Network, mutate) -> None:  # type: ignore[no-untyped-def]
    function = net.function(ready=True)
    new = net.new_task(function, net.plan(), worker=ORG1)
    mutate(new)
    with pytest.raises(InvalidArgumentError) as error:
        net.client().register_tasks([new])
    assert error.value.oe_code == "OE0101"


def test_plan_and_function_checks(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    unknown_plan = net.new_task(function, plan, worker=ORG1)
    unknown_plan.compute_plan_key = new_key()
    with pytest.raises(NotFoundError):
        net.client().register_tasks([unknown_plan])
    with pytest.raises(PermissionDeniedError) as error:
        net.task(function, plan, owner=ORG2)
    assert "compute plan you don't own" in error.value.details
    with pytest.raises(NotFoundError):
        net.client().register_tasks(
            [
                computetask_pb2.NewComputeTask(
                    key=new_key(), function_key=new_key(), compute_plan_key=plan.key, worker=ORG1
                )
            ]
        )
    private = net.function(ORG2, public=False, ready=True)
    with pytest.raises(PermissionDeniedError) as error:
        net.task(private, plan)
    assert "not authorized to process function" in error.value.details
    shared = net.function(ORG2, public=False, authorized=[ORG1], ready=True)
    net.task(shared, plan)


def test_worker_rules(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    with pytest.raises(FailedPreconditionError) as error:
        net.task(function, plan, worker="")
    assert "Worker cannot be inferred" in error.value.details
    with pytest.raises(NotFoundError):
        net.task(function, plan, worker="Unregistered")
    assert net.task(function, plan, worker=ORG3).worker == ORG3

    train = net.train_function()
    manager = net.data_manager(ORG2)
    samples = net.samples(manager.key, ORG2)
    inputs = [asset_input("opener", manager.key), *(asset_input("datasamples", s.key) for s in samples)]
    task = net.task(train, plan, inputs=inputs, worker="")
    assert task.worker == ORG2  # the data manager's owner
    assert task.logs_permission == manager.logs_permission
    with pytest.raises(FailedPreconditionError) as error:
        net.task(train, plan, inputs=inputs, worker=ORG3)
    assert "does not match data manager owner" in error.value.details


def test_data_inputs(net: Network) -> None:
    train = net.train_function()
    plan = net.plan()
    private = net.data_manager(ORG2, public=False)
    samples = net.samples(private.key, ORG2)
    inputs = [asset_input("opener", private.key), *(asset_input("datasamples", s.key) for s in samples)]
    with pytest.raises(PermissionDeniedError):
        net.task(train, plan, inputs=inputs, worker="")
    manager = net.data_manager(ORG2)
    foreign = net.samples(net.data_manager(ORG2).key, ORG2)
    with pytest.raises(InvalidArgumentError) as error:
        net.task(
            train,
            plan,
            inputs=[asset_input("opener", manager.key), asset_input("datasamples", foreign[0].key)],
            worker="",
        )
    assert "datasamples do not share a common manager" in error.value.details
    with pytest.raises(NotFoundError):
        net.task(
            train,
            plan,
            inputs=[asset_input("opener", manager.key), asset_input("datasamples", new_key())],
            worker="",
        )
    with pytest.raises(InvalidArgumentError) as error:
        net.task(train, plan, inputs=[asset_input("opener", manager.key)], worker="")
    assert "missing task input" in error.value.details
    with pytest.raises(InvalidArgumentError) as error:
        net.task(train, plan, inputs=[*inputs[:1], asset_input("unknown", new_key())], worker="")
    assert "unknown task input" in error.value.details


def test_input_and_output_validation(net: Network) -> None:
    function = net.function(ready=True)  # optional single model input, one model output
    plan = net.plan()
    parent = net.task(function, plan)
    with pytest.raises(InvalidArgumentError) as error:
        net.task(
            function, plan, inputs=[parent_input("model", parent.key), parent_input("model", parent.key)]
        )
    assert "duplicate task input" in error.value.details
    with pytest.raises(InvalidArgumentError) as error:
        net.task(function, plan, inputs=[parent_input("model", parent.key, output="nope")])
    assert "function output not found" in error.value.details
    with pytest.raises(InvalidArgumentError) as error:
        net.task(function, plan, outputs={})
    assert "missing task output" in error.value.details
    with pytest.raises(InvalidArgumentError) as error:
        net.task(function, plan, outputs={"model": output(), "other": output()})
    assert "unknown task output" in error.value.details
    with pytest.raises(NotFoundError):
        net.task(function, plan, inputs=[asset_input("model", new_key())])

    scoring = net.function(
        inputs={"model": function_pb2.FunctionInput(kind=MODEL)},
        outputs={"performance": function_pb2.FunctionOutput(kind=PERFORMANCE)},
        ready=True,
    )
    with pytest.raises(InvalidArgumentError) as error:
        net.task(
            scoring, plan, inputs=[parent_input("model", parent.key)], outputs={"performance": output(False)}
        )
    assert "should be public" in error.value.details
    with pytest.raises(InvalidArgumentError) as error:
        net.task(
            scoring,
            plan,
            inputs=[parent_input("model", parent.key)],
            outputs={"performance": output(transient=True)},
        )
    assert "cannot be transient" in error.value.details
    scored = net.task(
        scoring, plan, inputs=[parent_input("model", parent.key)], outputs={"performance": output()}
    )
    # A performance output cannot feed a model input.
    with pytest.raises(InvalidArgumentError) as error:
        net.task(function, plan, inputs=[parent_input("model", scored.key, output="performance")])
    assert "mismatching task input asset kinds" in error.value.details

    multi = net.function(
        outputs={"model": function_pb2.FunctionOutput(kind=MODEL, multiple=True)}, ready=True
    )
    many = net.task(multi, plan)
    with pytest.raises(InvalidArgumentError) as error:
        net.task(function, plan, inputs=[parent_input("model", many.key)])
    assert "multiple task output used as single task input" in error.value.details


def test_output_permissions_checked_against_the_worker(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    parent = net.task(function, plan, outputs={"model": output(False)})
    with pytest.raises(PermissionDeniedError):
        net.task(function, plan, worker=ORG2, inputs=[parent_input("model", parent.key)])
    shared = net.task(function, plan, outputs={"model": output(False, [ORG2])})
    child = net.task(function, plan, worker=ORG2, inputs=[parent_input("model", shared.key)])
    assert list(child.outputs["model"].permissions.process.authorized_ids) == [ORG1]
    # Without data, the logs permission is the owner's, widened by the parents'.
    assert not child.logs_permission.public and ORG1 in child.logs_permission.authorized_ids
    with pytest.raises(FailedPreconditionError):
        net.task(function, plan, outputs={"model": output(False, ["Nobody"])})


def test_initial_status_from_parents(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    parent = net.task(function, plan)
    net.client().apply_task_action(parent.key, A.TASK_ACTION_CANCELED)
    assert net.task(function, plan, inputs=[parent_input("model", parent.key)]).status == S.STATUS_CANCELED
    done = net.task(function, plan)
    net.client().apply_task_action(done.key, A.TASK_ACTION_EXECUTING)
    net.client().apply_task_action(done.key, A.TASK_ACTION_DONE)
    child = net.task(function, plan, inputs=[parent_input("model", done.key)])
    assert child.status == S.STATUS_WAITING_FOR_EXECUTOR_SLOT
    failed_function = net.function()
    net.client().apply_function_action(failed_function.key, function_pb2.FUNCTION_ACTION_BUILDING)
    net.client().apply_function_action(failed_function.key, function_pb2.FUNCTION_ACTION_FAILED)
    created_failed = net.task(failed_function, plan)
    assert created_failed.status == S.STATUS_FAILED
    # Creation is not a transition: the plan is not failed by it.
    assert not net.client().get_plan(plan.key).HasField("failure_date")


def test_query_tasks(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    keys = [net.task(function, plan, worker=ORG2).key for _ in range(3)]
    net.client(ORG2).apply_task_action(keys[0], A.TASK_ACTION_EXECUTING)
    by_plan = net.client().query_tasks(computetask_pb2.TaskQueryFilter(compute_plan_key=plan.key))
    assert sorted(t.key for t in by_plan.tasks) == sorted(keys)
    executing = net.client().query_tasks(
        computetask_pb2.TaskQueryFilter(compute_plan_key=plan.key, status=S.STATUS_EXECUTING, worker=ORG2)
    )
    assert [t.key for t in executing.tasks] == [keys[0]]
    page = net.client().query_tasks(computetask_pb2.TaskQueryFilter(function_key=function.key), page_size=2)
    assert len(page.tasks) == 2 and page.next_page_token == "2"
    with pytest.raises(NotFoundError):
        net.client().get_task(new_key())


def _execute(net: Network, task: computetask_pb2.ComputeTask) -> None:
    net.client(task.worker).apply_task_action(task.key, A.TASK_ACTION_EXECUTING)


def _model(task: computetask_pb2.ComputeTask, identifier: str = "model") -> model_pb2.NewModel:
    return model_pb2.NewModel(
        key=new_key(),
        compute_task_key=task.key,
        compute_task_output_identifier=identifier,
        address=addressable(),
    )


def test_get_task_input_assets(net: Network) -> None:
    parent, train, plan = net.train_task(worker=ORG2)
    with pytest.raises(FailedPreconditionError) as error:
        net.client().get_task_input_assets(net.task(net.function(), plan).key)  # waiting for its build
    assert "STATUS_WAITING_FOR_BUILDER_SLOT" in error.value.details
    _execute(net, parent)
    models = net.client(ORG2).register_models([_model(parent)])
    net.client(ORG2).apply_task_action(parent.key, A.TASK_ACTION_DONE)
    manager_key = parent.inputs[0].asset_key
    sample_keys = [i.asset_key for i in parent.inputs[1:]]
    child = net.task(
        train,
        plan,
        inputs=[*parent.inputs, parent_input("model", parent.key)],
        worker="",
    )
    assert child.status == S.STATUS_WAITING_FOR_EXECUTOR_SLOT
    assets = net.client(ORG3).get_task_input_assets(child.key)
    assert [(a.identifier, a.WhichOneof("asset")) for a in assets] == [
        ("opener", "data_manager"),
        *(("datasamples", "data_sample") for _ in sample_keys),
        ("model", "model"),
    ]
    assert assets[0].data_manager.key == manager_key
    assert [a.data_sample.key for a in assets[1:-1]] == sample_keys
    assert assets[-1].model == models[0]
    with pytest.raises(NotFoundError):
        net.client().get_task_input_assets(new_key())


def test_model_inputs_by_key_are_checked_against_the_worker(net: Network) -> None:
    function = net.function(ready=True)
    plan = net.plan()
    producer = net.task(function, plan, outputs={"model": output(False)})  # private to ORG1
    _execute(net, producer)
    [model] = net.client().register_models([_model(producer)])
    with pytest.raises(PermissionDeniedError) as error:
        net.task(function, plan, worker=ORG2, inputs=[asset_input("model", model.key)])
    assert "not authorized to process model" in error.value.details
    consumer = net.task(function, plan, worker=ORG1, inputs=[asset_input("model", model.key)])
    [asset] = net.client().get_task_input_assets(consumer.key)
    assert asset.identifier == "model" and asset.model == model
