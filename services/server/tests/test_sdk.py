"""The real `substra==1.0.0` SDK against live servers on loopback and the standalone orchestrator.

Other organizations' assets and task progress reach a backend's replica through the events code
path (`sync_replica`); the work of workers (builds, executions) is played on the orchestrator.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import substra
from backend_common.protos import (
    common_pb2,
    computetask_pb2,
    failure_report_pb2,
    function_pb2,
    model_pb2,
    performance_pb2,
)
from backend_common.storage import ASSET_LOGS_BUCKET, MODEL_BUCKET, make_storage
from backend_server.data import files
from backend_server.testing import (
    CHANNEL,
    ORG1,
    ORG2,
    PASSWORD,
    Backend,
    sync_replica,
    write_dataset_files,
    write_function_files,
    write_sample_folder,
)
from standalone_orchestrator.testing import Network
from substra.sdk import exceptions as sdk_exceptions
from substra.sdk import schemas

_clients: list[substra.Client] = []


@pytest.fixture(autouse=True)
def _logout_clients(live_backends: Callable[..., Backend]) -> Iterator[None]:
    """Log the SDK clients out while their servers still run (the SDK would at garbage collection)."""
    yield
    while _clients:
        _clients.pop().logout()


def sdk(backend: Backend, username: str = "admin") -> substra.Client:
    client = substra.Client(backend_type="remote", url=backend.url, username=username, password=PASSWORD)
    _clients.append(client)
    return client


def sync(network: Network, *backends: Backend) -> None:
    for backend in backends:
        sync_replica(network.client(backend.msp_id, CHANNEL), backend.database_url)


def add_dataset(
    client: substra.Client, folder: Path, *, public: bool = False, authorized: list[str] | None = None
) -> str:
    opener, description = write_dataset_files(folder)
    return str(
        client.add_dataset(
            schemas.DatasetSpec(
                name="dataset",
                data_opener=opener,
                description=description,
                permissions=schemas.Permissions(public=public, authorized_ids=authorized or []),
                logs_permission=schemas.Permissions(public=False, authorized_ids=authorized or []),
                metadata={"origin": "tests"},
            )
        )
    )


def add_function(
    client: substra.Client, folder: Path, *, archive_format: str = "zip", authorized: list[str] | None = None
) -> str:
    archive, description = write_function_files(folder, archive_format=archive_format)
    return str(
        client.add_function(
            schemas.FunctionSpec(
                name="train",
                file=archive,
                description=description,
                permissions=schemas.Permissions(public=False, authorized_ids=authorized or []),
                inputs=[
                    schemas.FunctionInputSpec(
                        identifier="opener", kind="ASSET_DATA_MANAGER", optional=False, multiple=False
                    ),
                    schemas.FunctionInputSpec(
                        identifier="datasamples", kind="ASSET_DATA_SAMPLE", optional=False, multiple=True
                    ),
                    schemas.FunctionInputSpec(
                        identifier="model", kind="ASSET_MODEL", optional=True, multiple=False
                    ),
                ],
                outputs=[
                    schemas.FunctionOutputSpec(identifier="model", kind="ASSET_MODEL", multiple=False),
                ],
            )
        )
    )


def train_task(
    function_key: str, dataset_key: str, samples: list[str], *, parent: str | None = None, rank: int = 0
) -> schemas.ComputePlanTaskSpec:
    inputs = [schemas.InputRef(identifier="opener", asset_key=dataset_key)]
    inputs += [schemas.InputRef(identifier="datasamples", asset_key=sample) for sample in samples]
    if parent:
        inputs.append(
            schemas.InputRef(
                identifier="model", parent_task_key=parent, parent_task_output_identifier="model"
            )
        )
    return schemas.ComputePlanTaskSpec(
        task_id=str(uuid.uuid4()),
        function_key=function_key,
        worker=ORG1,
        inputs=inputs,
        outputs={
            "model": schemas.ComputeTaskOutputSpec(
                permissions=schemas.Permissions(public=False, authorized_ids=[ORG1])
            )
        },
        metadata={"round_idx": str(rank)},
    )


def test_login_info_organizations_and_logout(live_backends: Callable[..., Backend], network: Network) -> None:
    backend = live_backends(ORG1)
    sync(network, backend)
    client = sdk(backend)
    info = client.organization_info()
    assert info.organization_id == ORG1
    assert info.channel == CHANNEL
    assert isinstance(info.orchestrator_version, str)
    assert info.config.model_export_enabled is True
    organizations = {organization.id: organization for organization in client.list_organization()}
    assert set(organizations) >= {ORG1, ORG2}
    assert organizations[ORG1].is_current and not organizations[ORG2].is_current
    client.logout()
    with pytest.raises(sdk_exceptions.AuthenticationError):
        client.list_dataset()


def test_datasets_samples_and_functions(live_backends: Callable[..., Backend], tmp_path: Path) -> None:
    backend = live_backends(ORG1)
    client = sdk(backend)
    dataset_key = add_dataset(client, tmp_path / "dataset", authorized=[ORG2])
    dataset = client.get_dataset(dataset_key)
    assert dataset.owner == ORG1
    assert dataset.permissions.process.authorized_ids == [ORG2, ORG1]
    assert dataset.metadata == {"origin": "tests"}
    assert str(dataset.opener.storage_address).startswith(backend.url)
    assert [item.key for item in client.list_dataset()] == [dataset_key]
    assert "With a description: é" in client.describe_dataset(dataset_key)
    (tmp_path / "download").mkdir()
    opener = client.download_dataset(dataset_key, tmp_path / "download")
    assert Path(opener).read_bytes() == (tmp_path / "dataset" / "opener.py").read_bytes()
    client.update_dataset(dataset_key, "renamed")
    assert client.get_dataset(dataset_key).name == "renamed"

    one = client.add_data_sample(
        schemas.DataSampleSpec(
            path=write_sample_folder(tmp_path / "s0", b"0,1\n"), data_manager_keys=[dataset_key]
        )
    )
    folders = [write_sample_folder(tmp_path / f"s{index}", f"{index},x\n".encode()) for index in (1, 2)]
    several = client.add_data_samples(schemas.DataSampleSpec(paths=folders, data_manager_keys=[dataset_key]))
    assert len(several) == 2
    sample = client.get_data_sample(one)
    assert sample.owner == ORG1 and sample.data_manager_keys == [dataset_key] and sample.path is None
    assert {item.key for item in client.list_data_sample()} == {one, *several}
    linked = client.get_dataset(dataset_key).data_sample_keys
    # Samples of one registration share their creation date: ordered by key after it.
    assert linked == [one, *sorted(several)]
    # Server-side folders (local=False): paths under the server's SERVERMEDIAS_ROOT.
    server_root = Path(backend.settings.storage.servermedias_root)
    on_server = client.add_data_sample(
        schemas.DataSampleSpec(
            path=write_sample_folder(server_root / "s9", b"9\n"), data_manager_keys=[dataset_key]
        ),
        local=False,
    )
    assert client.get_data_sample(on_server).data_manager_keys == [dataset_key]
    other_dataset = add_dataset(client, tmp_path / "dataset2")
    client.link_dataset_with_data_samples(other_dataset, [one])
    assert client.get_data_sample(one).data_manager_keys == sorted([dataset_key, other_dataset])
    assert [s.key for s in client.list_data_sample(filters={"dataset_key": [other_dataset]})] == [one]

    zip_key = add_function(client, tmp_path / "f_zip")
    tar_key = add_function(client, tmp_path / "f_tar", archive_format="tar.gz")
    function = client.get_function(zip_key)
    assert function.status == "FUNCTION_STATUS_WAITING"
    assert {item.identifier for item in function.inputs} == {"opener", "datasamples", "model"}
    assert {item.key for item in client.list_function()} == {zip_key, tar_key}
    (tmp_path / "function_download").mkdir()
    downloaded = client.download_function(tar_key, tmp_path / "function_download")
    assert Path(downloaded).read_bytes() == (tmp_path / "f_tar" / "function.tar.gz").read_bytes()
    assert client.describe_function(zip_key) == "# A function\n"
    client.update_function(zip_key, "renamed function")
    assert client.get_function(zip_key).name == "renamed function"


def test_compute_plan_tasks_and_execution(
    live_backends: Callable[..., Backend], network: Network, tmp_path: Path
) -> None:
    backend = live_backends(ORG1)
    client = sdk(backend)
    dataset_key = add_dataset(client, tmp_path / "dataset")
    samples = client.add_data_samples(
        schemas.DataSampleSpec(
            paths=[write_sample_folder(tmp_path / f"s{i}", f"{i}\n".encode()) for i in range(2)],
            data_manager_keys=[dataset_key],
        )
    )
    function_key = add_function(client, tmp_path / "function")
    first = train_task(function_key, dataset_key, samples, rank=0)
    second = train_task(function_key, dataset_key, samples, parent=first.task_id, rank=1)
    plan = client.add_compute_plan(
        schemas.ComputePlanSpec(name="plan", tag="experiment", metadata={"lr": "0.1"}, tasks=[second, first])
    )
    assert plan.status == "PLAN_STATUS_CREATED"
    assert plan.creator == "admin"
    assert plan.duration == 0
    tasks = {task.key: task for task in client.list_task(filters={"compute_plan_key": [plan.key]})}
    assert set(tasks) == {first.task_id, second.task_id}
    assert tasks[first.task_id].rank == 0 and tasks[second.task_id].rank == 1
    assert tasks[second.task_id].inputs[-1].parent_task_key == first.task_id
    assert tasks[first.task_id].status == "STATUS_WAITING_FOR_BUILDER_SLOT"
    assert [task.key for task in client.list_task(filters={"rank": [1]})] == [second.task_id]
    assert [
        p.key
        for p in client.list_compute_plan(filters={"metadata": [{"key": "lr", "type": "is", "value": "0.1"}]})
    ] == [plan.key]
    assert client.list_compute_plan(filters={"metadata": [{"key": "nobody", "type": "exists"}]}) == []
    client.update_compute_plan(plan.key, "renamed plan")
    assert client.get_compute_plan(plan.key).name == "renamed plan"

    # The worker builds the function, runs the first task and registers its model.
    orchestrator = network.client(ORG1, CHANNEL)
    orchestrator.apply_function_action(function_key, function_pb2.FUNCTION_ACTION_BUILDING)
    orchestrator.update_function(
        function_key,
        "renamed",
        common_pb2.Addressable(
            checksum="c" * 64, storage_address=f"{backend.url}/function/{function_key}/image/"
        ),
    )
    orchestrator.apply_function_action(function_key, function_pb2.FUNCTION_ACTION_READY)
    orchestrator.apply_task_action(first.task_id, computetask_pb2.TASK_ACTION_EXECUTING)
    model_key = str(uuid.uuid4())
    model_bytes = b"model weights"
    checksum = hashlib.sha256(model_bytes + first.task_id.encode()).hexdigest()
    storage = make_storage(backend.settings.storage)
    stored = storage.put(MODEL_BUCKET, f"models/{model_key}/model", [model_bytes])
    with backend.session() as session:
        files.add_file(
            session,
            asset_key=model_key,
            role=files.MODEL,
            bucket=stored.bucket,
            object_key=stored.key,
            checksum=checksum,
            size=stored.size,
            filename="model",
            now=plan.creation_date,
        )
    orchestrator.register_models(
        [
            model_pb2.NewModel(
                key=model_key,
                compute_task_key=first.task_id,
                compute_task_output_identifier="model",
                address=common_pb2.Addressable(
                    checksum=checksum, storage_address=f"{backend.url}/model/{model_key}/file/"
                ),
            )
        ]
    )
    orchestrator.apply_task_action(first.task_id, computetask_pb2.TASK_ACTION_DONE)
    sync(network, backend)

    done = client.wait_task(first.task_id, timeout=10, polling_period=0.1)
    assert done.status == "STATUS_DONE" and done.start_date is not None and done.end_date is not None
    assert (
        client.wait_function(function_key, timeout=10, polling_period=0.1).status == "FUNCTION_STATUS_READY"
    )
    assert [asset.identifier for asset in client.list_task_output_assets(first.task_id)] == ["model"]
    output = client.get_task_output_asset(first.task_id, "model")
    assert output.asset.key == model_key
    assert [asset.identifier for asset in client.list_task_input_assets(second.task_id)] == [
        "datasamples",
        "datasamples",
        "model",
        "opener",
    ]
    assert client.get_model(model_key).compute_task_key == first.task_id
    assert [m.key for m in client.list_model(filters={"compute_task_key": [first.task_id]})] == [model_key]
    (tmp_path / "models").mkdir()
    path = client.download_model(model_key, tmp_path / "models")
    assert Path(path).read_bytes() == model_bytes
    (tmp_path / "from_task").mkdir()
    assert (
        Path(client.download_model_from_task(first.task_id, "model", tmp_path / "from_task")).read_bytes()
        == model_bytes
    )
    running = client.get_compute_plan(plan.key)
    assert running.status == "PLAN_STATUS_DOING"
    assert running.done_count == 1 and running.task_count == 2

    # The second task fails: logs are readable through the task.
    orchestrator.apply_task_action(second.task_id, computetask_pb2.TASK_ACTION_EXECUTING)
    logs = b"Traceback (most recent call last):\n  boom\n"
    stored_logs = storage.put(ASSET_LOGS_BUCKET, second.task_id, [logs])
    orchestrator.register_failure_report(
        failure_report_pb2.NewFailureReport(
            asset_key=second.task_id,
            asset_type=failure_report_pb2.FAILED_ASSET_COMPUTE_TASK,
            error_type=failure_report_pb2.ERROR_TYPE_EXECUTION,
            logs_address=common_pb2.Addressable(
                checksum=stored_logs.sha256, storage_address=f"{backend.url}/logs/{second.task_id}/file/"
            ),
        )
    )
    sync(network, backend)
    failed = client.get_task(second.task_id)
    assert failed.status == "STATUS_FAILED" and failed.error_type == "EXECUTION_ERROR"
    assert "Traceback (most recent call last):" in client.get_logs(second.task_id)
    (tmp_path / "logs").mkdir()
    client.download_logs(second.task_id, str(tmp_path / "logs"))
    assert (tmp_path / "logs" / f"task_logs_{second.task_id}.txt").read_bytes() == logs
    final = client.wait_compute_plan(plan.key, timeout=10, polling_period=0.1, raise_on_failure=False)
    assert (
        final.status == "PLAN_STATUS_FAILED"
        and final.end_date is not None
        and final.failed_task_key == second.task_id
    )


def test_performances_cancel_and_add_task(
    live_backends: Callable[..., Backend], network: Network, tmp_path: Path
) -> None:
    backend = live_backends(ORG1)
    client = sdk(backend)
    archive, description = write_function_files(tmp_path / "metric")
    metric_key = client.add_function(
        schemas.FunctionSpec(
            name="metric",
            file=archive,
            description=description,
            permissions=schemas.Permissions(public=True, authorized_ids=[]),
            inputs=[],
            outputs=[
                schemas.FunctionOutputSpec(identifier="accuracy", kind="ASSET_PERFORMANCE", multiple=False)
            ],
        )
    )
    task_key = client.add_task(
        schemas.TaskSpec(
            function_key=metric_key,
            worker=ORG1,
            metadata={"round_idx": "3"},
            outputs={
                "accuracy": schemas.ComputeTaskOutputSpec(
                    permissions=schemas.Permissions(public=True, authorized_ids=[])
                )
            },
        )
    )
    task = client.get_task(task_key)
    orchestrator = network.client(ORG1, CHANNEL)
    orchestrator.apply_function_action(metric_key, function_pb2.FUNCTION_ACTION_BUILDING)
    orchestrator.update_function(
        metric_key, "metric", common_pb2.Addressable(checksum="d" * 64, storage_address="http://x/image/")
    )
    orchestrator.apply_function_action(metric_key, function_pb2.FUNCTION_ACTION_READY)
    orchestrator.apply_task_action(task_key, computetask_pb2.TASK_ACTION_EXECUTING)
    orchestrator.register_performance(
        performance_pb2.NewPerformance(
            compute_task_key=task_key, compute_task_output_identifier="accuracy", performance_value=0.87
        )
    )
    orchestrator.apply_task_action(task_key, computetask_pb2.TASK_ACTION_DONE)
    sync(network, backend)
    performances = client.get_performances(task.compute_plan_key)
    assert performances.performance == [pytest.approx(0.87)]
    assert performances.identifier == ["accuracy"]
    assert performances.round_idx == [3]
    assert client.get_task_output_asset(task_key, "accuracy").asset == pytest.approx(0.87)
    plan = client.get_compute_plan(task.compute_plan_key)
    assert plan.status == "PLAN_STATUS_DONE" and plan.duration is not None
    extended = client.add_compute_plan_tasks(
        task.compute_plan_key,
        schemas.UpdateComputePlanTasksSpec(
            key=task.compute_plan_key,
            tasks=[
                schemas.ComputePlanTaskSpec(
                    task_id=str(uuid.uuid4()),
                    function_key=metric_key,
                    worker=ORG1,
                    outputs={
                        "accuracy": schemas.ComputeTaskOutputSpec(
                            permissions=schemas.Permissions(public=True, authorized_ids=[])
                        )
                    },
                )
            ],
        ),
    )
    assert extended.task_count == 2

    other = client.add_compute_plan(schemas.ComputePlanSpec(name="to cancel"))
    client.cancel_compute_plan(other.key)
    client.cancel_compute_plan(other.key)  # idempotent
    sync(network, backend)
    canceled = client.get_compute_plan(other.key)
    assert canceled.status == "PLAN_STATUS_CANCELED" and canceled.end_date is not None


def _without_addresses(document: object) -> object:
    """rest-api 10.29: the same asset on two backends differs only by addresses, creator and status."""
    if isinstance(document, dict):
        return {
            key: _without_addresses(value)
            for key, value in document.items()
            if key not in ("storage_address", "creator", "estimated_end_date", "duration")
        }
    if isinstance(document, list):
        return [_without_addresses(value) for value in document]
    return document


def test_two_organizations(live_backends: Callable[..., Backend], network: Network, tmp_path: Path) -> None:
    org1, org2 = live_backends(ORG1), live_backends(ORG2)
    client1, client2 = sdk(org1), sdk(org2)
    dataset_key = add_dataset(client2, tmp_path / "dataset", authorized=[ORG1])
    samples = client2.add_data_samples(
        schemas.DataSampleSpec(
            paths=[write_sample_folder(tmp_path / f"s{i}", f"{i}\n".encode()) for i in range(2)],
            data_manager_keys=[dataset_key],
        )
    )
    function_key = add_function(client1, tmp_path / "function", authorized=[ORG2])
    sync(network, org1, org2)
    assert client1.get_dataset(dataset_key).owner == ORG2
    (tmp_path / "opener").mkdir()
    relayed = client1.download_dataset(dataset_key, tmp_path / "opener")
    assert Path(relayed).read_bytes() == (tmp_path / "dataset" / "opener.py").read_bytes()
    assert client2.get_function(function_key).owner == ORG1

    task = train_task(function_key, dataset_key, samples)
    task.worker = ORG2
    task.outputs = {
        "model": schemas.ComputeTaskOutputSpec(
            permissions=schemas.Permissions(public=False, authorized_ids=[ORG1, ORG2])
        )
    }
    failing = train_task(function_key, dataset_key, samples)
    failing.worker = ORG2
    plan = client1.add_compute_plan(schemas.ComputePlanSpec(name="federated", tasks=[task, failing]))

    # ORG1 builds its function; ORG2's worker runs the tasks and keeps the model and the logs.
    owner, worker = network.client(ORG1, CHANNEL), network.client(ORG2, CHANNEL)
    owner.apply_function_action(function_key, function_pb2.FUNCTION_ACTION_BUILDING)
    owner.update_function(
        function_key,
        "train",
        common_pb2.Addressable(
            checksum="c" * 64, storage_address=f"{org1.url}/function/{function_key}/image/"
        ),
    )
    owner.apply_function_action(function_key, function_pb2.FUNCTION_ACTION_READY)
    worker.apply_task_action(task.task_id, computetask_pb2.TASK_ACTION_EXECUTING)
    model_key, weights = str(uuid.uuid4()), b"weights of org2"
    checksum = hashlib.sha256(weights + task.task_id.encode()).hexdigest()
    storage2 = make_storage(org2.settings.storage)
    stored = storage2.put(MODEL_BUCKET, f"models/{model_key}/model", [weights])
    with org2.session() as session:
        files.add_file(
            session,
            asset_key=model_key,
            role=files.MODEL,
            bucket=stored.bucket,
            object_key=stored.key,
            checksum=checksum,
            size=stored.size,
            filename="model",
            now=plan.creation_date,
        )
    worker.register_models(
        [
            model_pb2.NewModel(
                key=model_key,
                compute_task_key=task.task_id,
                compute_task_output_identifier="model",
                address=common_pb2.Addressable(
                    checksum=checksum, storage_address=f"{org2.url}/model/{model_key}/file/"
                ),
            )
        ]
    )
    worker.apply_task_action(task.task_id, computetask_pb2.TASK_ACTION_DONE)
    worker.apply_task_action(failing.task_id, computetask_pb2.TASK_ACTION_EXECUTING)
    logs = b"Traceback (most recent call last):\n  on org2\n"
    stored_logs = storage2.put(ASSET_LOGS_BUCKET, failing.task_id, [logs])
    worker.register_failure_report(
        failure_report_pb2.NewFailureReport(
            asset_key=failing.task_id,
            asset_type=failure_report_pb2.FAILED_ASSET_COMPUTE_TASK,
            error_type=failure_report_pb2.ERROR_TYPE_EXECUTION,
            logs_address=common_pb2.Addressable(
                checksum=stored_logs.sha256, storage_address=f"{org2.url}/logs/{failing.task_id}/file/"
            ),
        )
    )
    sync(network, org1, org2)

    # ORG1's user reads what ORG2 holds, through ORG1's own backend.
    (tmp_path / "model").mkdir()
    assert Path(client1.download_model(model_key, tmp_path / "model")).read_bytes() == weights
    assert "on org2" in client1.get_logs(failing.task_id)
    assert client1.get_task(failing.task_id).error_type == "EXECUTION_ERROR"
    for path in (
        f"/compute_plan/{plan.key}/",
        f"/task/{task.task_id}/",
        f"/model/{model_key}/",
        f"/data_manager/{dataset_key}/",
    ):
        seen_by_1 = httpx.get(f"{org1.url}{path}", headers=org1.headers()).json()
        seen_by_2 = httpx.get(f"{org2.url}{path}", headers=org2.headers()).json()
        assert _without_addresses(seen_by_1) == _without_addresses(seen_by_2), path
    assert client1.get_compute_plan(plan.key).creator == "admin"
    assert client2.get_compute_plan(plan.key).creator == "external"
