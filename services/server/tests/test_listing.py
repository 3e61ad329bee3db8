"""Listings and representations over a replica filled through the events code path (rest-api 1.4, 1.5, 5)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from backend_common.db.replica import ComputeTask
from backend_common.protos import common_pb2, function_pb2
from backend_common.replica import disable_model, store_compute_task
from backend_server.testing import CHANNEL, ORG1, ORG2, Backend, Replica, asset_input, parent_input
from sqlalchemy import delete


def get(backend: Backend, path: str, **params: Any) -> Any:
    response = backend.http().get(path, params=params, headers=backend.headers())
    assert response.status_code == 200, response.text
    return response.json()


def walk(backend: Backend, path: str, query: str = "") -> list[dict[str, Any]]:
    """Walk a listing as the SDK does: follow `next` while re-sending the original parameters."""
    client = backend.http()
    first = client.get(f"{path}?{query}", headers=backend.headers()).json()
    results, url = list(first["results"]), first["next"]
    while url:
        split = urlsplit(url)
        again = "&".join(filter(None, [split.query, query]))
        page = client.get(f"{split.path}?{again}", headers=backend.headers())
        assert page.status_code == 200, page.text
        results += page.json()["results"]
        url = page.json()["next"]
    return results


def test_pagination_envelope_next_urls_and_invalid_pages(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        function, plan = replica.function(), replica.plan()
        keys = [replica.task(function, plan, rank=index % 3).key for index in range(250)]
        replica.plan(name="other")
    first = get(backend, "/task/", worker=ORG1, ordering="creation_date")
    assert first["count"] == 250 and len(first["results"]) == 100 and first["previous"] is None
    assert first["next"].startswith("http://testserver/task/?")
    assert dict(parse_qsl(urlsplit(first["next"]).query)) == {
        "worker": ORG1,
        "ordering": "creation_date",
        "page": "2",
    }
    third = get(backend, "/task/", page=3)
    assert len(third["results"]) == 50 and third["next"] is None
    assert dict(parse_qsl(urlsplit(third["previous"]).query)) == {"page": "2"}
    second = get(backend, "/task/", page=2)
    assert "page" not in dict(parse_qsl(urlsplit(second["previous"]).query))
    assert [
        task["key"] for task in walk(backend, "/task/", "worker=MyOrg1MSP&ordering=creation_date")
    ] == keys
    assert len(get(backend, "/task/", page_size=7)["results"]) == 7
    for page in ("4", "0", "-1", "abc"):
        response = backend.http().get(f"/task/?page={page}", headers=backend.headers())
        assert response.status_code == 404 and response.json() == {"detail": "Invalid page."}
    assert get(backend, "/compute_plan/")["count"] == 2
    # Small pagination for plans, default for tasks.
    assert get(backend, "/compute_plan/", page_size=1)["next"] is not None


def test_counts_follow_inserts_and_channels(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        function, plan = replica.function(), replica.plan()
        stored = [replica.task(function, plan) for _ in range(3)]
        other = Replica(session, channel="yourchannel")
        other_function, other_plan = other.function(), other.plan()
        hidden_task = other.task(other_function, other_plan)
    listing = get(backend, "/task/")
    assert listing["count"] == 3 and len(listing["results"]) == 3
    with backend.session() as session:
        # Events are delivered at least once: a task stored again is not counted twice.
        store_compute_task(session, CHANNEL, stored[0])
        session.execute(delete(ComputeTask).where(ComputeTask.key == stored[1].key))
    assert get(backend, "/task/")["count"] == 2
    assert get(backend, "/task/", page_size=1)["next"] is not None
    assert get(backend, "/task/", status="STATUS_WAITING_FOR_EXECUTOR_SLOT")["count"] == 2
    # The user's channel is mychannel: another channel's assets do not exist for them.
    for path in (
        f"/task/{hidden_task.key}/",
        f"/compute_plan/{other_plan.key}/",
        f"/function/{other_function.key}/",
    ):
        assert backend.http().get(path, headers=backend.headers()).status_code == 404


def test_task_representation_list_equals_detail(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        function = replica.function(metadata={"framework": "torch"})
        manager = replica.data_manager()
        samples = [replica.data_sample([manager.key]).key for _ in range(2)]
        plan = replica.plan(tag="experiment", metadata={"lr": "0.1"})
        parent = replica.task(function, plan, inputs=[asset_input("opener", manager.key)])
        child = replica.task(
            function,
            plan,
            rank=1,
            metadata={"__tag__": "the tag", "round_idx": "1"},
            inputs=[
                asset_input("opener", manager.key),
                *(asset_input("datasamples", key) for key in samples),
                parent_input("model", parent.key),
            ],
        )
    detail = get(backend, f"/task/{child.key.replace('-', '')}/")
    [listed] = [task for task in get(backend, "/task/")["results"] if task["key"] == child.key]
    assert detail == listed
    assert detail["tag"] == "the tag" and detail["metadata"] == {"round_idx": "1"}
    assert detail["rank"] == 1 and detail["duration"] == 0 and detail["error_type"] is None
    assert [item["identifier"] for item in detail["inputs"]] == [
        "opener",
        "datasamples",
        "datasamples",
        "model",
    ]
    assert detail["inputs"][3] == {
        "identifier": "model",
        "asset_key": None,
        "parent_task_key": parent.key,
        "parent_task_output_identifier": "model",
    }
    assert detail["outputs"] == {
        "model": {
            "permissions": {
                "process": {"public": False, "authorized_ids": [ORG1]},
                "download": {"public": False, "authorized_ids": [ORG1]},
            },
            "transient": False,
        }
    }
    embedded = detail["function"]
    assert embedded == get(backend, f"/function/{function.key}/")
    assert embedded["archive"]["storage_address"] == f"http://testserver/function/{function.key}/file/"
    assert embedded["inputs"]["datasamples"] == {
        "kind": "ASSET_DATA_SAMPLE",
        "optional": False,
        "multiple": True,
    }
    assert embedded["outputs"] == {"model": {"kind": "ASSET_MODEL", "multiple": False}}
    assert embedded["metadata"] == {"framework": "torch"}
    datetime.fromisoformat(detail["creation_date"])
    assert detail["creation_date"].endswith("Z")


def test_filters_and_ordering(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        function, other_function = replica.function(), replica.function(name="other")
        plans = [
            replica.plan(metadata={"lr": f"0.{index}", "model": "cnn" if index else "mlp"})
            for index in range(3)
        ]
        tasks = [
            replica.task(
                function if index < 4 else other_function,
                plans[index % 3],
                rank=index % 2,
                worker=ORG2 if index == 5 else ORG1,
            )
            for index in range(6)
        ]
        replica.task_status(tasks[0].key, "STATUS_EXECUTING")
        replica.task_status(tasks[0].key, "STATUS_DONE")

    def by_keys(results: list[dict[str, Any]]) -> list[str]:
        return [item["key"] for item in results]

    assert by_keys(get(backend, "/task/", key=f"{tasks[1].key},{tasks[2].key}")["results"]) == [
        tasks[1].key,
        tasks[2].key,
    ]
    assert by_keys(get(backend, "/task/", rank="1")["results"]) == [tasks[1].key, tasks[3].key, tasks[5].key]
    assert by_keys(get(backend, "/task/", worker=ORG2)["results"]) == [tasks[5].key]
    assert by_keys(get(backend, "/task/", status="STATUS_DONE")["results"]) == [tasks[0].key]
    assert by_keys(get(backend, "/task/", function_key=other_function.key)["results"]) == [
        tasks[4].key,
        tasks[5].key,
    ]
    assert by_keys(get(backend, "/task/", compute_plan_key=plans[1].key)["results"]) == [
        tasks[1].key,
        tasks[4].key,
    ]
    assert by_keys(get(backend, "/task/", ordering="-creation_date")["results"]) == [
        task.key for task in reversed(tasks)
    ]
    assert by_keys(get(backend, "/task/", ordering="-nonsense")["results"]) == [task.key for task in tasks]
    assert get(backend, "/task/", match=tasks[2].key[:8])["count"] == 1

    def plans_by(conditions: list[dict[str, str]]) -> list[str]:
        return by_keys(
            get(backend, "/compute_plan/", metadata=json.dumps(conditions, separators=(",", ":")))["results"]
        )

    assert plans_by([{"key": "lr", "type": "is", "value": "0.1"}]) == [plans[1].key]
    assert plans_by([{"key": "model", "type": "contains", "value": "CN"}]) == [plans[1].key, plans[2].key]
    assert plans_by([{"key": "model", "type": "exists"}, {"key": "lr", "type": "is", "value": "0.2"}]) == [
        plans[2].key
    ]
    assert plans_by([{"key": "nobody", "type": "exists"}]) == []
    assert get(backend, "/compute_plan/", metadata="{not json")["count"] == 3
    assert by_keys(get(backend, "/compute_plan/", key=f"{plans[0].key},{plans[2].key}")["results"]) == [
        plans[0].key,
        plans[2].key,
    ]
    invalid = backend.http().get("/task/?key=not-a-uuid", headers=backend.headers())
    assert invalid.status_code == 400 and "key" in invalid.json()
    assert get(backend, "/compute_plan_metadata/") == ["lr", "model"]
    after = get(
        backend, "/task/", creation_date_after=get(backend, f"/task/{tasks[4].key}/")["creation_date"]
    )
    assert by_keys(after["results"]) == [tasks[4].key, tasks[5].key]


def test_permission_filters_and_datasets(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        shared = replica.function(authorized=[ORG2])
        private = replica.function()
        public = replica.function(public=True)
        manager = replica.data_manager(authorized=[ORG2])
        other_manager = replica.data_manager(ORG2)
        sample = replica.data_sample([manager.key])
        replica.data_sample([other_manager.key], owner=ORG2)

    def keys(path: str, **params: Any) -> set[str]:
        return {item["key"] for item in get(backend, path, **params)["results"]}

    assert keys("/function/", can_process=ORG2) == {shared.key, public.key}
    # The SDK sends its `permissions` filter under that name.
    assert keys("/function/", permissions=f"{ORG1},{ORG2}") == {shared.key, public.key}
    assert keys("/function/", permissions=ORG1) == {shared.key, private.key, public.key}
    assert keys("/data_manager/", can_process=ORG2) == {manager.key, other_manager.key}
    assert keys("/data_manager/", data_sample_key=sample.key) == {manager.key}
    assert keys("/data_sample/", dataset_key=manager.key) == {sample.key}
    document = get(backend, f"/data_manager/{manager.key}/")
    assert document["data_sample_keys"] == [sample.key]
    assert document["logs_permission"] == {"public": False, "authorized_ids": [ORG1]}
    assert document["opener"]["storage_address"] == f"http://testserver/data_manager/{manager.key}/opener/"
    assert "type" not in document
    assert "path" not in get(backend, f"/data_sample/{sample.key}/")


def test_compute_plan_counters_perf_graph_and_assets(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        function = replica.function()
        metric = replica.function(
            name="metric",
            inputs={"model": function_pb2.FunctionInput(kind=common_pb2.ASSET_MODEL)},
            outputs={"accuracy": function_pb2.FunctionOutput(kind=common_pb2.ASSET_PERFORMANCE)},
        )
        plan = replica.plan()
        trained = replica.task(function, plan, metadata={"round_idx": "0"})
        tested = replica.task(
            metric,
            plan,
            rank=1,
            inputs=[parent_input("model", trained.key)],
            outputs=["accuracy"],
            metadata={"round_idx": "0"},
            public_outputs=True,
        )
        for status in ("STATUS_EXECUTING", "STATUS_DONE"):
            replica.task_status(trained.key, status)
        model = replica.model(trained)
        replica.task_status(tested.key, "STATUS_EXECUTING")
        replica.performance(tested, "accuracy", 0.5)
        replica.task_status(tested.key, "STATUS_DONE")
        transient = replica.task(function, replica.plan(name="elsewhere"))
        disabled = replica.model(transient)
        disable_model(session, disabled.key)
    document = get(backend, f"/compute_plan/{plan.key}/")
    assert document["status"] == "PLAN_STATUS_DONE"
    assert document["task_count"] == document["done_count"] == 2
    assert document["duration"] >= 0 and document["end_date"] is not None
    assert document["estimated_end_date"] == document["end_date"] and document["creator"] == "admin"
    assert [item for item in get(backend, "/compute_plan/")["results"] if item["key"] == plan.key] == [
        document
    ]
    perf = get(backend, f"/compute_plan/{plan.key}/perf/")
    assert perf["results"] == [
        {
            "compute_task": {
                "key": tested.key,
                "function_key": metric.key,
                "rank": 1,
                "round_idx": "0",
                "worker": ORG1,
            },
            "identifier": "accuracy",
            "perf": 0.5,
        }
    ]
    assert perf["compute_plan_statistics"] == {
        "compute_tasks_distinct_ranks": [1],
        "compute_tasks_distinct_rounds": ["0"],
    }
    graph = get(backend, f"/compute_plan/{plan.key}/workflow_graph/")
    assert [task["key"] for task in graph["tasks"]] == [trained.key, tested.key]
    assert graph["edges"] == [
        {
            "source_task_key": trained.key,
            "source_output_identifier": "model",
            "target_task_key": tested.key,
            "target_input_identifier": "model",
        }
    ]
    inputs = get(backend, f"/task/{tested.key}/input_assets/")["results"]
    assert [(item["identifier"], item["kind"], item["asset"]["key"]) for item in inputs] == [
        ("model", "ASSET_MODEL", model.key)
    ]
    outputs = get(backend, f"/task/{tested.key}/output_assets/", identifier="accuracy")["results"]
    assert [item["asset"]["performance_value"] for item in outputs] == [0.5]
    assert get(backend, f"/model/{disabled.key}/")["address"] is None
    assert (
        get(backend, f"/model/{model.key}/")["address"]["storage_address"]
        == f"http://testserver/model/{model.key}/file/"
    )
    assert {task["key"] for task in get(backend, f"/compute_plan/{plan.key}/task/")["results"]} == {
        trained.key,
        tested.key,
    }
    assert {item["key"] for item in get(backend, f"/compute_plan/{plan.key}/functions/")["results"]} == {
        function.key,
        metric.key,
    }
    rows = get(backend, "/performance/")["results"]
    assert [
        (row["compute_plan_key"], row["identifier"], row["performance"], row["task_round"]) for row in rows
    ] == [(plan.key, "accuracy", 0.5, 0)]
    export = backend.http().get("/performance/export/?metadata_columns=lr", headers=backend.headers())
    lines = list(csv.reader(io.StringIO(export.text)))
    assert export.headers["content-type"].startswith("text/csv")
    assert lines[0][-6:] == ["lr", "identifier", "worker", "task_rank", "task_round", "performance"]
    assert lines[1][0] == plan.key and lines[1][-1] == "0.5"
    news = get(backend, "/news_feed/")["results"]
    assert {(item["asset_kind"], item["status"]) for item in news} >= {
        ("ASSET_COMPUTE_PLAN", "STATUS_CREATED"),
        ("ASSET_COMPUTE_PLAN", "STATUS_DONE"),
    }
    assert [
        item["status"] for item in get(backend, "/news_feed/", important_news_only="true")["results"]
    ] == ["STATUS_DONE"]


def test_organizations_are_a_bare_list(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        replica.organization(ORG1, "http://org1")
        replica.organization(ORG2, "http://org2")
        Replica(session, channel="yourchannel").organization("Elsewhere")
    organizations = get(backend, "/organization/")
    assert [(item["id"], item["is_current"]) for item in organizations] == [(ORG1, True), (ORG2, False)]
    assert CHANNEL
