"""Cross-cutting behaviour: path prefix, Accept header, metrics, OpenAPI, profiling and worker writes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_common.db.local import UserRole
from backend_common.testing.processes import free_port
from backend_server.app import create_app
from backend_server.testing import ORG1, ORG2, ORG_SECRETS, Backend, Replica, server_settings
from starlette.testclient import TestClient


def basic(organization: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{organization}:{ORG_SECRETS[organization]}".encode()).decode()
    return {"Authorization": f"Basic {credentials}", "Substra-Channel-Name": "mychannel"}


@pytest.fixture
def prefixed(database_url: str, media_root: Path) -> Iterator[Backend]:
    settings = server_settings(database_url, media_root=media_root, orchestrator_port=free_port())
    settings = settings.model_copy(update={"http": settings.http.model_copy(update={"subpath": "backend/"})})
    backend = Backend(settings=settings, database_url=database_url)
    backend.add_user("admin", role=UserRole.ADMIN)
    with TestClient(create_app(settings)) as client:
        backend.client = client
        yield backend


def test_path_prefix(prefixed: Backend) -> None:
    with prefixed.session() as session:
        replica = Replica(session)
        function = replica.function()
        plan = replica.plan()
        for _ in range(3):
            replica.task(function, plan)
    client = prefixed.http()
    page = client.get("/backend/task/?page_size=2", headers=prefixed.headers()).json()
    assert page["next"] == "http://testserver/backend/task/?page_size=2&page=2"
    assert page["results"][0]["function"]["archive"]["storage_address"] == (
        f"http://testserver/backend/function/{function.key}/file/"
    )
    assert client.get("/task/", headers=prefixed.headers()).status_code == 404
    assert client.get("/liveness").status_code == 200
    assert "/backend/task/" in client.get("/backend/openapi.json", headers=prefixed.headers()).json()["paths"]


def test_accept_header_variants_and_trailing_slashes(backend: Backend) -> None:
    client = backend.http()
    headers = {"Authorization": backend.headers()["Authorization"]}
    for accept in ("application/json;version=0.0", "application/json", "*/*", "text/html"):
        assert client.get("/task/", headers={**headers, "Accept": accept}).status_code == 200
    redirected = client.get("/task", headers=backend.headers(), follow_redirects=False)
    assert redirected.status_code in (307, 308)


def test_metrics_count_api_routes_by_template_and_status(backend: Backend) -> None:
    client = backend.http()
    client.get("/task/", headers=backend.headers())
    client.get("/task/7c9c5e3e-58a4-4d39-9d8f-8b2f1f1c2d3e/", headers=backend.headers())
    client.get("/task/")
    body = client.get("/metrics").text
    assert 'substra_http_requests_total{method="GET",route="/task/",status="200"}' in body
    assert 'substra_http_requests_total{method="GET",route="/task/{key}/",status="404"}' in body
    assert 'substra_http_requests_total{method="GET",route="/task/",status="401"}' in body
    assert (
        'substra_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/task/",status="200"}'
        in body
    )


def test_openapi_document(backend: Backend) -> None:
    assert backend.http().get("/openapi.json").status_code == 401
    document = backend.http().get("/openapi.json", headers=backend.headers()).json()
    assert document["openapi"].startswith("3.")
    for path in (
        "/task/",
        "/task/{key}/",
        "/function/",
        "/data_sample/bulk_update/",
        "/api-token-auth/",
        "/info/",
    ):
        assert path in document["paths"], path
    assert set(document["paths"]["/compute_plan/"]) == {"get", "post"}
    assert backend.http().get("/schema/", headers=backend.headers()).json() == document


def test_task_profiling_written_by_this_organizations_worker(backend: Backend) -> None:
    with backend.session() as session:
        replica = Replica(session)
        task = replica.task(replica.function(), replica.plan())
    client, worker = backend.http(), basic(ORG1)
    assert (
        client.post("/task_profiling/", json={"compute_task_key": task.key}, headers=worker).status_code
        == 201
    )
    conflict = client.post("/task_profiling/", json={"compute_task_key": task.key}, headers=worker)
    assert (
        conflict.status_code == 409
        and conflict.json()["detail"] == f"TaskProfiling with key {task.key} already exists"
    )
    assert (
        client.put(
            f"/task_profiling/{task.key}/", json={"compute_task_key": task.key}, headers=worker
        ).status_code
        == 200
    )
    for step, duration in (
        ("prepare_inputs", "00:00:01.500000"),
        ("build_image", "00:01:00"),
        ("task_execution", "1 02:00:00"),
    ):
        created = client.post(
            f"/task_profiling/{task.key}/step/", json={"step": step, "duration": duration}, headers=worker
        )
        assert created.status_code == 201
    again = client.post(
        f"/task_profiling/{task.key}/step/",
        json={"step": "prepare_inputs", "duration": "00:00:02"},
        headers=worker,
    )
    assert again.status_code == 409
    updated = client.put(
        f"/task_profiling/{task.key}/step/prepare_inputs/", json={"duration": "00:00:02"}, headers=worker
    )
    assert updated.status_code == 200
    profile = client.get(f"/task_profiling/{task.key}/", headers=backend.headers()).json()
    assert profile["execution_rundown"] == [
        {"step": "prepare_inputs", "duration": 2_000_000},
        {"step": "task_execution", "duration": 93_600_000_000},
    ]
    assert profile["task_duration"] is None
    assert client.get("/task_profiling/", headers=backend.headers()).json()["count"] == 1
    assert (
        client.post(
            f"/task_profiling/{task.key}/step/", json={"step": "x", "duration": 1}, headers=basic(ORG2)
        ).status_code
        == 403
    )


def test_the_worker_stores_its_models(backend: Backend) -> None:
    with backend.session() as session:
        task = Replica(session).task(Replica(session).function(), Replica(session).plan())
    model = {
        "key": "0c1f7b4e-9a8d-4b1a-9f3e-1a2b3c4d5e6f",
        "compute_task_key": task.key,
        "address": {
            "checksum": "a" * 64,
            "storage_address": "http://127.0.0.1:8000/model/0c1f7b4e-9a8d-4b1a-9f3e-1a2b3c4d5e6f/file/",
        },
        "permissions": {
            "process": {"public": False, "authorized_ids": [ORG1]},
            "download": {"public": False, "authorized_ids": [ORG1]},
        },
        "owner": ORG1,
        "creation_date": "2024-01-01T00:00:00.000001Z",
    }
    client = backend.http()
    refused = client.post("/model/", data={"metadata": json.dumps([model])}, headers=basic(ORG2))
    assert refused.status_code == 403
    created = client.post("/model/", data={"metadata": json.dumps([model])}, headers=basic(ORG1))
    assert created.status_code == 201
    assert [item["key"] for item in created.json()] == [model["key"]]
    assert (
        client.get(f"/model/{model['key']}/", headers=backend.headers()).json()["creation_date"]
        == "2024-01-01T00:00:00.000001Z"
    )
