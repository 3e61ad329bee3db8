"""Compute tasks and builds against the standalone orchestrator, real Postgres and object storage."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from backend_common.orchestrator import OrchestratorClient
from backend_common.protos import (
    common_pb2,
    computeplan_pb2,
    computetask_pb2,
    failure_report_pb2,
    function_pb2,
    performance_pb2,
)
from backend_common.settings import StorageSettings
from backend_common.storage import ASSET_LOGS_BUCKET, FUNCTION_BUCKET, MODEL_BUCKET, make_storage
from backend_worker.asset_buffer import AssetKind
from backend_worker.cleanup import (
    disable_transient_outputs,
    remove_model_from_buffer,
    remove_model_from_storage,
    teardown_compute_plan,
)
from backend_worker.compute_task import RetryRequestedError, TaskOutcome, handle_compute_task
from backend_worker.function_build import BuildOutcome, build_function
from backend_worker.profiling import (
    STEP_DOWNLOAD_FUNCTION,
    STEP_PREPARE_INPUTS,
    STEP_SAVE_OUTPUTS,
    STEP_TASK_EXECUTION,
)
from backend_worker.recovery import (
    begin_run,
    end_run,
    interrupted_tasks,
    markers_directory,
    recover_interrupted_tasks,
)
from backend_worker.testing import (
    EVALUATE_IO,
    MODEL_IO,
    SHARE_IO,
    SUBSTRAFL_AGGREGATE_IO,
    TRAIN_IO,
    BackendOrganization,
    PeerServer,
    json_sample,
    sdk_function_archive,
)
from prometheus_client import REGISTRY

ORG1, ORG2 = "MyOrg1MSP", "MyOrg2MSP"

MakeOrganization = Callable[..., BackendOrganization]


def new_plan(organization: BackendOrganization) -> computeplan_pb2.ComputePlan:
    return organization.orchestrator.register_plan(
        computeplan_pb2.NewComputePlan(key=str(uuid.uuid4()), name="plan")
    )


def asset_input(identifier: str, key: str) -> computetask_pb2.ComputeTaskInput:
    return computetask_pb2.ComputeTaskInput(identifier=identifier, asset_key=key)


def parent_input(identifier: str, parent: str, output: str = "model") -> computetask_pb2.ComputeTaskInput:
    return computetask_pb2.ComputeTaskInput(
        identifier=identifier,
        parent_task_output=computetask_pb2.ParentTaskOutputRef(
            parent_task_key=parent, output_identifier=output
        ),
    )


def outputs(*identifiers: str, transient: bool = False) -> dict[str, computetask_pb2.NewComputeTaskOutput]:
    return {
        identifier: computetask_pb2.NewComputeTaskOutput(
            permissions=common_pb2.NewPermissions(public=True), transient=transient
        )
        for identifier in identifiers
    }


def register_task(
    owner: BackendOrganization,
    function: function_pb2.Function,
    plan: computeplan_pb2.ComputePlan,
    inputs: Sequence[computetask_pb2.ComputeTaskInput],
    output_ids: Sequence[str] = ("model",),
    worker: str = "",
    transient: bool = False,
) -> computetask_pb2.ComputeTask:
    new = computetask_pb2.NewComputeTask(
        key=str(uuid.uuid4()),
        function_key=function.key,
        compute_plan_key=plan.key,
        worker=worker,
        inputs=list(inputs),
        outputs=outputs(*output_ids, transient=transient),
    )
    return owner.orchestrator.register_tasks([new])[0]


def ready_function(organization: BackendOrganization, archive: Path, io: Any) -> function_pb2.Function:
    function = organization.register_function(archive, io)
    assert build_function(organization.context, organization.channel, function.key) in (
        BuildOutcome.BUILT,
        BuildOutcome.REUSED,
    )
    return organization.orchestrator.get_function(function.key)


def status(client: OrchestratorClient, task_key: str) -> str:
    return computetask_pb2.ComputeTaskStatus.Name(client.get_task(task_key).status)


def run(organization: BackendOrganization, task: computetask_pb2.ComputeTask, **options: Any) -> TaskOutcome:
    return handle_compute_task(organization.context, organization.channel, task.key, **options)


def model_content(organization: BackendOrganization, task_key: str) -> bytes:
    [model] = organization.orchestrator.get_compute_task_output_models(task_key)
    return organization.context.storage.read_bytes(MODEL_BUCKET, f"models/{model.key}/model")


@pytest.mark.parametrize("storage_kind", ["filesystem", "s3"])
def test_two_task_chain_then_evaluation(
    storage_kind: str, make_organization: MakeOrganization, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    storage = None
    if storage_kind == "s3":
        settings: StorageSettings = request.getfixturevalue("seaweedfs_storage_settings")
        storage = make_storage(settings)
    org = make_organization(ORG1, storage=storage)
    client = org.orchestrator
    train = ready_function(org, sdk_function_archive(tmp_path, "train"), TRAIN_IO)
    assert train.status == function_pb2.FUNCTION_STATUS_READY
    evaluate = ready_function(
        org, sdk_function_archive(tmp_path, "evaluate", archive_format="tar.gz"), EVALUATE_IO
    )
    manager, samples = org.register_dataset([json_sample(1.5), json_sample(2.0), json_sample(4.0)])
    plan = new_plan(org)
    first = register_task(
        org,
        train,
        plan,
        [asset_input("opener", manager.key), *(asset_input("datasamples", k) for k in samples[:2])],
    )
    second = register_task(
        org,
        train,
        plan,
        [
            asset_input("opener", manager.key),
            asset_input("datasamples", samples[2]),
            parent_input("model", first.key),
        ],
    )
    score = register_task(
        org,
        evaluate,
        plan,
        [
            asset_input("opener", manager.key),
            asset_input("datasamples", samples[0]),
            parent_input("model", second.key),
        ],
        ["performance"],
    )
    org.mirror(first, second, score)
    assert status(client, second.key) == "STATUS_WAITING_FOR_PARENT_TASKS"
    done_before = metric("substra_worker_compute_tasks_total", outcome="done")
    durations_before = metric("substra_worker_compute_task_duration_seconds_count", outcome="done")

    assert run(org, first) is TaskOutcome.DONE
    assert status(client, first.key) == "STATUS_DONE"
    assert status(client, second.key) == "STATUS_WAITING_FOR_EXECUTOR_SLOT"
    assert run(org, second) is TaskOutcome.DONE
    assert run(org, score) is TaskOutcome.DONE

    # Data-sample folders are named by key, in task-input order; the parent model was used.
    second_model = json.loads(model_content(org, second.key))
    assert second_model == {"total": 7.5, "history": [samples[:2], samples[2:]], "rank": 1}
    [performance] = list(
        client.iter_performances(performance_pb2.PerformanceQueryFilter(compute_task_key=score.key))
    )
    assert performance.performance_value == 7.5
    assert performance.compute_task_output_identifier == "performance"
    # The produced model is registered with its salted checksum and address, and kept in the buffer.
    [model] = client.get_compute_task_output_models(first.key)
    assert model.address.storage_address == f"http://backend.test/model/{model.key}/file/"
    assert org.context.buffer.contains(AssetKind.MODEL, model.key)
    assert org.context.sources.stored_file(model.key, "model") is not None
    # Profiling of each task; the task directories are gone.
    assert list(org.profile(second.key)) == [STEP_PREPARE_INPUTS, STEP_TASK_EXECUTION, STEP_SAVE_OUTPUTS]
    assert_task_directories_emptied(org)
    # A second delivery of a finished task is dropped.
    assert run(org, first) is TaskOutcome.DROPPED
    # Metrics: tasks by outcome, durations, steps, builds, and (measured off the task's path) queue wait.
    assert metric("substra_worker_compute_tasks_total", outcome="done") == done_before + 3
    assert (
        metric("substra_worker_compute_task_duration_seconds_count", outcome="done") == durations_before + 3
    )
    assert metric("substra_worker_compute_tasks_total", outcome="dropped") >= 1
    assert metric("substra_worker_function_build_duration_seconds_count", outcome="built") >= 2
    assert metric("substra_worker_compute_task_step_duration_seconds_count", step="task_execution") >= 3
    deadline = time.monotonic() + 5
    while metric("substra_worker_compute_task_queue_wait_seconds_count") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric("substra_worker_compute_task_queue_wait_seconds_count") >= 3


def task_logs(organization: BackendOrganization) -> list[Path]:
    return list((organization.context.root / "runs").glob("*/task.log"))


def assert_task_directories_emptied(organization: BackendOrganization) -> None:
    directories = [log.parent for log in task_logs(organization)]
    assert directories
    for directory in directories:
        for name in ("inputs", "outputs", "arguments"):
            assert list((directory / name).iterdir()) == [], (directory, name)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_plan_teardown_and_transient_models(make_organization: MakeOrganization, tmp_path: Path) -> None:
    org = make_organization(ORG1)
    context = org.context
    function = ready_function(org, sdk_function_archive(tmp_path, "trivial"), MODEL_IO)
    plan = new_plan(org)
    parent = register_task(org, function, plan, [], worker=ORG1, transient=True)
    child = register_task(org, function, plan, [parent_input("model", parent.key)], worker=ORG1)
    assert run(org, parent) is TaskOutcome.DONE
    [model] = org.orchestrator.get_compute_task_output_models(parent.key)
    # The child has not run yet: the transient output stays, the plan is not torn down.
    assert disable_transient_outputs(context, org.channel, [(parent.key, "model")]) == 0
    assert not teardown_compute_plan(context, org.channel, plan.key)
    assert run(org, child) is TaskOutcome.DONE
    assert disable_transient_outputs(context, org.channel, [(parent.key, "model")]) == 1
    assert not org.orchestrator.get_model(model.key).HasField("address")
    # What the MODEL/DISABLED event then triggers on every worker and on the owner.
    assert context.buffer.contains(AssetKind.MODEL, model.key)
    remove_model_from_buffer(context, model.key)
    assert not context.buffer.contains(AssetKind.MODEL, model.key)
    assert remove_model_from_storage(context, model.key)
    assert context.sources.stored_file(model.key, "model") is None
    assert not context.storage.exists(MODEL_BUCKET, f"models/{model.key}/model")
    (context.root / "compute_plans" / plan.key / "leftover").mkdir(parents=True)
    assert teardown_compute_plan(context, org.channel, plan.key)
    assert not (context.root / "compute_plans" / plan.key).exists()


@pytest.fixture
def two_organizations(
    make_organization: MakeOrganization,
) -> Iterator[tuple[BackendOrganization, BackendOrganization, PeerServer, PeerServer]]:
    """Two backends serving their files to each other (outgoing secrets set on both sides)."""
    peer1 = PeerServer(incoming={ORG2: "org2-to-org1"}).start()
    peer2 = PeerServer(incoming={ORG1: "org1-to-org2"}).start()
    try:
        org1 = make_organization(ORG1, default_domain=peer1.url)
        org2 = make_organization(ORG2, default_domain=peer2.url)
        peer1.owner, peer2.owner = org1, org2
        org1.trust(ORG2, "org1-to-org2")
        org2.trust(ORG1, "org2-to-org1")
        yield org1, org2, peer1, peer2
    finally:
        peer1.stop()
        peer2.stop()


def test_aggregate_of_several_organizations_with_a_substrafl_function(
    two_organizations: tuple[BackendOrganization, BackendOrganization, PeerServer, PeerServer],
    tmp_path: Path,
    substrafl_archive: Path,
) -> None:
    org1, org2, peer1, peer2 = two_organizations
    share = ready_function(org1, sdk_function_archive(tmp_path, "share"), SHARE_IO)
    aggregate = ready_function(org1, substrafl_archive, SUBSTRAFL_AGGREGATE_IO)
    manager1, samples1 = org1.register_dataset([json_sample(2.0)])
    manager2, samples2 = org2.register_dataset([json_sample(3.0), json_sample(7.0)])
    plan = new_plan(org1)
    local1 = register_task(
        org1,
        share,
        plan,
        [asset_input("opener", manager1.key), asset_input("datasamples", samples1[0])],
        ["shared"],
    )
    local2 = register_task(
        org1,
        share,
        plan,
        [asset_input("opener", manager2.key), *(asset_input("datasamples", key) for key in samples2)],
        ["shared"],
    )
    assert local2.worker == ORG2
    average = register_task(
        org1,
        aggregate,
        plan,
        [parent_input("shared", local1.key, "shared"), parent_input("shared", local2.key, "shared")],
        ["shared"],
        worker=ORG1,
    )
    assert run(org1, local1) is TaskOutcome.DONE
    # The second organization's worker builds the function from the archive of its owner.
    assert run(org2, local2) is TaskOutcome.DONE
    assert [(who, path) for who, _, path in peer1.requests] == [(ORG2, f"/function/{share.key}/file/")]
    assert run(org1, average) is TaskOutcome.DONE
    assert pickle.loads(model_content(org1, average.key)) == {"value": 6.0, "count": 2}
    # The second organization's model came from its backend, asked with the first one's credentials.
    [model2] = org2.orchestrator.get_compute_task_output_models(local2.key)
    assert peer2.requests == [(ORG1, "mychannel", f"/model/{model2.key}/file/")]


def test_task_of_a_plan_submitted_by_another_organization(
    two_organizations: tuple[BackendOrganization, BackendOrganization, PeerServer, PeerServer], tmp_path: Path
) -> None:
    org1, org2, _, peer2 = two_organizations
    # Owned and built by the second organization; the plan is the second organization's.
    function = ready_function(org2, sdk_function_archive(tmp_path, "trivial"), MODEL_IO)
    plan = new_plan(org2)
    task = register_task(org2, function, plan, [], worker=ORG1)
    assert task.owner == ORG2 and task.worker == ORG1
    org1.mirror(task)
    # Not the second organization's to run.
    assert run(org2, task) is TaskOutcome.DROPPED
    assert run(org1, task) is TaskOutcome.DONE
    assert json.loads(model_content(org1, task.key)) == {"rank": 0}
    assert peer2.requests == [(ORG1, "mychannel", f"/function/{function.key}/file/")]
    assert list(org1.profile(task.key)) == [
        STEP_PREPARE_INPUTS,
        STEP_DOWNLOAD_FUNCTION,
        STEP_TASK_EXECUTION,
        STEP_SAVE_OUTPUTS,
    ]
    # Wrong credentials are refused by the owner and the task fails without retries.
    unknown = sdk_function_archive(tmp_path, "trivial", requirements="")
    other = register_task(org2, ready_function(org2, unknown, MODEL_IO), plan, [], worker=ORG1)
    org1.trust(ORG2, "wrong-secret")
    assert run(org1, other, can_retry=True) is TaskOutcome.FAILED_INTERNAL


def test_failing_function_is_reported_with_its_traceback(
    make_organization: MakeOrganization, tmp_path: Path
) -> None:
    org = make_organization(ORG1)
    function = ready_function(org, sdk_function_archive(tmp_path, "fail"), MODEL_IO)
    plan = new_plan(org)
    task = register_task(org, function, plan, [], worker=ORG1)
    # User errors are never retried, even when retries are left.
    assert run(org, task, can_retry=True) is TaskOutcome.FAILED_EXECUTION
    assert status(org.orchestrator, task.key) == "STATUS_FAILED"
    report = org.orchestrator.get_failure_report(task.key)
    assert report.error_type == failure_report_pb2.ERROR_TYPE_EXECUTION
    assert report.logs_address.storage_address == f"http://backend.test/logs/{task.key}/file/"
    logs = org.context.storage.read_bytes(ASSET_LOGS_BUCKET, task.key).decode()
    assert (
        "Traceback (most recent call last):" in logs and "ValueError: the function failed on purpose" in logs
    )
    assert org.context.sources.stored_file(task.key, "logs").checksum == report.logs_address.checksum  # type: ignore[union-attr]
    assert org.orchestrator.get_plan(plan.key).HasField("failure_date")


def test_build_failure(make_organization: MakeOrganization, tmp_path: Path) -> None:
    org = make_organization(ORG1)
    archive = sdk_function_archive(tmp_path, "trivial", requirements="./missing-wheel-0.1-py3-none-any.whl\n")
    function = org.register_function(archive, MODEL_IO)
    plan = new_plan(org)
    task = register_task(org, function, plan, [], worker=ORG1)
    assert status(org.orchestrator, task.key) == "STATUS_WAITING_FOR_BUILDER_SLOT"
    assert build_function(org.context, org.channel, function.key) is BuildOutcome.FAILED
    assert org.orchestrator.get_function(function.key).status == function_pb2.FUNCTION_STATUS_FAILED
    assert status(org.orchestrator, task.key) == "STATUS_FAILED"
    report = org.orchestrator.get_failure_report(function.key)
    assert report.error_type == failure_report_pb2.ERROR_TYPE_BUILD
    assert report.asset_type == failure_report_pb2.FAILED_ASSET_FUNCTION
    logs = org.context.storage.read_bytes(ASSET_LOGS_BUCKET, function.key).decode()
    assert "missing-wheel" in logs


def test_build_of_canceled_plans_and_rebuild_of_a_known_archive(
    make_organization: MakeOrganization, tmp_path: Path
) -> None:
    org = make_organization(ORG1)
    archive = sdk_function_archive(tmp_path, "trivial")
    first = ready_function(org, archive, MODEL_IO)
    # Same archive, new function: the environment is reused, fast.
    second = org.register_function(archive, MODEL_IO)
    started = time.monotonic()
    assert build_function(org.context, org.channel, second.key) is BuildOutcome.REUSED
    assert time.monotonic() - started < 0.5
    assert org.orchestrator.get_function(second.key).status == function_pb2.FUNCTION_STATUS_READY
    assert first.archive.checksum == second.archive.checksum
    # Each READY function has its image: the manifest of its build, stored and addressed here.
    for function in (first, org.orchestrator.get_function(second.key)):
        address = f"{org.context.default_domain}/function/{function.key}/image/"
        assert function.image.storage_address == address
        stored = org.context.storage.read_bytes(FUNCTION_BUCKET, f"functions/{function.key}/image.zip")
        assert hashlib.sha256(stored).hexdigest() == function.image.checksum
        with zipfile.ZipFile(io.BytesIO(stored)) as archive_file:
            manifest = json.loads(archive_file.read("image.json"))
        assert manifest["function_key"] == function.key
        assert manifest["archive_checksum"] == function.archive.checksum
        assert any(package.lower().startswith("substratools==") for package in manifest["packages"])
    # So a READY function can be renamed (the orchestrator refuses a READY function without image).
    org.orchestrator.update_function(second.key, name="renamed")
    assert org.orchestrator.get_function(second.key).name == "renamed"
    # A function whose only plan is canceled is not built.
    third = org.register_function(sdk_function_archive(tmp_path, "trivial", requirements=""), MODEL_IO)
    plan = new_plan(org)
    task = register_task(org, third, plan, [], worker=ORG1)
    org.orchestrator.apply_plan_action(plan.key, computeplan_pb2.PLAN_ACTION_CANCELED)
    assert build_function(org.context, org.channel, third.key) is BuildOutcome.CANCELED
    assert org.orchestrator.get_function(third.key).status == function_pb2.FUNCTION_STATUS_CANCELED
    assert status(org.orchestrator, task.key) == "STATUS_CANCELED"
    assert org.context.executor.find_image(third.archive.checksum) is None


def test_canceling_the_plan_kills_the_running_task(
    make_organization: MakeOrganization, tmp_path: Path
) -> None:
    org = make_organization(ORG1)
    function = ready_function(org, sdk_function_archive(tmp_path, "sleep"), MODEL_IO)
    plan = new_plan(org)
    task = register_task(org, function, plan, [], worker=ORG1)
    outcome: list[TaskOutcome] = []
    thread = threading.Thread(target=lambda: outcome.append(run(org, task)))
    thread.start()
    deadline = time.monotonic() + 30
    while not any("sleeping" in log.read_text() for log in task_logs(org)):
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    assert status(org.orchestrator, task.key) == "STATUS_EXECUTING"
    canceled_at = time.monotonic()
    org.orchestrator.apply_plan_action(plan.key, computeplan_pb2.PLAN_ACTION_CANCELED)
    thread.join(10)
    assert time.monotonic() - canceled_at < 2
    assert outcome == [TaskOutcome.CANCELED]
    assert status(org.orchestrator, task.key) == "STATUS_CANCELED"
    assert_task_directories_emptied(org)
    # A task of a plan already canceled is canceled without running.
    late = register_task(org, function, new_plan(org), [], worker=ORG1)
    org.orchestrator.apply_plan_action(late.compute_plan_key, computeplan_pb2.PLAN_ACTION_CANCELED)
    assert run(org, late) is TaskOutcome.CANCELED
    assert status(org.orchestrator, late.key) == "STATUS_CANCELED"


def test_function_cannot_reach_the_network_nor_write_outside(
    make_organization: MakeOrganization, tmp_path: Path
) -> None:
    org = make_organization(ORG1)
    trivial = ready_function(org, sdk_function_archive(tmp_path, "trivial"), MODEL_IO)
    escape = ready_function(org, sdk_function_archive(tmp_path, "escape"), MODEL_IO)
    plan = new_plan(org)
    parent = register_task(org, trivial, plan, [], worker=ORG1)
    task = register_task(org, escape, plan, [parent_input("model", parent.key)], worker=ORG1)
    assert run(org, parent) is TaskOutcome.DONE
    assert run(org, task) is TaskOutcome.DONE
    report = json.loads(model_content(org, task.key))
    assert "ConnectionRefusedError" in report["network"] or "unreachable" in report["network"]
    assert all(report[target] != "written" for target in ("parent", "input", "root")), report
    assert report["home"] is True
    # The input model, shared with the asset buffer, is intact.
    assert json.loads(model_content(org, parent.key)) == {"rank": 0}


def test_infrastructure_errors_are_retried_then_reported(
    make_organization: MakeOrganization, tmp_path: Path
) -> None:
    org = make_organization(ORG1)
    function = ready_function(org, sdk_function_archive(tmp_path, "trivial"), MODEL_IO)
    task = register_task(org, function, new_plan(org), [], worker=ORG1)
    # Object storage becomes unreachable: saving the output fails.
    broken = make_organization(
        ORG1,
        storage=make_storage(
            StorageSettings(
                objectstore_url="http://127.0.0.1:9", objectstore_access_key="a", objectstore_secret_key="b"
            )
        ),
    )
    with pytest.raises(RetryRequestedError):
        run(broken, task, can_retry=True)
    assert status(org.orchestrator, task.key) == "STATUS_EXECUTING"
    assert run(broken, task, can_retry=False) is TaskOutcome.FAILED_INTERNAL
    report = org.orchestrator.get_failure_report(task.key)
    assert report.error_type == failure_report_pb2.ERROR_TYPE_INTERNAL
    assert not report.HasField("logs_address")


def test_a_task_whose_worker_keeps_dying_is_failed(
    make_organization: MakeOrganization, tmp_path: Path
) -> None:
    org = make_organization(ORG1, max_recoveries=1)
    function = ready_function(org, sdk_function_archive(tmp_path, "trivial"), MODEL_IO)
    task = register_task(org, function, new_plan(org), [], worker=ORG1)
    markers = markers_directory(org.context.root, org.context.settings.compute.hostname)
    # Two runs whose worker died (their "running" markers were found again).
    for _ in range(2):
        begin_run(markers, channel=org.channel, task_key=task.key, task_json="{}")
    org.orchestrator.apply_task_action(task.key, computetask_pb2.TASK_ACTION_EXECUTING)
    [interrupted] = interrupted_tasks(markers)
    assert interrupted.attempts == 2 and interrupted.state == "running"
    assert run(org, task) is TaskOutcome.FAILED_INTERNAL
    assert org.orchestrator.get_failure_report(task.key).error_type == failure_report_pb2.ERROR_TYPE_INTERNAL
    assert interrupted_tasks(markers) == []


def test_markers_of_retried_and_interrupted_runs(tmp_path: Path) -> None:
    markers = tmp_path / "running"
    assert begin_run(markers, channel="c", task_key="t", task_json='{"key": "t"}') == 1
    end_run(markers, "t", retrying=True)
    # Waiting for a retry is not a lost run.
    assert begin_run(markers, channel="c", task_key="t", task_json='{"key": "t"}') == 1
    # The process died here: the next run is attempt 2.
    assert begin_run(markers, channel="c", task_key="t", task_json='{"key": "t"}') == 2
    resubmitted: list[str] = []
    statuses = {"t": computetask_pb2.STATUS_EXECUTING, "u": computetask_pb2.STATUS_DONE}
    begin_run(markers, channel="c", task_key="u", task_json="{}")
    recovered = recover_interrupted_tasks(
        markers,
        get_status=lambda task: statuses[task.task_key],
        resubmit=lambda task: resubmitted.append(task.task_key),
    )
    assert [task.task_key for task in recovered] == resubmitted == ["t"]
    # The finished task's marker is forgotten, the resubmitted one's kept.
    assert [task.task_key for task in interrupted_tasks(markers)] == ["t"]
    end_run(markers, "t", retrying=False)
    assert interrupted_tasks(markers) == []
