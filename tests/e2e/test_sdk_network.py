"""The real `substra==1.0.0` SDK against a running local network of two organizations.

Every process is real (orchestrator, servers, events, workers, builders, schedulers): assets made on
one organization are read from the other once its events consumer has replicated them, and tasks run
in the workers' sandboxes.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import substra
from backend_worker.testing import OPENER_SCRIPT, sdk_function_archive
from substra.sdk import exceptions as sdk_exceptions
from substra.sdk import models, schemas

T = TypeVar("T")
ORG1, ORG2 = "MyOrg1MSP", "MyOrg2MSP"
BOTH = [ORG1, ORG2]
TERMINAL_PLAN = {
    models.ComputePlanStatus.done,
    models.ComputePlanStatus.failed,
    models.ComputePlanStatus.canceled,
}
PLAN_TIMEOUT = 240.0


def wait_for(probe: Callable[[], T | None], *, timeout: float = 60.0, what: str = "condition") -> T:
    """Polls `probe` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except sdk_exceptions.NotFound:
            value = None
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def wait_plan(client: substra.Client, key: str, timeout: float = PLAN_TIMEOUT) -> models.ComputePlan:
    def ended() -> models.ComputePlan | None:
        plan = client.get_compute_plan(key)
        return plan if plan.status in TERMINAL_PLAN else None

    return wait_for(ended, timeout=timeout, what=f"compute plan {key} to end")


def permissions(authorized: list[str], public: bool = False) -> schemas.Permissions:
    return schemas.Permissions(public=public, authorized_ids=authorized)


def folder(path: Path) -> Path:
    """A destination for the SDK's downloads, which must exist."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def comparable(asset: Any) -> dict[str, Any]:
    """An SDK model as plain JSON data, for comparing what two organizations answer.

    Each backend points `storage_address` at itself (rest-api.md 7: it proxies the download from
    the owner), so the origin of those URLs is left out."""
    return json.loads(re.sub(r"http://127\.0\.0\.1:\d+/", "<backend>/", asset.model_dump_json()))


def token_headers(access: Any) -> dict[str, str]:
    response = httpx.post(
        f"{access.url}/api-token-auth/",
        data={"username": access.username, "password": access.password},
        timeout=10,
    )
    response.raise_for_status()
    return {"Authorization": f"Token {response.json()['token']}", "Accept": "application/json;version=0.0"}


# --- assets -------------------------------------------------------------------------------------

FUNCTION_IO: dict[str, tuple[list[schemas.FunctionInputSpec], list[schemas.FunctionOutputSpec]]] = {}


def _io() -> None:
    opener = schemas.FunctionInputSpec(
        identifier="opener", kind="ASSET_DATA_MANAGER", optional=False, multiple=False
    )
    samples = schemas.FunctionInputSpec(
        identifier="datasamples", kind="ASSET_DATA_SAMPLE", optional=False, multiple=True
    )
    model = schemas.FunctionOutputSpec(identifier="model", kind="ASSET_MODEL", multiple=False)
    optional_model = schemas.FunctionInputSpec(
        identifier="model", kind="ASSET_MODEL", optional=True, multiple=False
    )
    required_model = schemas.FunctionInputSpec(
        identifier="model", kind="ASSET_MODEL", optional=False, multiple=False
    )
    models_in = schemas.FunctionInputSpec(
        identifier="models", kind="ASSET_MODEL", optional=False, multiple=True
    )
    performance = schemas.FunctionOutputSpec(
        identifier="performance", kind="ASSET_PERFORMANCE", multiple=False
    )
    FUNCTION_IO.update(
        train=([opener, samples, optional_model], [model]),
        fail=([opener, samples, optional_model], [model]),
        sleep=([optional_model], [model]),
        aggregate=([models_in], [model]),
        evaluate=([opener, samples, required_model], [performance]),
    )


_io()


@dataclass
class Functions:
    train: str
    aggregate: str
    evaluate: str
    fail: str
    sleep: str
    private: str
    archives: dict[str, Path]


@dataclass
class Dataset:
    key: str
    train_samples: list[str]
    test_samples: list[str]


@dataclass
class Setup:
    clients: list[substra.Client]
    network: Any
    functions: Functions
    datasets: list[Dataset]
    workdir: Path

    @property
    def org1(self) -> substra.Client:
        return self.clients[0]

    @property
    def org2(self) -> substra.Client:
        return self.clients[1]


def add_function(
    client: substra.Client, workdir: Path, name: str, authorized: list[str], *, io: str | None = None
) -> tuple[str, Path]:
    archive = sdk_function_archive(workdir / "functions", io or name)
    description = workdir / "functions" / f"{name}.md"
    description.write_text(f"# {name}\nA function of the end-to-end tests.\n")
    inputs, outputs = FUNCTION_IO[io or name]
    key = client.add_function(
        schemas.FunctionSpec(
            name=name,
            file=archive,
            description=description,
            permissions=permissions(authorized),
            inputs=inputs,
            outputs=outputs,
            metadata={"suite": "e2e", "role": name},
        )
    )
    return str(key), archive


def add_dataset(client: substra.Client, workdir: Path, index: int) -> Dataset:
    folder = workdir / f"org{index}"
    folder.mkdir(parents=True)
    (folder / "opener.py").write_text(OPENER_SCRIPT)
    (folder / "description.md").write_text(f"# Data of organization {index}\n")
    key = client.add_dataset(
        schemas.DatasetSpec(
            name=f"e2e-data-{index}",
            data_opener=folder / "opener.py",
            description=folder / "description.md",
            permissions=permissions(BOTH),
            logs_permission=permissions(BOTH),
            metadata={"organization": str(index)},
        )
    )

    def sample(name: str, x: float) -> str:
        path = folder / name
        path.mkdir()
        (path / "sample.json").write_text(json.dumps({"x": x}))
        return str(client.add_data_sample(schemas.DataSampleSpec(path=path, data_manager_keys=[key])))

    train = [sample(f"train-{i}", float(index * 10 + i)) for i in range(2)]
    test = [sample("test-0", float(index))]
    return Dataset(str(key), train, test)


@pytest.fixture(scope="module")
def setup(clients: list[substra.Client], e2e_network: Any, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    workdir = tmp_path_factory.mktemp("e2e-assets")
    org1 = clients[0]
    archives: dict[str, Path] = {}
    keys: dict[str, str] = {}
    for name in ("train", "aggregate", "evaluate", "fail", "sleep"):
        keys[name], archives[name] = add_function(org1, workdir, name, BOTH)
    keys["private"], archives["private"] = add_function(org1, workdir, "private", [ORG1], io="train")
    functions = Functions(**keys, archives=archives)
    datasets = [add_dataset(client, workdir, index) for index, client in enumerate(clients, start=1)]
    return Setup(clients, e2e_network, functions, datasets, workdir)


# --- task specs ----------------------------------------------------------------------------------


def data_inputs(dataset: Dataset, samples: list[str]) -> list[schemas.InputRef]:
    return [schemas.InputRef(identifier="opener", asset_key=dataset.key)] + [
        schemas.InputRef(identifier="datasamples", asset_key=sample) for sample in samples
    ]


def parent(identifier: str, task_id: str, output: str = "model") -> schemas.InputRef:
    return schemas.InputRef(
        identifier=identifier, parent_task_key=task_id, parent_task_output_identifier=output
    )


def task(
    function_key: str,
    worker: str,
    inputs: list[schemas.InputRef],
    output: str = "model",
    *,
    authorized: list[str] = BOTH,
    transient: bool = False,
    round_idx: int | None = None,
) -> schemas.ComputePlanTaskSpec:
    metadata = {} if round_idx is None else {"round_idx": str(round_idx)}
    # The orchestrator wants performances public.
    access = permissions([], public=True) if output == "performance" else permissions(authorized)
    return schemas.ComputePlanTaskSpec(
        task_id=str(uuid.uuid4()),
        function_key=function_key,
        worker=worker,
        inputs=inputs,
        outputs={output: schemas.ComputeTaskOutputSpec(permissions=access, is_transient=transient)},
        metadata=metadata,
    )


@dataclass
class ExchangePlan:
    key: str
    tasks: dict[str, schemas.ComputePlanTaskSpec]
    plan: models.ComputePlan


@pytest.fixture(scope="module")
def exchange(setup: Setup) -> ExchangePlan:
    """Two rounds submitted by MyOrg1: both organizations train on their own data, MyOrg1 averages
    the two models (MyOrg2's model crosses over), MyOrg2 evaluates the average on its test data.
    MyOrg2's first-round model is transient; MyOrg1's local models stay private to MyOrg1."""
    functions, (data1, data2) = setup.functions, setup.datasets
    tasks: dict[str, schemas.ComputePlanTaskSpec] = {}
    previous: str | None = None
    for round_idx in range(2):
        carried = [parent("model", previous)] if previous else []
        tasks[f"train2_{round_idx}"] = task(
            functions.train, ORG2, data_inputs(data2, data2.train_samples) + carried, transient=round_idx == 0
        )
        tasks[f"train1_{round_idx}"] = task(
            functions.train, ORG1, data_inputs(data1, data1.train_samples) + carried, authorized=[ORG1]
        )
        tasks[f"aggregate_{round_idx}"] = task(
            functions.aggregate,
            ORG1,
            [
                parent("models", tasks[f"train2_{round_idx}"].task_id),
                parent("models", tasks[f"train1_{round_idx}"].task_id),
            ],
        )
        previous = tasks[f"aggregate_{round_idx}"].task_id
        tasks[f"evaluate_{round_idx}"] = task(
            functions.evaluate,
            ORG2,
            [*data_inputs(data2, data2.test_samples), parent("model", previous)],
            "performance",
            round_idx=round_idx,
        )
    key = str(uuid.uuid4())
    setup.org1.add_compute_plan(
        schemas.ComputePlanSpec(
            key=key, name="e2e-exchange", tag="e2e", tasks=list(tasks.values()), metadata={"kind": "exchange"}
        )
    )
    plan = wait_plan(setup.org1, key)
    return ExchangePlan(key, tasks, plan)


# --- tests ---------------------------------------------------------------------------------------


def test_organizations_are_known_to_each_other(setup: Setup) -> None:
    for client, own in zip(setup.clients, BOTH, strict=True):
        assert client.organization_info().organization_id == own
        assert sorted(o.id for o in client.list_organization()) == BOTH


def same_from_both(
    setup: Setup,
    read: Callable[[substra.Client], Any],
    what: str,
    settled: Callable[[Any], bool] = lambda _: True,
) -> list[Any]:
    """What both organizations answer, once it has settled and they answer the same (their
    replicas catch up with the orchestrator)."""

    def agreed() -> list[Any] | None:
        views = [read(client) for client in setup.clients]
        if not all(settled(view) for view in views):
            return None
        return views if comparable(views[0]) == comparable(views[1]) else None

    return wait_for(agreed, timeout=120, what=f"both organizations to agree on {what}")


def test_assets_are_identical_from_both_organizations(setup: Setup) -> None:
    functions, datasets = setup.functions, setup.datasets
    function_keys = [
        functions.train,
        functions.aggregate,
        functions.evaluate,
        functions.fail,
        functions.sleep,
        functions.private,
    ]
    for key in function_keys:
        # The function's status moves on (building, ready) as each replica hears of it.
        views = same_from_both(
            setup,
            lambda c, k=key: c.get_function(k),
            f"function {key}",
            settled=lambda function: function.status == models.FunctionStatus.ready,
        )
        assert views[0].owner == ORG1
    for dataset, owner in zip(datasets, BOTH, strict=True):
        views = same_from_both(setup, lambda c, k=dataset.key: c.get_dataset(k), f"dataset {dataset.key}")
        assert views[0].owner == owner
        assert sorted(views[0].data_sample_keys) == sorted(dataset.train_samples + dataset.test_samples)
        for sample_key in dataset.train_samples + dataset.test_samples:
            samples = [client.get_data_sample(sample_key) for client in setup.clients]
            assert comparable(samples[0]) == comparable(samples[1])
            assert samples[0].owner == owner and samples[0].data_manager_keys == [dataset.key]


def test_listing_and_filtering_from_both_organizations(setup: Setup) -> None:
    ours = {
        setup.functions.train,
        setup.functions.aggregate,
        setup.functions.evaluate,
        setup.functions.fail,
        setup.functions.sleep,
        setup.functions.private,
    }
    for client in setup.clients:
        listed = wait_for(
            lambda c=client: (
                (found := {f.key for f in c.list_function(filters={"owner": [ORG1]})}) >= ours and found
            ),
            what="functions listed",
        )
        assert ours <= listed
        by_name = client.list_function(filters={"name": "aggreg"})  # a partial match
        assert setup.functions.aggregate in {f.key for f in by_name}
        assert all("aggreg" in f.name for f in by_name)
        datasets = client.list_dataset(filters={"key": [d.key for d in setup.datasets]})
        assert sorted(d.key for d in datasets) == sorted(d.key for d in setup.datasets)
        of_org2 = client.list_data_sample(filters={"owner": [ORG2]})
        expected = set(setup.datasets[1].train_samples + setup.datasets[1].test_samples)
        assert expected <= {s.key for s in of_org2}
        assert all(s.owner == ORG2 for s in of_org2)
        assert client.list_function(filters={"key": [str(uuid.uuid4())]}) == []


def test_renames_reach_the_other_organization(setup: Setup) -> None:
    new_function_name = f"train-{uuid.uuid4().hex[:6]}"
    setup.org1.update_function(setup.functions.train, new_function_name)
    new_dataset_name = f"data-{uuid.uuid4().hex[:6]}"
    setup.org2.update_dataset(setup.datasets[1].key, new_dataset_name)
    wait_for(
        lambda: setup.org2.get_function(setup.functions.train).name == new_function_name,
        what="function rename",
    )
    wait_for(
        lambda: setup.org1.get_dataset(setup.datasets[1].key).name == new_dataset_name, what="dataset rename"
    )
    # Only the owner may rename.
    with pytest.raises(sdk_exceptions.RequestException) as refused:
        setup.org2.update_function(setup.functions.train, "not-mine")
    assert refused.value.status_code == 403
    assert setup.org1.get_function(setup.functions.train).name == new_function_name


def test_downloads_are_identical_from_both_organizations(setup: Setup, tmp_path: Path) -> None:
    archive = setup.functions.archives["train"].read_bytes()
    for index, client in enumerate(setup.clients):
        destination = folder(tmp_path / f"from-{index}")
        assert client.download_function(setup.functions.train, destination).read_bytes() == archive
        assert "A function of the end-to-end tests" in client.describe_function(setup.functions.train)
        for number, dataset in enumerate(setup.datasets, start=1):
            opener = client.download_dataset(dataset.key, folder(destination / f"opener-{number}"))
            assert opener.read_text() == OPENER_SCRIPT
            assert client.describe_dataset(dataset.key) == f"# Data of organization {number}\n"


def test_download_of_an_unauthorized_function_is_refused(setup: Setup, tmp_path: Path) -> None:
    with pytest.raises(sdk_exceptions.RequestException) as refused:
        setup.org2.download_function(setup.functions.private, tmp_path)
    assert refused.value.status_code == 403
    assert setup.org1.download_function(setup.functions.private, tmp_path).exists()


def test_submission_with_an_unauthorized_function_is_refused(setup: Setup) -> None:
    data2 = setup.datasets[1]
    key = str(uuid.uuid4())
    with pytest.raises(sdk_exceptions.RequestException) as refused:
        setup.org2.add_compute_plan(
            schemas.ComputePlanSpec(
                key=key,
                name="refused",
                tasks=[task(setup.functions.private, ORG2, data_inputs(data2, data2.train_samples))],
            )
        )
    assert refused.value.status_code == 403
    # Nothing of the refused submission was left behind.
    assert not setup.org2.list_task(filters={"compute_plan_key": [key]})


def test_tasks_run_on_both_organizations_and_models_cross_over(setup: Setup, exchange: ExchangePlan) -> None:
    assert exchange.plan.status == models.ComputePlanStatus.done, exchange.plan
    assert exchange.plan.task_count == exchange.plan.done_count == 8
    for client in setup.clients:
        tasks = {t.key: t for t in client.list_task(filters={"compute_plan_key": [exchange.key]})}
        assert len(tasks) == 8
        assert all(t.status == models.ComputeTaskStatus.done for t in tasks.values())
        assert {
            tasks[exchange.tasks["train2_0"].task_id].worker,
            tasks[exchange.tasks["train1_0"].task_id].worker,
        } == set(BOTH)
        assert {
            t.key for t in client.list_task(filters={"compute_plan_key": [exchange.key], "worker": [ORG2]})
        } == {exchange.tasks[name].task_id for name in ("train2_0", "train2_1", "evaluate_0", "evaluate_1")}
    views = [comparable(client.get_task(exchange.tasks["aggregate_1"].task_id)) for client in setup.clients]
    assert views[0] == views[1]
    # The aggregate on MyOrg1 averaged MyOrg2's model with its own: the sums of x over the train
    # samples are (10+11) and (20+21) in round 0, each added to the round-0 average in round 1.
    aggregate = setup.org1.download_model_from_task(
        exchange.tasks["aggregate_1"].task_id, "model", folder(setup.workdir / "agg")
    )
    total = json.loads(aggregate.read_text())["total"]
    assert total == pytest.approx(((21 + 41) / 2) + (21 + 41) / 2)


def test_models_are_listed_and_downloaded_from_both_organizations(
    setup: Setup, exchange: ExchangePlan, tmp_path: Path
) -> None:
    aggregate_key = exchange.tasks["aggregate_0"].task_id
    outputs = [client.list_task_output_assets(aggregate_key) for client in setup.clients]
    model_keys = [output.asset.key for output in outputs[0]]
    assert model_keys == [output.asset.key for output in outputs[1]]
    for client in setup.clients:
        listed = {m.key for m in client.list_model(filters={"compute_task_key": [aggregate_key]})}
        assert listed == set(model_keys)
    downloaded = [
        setup.clients[i].download_model(model_keys[0], folder(tmp_path / str(i))).read_bytes()
        for i in range(2)
    ]
    assert downloaded[0] == downloaded[1]
    # MyOrg1's local model of round 1 is for MyOrg1 only.
    private_model = setup.org1.list_task_output_assets(exchange.tasks["train1_1"].task_id)[0].asset.key
    with pytest.raises(sdk_exceptions.RequestException) as refused:
        setup.org2.download_model(private_model, folder(tmp_path / "refused"))
    assert refused.value.status_code == 403
    assert setup.org1.download_model(private_model, folder(tmp_path / "allowed")).exists()


def test_performances_per_round_from_both_organizations(setup: Setup, exchange: ExchangePlan) -> None:
    views = [client.get_performances(exchange.key) for client in setup.clients]
    assert comparable(views[0]) == comparable(views[1])
    performances = views[0]
    assert sorted(performances.round_idx) == [0, 1]
    assert set(performances.worker) == {ORG2}
    by_round = dict(zip(performances.round_idx, performances.performance, strict=True))
    # The evaluation is the model's running total (see the functions of backend_worker.testing).
    assert by_round[0] == pytest.approx(31.0)
    assert by_round[1] == pytest.approx(62.0)


def test_transient_output_is_deleted_and_its_later_use_refused(
    setup: Setup, exchange: ExchangePlan, tmp_path: Path
) -> None:
    transient_task = exchange.tasks["train2_0"].task_id
    model = setup.org2.list_task_output_assets(transient_task)[0].asset
    wait_for(lambda: setup.org2.get_model(model.key).address is None, what="transient model disabled")
    wait_for(
        lambda: setup.org1.get_model(model.key).address is None, what="transient model disabled on MyOrg1"
    )
    with pytest.raises(sdk_exceptions.RequestException) as gone:
        setup.org2.download_model(model.key, tmp_path)
    assert gone.value.status_code == 410
    # The model that was kept can still be downloaded.
    kept = setup.org2.list_task_output_assets(exchange.tasks["train2_1"].task_id)[0].asset
    assert setup.org2.download_model(kept.key, folder(tmp_path / "kept")).exists()

    data2 = setup.datasets[1]
    late = str(uuid.uuid4())
    with pytest.raises(sdk_exceptions.RequestException) as refused:
        setup.org1.add_compute_plan(
            schemas.ComputePlanSpec(
                key=late,
                name="uses-a-deleted-output",
                tasks=[
                    task(
                        setup.functions.train,
                        ORG2,
                        [*data_inputs(data2, data2.train_samples), parent("model", transient_task)],
                    )
                ],
            )
        )
    assert refused.value.status_code in (400, 409, 410)


def test_profiling_of_executed_tasks(setup: Setup, exchange: ExchangePlan) -> None:
    access = setup.network.organizations[1]
    headers = token_headers(access)
    task_key = exchange.tasks["train2_1"].task_id
    response = httpx.get(f"{access.url}/task_profiling/{task_key}/", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    profile = response.json()
    assert profile["compute_task_key"] == task_key
    steps = {step["step"]: step["duration"] for step in profile["execution_rundown"]}
    assert steps, profile
    assert all(isinstance(duration, int) and duration >= 0 for duration in steps.values())
    listed = httpx.get(f"{access.url}/task_profiling/", headers=headers, timeout=10).json()
    assert task_key in {record["compute_task_key"] for record in listed["results"]}
    build = httpx.get(
        f"{access.url}/function/{setup.functions.evaluate}/profiling/", headers=headers, timeout=10
    )
    assert build.status_code == 200, build.text


def test_failed_task_reports_error_type_and_logs_to_both_organizations(setup: Setup) -> None:
    data2 = setup.datasets[1]
    failing = task(setup.functions.fail, ORG2, data_inputs(data2, data2.train_samples))
    key = str(uuid.uuid4())
    setup.org1.add_compute_plan(schemas.ComputePlanSpec(key=key, name="e2e-failure", tasks=[failing]))
    plan = wait_plan(setup.org1, key)
    assert plan.status == models.ComputePlanStatus.failed
    assert plan.failed_task_key == failing.task_id
    for client in setup.clients:
        failed = wait_for(
            lambda c=client: (
                (t := c.get_task(failing.task_id)).status == models.ComputeTaskStatus.failed and t
            ),
            what="failed task replicated",
        )
        assert failed.error_type == models.TaskErrorType.execution
        logs = wait_for(lambda c=client: c.get_logs(failing.task_id), what="failure logs")
        assert "the function failed on purpose" in logs


def test_canceled_compute_plan_stops_its_tasks(setup: Setup) -> None:
    sleeping = task(setup.functions.sleep, ORG1, [])
    after = task(setup.functions.sleep, ORG2, [parent("model", sleeping.task_id)])
    key = str(uuid.uuid4())
    setup.org1.add_compute_plan(schemas.ComputePlanSpec(key=key, name="e2e-cancel", tasks=[sleeping, after]))
    wait_for(
        lambda: setup.org1.get_task(sleeping.task_id).status == models.ComputeTaskStatus.executing,
        timeout=120,
        what="the sleeping task to execute",
    )
    setup.org1.cancel_compute_plan(key)
    for client in setup.clients:
        plan = wait_plan(client, key, timeout=60)
        assert plan.status == models.ComputePlanStatus.canceled
        wait_for(
            lambda c=client: c.get_task(sleeping.task_id).status == models.ComputeTaskStatus.canceled,
            what="the executing task canceled",
        )
        # Canceling a plan does not cascade to its tasks (orchestrator-grpc.md, ApplyPlanAction):
        # the child of the canceled task is never run and stays waiting.
        assert client.get_task(after.task_id).status == models.ComputeTaskStatus.waiting_for_parent_tasks
    # The worker stopped the sandboxed process: MyOrg1's next task runs right away.
    data1 = setup.datasets[0]
    quick = task(setup.functions.train, ORG1, data_inputs(data1, data1.train_samples))
    next_key = str(uuid.uuid4())
    setup.org1.add_compute_plan(schemas.ComputePlanSpec(key=next_key, name="after-cancel", tasks=[quick]))
    assert wait_plan(setup.org1, next_key, timeout=50).status == models.ComputePlanStatus.done
